"""Write the OpenMX input of a corpus structure with every atom moved by 0.01 A noise.

With the original entry, its DFT run is the reference pair of the smoothness check in
``benchmarks/robustness.py``: how much DFT's on-site blocks change under a tiny
displacement, beside how much a model's change.

    python examples/displaced_pair.py data/corpus/shift2x2_009 -o runs/displaced2x2_009
    moireh dataset run runs/displaced2x2_009 --np 2 --corpus data/corpus
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import ase.io
import numpy as np

from ase_moireh.build.generate import write_structure_folder

SIGMA = 0.01  # A, per Cartesian component, as in the sensitivity finding
SEED = 2026


def displaced(entry: Path, sigma: float = SIGMA, seed: int = SEED):
    atoms = ase.io.read(entry / "structure.extxyz")
    rng = np.random.default_rng(seed)
    atoms.positions += rng.normal(0.0, sigma, atoms.positions.shape)
    return atoms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("entry", type=Path, help="corpus entry or run folder")
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--data-path", default="../DFT_DATA")
    args = parser.parse_args()
    base = json.loads((args.entry / "meta.json").read_text())
    meta = {
        key: base[key]
        for key in ("kind", "material", "stacking", "supercell", "twist_nm", "shift")
        if key in base
    }
    meta.update(
        kind="displaced",
        base=args.entry.name,
        noise_sigma=SIGMA,
        seed=SEED,
        rng_entropy=[SEED],
        interlayer_actual=base.get("interlayer_actual", 0.0),
        split="holdout",
    )
    atoms = displaced(args.entry)
    write_structure_folder(
        args.out, atoms, bool(base["soc"]), meta, kgrid=base["kgrid"], data_path=args.data_path
    )
    print(f"wrote {args.out} ({len(atoms)} atoms, sigma {SIGMA} A, from {args.entry})")


if __name__ == "__main__":
    main()
