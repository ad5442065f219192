"""Recipe of the bundled MoTe2 models (ase_moireh/data/models/): rerun to retrain them.

    python examples/train_bundled.py --shared ../shared/data/openmx --work bundled-work

1. converts every shared OpenMX run to a dftio dataset;
2. collinear model: pretrain on the non-twisted 1x1 bilayers (9 shifted + 1 exact), then
   fine-tune (transfer learning) on the 21.79 deg twisted cell at a lower learning rate;
3. SOC model: pretrain on the SOC 1x1 bilayers (4 shifted + 1 exact); there is no
   converged twisted SOC run to fine-tune on (see the shared data README);
4. writes both model files with their training reports and the exact overlap's radial
   functions (``--install`` copies them into the package).
Every step resumes from its checkpoint when rerun; ``--only nosoc`` / ``--only soc``
train one model (run both at once on two cores, then once more without ``--only``).
``--annotate`` only (re)writes the installed models' training domain (the structures
each stage trained on, measured by ``ase_moireh.domain``), without retraining.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import ase.io

from ase_moireh.domain import domain_of
from ase_moireh.model.io import ModelBundle, load_bundle, save_bundle, training_stages
from ase_moireh.training.trainer import TrainConfig, train
from ase_moireh.workflows.convert import convert_files

MODEL = {"multiplicity": 8, "convolution": "so2"}
SCHEDULE = {"lr_patience": 60, "lr_cooldown": 40}  # the paper: patience 60-180, cooldown 40
PACKAGE_MODELS = Path(__file__).resolve().parents[1] / "ase_moireh" / "data" / "models"


def pretrain(data: Path, out: Path, pattern: str, epochs: int) -> ModelBundle:
    config = TrainConfig(
        datasets=[str(data / f"bl1x1_{pattern}_s*"), str(data / f"bl1x1_exact_{pattern}")],
        out=str(out),
        epochs=epochs,
        lr=3e-3,
        model=MODEL,
        **SCHEDULE,
    )
    return train(config, progress=False)


def finetune(data: Path, out: Path, pretrained: Path, epochs: int) -> ModelBundle:
    config = TrainConfig(
        datasets=[str(data / "tw2179_nosoc")], out=str(out), epochs=epochs, lr=1e-3, **SCHEDULE
    )
    return train(config, pretrained=pretrained, progress=False)


def trained_on(info: dict) -> list[str]:
    """Names of the structures each stage's train part held (from the stage reports)."""
    stages = training_stages(info)
    return [name for stage in stages.values() for name in stage["parts"]["train"]["structures"]]


def annotate(path: Path, shared: Path) -> None:
    """Record the training domain in an installed model file (weights untouched)."""
    bundle = load_bundle(path)
    names = trained_on(bundle.info)
    atoms = [ase.io.read(shared / name / "structure.extxyz") for name in names]
    info = {**bundle.info, "domain": domain_of(atoms, names).to_dict()}
    save_bundle(ModelBundle(bundle.models, bundle.overlap, info), path)
    logging.info("%s: domain of %d structures", path.name, len(names))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default="../shared/data/openmx")
    parser.add_argument("--work", default="bundled-work")
    parser.add_argument("--epochs-pretrain", type=int, default=2000)
    parser.add_argument("--epochs-finetune", type=int, default=500)
    parser.add_argument("--only", choices=["nosoc", "soc"])
    parser.add_argument("--install", action="store_true")
    parser.add_argument("--annotate", action="store_true")
    parser.add_argument("--convolution", choices=["so2", "tp"], default=MODEL["convolution"])
    args = parser.parse_args()
    MODEL["convolution"] = args.convolution
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.annotate:
        for path in sorted(PACKAGE_MODELS.glob("*.pt")):
            annotate(path, Path(args.shared))
        return
    work = Path(args.work)
    data = work / "data"
    convert_files("openmx", [args.shared], data, skip_existing=True, progress=False)
    reports = {}
    if args.only != "soc":
        pre = pretrain(data, work / "nosoc_pretrain", "nosoc", args.epochs_pretrain)
        nosoc = finetune(
            data,
            work / "nosoc_finetune",
            work / "nosoc_pretrain" / "model.pt",
            args.epochs_finetune,
        )
        reports["mote2_nosoc.pt"] = (nosoc, {"pretrain": pre.info, "finetune": nosoc.info})
    if args.only != "nosoc":
        soc = pretrain(data, work / "soc_pretrain", "soc", args.epochs_pretrain)
        reports["mote2_soc.pt"] = (soc, {"pretrain": soc.info})
    if args.only:
        return
    for name, (bundle, report) in reports.items():
        info = {**report, "recipe": "examples/train_bundled.py", "domain": bundle.info["domain"]}
        save_bundle(ModelBundle(bundle.models, bundle.overlap, info), work / name)
        load_bundle(work / name)  # the file we ship must load
        if args.install:
            PACKAGE_MODELS.mkdir(parents=True, exist_ok=True)
            shutil.copy(work / name, PACKAGE_MODELS / name)
    logging.info("done: %s", sorted(p.name for p in work.glob("*.pt")))


if __name__ == "__main__":
    main()
