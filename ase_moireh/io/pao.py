"""OpenMX pseudo-atomic orbital files (``*.pao``): the radial functions of a PAO basis.

A ``.pao`` file (OpenMX's ``DFT_DATA*/PAO``) holds, per angular momentum ``L``, a block
``<pseudo.atomic.orbitals.L=L`` of ``grid.num.output`` rows ``x r R_0(r) ... R_{Mul-1}(r)``
on a logarithmic grid (x = ln r, r in Bohr), with ``PAO.Lmax``, ``PAO.Mul`` and
``radial.cutoff.pao`` (Bohr) as keywords. An orbital is R(r) Y_lm(r_hat), with
int R^2 r^2 dr = 1. A basis string like ``Mo7.0-s3p2d1`` takes the first 3 s, the first
2 p and the first d function of ``Mo7.0.pao`` (OpenMX's rule without contraction).

Bohr exists in this module only: radii come out in Angstrom and R(r) in Angstrom^-3/2.
"""

from __future__ import annotations

import gzip
import lzma
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase.units import Bohr

from ase_moireh.basis import L_LETTERS, parse_openmx_basis

_BLOCK = re.compile(
    r"<pseudo\.atomic\.orbitals\.L=(\d+)\s*\n(.*?)\n\s*pseudo\.atomic\.orbitals\.L=\1>", re.S
)


class PAOError(ValueError):
    """A ``.pao`` file, or a request of it, that cannot be used; names file and problem."""


@dataclass(frozen=True)
class RadialFunction:
    """One radial function R(r) of a PAO shell on its file's grid (Angstrom units)."""

    l: int
    r: np.ndarray  # (n,) increasing radii, Angstrom
    values: np.ndarray  # (n,) R(r), Angstrom^-3/2
    cutoff: float  # Angstrom: R = 0 beyond

    def __call__(self, radii: np.ndarray) -> np.ndarray:
        """R at ``radii`` (Angstrom), interpolated as OpenMX does, zero beyond the grid."""
        return interpolate_radial(self.r, self.values, self.l, radii)


@dataclass(frozen=True)
class PAOFile:
    """Every radial function of one ``.pao`` file: ``functions[l]`` is (Mul, n)."""

    name: str  # 'Mo7.0'
    path: str
    r: np.ndarray  # Angstrom
    functions: dict[int, np.ndarray]  # l -> (Mul, n), Angstrom^-3/2
    cutoff: float  # Angstrom

    def radial(self, l: int, index: int) -> RadialFunction:
        """The ``index``-th radial function (0-based) of angular momentum ``l``."""
        if l not in self.functions or index >= len(self.functions[l]):
            have = {L_LETTERS[k]: len(v) for k, v in sorted(self.functions.items())}
            raise PAOError(
                f"{self.path}: no {L_LETTERS[l]} function number {index + 1} (file has {have})"
            )
        return RadialFunction(l, self.r, self.functions[l][index], self.cutoff)

    def shells(self, basis: str) -> list[RadialFunction]:
        """Radial functions of a basis string (``'Mo7.0-s3p2d1'``) in our shell order."""
        name, shells = parse_openmx_basis(basis)
        if name != self.name:
            raise PAOError(f"{self.path}: basis {basis!r} names {name}.pao, not {self.name}.pao")
        out, seen = [], {}
        for l in shells:
            out.append(self.radial(l, seen.get(l, 0)))
            seen[l] = seen.get(l, 0) + 1
        return out


def openmx_data_text(path: Path, error: type[ValueError] = PAOError) -> str:
    """An OpenMX data file's text (.pao, .vps; plain, xz or gzip), corrupt compressed
    data raised as ``error`` naming the file."""
    raw = path.read_bytes()
    try:
        if raw.startswith(b"\xfd7zXZ\x00"):
            raw = lzma.decompress(raw)
        elif raw.startswith(b"\x1f\x8b"):
            raw = gzip.decompress(raw)
    except (lzma.LZMAError, EOFError, OSError) as err:
        raise error(f"{path}: corrupt compressed data ({err})") from None
    return raw.decode("latin-1")


def openmx_data_keyword(
    text: str, key: str, path: Path, error: type[ValueError] = PAOError, kind: str = ".pao"
) -> str:
    """The first word after ``key`` at a line's start; missing: ``error`` naming the file."""
    match = re.search(rf"^\s*{re.escape(key)}\s+(\S+)", text, re.M)
    if match is None:
        raise error(f"{path}: no {key!r} keyword: not an OpenMX {kind} file")
    return match.group(1)


