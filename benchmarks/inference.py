"""Wall time and peak memory of predicting H (+S) for twisted MoTe2 cells with SOC.

    python benchmarks/inference.py [--model FILE] [--threads 2] [--out NAME]

Cells (n, m) = (2,1), (3,2), (4,3), (5,4), (7,6); prints a table with the fitted slope
of log(time) against log(atoms) (1 = O(N)) and writes benchmarks/results/<NAME>.json
(default inference.json). Peak memory is the growth of the process's maximum resident
set during each prediction. The first prediction is the cold one (the model's and, for
a dH model, the H0 builder's set-up included); every cell is then predicted again,
warm. For a dH model the warm time is split into the native H0 and the network's part.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch

from ase_moireh.build import twisted_bilayer
from ase_moireh.data import bundled_model_path
from ase_moireh.model.io import load_bundle
from ase_moireh.model.predict import predict_operators, residual_h0
from ase_moireh.model.residual import predicts_residual

CELLS = [(2, 1), (3, 2), (4, 3), (5, 4), (7, 6)]


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="inference", help="results/<OUT>.json")
    parser.add_argument(
        "--cells", nargs="+", default=[f"{n},{m}" for n, m in CELLS],
        help="n,m of each cell; the first one's prediction is the cold one",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = Path(args.model) if args.model else bundled_model_path(soc=True)
    start = time.perf_counter()
    bundle = load_bundle(path)
    load_seconds = time.perf_counter() - start
    rows = []
    cells = [tuple(int(x) for x in c.split(",")) for c in args.cells]
    for index, (n, m) in enumerate(cells):
        atoms = twisted_bilayer(n, m)
        before = max_rss_mib()
        start = time.perf_counter()
        h, s, _ = predict_operators(bundle, atoms)
        seconds = time.perf_counter() - start
        row = {
            "n": n,
            "m": m,
            "atoms": len(atoms),
            "blocks": h.nedges,
            "seconds": round(seconds, 2),
            "peak_rss_growth_MiB": round(max_rss_mib() - before, 1),
            "spinful": h.spinful,
        }
        del h, s
        row |= warm(bundle, atoms)
        if index == 0:
            row["cold_seconds"] = round(seconds + load_seconds, 2)
        rows.append(row)
        print(
            f"({n},{m}) {len(atoms):5d} atoms {row['blocks']:7d} blocks {seconds:8.2f} s, "
            f"warm {row['warm_seconds']:8.2f} s (H0 {row.get('h0_seconds', 0):.2f} s) "
            f"+{row['peak_rss_growth_MiB']:.0f} MiB"
        )
    atoms_n = np.array([r["atoms"] for r in rows], dtype=float)
    secs = np.array([r["seconds"] for r in rows])
    slope = None
    if len(rows) > 2:
        slope = float(np.polyfit(np.log(atoms_n[1:]), np.log(secs[1:]), 1)[0])
        print(f"log-log slope of time vs atoms (from the second cell on): {slope:.2f}")
    out = Path(__file__).parent / "results" / f"{args.out}.json"
    out.parent.mkdir(exist_ok=True)
    record = {"model": path.name, "threads": args.threads, "rows": rows, "slope": slope}
    record |= {"target": bundle.info.get("target", {}).get("kind", "H"), "load": os.getloadavg()}
    out.write_text(json.dumps(record, indent=1) + "\n")


def warm(bundle, atoms) -> dict:
    """Seconds of a second prediction of ``atoms``; a dH model's split into its native
    H0 and the rest (network, H0 + dH, exact S)."""
    start = time.perf_counter()
    if not predicts_residual(bundle.info):
        predict_operators(bundle, atoms)
        return {"warm_seconds": round(time.perf_counter() - start, 2)}
    h0 = residual_h0(bundle, atoms)
    h0_seconds = time.perf_counter() - start
    predict_operators(bundle, atoms, h0=h0)
    total = time.perf_counter() - start
    return {"warm_seconds": round(total, 2), "h0_seconds": round(h0_seconds, 2)}


if __name__ == "__main__":
    main()
