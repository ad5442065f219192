"""Recipe of the bundled MoTe2 models trained on the project's corpus (data/corpus/).

    python examples/train_corpus.py scan                 # model size on validation
    python examples/train_corpus.py collinear            # pretrain, then fine-tune
    python examples/train_corpus.py refine --band-weight 0.05  # then near-gap levels
    python examples/train_corpus.py soc                  # dH_SO correction and direct SOC
                                    (or soc-correction, soc-direct: one of them)
    python examples/train_corpus.py install              # compose, write the package's files
    python examples/train_corpus.py collinear --target dH --work dh-work  # learn H - H0
    python examples/train_corpus.py collinear --target dH --long-range   # + Ewald head
    python examples/train_corpus.py collinear --target dH --h0-features  # network reads H0

The bundled models (round 13, ``benchmarks/results/data_vs_training_ab.md``; 88 CPU
min, with the corpus of 2026-12-07: 34 shifted 2x2 and 15 twisted (2,1) training cells)::

    python examples/train_corpus.py collinear --target dH --model m16-L2 --members 1 \
        --epochs 280 --finetune-epochs 160 --schedule cosine --threads 1 \
        --long-range-shells --band-weight 0.01 --work W
    python examples/train_corpus.py install --target dH --work W --package

``--target dH`` trains every stage on dH = H - H0 instead of H, with H0 the entry's native
zeroth-step Hamiltonian (``h0.h5``, ``moireh dataset h0 --native``, :mod:`ase_moireh.h0`:
the H0 prediction computes, so training and prediction agree; entries without one are
left out), as dftio folders under ``--work``/dh (:mod:`ase_moireh.model.residual`).
``--long-range`` gives every fresh model the long-range head (``ModelConfig.long_range``:
latent charges, their Ewald potential phi in the periodic cell, (phi_i + phi_j)/2 S_ij
on every block), for the per-atom shifts of the stacking-dependent interlayer dipole;
``--long-range-shells`` resolves that head by shell (``ModelConfig.long_range_shells``).
``--h0-features`` lets every fresh model read the zeroth-step H0 of each block as
input features (``ModelConfig.h0_features``, NextHAM's idea): the entry's ``h0.h5``,
copied beside its dH folder, the one its target subtracts. ``--band-weight`` with
``--target dH`` watches the levels of H0 + dH (the same ``h0.h5``).
``install`` then writes the dH model twice: collinear (H0 + dH) and SOC (H0_SOC + dH (x)
1_2: spin-orbit from H0, no SOC stage), each recording the H0 settings every prediction
route rebuilds it with.

Stages (each resumes from its checkpoints when rerun; ``--work`` holds everything;
``--member K`` trains member K alone, so members may run as parallel processes, and a
rerun without it merges them):

1. ``scan``: candidate model sizes, each trained ``--scan-epochs`` on the non-twisted
   collinear training entries, judged on the non-twisted validation entries
   (``scan.md``). Nothing here sees a test or holdout entry.
2. ``collinear``: an ensemble pretrained on the non-twisted collinear entries, then
   fine-tuned on the twisted training entries with a replay of non-twisted ones (the
   fine-tune is validated on both kinds, so forgetting shows).
   ``refine`` (optional) continues the fine-tuned ensemble on every collinear
   training entry, twisted and non-twisted, with the near-gap band loss
   (``--band-weight``, :mod:`ase_moireh.training.band_loss`) beside the element MSE.
3. ``soc``: (a) the correction ensemble learns dH_SO = H_SOC - H_col (x) 1_2 from the
   SOC/collinear twins; (b) for comparison, a direct SOC ensemble pretrained on the
   non-twisted SOC entries and fine-tuned on the twisted SOC ones.
4. ``install``: the collinear model, and the SOC model chosen by ``--soc-model``
   (``correction`` or ``direct``, after ``benchmarks/robustness.py`` compared them), with
   this recipe's settings and CPU times in their info, into ase_moireh/data/models/.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import torch

from ase_moireh.h0.hamiltonian import SOURCE as H0_SOURCE
from ase_moireh.io.corpus import H0_NATIVE, load_manifest, read_entry, read_hamiltonian
from ase_moireh.io.dataset import write_dftio
from ase_moireh.model.graph import MOTE2_CUTOFF
from ase_moireh.model.io import ModelBundle, load_bundle, save_bundle, with_soc_correction
from ase_moireh.model.residual import (
    RESIDUAL,
    h0_settings,
    predicts_residual,
    residual,
    residual_structure,
    residual_target,
    soc_level_shift,
    with_spin,
)
from ase_moireh.model.residual import TARGET as RESIDUAL_TARGET
from ase_moireh.model.soc import correction_structure
from ase_moireh.overlap import with_overlap
from ase_moireh.training.trainer import TrainConfig, member_config, train, train_ensemble
from ase_moireh.workflows.native_h0 import entry_h0_builder

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_MODELS = ROOT / "ase_moireh" / "data" / "models"
#: model sizes the scan compares (ModelConfig fields)
CANDIDATES = {
    "m8-L2": {"multiplicity": 8, "num_layers": 2},
    "m16-L2": {"multiplicity": 16, "num_layers": 2},
    "m16-L3": {"multiplicity": 16, "num_layers": 3},
    "m24-L2": {"multiplicity": 24, "num_layers": 2},
    # heads read features as wide as their blocks (ModelConfig.wide_heads)
    "m8-L2-wide": {"multiplicity": 8, "num_layers": 2, "wide_heads": True},
    "m16-L2-wide": {"multiplicity": 16, "num_layers": 2, "wide_heads": True},
}
#: the paper's plateau rule (patience 60-180, cooldown 40); ``--schedule cosine`` (set in
#: main) anneals instead, for runs too short for the plateau rule to fire
SCHEDULE = {"lr_patience": 60, "lr_cooldown": 40, "lr_schedule": "plateau"}
#: non-twisted training entries replayed while fine-tuning on twisted ones
REPLAY = 4


#: entry lists as the work folder first saw them (``--work``/entries.json, set in main)
FROZEN: Path | None = None
#: what the models learn (``--target``, set in main): "H", or RESIDUAL ("dH" = H - H0)
TARGET = {"kind": "H"}


def entries(corpus: Path, kind: str, soc: bool, split: str) -> list[str]:
    """Converted entries of one kind, spin and split, by name: the list this work
    folder first saw, so that a corpus still growing never changes (and never breaks the
    resumption of) a stage that has started. Delete entries.json to take new entries."""
    key = f"{kind} {'SOC' if soc else 'collinear'} {split} {TARGET['kind']}"
    frozen = json.loads(FROZEN.read_text()) if FROZEN and FROZEN.exists() else {}
    if key not in frozen:
        frozen[key] = _converted(corpus, kind, soc, split)
        if FROZEN:
            FROZEN.write_text(json.dumps(frozen, indent=1) + "\n")
    return [_learned(Path(p), FROZEN.parent if FROZEN else Path(".")) for p in frozen[key]]


def _learned(entry: Path, work: Path) -> str:
    """The folder a stage trains on for a corpus entry: the entry itself (H), or its dH
    dftio folder under ``work``/dh with the entry's H0 beside it, written on first use
    (``--target dH``)."""
    if TARGET["kind"] != RESIDUAL:
        return str(entry)
    out = work / "dh" / entry.name
    if not out.exists():
        h0 = read_hamiltonian(entry / H0_NATIVE)
        settings = h0_settings(entry_h0_builder(entry))  # what prediction rebuilds
        target = residual_structure(read_entry(entry), h0, H0_SOURCE, settings)
        write_dftio(with_overlap(target), out)
    if not (out / H0_NATIVE).exists():  # what h0_features and the band loss read
        shutil.copy(entry / H0_NATIVE, out / H0_NATIVE)
    return str(out)


def _converted(corpus: Path, kind: str, soc: bool, split: str) -> list[str]:
    return sorted(
        str(corpus / e.name)
        for e in load_manifest(corpus).values()
        if e.kind == kind
        and e.soc == soc
        and e.split == split
        and e.status == "converged"
        and (corpus / e.name / "hamiltonian.h5").exists()
        and (TARGET["kind"] != RESIDUAL or (corpus / e.name / H0_NATIVE).exists())
    )


#: weight of the near-gap band loss (``--band-weight``, set in main) for stages whose
#: targets are whole Hamiltonians; the dH_SO correction never uses it
BAND = {"band_weight": 0.0, "onsite_weight": 1.0, "semicore_weight": 1.0}
#: ModelConfig fields every fresh model of a stage gets (``--long-range``, set in main)
MODEL_EXTRA: dict = {}


def config(
    out: Path, datasets, validation, epochs: int, lr: float, model=None, bands: bool = True
) -> TrainConfig:
    return TrainConfig(
        datasets=list(datasets),
        validation_datasets=list(validation),
        out=str(out),
        epochs=epochs,
        lr=lr,
        model={**(model or {}), **MODEL_EXTRA},
        band_weight=BAND["band_weight"] if bands else 0.0,
        onsite_weight=BAND["onsite_weight"],
        semicore_weight=BAND["semicore_weight"],
        **SCHEDULE,
    )


def ensemble(cfg: TrainConfig, args, pretrained: Path | None = None) -> None:
    """The stage's ensemble (from the ensemble in the stage folder ``pretrained``); with
    ``--member K`` only member K, from member K of ``pretrained``, so that members train
    in parallel processes. A rerun without ``--member`` finds them done and merges."""
    if args.member is None:
        start = pretrained / "model.pt" if pretrained else None
        train_ensemble(cfg, args.members, start, True, args.progress)
        return
    start = pretrained / f"member_{args.member}" / "model.pt" if pretrained else None
    train(member_config(cfg, args.member), start, True, args.progress)


def scan(args) -> None:
    rows = []
    train_set = entries(args.corpus, "shifted", False, "train")
    val_set = entries(args.corpus, "shifted", False, "validation")
    for name, model in CANDIDATES.items():
        cfg = config(
            args.work / "scan" / name, train_set, val_set, args.scan_epochs, args.lr, model
        )
        bundle = train(cfg, progress=args.progress)
        report = bundle.info["train"]
        val = report["parts"]["validation"]
        params = sum(p.numel() for p in bundle.models[0].parameters())
        rows.append(
            f"| {name} | {params} | {val['rmse_meV']:.2f} | "
            + " / ".join(f"{v:.2f}" for v in val["mae_meV"].values())
            + f" | {report['cpu_seconds'] / 60:.0f} |"
        )
    header = [
        f"Model-size scan: {len(train_set)} training, {len(val_set)} validation non-twisted "
        f"collinear entries, {args.scan_epochs} epochs each, {SCHEDULE['lr_schedule']} "
        "learning-rate schedule.",
        "",
        "| model | parameters | validation RMSE (meV) | validation MAE per pair (meV) | CPU min |",
        "| --- | --- | --- | --- | --- |",
    ]
    (args.work / "scan.md").write_text("\n".join(header + rows) + "\n")
    print("\n".join(header + rows))


def collinear(args) -> None:
    model = CANDIDATES[args.model]
    shifted = entries(args.corpus, "shifted", False, "train")
    shifted_val = entries(args.corpus, "shifted", False, "validation")
    pre = config(args.work / "col_pretrain", shifted, shifted_val, args.epochs, args.lr, model)
    ensemble(pre, args)
    twisted = entries(args.corpus, "twisted", False, "train")
    twisted_val = entries(args.corpus, "twisted", False, "validation")
    fine = config(
        args.work / "col_finetune",
        twisted + shifted[: args.replay],
        twisted_val + shifted_val,
        args.finetune_epochs,
        args.finetune_lr,
    )
    ensemble(fine, args, args.work / "col_pretrain")


def refine(args) -> None:
    """Continue the fine-tuned collinear ensemble on all collinear training entries,
    validated on both kinds (with ``--band-weight`` > 0: the near-gap band loss)."""
    train_set = entries(args.corpus, "twisted", False, "train")
    train_set += entries(args.corpus, "shifted", False, "train")
    val_set = entries(args.corpus, "twisted", False, "validation")
    val_set += entries(args.corpus, "shifted", False, "validation")
    cfg = config(args.work / "col_refine", train_set, val_set, args.refine_epochs, args.refine_lr)
    ensemble(cfg, args, args.work / "col_finetune")


def correction_sets(corpus: Path, work: Path, split: str) -> list[str]:
    """dftio folders of dH_SO for every converged SOC entry of a split with its twin."""
    folders = []
    manifest = load_manifest(corpus)
    for path in entries(corpus, "shifted", True, split) + entries(corpus, "twisted", True, split):
        twin = manifest[Path(path).name].twin
        if not twin or not (corpus / twin / "hamiltonian.h5").exists():
            continue
        out = work / "delta" / Path(path).name
        if not out.exists():
            delta = correction_structure(read_entry(path), read_entry(corpus / twin))
            write_dftio(with_overlap(delta), out)
        folders.append(str(out))
    return folders


def soc_correction(args) -> None:
    """The dH_SO ensemble (on the SOC/collinear twins)."""
    _no_soc_stage_for_dh()
    model = CANDIDATES[args.model]
    cfg = config(
        args.work / "soc_correction",
        correction_sets(args.corpus, args.work, "train"),
        correction_sets(args.corpus, args.work, "validation"),
        args.epochs,
        args.lr,
        {**model, "cutoff": args.correction_cutoff},
        bands=False,  # dH_SO has no bands of its own
    )
    ensemble(cfg, args)


def soc_direct(args) -> None:
    """The direct SOC ensemble it is compared with (same SOC runs)."""
    _no_soc_stage_for_dh()
    model = CANDIDATES[args.model]
    shifted = entries(args.corpus, "shifted", True, "train")
    shifted_val = entries(args.corpus, "shifted", True, "validation")
    pre = config(args.work / "soc_pretrain", shifted, shifted_val, args.epochs, args.lr, model)
    ensemble(pre, args)
    twisted = entries(args.corpus, "twisted", True, "train")
    twisted_val = entries(args.corpus, "twisted", True, "validation")
    if twisted:
        fine = config(
            args.work / "soc_finetune",
            twisted + shifted[: args.replay],
            twisted_val + shifted_val,
            args.finetune_epochs,
            args.finetune_lr,
        )
        ensemble(fine, args, args.work / "soc_pretrain")


def _no_soc_stage_for_dh() -> None:
    """SOC of a dH model is H0_SOC + dH (x) 1_2: spin-orbit comes from H0, not a stage."""
    if TARGET["kind"] == RESIDUAL:
        raise SystemExit("--target dH: SOC needs no training stage (H0 carries spin-orbit)")


def soc(args) -> None:
    soc_correction(args)
    soc_direct(args)


def stage_info(work: Path, *stages: str) -> dict:
    """The training reports of the stages (CPU time included), as the model file keeps them."""
    out = {}
    for stage in stages:
        path = work / stage / "model.pt"
        if not path.exists():
            continue
        info = load_bundle(path).info
        if "train" in info:
            out[stage] = {"train": info["train"]}
        else:  # e.g. a model trained outside this script: install it, say what is missing
            logging.warning("%s has no training report: its CPU time is not counted", path)
    return out


def install(args) -> None:
    col_stage = "col_refine" if (args.work / "col_refine" / "model.pt").exists() else "col_finetune"
    col = load_bundle(args.work / col_stage / "model.pt")
    # the settings the collinear stage ran with (this command's own --epochs, --members
    # ... are unused), and the sizes the files really have
    settings = {
        k: v
        for k, v in _stage_settings(args, "collinear").items()
        if k not in ("model", "model_size", "correction_cutoff", "stage", "package")
    }
    settings["collinear_model"] = _size(col)
    if args.soc_model == "correction" and not predicts_residual(col.info):
        settings["soc_correction_model"] = _size(
            load_bundle(args.work / "soc_correction" / "model.pt")
        )
    recipe = {"recipe": "examples/train_corpus.py", "settings": settings}
    kept = {k: v for k, v in col.info.items() if k != "train"}  # valence, domain, ...
    stages = stage_info(args.work, "col_pretrain", "col_finetune", "col_refine")  # those run
    col_info = {**kept, **recipe, **stages}
    if predicts_residual(col_info):
        col_info = _with_h0_settings(col_info, args.corpus)
        mu, each = soc_level_shift(list(training_twins(args.corpus)))
        logging.info("SOC level shift %.2f meV (training twins: %s)", 1e3 * mu,
                     ", ".join(f"{1e3 * m:.2f}" for m in each))  # fmt: skip
        soc_bundle = ModelBundle(col.models, col.overlap, with_spin(col_info, True, mu))
    elif args.soc_model == "correction":
        corr = load_bundle(args.work / "soc_correction" / "model.pt")
        soc_info = {**col_info, **stage_info(args.work, "soc_correction")}
        soc_bundle = with_soc_correction(col, corr, soc_info)
    else:
        stage = "soc_finetune" if (args.work / "soc_finetune").exists() else "soc_pretrain"
        direct = load_bundle(args.work / stage / "model.pt")
        kept = {k: v for k, v in direct.info.items() if k != "train"}
        info = {**kept, **recipe, **stage_info(args.work, "soc_pretrain", stage)}
        soc_bundle = ModelBundle(direct.models, direct.overlap, info)
    out = args.work / "install"
    out.mkdir(parents=True, exist_ok=True)
    save_bundle(ModelBundle(col.models, col.overlap, col_info), out / "mote2_nosoc.pt")
    save_bundle(soc_bundle, out / "mote2_soc.pt")
    for name in ("mote2_nosoc.pt", "mote2_soc.pt"):
        shipped = load_bundle(out / name)  # the file we ship must load, and count electrons
        if not shipped.info.get("valence"):
            raise SystemExit(f"{out / name}: no valence electrons recorded")
        if args.package:
            shutil.copy(out / name, PACKAGE_MODELS / name)
    logging.info("wrote %s%s", out, " and installed" if args.package else "")


def training_twins(corpus: Path):
    """(dH_col, dH_SOC, S) of every SOC training entry and its collinear twin, dH against
    the native H0: what :func:`soc_level_shift` fits."""
    manifest = load_manifest(corpus)
    for entry in manifest.values():
        twin = entry.twin
        if not (entry.soc and entry.split == "train" and twin):
            continue
        pair = [corpus / entry.name, corpus / twin]
        if not all((p / H0_NATIVE).exists() for p in pair):
            continue
        soc, col = (with_overlap(read_entry(p)) for p in pair)
        d_soc, d_col = (
            residual(run.hamiltonian, read_hamiltonian(p / H0_NATIVE).hamiltonian)
            for run, p in zip((soc, col), pair, strict=True)
        )
        yield d_col, d_soc, col.overlap


def _with_h0_settings(info: dict, corpus: Path) -> dict:
    """A dH model's target record with the native H0's settings (files, cutoff), which
    work folders written before models recorded them lack: the corpus entries' own."""
    if info[RESIDUAL_TARGET].get("settings"):
        return info
    first = next(
        e for e in load_manifest(corpus).values() if (corpus / e.name / H0_NATIVE).exists()
    )
    settings = h0_settings(entry_h0_builder(corpus / first.name))
    return {**info, RESIDUAL_TARGET: residual_target(H0_SOURCE, settings)}


