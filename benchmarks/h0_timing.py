"""Time and peak memory of the zeroth-step Hamiltonian H0 (T + V_NL + V_NA + V_xc) and of S
on rigid twisted MoTe2 bilayers: is H0 O(N), and does the (7,6) cell (762 atoms) take
<= 60 s and <= 4 GB on this two-core machine (issue 31, item 3)?

    python benchmarks/h0_timing.py [--cells 2,1 4,3 7,6 12,11] [--soc 7,6] [--data DIR]

Every (cell, collinear/SOC) case runs in a fresh process (``--worker``), because numpy's
and BLAS's memory is not seen by tracemalloc and a process's peak RSS
(``resource.getrusage``) only grows: per case the cold call (builder set-up, radial
tables, neutral-atom projectors, then H0) and a warm one (H0 again, tables built), then
S on the same edges. Both wall and CPU time (all threads) are recorded, per term too,
with the load average before and after: the machine is shared (a background OpenMX
campaign, a training run), so wall time there is not the idle machine's.

Writes benchmarks/results/h0_timing.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "openmx" / "DFT_DATA"
BASIS = {"Mo": "Mo7.0-s3p2d1", "Te": "Te7.0-s3p2d2"}
PSEUDO = {"Mo": "Mo_PBE19", "Te": "Te_PBE19"}
TERMS = ("T", "V_NL", "V_NA", "V_xc")
#: the targets of issue 31 for the (7,6) cell
TARGET_S, TARGET_GB = 60.0, 4.0


# --------------------------------------------------------------------------- worker


class Clock:
    """Wall and CPU seconds (all threads of the process) of a call."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, float]] = {}

    def run(self, name: str, fn: Callable[[], object]) -> object:
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        self.add(name, time.perf_counter() - wall, time.process_time() - cpu)
        return out

    def add(self, name: str, wall: float, cpu: float) -> None:
        record = self.records.setdefault(name, {"wall": 0.0, "cpu": 0.0})
        record["wall"] += wall
        record["cpu"] += cpu

    def timed(self, name: str, fn: Callable) -> Callable:
        """``fn`` recording its calls under ``name`` (the original as ``__wrapped__``)."""

        def wrapper(*args, **kwargs):
            return self.run(name, lambda: fn(*args, **kwargs))

        wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
        return wrapper


def _terms_of(builder, spinful: bool) -> dict[str, object]:
    """The four term objects of a combined builder (V_NL made now, as it is lazy)."""
    return {
        "T": builder.kinetic,
        "V_NL": builder.nonlocal_term(spinful),
        "V_NA": builder.neutral_atom,
        "V_xc": builder.exchange_correlation,
    }


class SummedTerms:
    """The four operators summed on the same edges, for a tree without
    ``ase_moireh.h0.hamiltonian`` (its :class:`ZerothStepHamiltonian` is used if present)."""

    def __init__(self, folder: Path, spinful: bool):
        from ase_moireh.h0 import (
            ExchangeCorrelation,
            KineticEnergy,
            NeutralAtomPotential,
            NonlocalPseudopotential,
        )
        from ase_moireh.overlap import TwoCentreOverlap

        self.overlap = TwoCentreOverlap.from_pao_folder(folder, BASIS)
        self.kinetic = KineticEnergy(self.overlap)
        self.neutral_atom = NeutralAtomPotential.from_folder(folder, BASIS, PSEUDO)
        self.exchange_correlation = ExchangeCorrelation.from_folder(folder, BASIS, PSEUDO)
        self._nonlocal = NonlocalPseudopotential.from_folder(folder, BASIS, PSEUDO, spinful)

    def nonlocal_term(self, spinful: bool):
        return self._nonlocal

    def operator(self, atoms, edges, spinful: bool):
        from ase_moireh.block_operator import spinor_lift

        total = self.kinetic.operator(atoms, edges)
        for term in (self.neutral_atom, self.exchange_correlation):
            total.values += term.operator(atoms, edges).values
        if spinful:
            total = spinor_lift(total)
        total.values += self._nonlocal.operator(atoms, edges).values
        return total


