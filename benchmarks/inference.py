"""Wall time and peak memory of predicting H (+S) for twisted MoTe2 cells with SOC.

    python benchmarks/inference.py [--model FILE] [--threads 2]

Cells (n, m) = (2,1), (3,2), (4,3), (5,4), (7,6); prints a table with the fitted slope
of log(time) against log(atoms) (1 = O(N)) and writes benchmarks/results/inference.json.
Peak memory is the growth of the process's maximum resident set during each prediction.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch

from ase_moireh.build import twisted_bilayer
from ase_moireh.data import bundled_model_path
from ase_moireh.model.io import load_bundle
from ase_moireh.model.predict import predict_operators

CELLS = [(2, 1), (3, 2), (4, 3), (5, 4), (7, 6)]


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = Path(args.model) if args.model else bundled_model_path(soc=True)
    bundle = load_bundle(path)
    rows = []
    for n, m in CELLS:
        atoms = twisted_bilayer(n, m)
        before = max_rss_mib()
        start = time.perf_counter()
        h, s, _ = predict_operators(bundle, atoms)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "n": n,
                "m": m,
                "atoms": len(atoms),
                "blocks": h.nedges,
                "seconds": round(seconds, 2),
                "peak_rss_growth_MiB": round(max_rss_mib() - before, 1),
                "spinful": h.spinful,
            }
        )
        print(
            f"({n},{m}) {len(atoms):5d} atoms {h.nedges:7d} blocks {seconds:8.2f} s "
            f"+{rows[-1]['peak_rss_growth_MiB']:.0f} MiB"
        )
    atoms_n = np.array([r["atoms"] for r in rows], dtype=float)
    secs = np.array([r["seconds"] for r in rows])
    slope = float(np.polyfit(np.log(atoms_n[1:]), np.log(secs[1:]), 1)[0])
    print(f"log-log slope of time vs atoms (from (3,2) on): {slope:.2f}")
    out = Path(__file__).parent / "results" / "inference.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {"model": path.name, "threads": args.threads, "rows": rows, "slope": slope}, indent=1
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
