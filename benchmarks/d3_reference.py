"""OpenMX PBE runs of the relaxation reference set (:mod:`ase_moireh.workflows.d3_reference`).

    python benchmarks/d3_reference.py stackings [--np 2] [--openmx PATH]
    python benchmarks/d3_reference.py perturbed [--corpus data/corpus]

Writes one folder per structure under ``data/d3_reference/<set>/`` and runs OpenMX there
(resumable: converged folders are skipped, a killed run restarts), then collects every
converged run's PBE energy and forces into ``benchmarks/results/d3_reference_<set>.json``.
The D3 part is added where the potentials are compared. Only ``openmx.out``,
``openmx_in.dat``, ``structure.extxyz``, ``meta.json`` and ``run.json`` of a folder are
kept in the repo (``.gitignore``); the perturbed set's ``.scfout`` are corpus material.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ase_moireh.files import atomic_file
from ase_moireh.workflows.d3_reference import (
    collect,
    perturbed_structures,
    stacking_structures,
    write_reference_folders,
)
from ase_moireh.workflows.openmx_runner import find_openmx, openmx_command, run_folders

ROOT = Path(__file__).resolve().parents[1]
SETS = {"stackings": (stacking_structures, False), "perturbed": (perturbed_structures, True)}


def add_to_corpus(folders: list[Path], corpus: Path) -> None:
    """Corpus entries (H, eigenvalues, input, structure; manifest row) and native H0 of
    the converged runs that wrote a ``.scfout``: the perturbed set is corpus material.
    H0 from the bundled PAO/VPS files, as every stored ``h0.h5``."""
    from ase_moireh.io.corpus import is_entry
    from ase_moireh.workflows.native_h0 import native_h0s
    from ase_moireh.workflows.openmx_runner import RunRecord, convert_to_corpus

    new = [f for f in folders if any(f.glob("*.scfout")) and not is_entry(corpus / f.name)]
    for folder in new:
        print(f"corpus entry {convert_to_corpus(folder, RunRecord.read(folder), corpus)}")
    failed = native_h0s(corpus, [f.name for f in folders if any(f.glob("*.scfout"))])
    if failed:
        raise SystemExit(f"native H0 failed: {failed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set", choices=sorted(SETS))
    parser.add_argument("--np", type=int, default=2, help="MPI processes")
    parser.add_argument("--openmx", default=None, help="OpenMX executable (default: on PATH)")
    parser.add_argument(
        "--data-path",
        default=str(ROOT.parent / "shared" / "data" / "openmx" / "DFT_DATA"),
        help="OpenMX DATA.PATH with PAO/ and VPS/ (uncompressed; default: the shared runs')",
    )
    parser.add_argument("--collect-only", action="store_true")
    parser.add_argument(
        "--corpus",
        default=None,
        help="also make every converged run with a .scfout a corpus entry there (with its "
        "native H0); entries already there are kept",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    build, hs_fileout = SETS[args.set]
    root = ROOT / "data" / "d3_reference" / args.set
    data_path = str(Path(args.data_path).resolve())
    folders = write_reference_folders(root, build(), data_path, hs_fileout)
    if not args.collect_only:
        command = openmx_command(find_openmx(args.openmx), args.np)
        run_folders(folders, command, seed_from_twin=False)
    results = collect(folders)
    if args.corpus:
        add_to_corpus([f for f in folders if f.name in results], Path(args.corpus))
    out = ROOT / "benchmarks" / "results" / f"d3_reference_{args.set}.json"
    with atomic_file(out) as tmp:
        tmp.write_text(json.dumps(results, indent=1) + "\n")
    print(f"{len(results)} of {len(folders)} runs converged -> {out}")


if __name__ == "__main__":
    main()