def openmx_edges_of(atoms, radius: float):
    """OpenMX's edges (on-site, then every pair within the two PAO cutoffs)."""
    import numpy as np

    from ase_moireh.neighbours import neighbour_pairs

    i, j, shift, d = neighbour_pairs(atoms, 2 * radius * (1 + 1e-12) + 1e-9)
    keep = d <= 2 * radius
    n = np.arange(len(atoms))
    own = np.column_stack([n, n, np.zeros((len(n), 3), dtype=np.int64)])
    return np.vstack([own, np.column_stack([i[keep], j[keep], shift[keep]])]).astype(np.int64)


def worker(n: int, m: int, spinful: bool, folder: Path) -> dict:
    """One case in this (fresh) process; returns the record printed as JSON."""
    load_before = os.getloadavg()
    clock = Clock()
    from ase_moireh.build import twisted_bilayer

    atoms = twisted_bilayer(n, m)
    try:
        from ase_moireh.h0.hamiltonian import ZerothStepHamiltonian

        def make():
            return ZerothStepHamiltonian(folder, BASIS, PSEUDO)

        source = "ase_moireh.h0.hamiltonian.ZerothStepHamiltonian"
    except ImportError:

        def make():
            return SummedTerms(folder, spinful)

        source = "the four term operators summed (no ase_moireh.h0.hamiltonian)"

    builder = clock.run("cold setup", make)
    term_clocks = {"cold": Clock(), "warm": Clock()}
    for name, term in _terms_of(builder, spinful).items():
        term.operator = term_clocks["cold"].timed(name, term.operator)
    radius = builder.overlap.species("Mo").cutoff
    edges = clock.run("edges", lambda: openmx_edges_of(atoms, radius))
    h0 = clock.run("cold H0", lambda: builder.operator(atoms, edges, spinful=spinful))
    for name, term in _terms_of(builder, spinful).items():  # the warm clock from now on
        term.operator = term_clocks["warm"].timed(name, term.operator.__wrapped__)
    rss_cold = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    del h0  # the warm call's peak is then its own, not two H0 at once
    h0 = clock.run("warm H0", lambda: builder.operator(atoms, edges, spinful=spinful))
    size = h0.values.size  # H0 and S held together, as a user holds them
    s = clock.run("S", lambda: builder.overlap.operator(atoms, edges))
    grid = builder.exchange_correlation.grid(atoms)
    return {
        "cell": [n, m],
        "atoms": len(atoms),
        "spinful": spinful,
        "edges": int(len(edges)),
        "h0_numbers": int(size),
        "s_numbers": int(s.values.size),
        "grid": list(grid.shape),
        "threads": builder.exchange_correlation.threads,
        "source": source,
        "times": clock.records,
        "terms": {k: c.records for k, c in term_clocks.items()},
        "peak_rss_GiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "peak_rss_after_cold_GiB": rss_cold,
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }


# --------------------------------------------------------------------------- driver


def run_case(n: int, m: int, spinful: bool, folder: Path) -> dict:
    args = [sys.executable, __file__, "--worker", f"{n},{m}", "--data", str(folder)]
    if spinful:
        args.append("--spinful")
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"case ({n},{m}) spinful={spinful} failed:\n{out.stderr[-3000:]}")
    record = json.loads(out.stdout.strip().splitlines()[-1])
    print(summary_line(record), flush=True)
    return record


def summary_line(r: dict) -> str:
    warm = r["times"]["warm H0"]
    return (
        f"({r['cell'][0]},{r['cell'][1]}) {'SOC' if r['spinful'] else 'collinear'}: "
        f"{r['atoms']} atoms, warm H0 {warm['wall']:.1f} s wall / {warm['cpu']:.1f} s CPU, "
        f"peak {r['peak_rss_GiB']:.2f} GiB, load {r['load_before'][0]:.1f}"
    )


