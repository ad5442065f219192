"""Train on the dftio-written Si64 peer dataset (ABACUS, shipped with DeePTB); report MAE.

    python benchmarks/si64.py --epochs 1500 [--data ../shared/data/dftio-si64/Si64.0]

A single structure: the reported error is the training error on its blocks (there is no
second Si structure to hold out). Writes benchmarks/results/si64.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ase_moireh.training.trainer import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/dftio-si64/Si64.0")
    parser.add_argument("--epochs", type=int, default=1500)
    parser.add_argument("--work", default="si64-work")
    args = parser.parse_args()
    bundle = train(
        TrainConfig(
            datasets=[args.data],
            out=args.work,
            epochs=args.epochs,
            lr=3e-3,
            lr_patience=60,  # the paper's schedule (as examples/train_bundled.py)
            lr_cooldown=40,
            model={"multiplicity": 8, "cutoff": 7.5},
        )
    )
    report = bundle.info["train"]["parts"]["train"]
    print(json.dumps(report, indent=1))
    out = Path(__file__).parent / "results" / "si64.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"epochs": args.epochs, **report}, indent=1) + "\n")


if __name__ == "__main__":
    main()
