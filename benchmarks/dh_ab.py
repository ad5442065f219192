"""A/B: learning H against learning dH = H - H0, same recipe, same CPU, on validation.

    python benchmarks/dh_ab.py --train 4 8 16 --epochs 60 --work dh-ab

For each training-set size N (the first N non-twisted collinear training entries of the
corpus that have OpenMX's zeroth-step H0, ``moireh dataset h0``) it trains one model on
H and one on dH with the same configuration, seed and epochs (so the same graphs and
nearly the same CPU time), then measures both on every non-twisted collinear validation
entry that has an H0: per-pair MAE of H, the largest on-site element error, band errors
within 0.3 eV of the gap and the gap (H0 + dH for the dH model). Training resumes from
its checkpoints when rerun. Writes ``benchmarks/results/dh_ab.{md,json}`` and the learning
curve ``dh_learning_curve.png``: validation error against N, for H and for dH, which
tells whether more DFT data or more training is the better use of CPU hours.

Nothing here sees a test or holdout entry.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from ase_moireh.io.corpus import H0_OPENMX, load_manifest, read_entry, read_hamiltonian
from ase_moireh.io.dataset import write_dftio
from ase_moireh.model.residual import residual_structure
from ase_moireh.overlap import with_overlap
from ase_moireh.plotting import new_figure, save_figure
from ase_moireh.training.trainer import TrainConfig, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from robustness import entry_h0, evaluate_entry  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
#: the model sizes compared (ModelConfig fields), smallest of the recipe's scan first
SIZES = {
    "m8-L2": {"multiplicity": 8, "num_layers": 2},
    "m16-L3": {"multiplicity": 16, "num_layers": 3},
}


def with_h0(corpus: Path, split: str) -> list[Path]:
    """Non-twisted collinear entries of a split that have H and H0, by name."""
    return sorted(
        corpus / e.name
        for e in load_manifest(corpus).values()
        if e.kind == "shifted"
        and not e.soc
        and e.split == split
        and (corpus / e.name / "hamiltonian.h5").exists()
        and (corpus / e.name / H0_OPENMX).exists()
    )


def dh_folder(entry: Path, work: Path) -> Path:
    """The entry's dH as a dftio folder (written once)."""
    out = work / "dh" / entry.name
    if not out.exists():
        target = residual_structure(read_entry(entry), read_hamiltonian(entry / H0_OPENMX))
        write_dftio(with_overlap(target), out)
    return out


def run(target: str, n: int, args, train_set: list[Path], val_set: list[Path]):
    """One model: ``target`` H or dH on the first n training entries."""
    pick = (lambda p: p) if target == "H" else (lambda p: dh_folder(p, args.work))
    cfg = TrainConfig(
        datasets=[str(pick(p)) for p in train_set[:n]],
        validation_datasets=[str(pick(p)) for p in val_set],
        out=str(args.work / f"{target}_n{n}"),
        epochs=args.epochs,
        lr=3e-3,
        lr_schedule="cosine",
        seed=args.seed,
        model=dict(SIZES[args.model]),
    )
    return train(cfg, resume=True, progress=args.progress)


def measure(bundle, val_set: list[Path]) -> dict:
    rows = {}
    for path in val_set:
        row, _, _ = evaluate_entry(bundle, read_entry(path), entry_h0(path))
        rows[path.name] = row
    out = {
        "mae_meV": float(np.mean([r["mae_all_meV"] for r in rows.values()])),
        "onsite_max_meV": max(r["onsite_max_meV"] for r in rows.values()),
        "bands_max_meV": max(r["bands"]["max_meV"] for r in rows.values()),
        "gap_error_max_meV": max(abs(r["bands"]["gap_error_meV"]) for r in rows.values()),
        "shift_max_meV": max(abs(r["bands"]["shift_meV"]) for r in rows.values()),
        "bands_after_shift_max_meV": max(r["bands"]["max_after_shift_meV"] for r in rows.values()),
        "cpu_minutes": bundle.info["train"]["cpu_seconds"] / 60,
        "entries": rows,
    }
    return out