def read_pao(path: str | os.PathLike) -> PAOFile:
    """Read a ``.pao`` file (plain, .xz or .gz); radii in Angstrom, R in Angstrom^-3/2."""
    path = Path(path)
    try:
        text = openmx_data_text(path)
    except FileNotFoundError:
        raise PAOError(f"{path}: no such PAO file") from None
    except OSError as err:
        raise PAOError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        lmax = int(openmx_data_keyword(text, "PAO.Lmax", path))
        mul = int(openmx_data_keyword(text, "PAO.Mul", path))
        cutoff = float(openmx_data_keyword(text, "radial.cutoff.pao", path))
    except ValueError as err:
        raise PAOError(f"{path}: bad keyword value ({err})") from None
    blocks = {int(m.group(1)): m.group(2) for m in _BLOCK.finditer(text)}
    functions, grid = {}, None
    for l in range(lmax + 1):
        if l not in blocks:
            raise PAOError(f"{path}: block <pseudo.atomic.orbitals.L={l} missing or unclosed")
        try:
            rows = np.array([line.split() for line in blocks[l].strip().splitlines()], float)
        except ValueError:
            raise PAOError(f"{path}: L={l} block is not a table of numbers") from None
        if rows.ndim != 2 or rows.shape[1] != mul + 2 or len(rows) < 8:
            raise PAOError(f"{path}: L={l} block needs rows of {mul + 2} numbers (PAO.Mul {mul})")
        if not np.all(np.isfinite(rows)) or np.any(np.diff(rows[:, 1]) <= 0):
            raise PAOError(f"{path}: L={l} block has non-finite or non-increasing radii/values")
        if grid is not None and not np.allclose(rows[:, 1], grid):
            raise PAOError(f"{path}: L={l} block uses another radial grid than L=0")
        grid = rows[:, 1]
        functions[l] = rows[:, 2:].T * Bohr**-1.5
    name = re.sub(r"\.pao(\.xz|\.gz)?$", "", path.name)
    return PAOFile(name, str(path), grid * Bohr, functions, cutoff * Bohr)


def find_pao(folder: str | os.PathLike, name: str) -> Path:
    """``<folder>/<name>.pao`` (or ``<folder>/PAO/<name>.pao``, OpenMX's DATA.PATH layout)."""
    folder = Path(folder)
    for candidate in (folder / f"{name}.pao", folder / "PAO" / f"{name}.pao"):
        for suffix in ("", ".xz", ".gz"):
            path = candidate.with_name(candidate.name + suffix)
            if path.is_file():
                return path
    raise PAOError(f"{folder}: no {name}.pao (looked in {folder} and {folder / 'PAO'})")


def interpolate_radial(r: np.ndarray, values: np.ndarray, l: int, radii: np.ndarray) -> np.ndarray:
    """Piecewise-cubic Hermite interpolation of R(r) on a non-uniform grid, with slopes
    from the neighbouring secants weighted as in OpenMX's ``RadialF``, so the function is
    the one OpenMX integrates. Below the first point: R(r_0) for s, 0 otherwise; beyond
    the last point: 0."""
    radii = np.asarray(radii, dtype=float)
    n = len(r)
    # segment m spans r[m-1]..r[m], m in 2..n-2 as OpenMX clamps it
    m = np.clip(np.searchsorted(r, radii, side="left"), 2, n - 2)
    h1 = r[m - 1] - r[m - 2]
    h2 = r[m] - r[m - 1]
    h3 = r[m + 1] - r[m]
    f1, f2, f3, f4 = values[m - 2], values[m - 1], values[m], values[m + 1]
    g1 = ((f3 - f2) * h1 / h2 + (f2 - f1) * h2 / h1) / (h1 + h2)
    g2 = ((f4 - f3) * h2 / h3 + (f3 - f2) * h3 / h2) / (h2 + h3)
    y1 = (radii - r[m - 1]) / h2
    y2 = (radii - r[m]) / h2
    out = y2 * y2 * (3 * f2 + h2 * g1 + (2 * f2 + h2 * g1) * y2) + y1 * y1 * (
        3 * f3 - h2 * g2 - (2 * f3 - h2 * g2) * y1
    )
    below = values[0] if l == 0 else 0.0
    out = np.where(radii < r[0], below, out)
    return np.where(radii > r[-1], 0.0, out)
