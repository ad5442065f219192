"""Which blocks make a model's band errors near the gap: first-order attribution.

    python benchmarks/error_anatomy.py --split validation --label r12 \
        --nosoc W/install/mote2_nosoc.pt

For every collinear entry of the split, the model's H (H0 + dH for a dH model) is
compared with DFT's. Each DFT level (k, n) within 0.3 eV of the gap (at Gamma, M, K, as
in ``robustness.py``) moves to first order by <c_n| H_model(k) - H_DFT(k) |c_n>, with c_n
DFT's S-normalised eigenvector and S exact in both. That sum splits exactly over classes
of blocks (on-site valence shells, other on-site elements, intra- and interlayer
hopping), so each class's share of the error is a number, not a guess. The exact error
beside the first-order total shows how linear the regime is.

Per class: the root mean square over the near-gap levels of its contribution, and its
mean (a shift common to all levels). Writes ``error_anatomy_<label>.json`` and appends
a table to ``error_anatomy_<label>.md`` in ``--results``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import scipy.linalg as sla
from robustness import entry_h0, predicted, split_entries
from tqdm import tqdm

from ase_moireh.block_operator import BlockOperator
from ase_moireh.calculator import MoireHCalculator
from ase_moireh.data import bundled_model_path
from ase_moireh.domain import layer_labels
from ase_moireh.io.corpus import read_entry
from ase_moireh.kpoints import extrema_kpoints
from ase_moireh.model.io import load_bundle

ROOT = Path(__file__).resolve().parents[1]
#: the band-edge shells of MoTe2 (Mo 4d, Te 5p; ``error_anatomy.md``, round 9)
VALENCE_SHELLS = {"Mo": "d1", "Te": "p1"}
WINDOW = 0.3  # eV, as robustness.band_errors_near_gap
CLASSES = (
    "on-site valence diagonal",
    "on-site valence off-diagonal",
    "on-site other",
    "intralayer Mo-Mo",
    "intralayer Mo-Te",
    "intralayer Te-Te",
    "interlayer",
)


def difference(pred: BlockOperator, ref: BlockOperator) -> BlockOperator:
    """pred - ref on the union of their edges (a block missing on one side is zero)."""
    where = pred.find(ref.edges)
    blocks = [(pred.block(int(f)) if f >= 0 else 0.0) - ref.block(e) for e, f in enumerate(where)]
    extra = np.setdiff1d(np.arange(pred.nedges), where[where >= 0])
    blocks += [pred.block(int(e)) for e in extra]
    edges = np.vstack([ref.edges, pred.edges[extra]])
    return BlockOperator.from_blocks(ref.numbers, ref.basis, edges, blocks, ref.spinful)


def valence_mask(symbol: str, basis) -> np.ndarray:
    """Per spatial orbital of a species: is it in its valence shell?"""
    species = basis[symbol]
    labels = species.shell_labels()
    shell = species.orbital_shells()
    wanted = labels.index(VALENCE_SHELLS[symbol]) if symbol in VALENCE_SHELLS else -1
    return shell == wanted


def class_masks(delta: BlockOperator, symbols: list[str], layer: np.ndarray) -> dict:
    """Per class, a mask over ``delta.values`` of the numbers that belong to it."""
    masks = {c: np.zeros(delta.values.size, dtype=bool) for c in CLASSES}
    offsets = delta.offsets
    for e, (i, j, *r) in enumerate(delta.edges):
        sl = slice(offsets[e], offsets[e + 1])
        si, sj = symbols[i], symbols[j]
        if i == j and not any(r):
            v = valence_mask(si, delta.basis)
            inside = np.outer(v, v)
            diag = np.eye(len(v), dtype=bool) & inside
            masks["on-site valence diagonal"][sl] = diag.ravel()
            masks["on-site valence off-diagonal"][sl] = (inside & ~diag).ravel()
            masks["on-site other"][sl] = (~inside).ravel()
        elif layer[i] != layer[j]:
            masks["interlayer"][sl] = True
        else:
            masks["intralayer " + "-".join(sorted((si, sj), key="MoTe".index))][sl] = True
    if not np.array_equal(sum(m.astype(int) for m in masks.values()), np.ones(delta.values.size)):
        raise AssertionError("the block classes must split every number exactly once")
    return masks


def masked(op: BlockOperator, mask: np.ndarray) -> BlockOperator:
    return BlockOperator(op.numbers, op.basis, op.edges, np.where(mask, op.values, 0.0))


def attribute(entry, bundle) -> dict:
    """Exact and first-order errors of the near-gap levels, and each class's share."""
    dft = read_entry(entry)
    calc = MoireHCalculator(dft=dft, domain_check=False)
    tb, nocc = calc.get_tight_binding(dft.atoms), calc.occupied_bands(dft.atoms)
    h_pred, _, _ = predicted(bundle, dft.atoms, entry_h0(entry))
    delta = difference(h_pred, tb.H)
    masks = class_masks(delta, dft.atoms.get_chemical_symbols(), layer_labels(dft.atoms))
    parts = {c: masked(delta, m) for c, m in masks.items()}
    levels, exact, first, shares = [], [], [], {c: [] for c in CLASSES}
    for k in extrema_kpoints(dft.atoms.cell):
        s = tb.S.bloch(k).toarray()
        e_ref, c = sla.eigh(tb.H.bloch(k).toarray(), s)
        e_pred = sla.eigh(h_pred.bloch(k).toarray(), s, eigvals_only=True)
        levels.append(e_ref)
        exact.append(e_pred - e_ref)
        first.append(_expectation(delta, k, c))
        for name, op in parts.items():
            shares[name].append(_expectation(op, k, c))
    levels = np.array(levels)
    vbm, cbm = levels[:, nocc - 1].max(), levels[:, nocc].min()
    near = (levels > vbm - WINDOW) & (levels < cbm + WINDOW)
    valence = near & (np.arange(levels.shape[1]) < nocc)
    exact, first = np.array(exact)[near] * 1e3, np.array(first)[near] * 1e3
    return {
        "levels": int(near.sum()),
        "exact_max_meV": float(np.abs(exact).max()),
        "first_order_max_meV": float(np.abs(first).max()),
        "first_order_residual_max_meV": float(np.abs(exact - first).max()),
        "classes": {
            name: _class_row(np.array(v) * 1e3, near, valence) for name, v in shares.items()
        },
    }