def write_markdown(records: list[dict], path: Path) -> None:
    lines = [
        "# H0 and S of rigid twisted MoTe2 bilayers: time and memory (`benchmarks/h0_timing.py`)",
        "",
        f"H0 = T + V_NL + V_NA + V_xc as OpenMX's zeroth step builds it (source: "
        f"{records[0]['source']}), on OpenMX's edges (every pair within the two PAO cutoffs, "
        "7 + 7 Bohr), OpenMX's 200 Ry grid for V_xc. Each case is a fresh process; "
        "**cold** = builder set-up (files, radial tables, neutral-atom projectors) + the "
        "first H0, **warm** = H0 again. CPU = all threads of the process "
        f"({records[0]['threads']} workers). The machine (2 cores) was shared: load average "
        "(1 min) before and after each case is listed; wall time on an idle machine is about "
        "CPU time / 2.",
        "",
        "| cell | atoms | SOC | edges | V_xc grid | cold wall (s) | cold CPU (s) "
        "| warm wall (s) | warm CPU (s) | warm CPU / atom (ms) | S wall (s) | peak RSS (GiB) "
        "| load before / after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        t = r["times"]
        cold_wall = t["cold setup"]["wall"] + t["cold H0"]["wall"]
        cold_cpu = t["cold setup"]["cpu"] + t["cold H0"]["cpu"]
        lines.append(
            f"| ({r['cell'][0]},{r['cell'][1]}) | {r['atoms']} | {'yes' if r['spinful'] else 'no'} "
            f"| {r['edges']} | {'x'.join(map(str, r['grid']))} | {cold_wall:.1f} | {cold_cpu:.1f} "
            f"| {t['warm H0']['wall']:.1f} | {t['warm H0']['cpu']:.1f} "
            f"| {1e3 * t['warm H0']['cpu'] / r['atoms']:.0f} | {t['S']['wall']:.1f} "
            f"| {r['peak_rss_GiB']:.2f} | {r['load_before'][0]:.1f} / {r['load_after'][0]:.1f} |"
        )
    lines += [
        "",
        "## Per term, warm (CPU ms per atom; wall s in brackets)",
        "",
        "| cell | SOC | " + " | ".join(TERMS) + " |",
        "| --- | --- | " + " | ".join("---" for _ in TERMS) + " |",
    ]
    for r in records:
        warm = r["terms"]["warm"]
        cells = [
            f"{1e3 * warm[k]['cpu'] / r['atoms']:.1f} ({warm[k]['wall']:.1f})" if k in warm else "-"
            for k in TERMS
        ]
        lines.append(
            f"| ({r['cell'][0]},{r['cell'][1]}) | {'yes' if r['spinful'] else 'no'} | "
            + " | ".join(cells)
            + " |"
        )
    big = [r for r in records if r["cell"] == [7, 6]]
    if big:
        lines += ["", "## The (7,6) cell against issue 31's targets", ""]
        for r in big:
            t = r["times"]
            cpu = t["warm H0"]["cpu"]
            lines.append(
                f"- {'SOC' if r['spinful'] else 'collinear'}: warm H0 {t['warm H0']['wall']:.1f} s "
                f"wall under load {r['load_before'][0]:.1f}, {cpu:.1f} s CPU (about "
                f"{cpu / 2:.0f} s on two idle cores; target {TARGET_S:.0f} s), cold "
                f"{t['cold setup']['wall'] + t['cold H0']['wall']:.1f} s wall; peak RSS "
                f"{r['peak_rss_GiB']:.2f} GiB (target {TARGET_GB:.0f} GB)."
            )
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=["2,1", "4,3", "7,6", "12,11"])
    parser.add_argument("--soc", nargs="*", default=["7,6"], help="cells also run with SOC")
    parser.add_argument("--data", type=Path, default=None, help="OpenMX DATA.PATH")
    parser.add_argument("--out", type=Path, default=RESULTS / "h0_timing")
    parser.add_argument("--append", action="store_true", help="add to the records in --out")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--spinful", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = args.data
    if folder is None:
        from ase_moireh.data import bundled_openmx_data_path

        folder = SHARED if SHARED.is_dir() else bundled_openmx_data_path()
    if args.worker:
        n, m = (int(x) for x in args.worker.split(","))
        print(json.dumps(worker(n, m, args.spinful, folder)))
        return
    cases = [(c, False) for c in args.cells] + [(c, True) for c in args.soc]
    json_path = args.out.with_suffix(".json")
    records = json.loads(json_path.read_text()) if args.append and json_path.exists() else []
    for cell, spinful in cases:
        n, m = (int(x) for x in cell.split(","))
        records.append(run_case(n, m, spinful, folder))
        records.sort(key=lambda r: (r["spinful"], r["atoms"]))
        json_path.write_text(json.dumps(records, indent=1))
        write_markdown(records, args.out.with_suffix(".md"))


if __name__ == "__main__":
    main()