def _stage_settings(args, stage: str) -> dict:
    """What ``stage`` ran with (its ``<stage>.settings.json``), else this command's."""
    path = args.work / f"{stage}.settings.json"
    return json.loads(path.read_text()) if path.exists() else _settings(args)


def _size(bundle: ModelBundle) -> dict:
    config = bundle.models[0].config
    return {
        "multiplicity": config.multiplicity,
        "num_layers": config.num_layers,
        "cutoff": config.cutoff,
    }


def _settings(args) -> dict:
    return {
        k: str(v) if isinstance(v, Path) else v
        for k, v in vars(args).items()
        if k not in ("func", "progress", "threads", "member")
    } | {"model_size": CANDIDATES[args.model], "schedule": SCHEDULE}


STAGES = {
    "scan": scan,
    "collinear": collinear,
    "refine": refine,
    "soc": soc,
    "soc-correction": soc_correction,
    "soc-direct": soc_direct,
    "install": install,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "corpus")
    parser.add_argument("--work", type=Path, default=Path("corpus-work"))
    parser.add_argument("--model", choices=sorted(CANDIDATES), default="m16-L3")
    parser.add_argument("--members", type=int, default=2, help="ensemble size")
    parser.add_argument(
        "--member", type=int, help="train only this member (parallel runs; rerun to merge)"
    )
    parser.add_argument("--epochs", type=int, default=600)
    parser.add_argument("--finetune-epochs", type=int, default=300)
    parser.add_argument("--scan-epochs", type=int, default=300)
    parser.add_argument("--refine-epochs", type=int, default=150)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of fresh models")
    parser.add_argument(
        "--finetune-lr", type=float, default=1e-3, help="peak learning rate of fine-tuning"
    )
    parser.add_argument("--refine-lr", type=float, default=5e-4)
    parser.add_argument("--replay", type=int, default=REPLAY)
    parser.add_argument("--correction-cutoff", type=float, default=MOTE2_CUTOFF)
    parser.add_argument("--soc-model", choices=["correction", "direct"], default="correction")
    parser.add_argument("--package", action="store_true", help="install: copy into the package")
    parser.add_argument("--schedule", choices=["plateau", "cosine"], default="plateau")
    parser.add_argument(
        "--band-weight",
        type=float,
        default=0.0,
        help="near-gap band loss beside the element MSE (TrainConfig.band_weight)",
    )
    parser.add_argument(
        "--onsite-weight",
        type=float,
        default=1.0,
        help="weight of on-site blocks in the element MSE (TrainConfig.onsite_weight)",
    )
    parser.add_argument(
        "--semicore-weight",
        type=float,
        default=1.0,
        help="weight of elements with a semicore orbital in the element MSE "
        "(TrainConfig.semicore_weight)",
    )
    parser.add_argument(
        "--target",
        choices=["H", RESIDUAL],
        default="H",
        help="learn H, or dH = H - H0 (OpenMX's zeroth step; entries that have it)",
    )
    parser.add_argument(
        "--long-range",
        action="store_true",
        help="the Ewald long-range head on every fresh model (ModelConfig.long_range)",
    )
    parser.add_argument(
        "--long-range-shells",
        action="store_true",
        help="the long-range head resolved by shell (ModelConfig.long_range_shells; "
        "implies --long-range)",
    )
    parser.add_argument(
        "--h0-features",
        action="store_true",
        help="every fresh model reads each block's H0 as input (ModelConfig.h0_features)",
    )
    parser.add_argument(
        "--norm-features",
        nargs="?",
        const="all",
        default="",
        choices=["all", "onsite"],
        help="every fresh model maps its node features' norms onto their scalars, before "
        "all heads (no value: all) or the on-site heads only (ModelConfig.norm_features)",
    )
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.member is not None and not 0 <= args.member < args.members:
        parser.error(f"--member {args.member}: the ensemble has members 0-{args.members - 1}")
    SCHEDULE["lr_schedule"] = args.schedule
    TARGET["kind"] = args.target
    BAND["band_weight"] = args.band_weight
    BAND["onsite_weight"] = args.onsite_weight
    BAND["semicore_weight"] = args.semicore_weight
    if args.long_range or args.long_range_shells:
        MODEL_EXTRA["long_range"] = True
    if args.long_range_shells:
        MODEL_EXTRA["long_range_shells"] = True
    if args.h0_features:
        MODEL_EXTRA["h0_features"] = True
    if args.norm_features:
        MODEL_EXTRA["norm_features"] = args.norm_features
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    global FROZEN
    FROZEN = args.work / "entries.json"
    (args.work / f"{args.stage}.settings.json").write_text(
        json.dumps(_settings(args), indent=1) + "\n"
    )
    STAGES[args.stage](args)


if __name__ == "__main__":
    main()
