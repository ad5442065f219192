"""Record the local interlayer-distance range in the bundled models' training domains.

    python examples/bundle_domain.py [--corpus data/corpus]

Models trained before the domain recorded it (:attr:`ModelDomain.interlayer`) carry
their training structures' names; their range is measured on those corpus entries'
structures and written into each bundled model file's ``info`` (weights untouched,
checksum renewed: :func:`ase_moireh.model.io.update_info`). The trainer records it
itself for new models.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import ase.io

from ase_moireh.data import bundled_model_path
from ase_moireh.domain import local_interlayer_range
from ase_moireh.model.io import update_info

ROOT = Path(__file__).resolve().parents[1]


def interlayer_range(corpus: Path, names: list[str]) -> list[float]:
    spans = [local_interlayer_range(ase.io.read(corpus / n / "structure.extxyz")) for n in names]
    spans = [s for s in spans if s is not None]
    return [min(lo for lo, _ in spans), max(hi for _, hi in spans)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(ROOT / "data" / "corpus"))
    args = parser.parse_args()
    for soc in (False, True):
        path = bundled_model_path(soc=soc)

        def record(info: dict) -> None:
            domain = info["domain"]
            domain["interlayer"] = interlayer_range(Path(args.corpus), domain["structures"])

        update_info(path, record)
        print(f"{path.name}: interlayer range recorded")


if __name__ == "__main__":
    main()
