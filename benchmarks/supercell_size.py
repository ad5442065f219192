"""Is a 2x2 supercell enough to train on? The bundled collinear model on held-out 2x2 and
3x3 supercells.

    python benchmarks/supercell_size.py [--corpus data/corpus] [--nosoc model.pt]

The corpus's non-twisted cells are 2x2 (24 atoms, side 7.04 A). Within the H range
(7.41 A, twice the 7 Bohr PAO radius) every atom of a 2x2 cell meets its own periodic
image, so its random displacements repeat in its own environment; in a 3x3 cell
(10.56 A) no atom does. If that correlation taught the model something false, it
shows as a larger error on 3x3 cells than on 2x2 cells of the same sampling. Every
entry measured is of split ``holdout`` (``moireh dataset sample shifted --supercell 3
--split holdout``): no training saw it.

Writes ``benchmarks/results/supercell_size.{md,json}``: per entry the per-pair MAE of
H, the largest on-site error, the band errors within 0.3 eV of the gap at Gamma, M
and K (S exact), the share of H blocks that couple an atom to its own image, and the
OpenMX wall time.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
from robustness import describe, evaluate_entry

from ase_moireh.data import bundled_model_path
from ase_moireh.io.corpus import ManifestEntry, load_manifest, read_entry
from ase_moireh.model.io import load_bundle

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def held_out_supercells(corpus: Path) -> dict[int, list[ManifestEntry]]:
    """Converged held-out collinear N x N supercells, by N."""
    out: dict[int, list[ManifestEntry]] = {}
    for e in sorted(load_manifest(corpus).values(), key=lambda e: e.name):
        if e.kind == "shifted" and e.split == "holdout" and not e.soc and e.supercell:
            if e.status == "converged":
                out.setdefault(e.supercell[0], []).append(e)
    return dict(sorted(out.items()))


def self_image_share(edges: np.ndarray) -> float:
    """Share of the H blocks (i, j, R) that couple an atom to its own image (i = j, R != 0)."""
    own = (edges[:, 0] == edges[:, 1]) & edges[:, 2:].any(axis=1)
    return float(own.mean())


def measure(corpus: Path, nosoc: Path) -> dict:
    bundle = load_bundle(nosoc)
    rows = {}
    for n, entries in held_out_supercells(corpus).items():
        for entry in entries:
            logging.info("%s", entry.name)
            ref = read_entry(corpus / entry.name)
            row, _, _ = evaluate_entry(bundle, ref)
            rows[entry.name] = {
                "supercell": n,
                "atoms": entry.n_atoms,
                "noise_sigma_A": entry.noise_sigma,
                "interlayer_A": entry.interlayer,
                "wall_min": (entry.wall_seconds or 0.0) / 60,
                "self_image_share": self_image_share(ref.hamiltonian.edges),
                **row,
            }
    return {"model": describe(nosoc, bundle), "entries": rows}


def write_report(result: dict, filename: Path) -> None:
    rows = result["entries"]
    lines = [
        "# Supercell size: the model on held-out 2x2 and 3x3 cells "
        "(`benchmarks/supercell_size.py`)",
        "",
        f"Collinear model: {result['model']}. It was trained on 2x2 supercells and "
        "twisted (2,1) cells; every entry below is of split `holdout`.",
        "",
        "| entry | atoms | noise sigma (A) | interlayer (A) | own-image blocks | MAE all "
        "(meV) | max on-site (meV) | bands near gap, max (meV) | gap DFT / model (meV) "
        "| OpenMX wall (min) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        b = r["bands"]
        lines.append(
            f"| {name} | {r['atoms']} | {r['noise_sigma_A']:.3f} | {r['interlayer_A']:.3f} | "
            f"{100 * r['self_image_share']:.1f} % | {r['mae_all_meV']:.2f} | "
            f"{r['onsite_max_meV']:.0f} | {b['max_meV']:.1f} | "
            f"{b['gap_reference_meV']:.1f} / {b['gap_predicted_meV']:.1f} | {r['wall_min']:.0f} |"
        )
    lines += ["", "Mean per supercell size:", ""]
    for n in sorted({r["supercell"] for r in rows.values()}):
        sel = [r for r in rows.values() if r["supercell"] == n]
        mae = np.mean([r["mae_all_meV"] for r in sel])
        bands = np.mean([r["bands"]["max_meV"] for r in sel])
        lines.append(
            f"- {n}x{n} ({len(sel)} {'entry' if len(sel) == 1 else 'entries'}): MAE "
            f"{mae:.2f} meV, band error near the gap "
            f"{bands:.1f} meV (mean of the per-entry maxima)."
        )
    filename.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "corpus")
    parser.add_argument("--nosoc", type=Path, default=bundled_model_path(False))
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = measure(args.corpus, args.nosoc)
    if len({r["supercell"] for r in result["entries"].values()}) < 2:
        raise SystemExit(
            f"{args.corpus}: held-out collinear supercells of one size only; sample a "
            "3x3 with 'moireh dataset sample shifted --supercell 3 --split holdout' and run it"
        )
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "supercell_size.json").write_text(json.dumps(result, indent=1) + "\n")
    write_report(result, args.results / "supercell_size.md")
    print((args.results / "supercell_size.md").read_text())


if __name__ == "__main__":
    main()
