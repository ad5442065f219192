"""Shift-invert KPM: the DOS near the gap of a large twisted cell (the 0.88 deg cell).

    python benchmarks/dos.py [--cell 38,37] [--file PATH] [--sigma E] [--moments 400]
                             [--vectors 8] [--window 0.8] [--scratch DIR]

1. The bundled collinear model's H and the exact S of the (N, M) cell, streamed to
   ``DIR/dos_N_M.h5`` in single precision (``MoireHCalculator.write_operators``), unless
   ``--file`` names such a file already.
2. The upper triangles of H(Gamma) - sigma S(Gamma) and S(Gamma) in float32, assembled a
   window of atoms at a time (:func:`ase_moireh.io.pencil.upper_pencil`).
3. One single-precision PARDISO factorisation, refused with PARDISO's own estimate of
   the memory it needs where that exceeds what is available, then Chebyshev moments of
   (H - sigma S)^-1 S (:func:`ase_moireh.solvers.kpm.window_dos`).

sigma: mid-gap of the (4,3) cell with the same model, unless ``--sigma`` (eV). Every
stage's time and the process's peak memory (VmHWM) go to results/dos_N_M.json; the DOS
to results/dos_N_M.png (and .npz).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from ase_moireh.memory import InsufficientMemory, peak_rss

RESULTS = Path(__file__).parent / "results"


def _stage(record: dict, name: str, start: float) -> None:
    record["stages"][name] = {
        "seconds": round(time.perf_counter() - start, 1),
        "peak_rss_GB": round(peak_rss() / 2**30, 2),
    }
    logging.info("%s: %s", name, record["stages"][name])


def _stream(n: int, m: int, path: Path, record: dict) -> None:
    from ase_moireh.build import twisted_bilayer
    from ase_moireh.calculator import MoireHCalculator

    atoms = twisted_bilayer(n, m)
    atoms.calc = MoireHCalculator(soc=False)
    start = time.perf_counter()
    atoms.calc.write_operators(path, precision="single")
    _stage(record, "stream H and S", start)


def _midgap() -> float:
    from ase_moireh.build import twisted_bilayer
    from ase_moireh.calculator import MoireHCalculator

    small = twisted_bilayer(4, 3)
    small.calc = MoireHCalculator(soc=False)
    return float(small.calc.midgap())


def _plot(energies, dos, sigma: float, record: dict, path: Path) -> None:
    """The whole window, and the top 0.15 eV of the valence band where the moire
    bands are, with the expansion's local resolution marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = energies - sigma
    low, high = record["bounds_per_eV"]
    width = np.pi * 0.5 * (high - low) / record["nmoments"]  # in 1/(E - sigma)
    top = x[x < 0][dos[x < 0] > 1e-3 * dos.max()].max()  # the valence band's edge
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    zoom = (x > top - 0.15) & (x < top + 0.03)
    for ax, part in zip(axes, (np.ones_like(x, dtype=bool), zoom), strict=True):
        ax.plot(x[part], dos[part], lw=1)
        ax.set_xlabel(f"E - sigma (eV); sigma = {sigma:.3f} eV, mid-gap")
        ax.set_ylim(bottom=0)
    axes[0].set_ylabel("levels per eV at Gamma (one spin)")
    axes[1].xaxis.set_major_locator(plt.MaxNLocator(5))
    axes[1].set_title(f"valence edge; resolution {1e3 * width * top**2:.1f} meV there", fontsize=9)
    n, m = record["cell"]
    fig.suptitle(
        f"({n},{m}) twisted MoTe2, {record['atoms']:,} atoms, {record['rows']:,} rows: "
        f"shift-invert KPM, {record['nmoments']} moments x {record['nvectors']} vectors",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=150)