def _expectation(op: BlockOperator, k, vectors: np.ndarray) -> np.ndarray:
    """<c_n| op(k) |c_n> for every column n of ``vectors`` (real: op(k) is Hermitian)."""
    return np.einsum("in,in->n", vectors.conj(), op.bloch(k) @ vectors).real


def _class_row(contrib: np.ndarray, near: np.ndarray, valence: np.ndarray) -> dict:
    conduction = near & ~valence
    return {
        "rms_meV": float(np.sqrt(np.mean(contrib[near] ** 2))),
        "max_meV": float(np.abs(contrib[near]).max()),
        "mean_valence_meV": float(contrib[valence].mean()),
        "mean_conduction_meV": float(contrib[conduction].mean()),
    }


def write_table(results: dict, filename: Path, label: str, split: str) -> None:
    lines = [
        f"# Error anatomy ({label}, collinear {split} entries)",
        "",
        "First-order share of each block class in the errors of levels within 0.3 eV of",
        "the gap (Gamma, M, K): root mean square over levels / mean over valence levels /",
        "mean over conduction levels, meV (`benchmarks/error_anatomy.py`). The gap error",
        "from a class is about its conduction mean minus its valence mean.",
        "",
        "| entry | exact max | 1st-order max | " + " | ".join(CLASSES) + " |",
        "| --- | --- | --- |" + " --- |" * len(CLASSES),
    ]
    for name, row in results.items():
        cells = [
            f"{c['rms_meV']:.1f} / {c['mean_valence_meV']:+.1f} / {c['mean_conduction_meV']:+.1f}"
            for c in (row["classes"][k] for k in CLASSES)
        ]
        lines.append(
            f"| {name} | {row['exact_max_meV']:.1f} | {row['first_order_max_meV']:.1f} | "
            + " | ".join(cells)
            + " |"
        )
    filename.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="validation", choices=("validation", "holdout"))
    parser.add_argument("--label", required=True)
    parser.add_argument("--nosoc", type=Path, default=bundled_model_path(False))
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "corpus")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    bundle = load_bundle(args.nosoc)
    entries = [e for e in split_entries(args.corpus, args.split) if not e.soc]
    results = {
        e.name: attribute(args.corpus / e.name, bundle)
        for e in tqdm(entries, desc="anatomy", unit="entry")
    }
    stem = f"error_anatomy_{args.label}"
    tmp = args.results / f".{stem}.json.tmp"
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(args.results / f"{stem}.json")
    write_table(results, args.results / f"{stem}.md", args.label, args.split)
    print((args.results / f"{stem}.md").read_text())


if __name__ == "__main__":
    main()
