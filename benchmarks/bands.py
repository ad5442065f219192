"""Time and peak memory of nev = 40 levels near the gap of H(k) for predicted tMoTe2 (SOC).

    python benchmarks/bands.py [--cells 2,1 3,2 4,3 5,4 7,6 9,8 12,11] [--threads 2]
                               [--solver auto] [--precision double]

H(R), S(R) from the bundled SOC model (the ensemble spread dropped at once), then
``TightBinding.eigsh``: only H(k) - sigma S(k) is built as a matrix, factorised once
(shift-invert, ARPACK) at one generic k-point, sigma = mid-gap of the (2,1) cell;
``--solver`` superlu or pardiso (auto: PARDISO when MKL is installed). Per cell: the
prediction's and the solve's time, and the process's peak resident memory over the cell
(VmHWM of a process of its own). The paper needed 20 min and 42 GB for its 2.88 deg cell
(82,576 x 82,576). A solve the memory check refuses is recorded with what it would
need. Writes benchmarks/results/bands_<solver>[_single].json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from ase_moireh.build import twisted_bilayer
from ase_moireh.calculator import MoireHCalculator
from ase_moireh.memory import InsufficientMemory, peak_rss, reset_peak_rss
from ase_moireh.model.predict import predict_operators
from ase_moireh.solvers.factorization import PRECISIONS, SOLVERS, mkl_library
from ase_moireh.tightbinding import TightBinding


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--cells", nargs="+", default=["2,1", "3,2", "4,3", "5,4", "7,6", "9,8", "12,11"]
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--nev", type=int, default=40)
    parser.add_argument("--solver", choices=SOLVERS, default="auto")
    parser.add_argument("--precision", choices=PRECISIONS, default="double")
    args = parser.parse_args()
    if len(args.cells) > 1:  # one process per cell: each peak is that cell's own
        for cell in args.cells:
            options = ["--threads", str(args.threads), "--nev", str(args.nev)]
            options += ["--solver", args.solver, "--precision", args.precision]
            subprocess.run([sys.executable, __file__, "--cells", cell, *options], check=True)
        return
    solver = args.solver
    if solver == "auto":
        solver = "pardiso" if mkl_library() is not None else "superlu"
    torch.set_num_threads(args.threads)
    small = twisted_bilayer(2, 1)
    small.calc = MoireHCalculator()
    sigma = small.calc.midgap()
    suffix = "" if args.precision == "double" else f"_{args.precision}"
    out = Path(__file__).parent / "results" / f"bands_{solver}{suffix}.json"
    # rows of cells not rerun now are kept: large cells can be added in runs of their own
    rows = json.loads(out.read_text())["rows"] if out.exists() else []
    rerun = {tuple(int(x) for x in cell.split(",")) for cell in args.cells}
    rows = [r for r in rows if (r["n"], r["m"]) not in rerun]
    for cell in args.cells:
        n, m = (int(x) for x in cell.split(","))
        atoms = twisted_bilayer(n, m)
        reset_peak_rss()
        start = time.perf_counter()
        h, s, spread = predict_operators(small.calc.bundle, atoms)
        del spread  # a benchmark of the bands: the spread is not needed here
        predict_seconds = time.perf_counter() - start
        tb = TightBinding(h, s)
        start = time.perf_counter()
        k = (0.1234, 0.0567, 0.0)
        row = {
            "n": n,
            "m": m,
            "atoms": len(atoms),
            "dimension": tb.dimension,
            "stored_numbers": int(h.values.size),
            "predict_seconds": round(predict_seconds, 2),
        }
        try:
            energies = tb.eigsh(k, sigma, args.nev, solver=solver, precision=args.precision)
            row["levels_eV"] = [round(float(e), 5) for e in energies[:4]]
        except InsufficientMemory as err:  # a fact worth keeping: what it would need
            row["refused"] = str(err)
        row["seconds"] = round(time.perf_counter() - start, 2)
        row["peak_rss_GB"] = round(peak_rss() / 2**30, 2)
        rows.append(row)
        print(
            f"({n},{m}) {len(atoms):5d} atoms  dim {tb.dimension:6d}  predict "
            f"{predict_seconds:7.1f} s  solve {row['seconds']:8.2f} s  peak "
            f"{row['peak_rss_GB']} GB {row.get('refused', '')}"
        )
        del h, s, tb
        rows.sort(key=lambda r: r["atoms"])
        out.parent.mkdir(exist_ok=True)  # written after every cell
        meta = {"solver": solver, "precision": args.precision, "threads": args.threads}
        meta |= {"sigma_eV": sigma, "nev": args.nev}
        text = json.dumps({**meta, "rows": rows}, indent=1)
        out.write_text(text + "\n")


if __name__ == "__main__":
    main()
