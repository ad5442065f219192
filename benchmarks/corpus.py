"""The DFT corpus in data/corpus: what it holds, what it cost, and that it is lossless.

    python benchmarks/corpus.py [--corpus data/corpus] [--check 3]

Writes benchmarks/results/corpus.md: counts per kind and split, SCF steps and CPU wall
time per kind (1-2 MPI processes on this 2-core machine), the convergence and electron
count of every entry, the corpus size, and for ``--check`` entries per kind the
eigenvalues of the stored H with the exact S against those OpenMX printed.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from ase_moireh.io.corpus import load_manifest, read_entry
from ase_moireh.overlap import bundled_overlap
from ase_moireh.tightbinding import TightBinding

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def label(entry) -> str:
    """Kind and cell: a supercell's N x M, a twisted cell's (n,m), else the atom count
    (a displaced copy records neither)."""
    if entry.supercell:
        size = f"{entry.supercell[0]}x{entry.supercell[1]}"
    elif entry.twist:
        size = f"({entry.twist[0]},{entry.twist[1]})"
    else:
        size = f"{entry.n_atoms} atoms"
    return f"{entry.kind} {size}{' SOC' if entry.soc else ''}"


def eigenvalue_check(folder: Path) -> tuple[float, int, int]:
    """(max |dE| meV, k-points, bands) of stored H + exact S against printed values."""
    entry = read_entry(folder)
    s = bundled_overlap().operator(entry.atoms, entry.hamiltonian.edges)
    kpts = np.array([k for k, _ in entry.reference_eigenvalues])
    printed = np.array([e for _, e in entry.reference_eigenvalues])
    ours = TightBinding(entry.hamiltonian, s).eigenvalues(kpts)[:, : printed.shape[1]]
    return float(np.abs(ours - printed).max() * 1e3), len(kpts), printed.shape[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", default=str(ROOT / "data" / "corpus"))
    parser.add_argument("--check", type=int, default=1, help="entries checked per kind")
    args = parser.parse_args()
    corpus = Path(args.corpus)
    manifest = load_manifest(corpus)
    groups = defaultdict(list)
    for entry in manifest.values():
        groups[label(entry)].append(entry)
    lines = [
        "# DFT corpus (`benchmarks/corpus.py`)",
        "",
        "| kind | atoms | entries | train / val / test / holdout | SCF steps (median) "
        "| wall min (median, max) | max NormRD | electrons right |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    checks = []
    for name, entries in sorted(groups.items()):
        done = [e for e in entries if e.status == "converged"]
        splits = [
            sum(e.split == s for e in done) for s in ("train", "validation", "test", "holdout")
        ]
        steps = [e.scf_steps for e in done if e.scf_steps]
        minutes = [e.wall_seconds / 60 for e in done if e.wall_seconds]
        norm = max((e.norm_rd for e in done if e.norm_rd is not None), default=float("nan"))
        right = sum(e.electrons_right for e in done)
        lines.append(
            f"| {name} | {entries[0].n_atoms} | {len(done)} | {' / '.join(map(str, splits))} "
            f"| {np.median(steps):.0f} | {np.median(minutes):.1f}, {max(minutes):.1f} "
            f"| {norm:.1e} | {right} of {len(done)} |"
        )
        for entry in done[: args.check]:
            checks.append((entry.name, *eigenvalue_check(corpus / entry.name)))
            print(checks[-1], flush=True)
    size = sum(p.stat().st_size for p in corpus.rglob("*") if p.is_file()) / 1e6
    lines += [
        "",
        f"Corpus size: {size:.1f} MB ({len(manifest)} entries). Wall times are those of "
        "1-2 MPI processes on this 2-core machine, often shared with other work (training).",
        "",
        "## Lossless for our use",
        "",
        "Eigenvalues of the stored H (one triangle, single precision) with the exact S, "
        "against those OpenMX printed, at every printed k-point and band:",
        "",
        "| entry | k-points | bands | max \\|dE\\| (meV) |",
        "| --- | --- | --- | --- |",
        *(f"| {n} | {k} | {b} | {d:.4f} |" for n, d, k, b in checks),
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "corpus.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
