"""Does a model follow each atom's own on-site energy, or only its kind's average?

    python benchmarks/onsite_response.py --split train --label r13 [--nosoc MODEL]

The near-gap band errors are led by the valence shells' on-site energies (Mo 4d, Te 5p;
``error_anatomy.py``). Here each collinear non-twisted entry's atoms are grouped by
(layer, species, and for Te the side: facing the other layer or the vacuum); within a
group the atoms are alike up to the entry's random displacements. Per atom the valence
shell's on-site diagonal mean of dH = H - H0 (DFT) and of the model's dH are taken
relative to their group's mean, so that what is left is each atom's own response to its
displacement. Reported per species and side: the spread (std) of DFT's and of the
model's deviations, their correlation, the model's rms error on them, and, as a floor a
model should beat, the rms residual of a least-squares fit, on the same atoms, to two
local descriptors: the mean bond to the atom's nearest neighbours (of the other species)
and their mean height difference |z_i - z_j| (for Te: its height above its three Mo).
Writes ``onsite_response_<label>.{json,md,png}`` in
``--results``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
from ase.neighborlist import neighbor_list
from error_anatomy import valence_mask
from robustness import entry_h0, predicted, split_entries
from tqdm import tqdm

from ase_moireh.data import bundled_model_path
from ase_moireh.domain import layer_labels
from ase_moireh.io.corpus import read_entry
from ase_moireh.model.io import load_bundle
from ase_moireh.plotting import new_figure, save_figure

ROOT = Path(__file__).resolve().parents[1]
BOND = 3.2  # A: Mo-Te nearest neighbours (2.7 A) in, second neighbours (3.5 A) out


def shell_energy(op, i: int, symbol: str) -> float:
    """Mean diagonal element (eV) of atom i's valence shell in its on-site block."""
    block = op.block(int(op.find(np.array([[i, i, 0, 0, 0]]))[0]))
    return float(np.diag(block)[valence_mask(symbol, op.basis)].mean())


def atom_rows(entry: Path, bundle) -> list[dict]:
    """Per atom of one entry: its group, DFT's and the model's valence on-site dH
    (meV) and the two descriptors (A), all relative to the group's mean."""
    dft = read_entry(entry)
    h0 = entry_h0(entry)
    h_model, _, _ = predicted(bundle, dft.atoms, h0)
    atoms, h_dft = dft.atoms, dft.hamiltonian
    symbols = atoms.get_chemical_symbols()
    layer, z = layer_labels(atoms), atoms.positions[:, 2]
    outward = np.where(layer == layer.min(), -1.0, 1.0)  # bottom layer: -z
    is_mo = np.array(symbols) == "Mo"
    mo_plane = {lv: z[(layer == lv) & is_mo].mean() for lv in set(layer.tolist())}
    first, vectors = neighbor_list("iD", atoms, BOND)
    rows = []
    for i, sym in enumerate(symbols):
        bonds = vectors[first == i]
        above = (z[i] - mo_plane[layer[i]]) * outward[i] > 0
        side = "" if sym == "Mo" else (" outer" if above else " inner")
        ref = shell_energy(h0, i, sym)
        rows.append(
            {
                "group": (int(layer[i]), sym + side),
                "dft": (shell_energy(h_dft, i, sym) - ref) * 1e3,
                "model": (shell_energy(h_model, i, sym) - ref) * 1e3,
                "height": float(np.abs(bonds[:, 2]).mean()) if len(bonds) else 0.0,
                "bond": float(np.linalg.norm(bonds, axis=1).mean()) if len(bonds) else 0.0,
            }
        )
    for group in {r["group"] for r in rows}:
        members = [r for r in rows if r["group"] == group]
        for key in ("dft", "model", "height", "bond"):
            mean = np.mean([r[key] for r in members])
            for r in members:
                r[key] -= mean
    return rows


def summary(rows: list[dict]) -> dict:
    """Per kind (species and side): spreads, correlation, model error, linear floor."""
    out = {}
    for kind in sorted({r["group"][1] for r in rows}):
        sel = [r for r in rows if r["group"][1] == kind]
        dft = np.array([r["dft"] for r in sel])
        model = np.array([r["model"] for r in sel])
        x = np.c_[[r["height"] for r in sel], [r["bond"] for r in sel], np.ones(len(sel))]
        coef = np.linalg.lstsq(x, dft, rcond=None)[0]
        out[kind] = {
            "atoms": len(sel),
            "dft_std_meV": float(dft.std()),
            "model_std_meV": float(model.std()),
            "correlation": float(np.corrcoef(dft, model)[0, 1]),
            "model_rms_error_meV": float(np.sqrt(np.mean((model - dft) ** 2))),
            "linear_floor_rms_meV": float(np.sqrt(np.mean((x @ coef - dft) ** 2))),
        }
    return out


def write(results: dict, rows: list[dict], folder: Path, label: str, split: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"onsite_response_{label}.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [
        f"# Per-atom valence on-site dH, model against DFT ({label}, {split} split)",
        "",
        "Deviations from the group's mean (same layer, species, side), meV; the linear floor",
        "is a least-squares line in the atom's height and mean bond (`onsite_response.py`).",
        "",
        "| kind | atoms | DFT spread | model spread | correlation | model rms error "
        "| linear floor rms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for kind, s in results["kinds"].items():
        lines.append(
            f"| {kind} | {s['atoms']} | {s['dft_std_meV']:.1f} | {s['model_std_meV']:.1f} "
            f"| {s['correlation']:.2f} | {s['model_rms_error_meV']:.1f} "
            f"| {s['linear_floor_rms_meV']:.1f} |"
        )
    (folder / f"onsite_response_{label}.md").write_text("\n".join(lines) + "\n")
    fig, axes = new_figure(width=4.5, height=4.5)
    ax = axes[0, 0]
    for kind in results["kinds"]:
        sel = [r for r in rows if r["group"][1] == kind]
        ax.scatter([r["dft"] for r in sel], [r["model"] for r in sel], s=6, label=kind)
    lim = max(abs(r["dft"]) for r in rows)
    ax.plot([-lim, lim], [-lim, lim], color="grey", lw=0.8)
    ax.set_xlabel("DFT dH on-site, deviation from group mean (meV)")
    ax.set_ylabel("model (meV)")
    ax.set_title(f"valence on-site response, {label} ({split})")
    ax.legend(fontsize=7)
    save_figure(fig, folder / f"onsite_response_{label}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", default="validation")
    parser.add_argument("--label", required=True)
    parser.add_argument("--nosoc", type=Path, help="collinear model (default: bundled)")
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "corpus")
    parser.add_argument("--max-entries", type=int, help="the first N entries only")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bundle = load_bundle(args.nosoc or bundled_model_path(False))
    entries = [
        e
        for e in split_entries(args.corpus, args.split)
        if not e.soc and e.kind == "shifted" and e.name.startswith("shift2x2")
    ][: args.max_entries]
    rows = []
    for e in tqdm(entries, desc="entries", unit="entry"):
        rows += atom_rows(args.corpus / e.name, bundle)
    results = {"split": args.split, "entries": [e.name for e in entries], "kinds": summary(rows)}
    write(results, rows, args.results, args.label, args.split)
    print((args.results / f"onsite_response_{args.label}.md").read_text())


if __name__ == "__main__":
    main()