def replot(n: int, m: int) -> None:
    """Redraw results/dos_N_M.png from its .npz and .json."""
    record = json.loads((RESULTS / f"dos_{n}_{m}.json").read_text())
    data = np.load(RESULTS / f"dos_{n}_{m}.npz")
    _plot(data["energies"], data["dos"], record["sigma_eV"], record, RESULTS / f"dos_{n}_{m}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="38,37")
    parser.add_argument("--file", type=Path)
    parser.add_argument("--sigma", type=float)
    parser.add_argument("--moments", type=int, default=400)
    parser.add_argument("--vectors", type=int, default=8)
    parser.add_argument("--window", type=float, default=0.8)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp"))
    parser.add_argument("--replot", action="store_true", help="redraw from results only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from ase_moireh.io.pencil import rows_per_atom, upper_pencil
    from ase_moireh.solvers.kpm import hermitian_product, window_dos

    n, m = (int(x) for x in args.cell.split(","))
    if args.replot:
        replot(n, m)
        return
    record: dict = {"cell": [n, m], "model": "bundled collinear", "k": "Gamma", "stages": {}}
    path = args.file or args.scratch / f"dos_{n}_{m}.h5"
    if not path.exists():
        _stream(n, m, path, record)
    record["atoms"] = len(rows_per_atom(path))
    sigma = args.sigma if args.sigma is not None else _midgap()
    record["sigma_eV"] = sigma
    start = time.perf_counter()
    a_up, s_up = upper_pencil(path, (0, 0, 0), sigma, progress=True)
    record["rows"], record["upper_nnz"] = a_up.shape[0], int(a_up.nnz)
    _stage(record, "assemble upper triangles (float32)", start)
    start = time.perf_counter()
    options = {"window": args.window, "nmoments": args.moments, "nvectors": args.vectors}
    try:
        d = window_dos(
            a_up,
            hermitian_product(s_up),
            sigma,
            precision="single",
            upper=True,
            progress=True,
            **options,
        )
    except InsufficientMemory as err:
        record["refused"] = str(err)
        _stage(record, "factorise (refused)", start)
        d = None
    else:
        _stage(record, "factorise and moments", start)
        record.update(options, bounds_per_eV=list(d.bounds))
        record["levels_in_window"] = float(d.integrated()[-1])
        _plot(d.energies, d.dos, sigma, record, RESULTS / f"dos_{n}_{m}.png")
        np.savez_compressed(
            RESULTS / f"dos_{n}_{m}.npz", energies=d.energies, dos=d.dos, moments=d.moments
        )
    out = RESULTS / f"dos_{n}_{m}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))
    (RESULTS / "dos.md").write_text(_markdown())


def _markdown() -> str:
    """results/dos.md: one row per measured cell (every results/dos_N_M.json)."""
    lines = [
        "# Shift-invert KPM near the gap of large twisted cells (`benchmarks/dos.py`)",
        "",
        "Bundled collinear model, exact S, Gamma, single-precision upper triangles of",
        "H - sigma S and S, one single-precision PARDISO factorisation (2 threads), then",
        "Chebyshev moments of (H - sigma S)^-1 S with random-sign vectors (`window_dos`).",
        "Peak memory: the process's VmHWM after each stage.",
        "",
        "| cell | atoms | rows | upper nnz | assemble (s / GB) | factorise + moments (s / GB) "
        "| moments x vectors | outcome |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for path in sorted(RESULTS.glob("dos_*_*.json")):
        r = json.loads(path.read_text())
        stages = list(r["stages"].values())
        solve = stages[-1]
        outcome = r.get("refused") or (
            f"{r['levels_in_window']:.0f} levels within {r['window']} eV of sigma "
            f"(`{path.stem}.png`)"
        )
        shape = f"{r['nmoments']} x {r['nvectors']}" if "nmoments" in r else "-"
        lines.append(
            f"| ({r['cell'][0]},{r['cell'][1]}) | {r['atoms']:,} | {r['rows']:,} | "
            f"{r['upper_nnz']:,} | {stages[-2]['seconds']} / {stages[-2]['peak_rss_GB']} | "
            f"{solve['seconds']} / {solve['peak_rss_GB']} | {shape} | {outcome} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
