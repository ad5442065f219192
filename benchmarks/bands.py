"""Time and peak memory of nev = 40 levels near the gap of H(k) for predicted tMoTe2 (SOC).

    python benchmarks/bands.py [--cells 2,1 3,2 4,3 5,4 7,6] [--threads 2] [--solver auto]

H(k), S(k) from the bundled SOC model; shift-invert (factorisation + ARPACK) at one
generic k-point, sigma = mid-gap of the (2,1) cell; ``--solver`` superlu or pardiso
(auto: PARDISO when MKL is installed). The paper needed 20 min and 42 GB for its
2.88 deg cell (82,576 x 82,576). Writes benchmarks/results/bands_<solver>.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

from ase_moireh.build import twisted_bilayer
from ase_moireh.calculator import MoireHCalculator
from ase_moireh.factorize import SOLVERS, mkl_library
from ase_moireh.solve import shift_invert_eigh


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", nargs="+", default=["2,1", "3,2", "4,3", "5,4", "7,6"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--nev", type=int, default=40)
    parser.add_argument("--solver", choices=SOLVERS, default="auto")
    args = parser.parse_args()
    solver = args.solver
    if solver == "auto":
        solver = "pardiso" if mkl_library() is not None else "superlu"
    torch.set_num_threads(args.threads)
    small = twisted_bilayer(2, 1)
    small.calc = MoireHCalculator()
    sigma = small.calc.midgap()
    out = Path(__file__).parent / "results" / f"bands_{solver}.json"
    # rows of cells not rerun now are kept: large cells can be added in runs of their own
    rows = json.loads(out.read_text())["rows"] if out.exists() else []
    rerun = {tuple(int(x) for x in cell.split(",")) for cell in args.cells}
    rows = [r for r in rows if (r["n"], r["m"]) not in rerun]
    for cell in args.cells:
        n, m = (int(x) for x in cell.split(","))
        atoms = twisted_bilayer(n, m)
        atoms.calc = MoireHCalculator(model=small.calc.bundle)
        hk, sk = atoms.calc.get_tight_binding().pair((0.1234, 0.0567, 0.0))
        before = max_rss_mib()
        start = time.perf_counter()
        energies = shift_invert_eigh(hk, sk, sigma, args.nev, solver=solver)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "n": n,
                "m": m,
                "atoms": len(atoms),
                "dimension": hk.shape[0],
                "nnz": int(hk.nnz),
                "seconds": round(seconds, 2),
                "peak_rss_growth_MiB": round(max_rss_mib() - before, 1),
                "levels_eV": [round(float(e), 5) for e in energies[:4]],
            }
        )
        print(
            f"({n},{m}) {len(atoms):5d} atoms  dim {hk.shape[0]:6d}  nnz {hk.nnz:10d}  "
            f"{seconds:8.2f} s  +{rows[-1]['peak_rss_growth_MiB']:.0f} MiB"
        )
        rows.sort(key=lambda r: r["atoms"])
        out.parent.mkdir(exist_ok=True)  # written after every cell
        meta = {"solver": solver, "threads": args.threads, "sigma_eV": sigma, "nev": args.nev}
        text = json.dumps({**meta, "rows": rows}, indent=1)
        out.write_text(text + "\n")


if __name__ == "__main__":
    main()