def report(results: dict, args, train_set, val_set) -> None:
    lines = [
        "# Learning H or dH = H - H0 (`benchmarks/dh_ab.py`)",
        "",
        f"Model {args.model} ({SIZES[args.model]}), {args.epochs} epochs, cosine schedule, "
        f"seed {args.seed}; trained on the first N of {len(train_set)} non-twisted collinear "
        f"training entries with an H0, measured on {len(val_set)} validation entries "
        f"({', '.join(p.name for p in val_set)}). H0: OpenMX's zeroth step. Band errors: "
        "levels within 0.3 eV of the gap at Gamma, M, K; the constant shift is their mean "
        "signed error (a gauge H - mu S), and what is left after it.",
        "",
        "| N | target | CPU min | MAE per pair (meV) | max on-site (meV) | bands near gap, "
        "max (meV) | gap error, max (meV) | constant shift, max (meV) | bands after the "
        "shift, max (meV) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, r in results.items():
        n, target = key.split(" ")
        lines.append(
            f"| {n} | {target} | {r['cpu_minutes']:.1f} | {r['mae_meV']:.3f} | "
            f"{r['onsite_max_meV']:.1f} | {r['bands_max_meV']:.1f} | "
            f"{r['gap_error_max_meV']:.1f} | "
            f"{r['shift_max_meV']:.1f} | {r['bands_after_shift_max_meV']:.1f} |"
        )
    lines += reference_rows(val_set)
    (RESULTS / "dh_ab.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "dh_ab.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results)


def reference_rows(val_set: list[Path]) -> list[str]:
    """The bundled models' rounds on the same validation entries, as
    ``robustness.py --split validation`` measured them (robustness_validation.json)."""
    store = RESULTS / "robustness_validation.json"
    if not store.exists():
        return []
    names = {p.name for p in val_set}
    lines = [
        "",
        "The bundled collinear models of earlier rounds on these validation entries, as "
        "`robustness.py --split validation` measured them (`robustness_validation.json`):",
        "",
        "| model | entries | MAE (meV) | max on-site (meV) | bands near gap, max (meV) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, result in json.loads(store.read_text()).items():
        rows = {n: r for n, r in result["entries"].items() if n in names and not r["soc"]}
        if not rows:
            continue
        lines.append(
            f"| {label}: {result['models']['nosoc']} | {', '.join(sorted(rows))} | "
            f"{np.mean([r['mae_all_meV'] for r in rows.values()]):.2f} | "
            f"{max(r['onsite_max_meV'] for r in rows.values()):.0f} | "
            f"{max(r['bands']['max_meV'] for r in rows.values()):.0f} |"
        )
    return lines


def plot(results: dict) -> None:
    fig, axes = new_figure(2, 4.2, 3.6)
    for target, style in (("H", "o-"), ("dH", "s-")):
        rows = sorted(
            ((int(k.split()[0]), r) for k, r in results.items() if k.split()[1] == target),
            key=lambda row: row[0],
        )
        if not rows:
            continue
        n = [k for k, _ in rows]
        axes[0][0].loglog(n, [r["mae_meV"] for _, r in rows], style, label=target)
        axes[0][1].loglog(n, [r["bands_max_meV"] for _, r in rows], style, label=target)
    axes[0][0].set_ylabel("validation MAE per pair (meV)")
    axes[0][1].set_ylabel("max band error near the gap (meV)")
    for ax in axes[0]:
        ax.set_xlabel("training structures")
        ax.legend()
    save_figure(fig, RESULTS / "dh_learning_curve.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--model", choices=sorted(SIZES), default="m8-L2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "corpus")
    parser.add_argument("--work", type=Path, default=Path("dh-ab"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    train_set, val_set = with_h0(args.corpus, "train"), with_h0(args.corpus, "validation")
    if not val_set or len(train_set) < min(args.train):
        raise SystemExit(
            f"{len(train_set)} training and {len(val_set)} validation entries have an H0: "
            "run `moireh dataset h0` first"
        )
    store = RESULTS / "dh_ab.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    for n in sorted(k for k in args.train if k <= len(train_set)):
        for target in ("H", "dH"):
            bundle = run(target, n, args, train_set, val_set)
            results[f"{n} {target}"] = measure(bundle, val_set)
            report(results, args, train_set, val_set)
    print((RESULTS / "dh_ab.md").read_text())


if __name__ == "__main__":
    main()
