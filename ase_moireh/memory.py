"""What a solve will need, what the machine has, and a clear refusal in between.

Without this a too-large solve ends in the kernel's OOM killer: a SIGKILL and no Python
message. Every large allocation of the solvers is estimated first and compared with the
memory available to the process; :class:`InsufficientMemory` says both numbers and what
would fit.

Available memory is the smallest of: ``MemAvailable`` (/proc/meminfo), the cgroup's
``memory.max - memory.current`` (containers), and ``MOIREH_MEMORY_LIMIT`` minus what the
process holds already. ``MOIREH_MEMORY_LIMIT`` caps the whole process: bytes or a size
with a unit, e.g. ``16G``, ``500M``. Where none of these can be read, nothing is refused.

Estimates (bytes; measured on this machine with ``/proc/self/status`` VmHWM):

* dense generalised eigenproblem of n complex rows: the dense H(k) and S(k) plus
  LAPACK's copies and work arrays, 4 n^2 x 16 without eigenvectors (measured 2 + 1.1)
  and 6 n^2 x 16 with them (measured 2 + 3.1);
* PARDISO: its own analysis-phase report of the numerical factorisation and solves
  (``iparm[16]``, kB), read after the symbolic phase (which has allocated the permanent
  ``iparm[15]`` already) and before the numerical factorisation; on the (4,3) SOC cell
  (7,696 rows) the two together said 0.75 GB and the process grew by 0.70 GB in all;
* SuperLU: ``SUPERLU_FILL`` x the bytes of the matrix, x sqrt(n / 7,696) above that size
  (its fill grows with the cell); measured 8.2x at 7,696 rows (+1.96 GB).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ENV = "MOIREH_MEMORY_LIMIT"
#: bytes per complex128 number
COMPLEX = 16
#: dense eigh: n^2 complex numbers held at once (inputs included), without / with vectors
DENSE_FACTOR = {False: 4, True: 6}
#: SuperLU's peak over the bytes of the matrix, at SUPERLU_CALIBRATED rows
SUPERLU_FILL = 8.2
SUPERLU_CALIBRATED = 7696
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


class InsufficientMemory(MemoryError):
    """A solve would need more memory than the process has available."""


def parse_size(text: str, source: str = ENV) -> int:
    """'16G', '500M', '2.5G', '123456' -> bytes (binary units)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"{source}={text!r} is not a size: use bytes or e.g. 500M, 16G")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def _meminfo(key: str, path: str = "/proc/meminfo") -> int | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cgroup_headroom() -> int | None:
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((root / "memory.current").read_text())
    except (OSError, ValueError):
        return None


def process_rss() -> int:
    """Resident memory of this process now (bytes; 0 where unknown)."""
    return _meminfo("VmRSS", "/proc/self/status") or 0


def peak_rss() -> int:
    """Peak resident memory of this process so far (VmHWM, bytes; 0 where unknown):
    the figure to state as a process peak."""
    return _meminfo("VmHWM", "/proc/self/status") or 0


def reset_peak_rss() -> None:
    """Start a new peak for :func:`peak_rss` (Linux: /proc/self/clear_refs), so a stage
    of a long process can be measured on its own; a no-op where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def available_bytes() -> tuple[int | None, str]:
    """(bytes this process may still allocate, where that figure comes from)."""
    found: list[tuple[int, str]] = []
    meminfo = _meminfo("MemAvailable")
    if meminfo is not None:
        found.append((meminfo, "MemAvailable"))
    cgroup = _cgroup_headroom()
    if cgroup is not None:
        found.append((cgroup, "the cgroup's memory.max"))
    if os.environ.get(ENV):
        found.append((parse_size(os.environ[ENV]) - process_rss(), ENV))
    if not found:
        return None, "unknown"
    return min(found)


def ensure_fits(need: int, what: str, hint: str = "") -> None:
    """Raise :class:`InsufficientMemory` when ``need`` bytes exceed what is available."""
    have, source = available_bytes()
    if have is None or need <= have:
        return
    raise InsufficientMemory(
        f"{what} needs about {gigabytes(need)}, but only {gigabytes(max(have, 0))} is "
        f"available ({source}; this process holds {gigabytes(process_rss())})."
        + (f" {hint}" if hint else "")
    )


def gigabytes(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GB"


def dense_eigh_bytes(n: int, vectors: bool) -> int:
    """Dense generalised eigenproblem of n complex rows (see the module doc)."""
    return DENSE_FACTOR[bool(vectors)] * n * n * COMPLEX


def dense_rows_fitting(vectors: bool = False) -> int | None:
    """The largest dense problem that fits now (rows), or None when unknown."""
    have, _ = available_bytes()
    if have is None:
        return None
    return int((max(have, 0) / (DENSE_FACTOR[bool(vectors)] * COMPLEX)) ** 0.5)


def superlu_bytes(n: int, nnz: int) -> int:
    """SuperLU's peak for a complex matrix of n rows and nnz stored numbers."""
    growth = max(1.0, n / SUPERLU_CALIBRATED) ** 0.5
    return int(SUPERLU_FILL * growth * nnz * COMPLEX)
