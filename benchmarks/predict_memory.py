"""Peak memory of the stages before a band solve of predicted tMoTe2 (SOC).

    python benchmarks/predict_memory.py [--cells 7,6 9,8] [--threads 1]

Per cell, in one process, each stage's peak resident memory (VmHWM, reset before the
stage) and time: the bundled SOC ensemble's H(R), its spread and the exact S(R)
(``predict_operators``), then the matrix shift-invert factorises, H(k) - sigma S(k)
(``TightBinding.shifted``). The held results (H, spread, S) stay alive as in a user's
calculator. Writes benchmarks/results/predict_memory.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ase_moireh.build import twisted_bilayer
from ase_moireh.data import bundled_model_path
from ase_moireh.memory import peak_rss, process_rss, reset_peak_rss
from ase_moireh.model.io import load_bundle
from ase_moireh.model.predict import predict_operators
from ase_moireh.tightbinding import TightBinding

GB = 2**30


def stage(fn, *args):
    """(result, seconds, peak GB) of fn(*args) on its own."""
    reset_peak_rss()
    start = time.perf_counter()
    result = fn(*args)
    return result, round(time.perf_counter() - start, 1), round(peak_rss() / GB, 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", nargs="+", default=["7,6", "9,8"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_bundle(bundled_model_path(True))
    out = Path(__file__).parent / "results" / "predict_memory.json"
    rows = json.loads(out.read_text())["rows"] if out.exists() else []
    for cell in args.cells:
        n, m = (int(x) for x in cell.split(","))
        rows = [r for r in rows if (r["n"], r["m"]) != (n, m)]
        atoms = twisted_bilayer(n, m)
        base = round(process_rss() / GB, 2)
        (h, s, spread), predict_s, predict_peak = stage(predict_operators, bundle, atoms)
        held = round(process_rss() / GB, 2)
        tb = TightBinding(h, s)
        a, shifted_s, shifted_peak = stage(tb.shifted, (0.1234, 0.0567, 0.0), -4.0)
        rows.append(
            {
                "n": n,
                "m": m,
                "atoms": len(atoms),
                "dimension": tb.dimension,
                "rss_before_GB": base,
                "predict_seconds": predict_s,
                "predict_peak_GB": predict_peak,
                "held_after_predict_GB": held,
                "operator_GB": round((h.values.nbytes + s.values.nbytes) / GB, 2),
                "spread_GB": round(spread.values.nbytes / GB, 2),
                "shifted_seconds": shifted_s,
                "shifted_peak_GB": shifted_peak,
                "shifted_matrix_GB": round((a.data.nbytes + a.indices.nbytes) / GB, 2),
            }
        )
        print(json.dumps(rows[-1]))
        del h, s, spread, tb, a
        rows.sort(key=lambda r: r["atoms"])
        text = json.dumps({"threads": args.threads, "rows": rows}, indent=1)
        out.write_text(text + "\n")


if __name__ == "__main__":
    main()
