"""``moireh train / finetune / predict / analyze``: thin layers over the library."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from ase_moireh.cli.bands import domain_check_option, precision_option, refusal
from ase_moireh.data import bundled_model_path

log = logging.getLogger(__name__)


def _run_training(
    config_path: str, pretrained: str | None, ensemble: int, resume: bool, progress: bool
) -> None:
    from ase_moireh.training.trainer import load_train_config, train_ensemble

    try:
        config = load_train_config(config_path)
        bundle = train_ensemble(config, ensemble, pretrained, resume, progress)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    report = bundle.info.get("train", {}).get("parts", {})
    for part, values in report.items():
        click.echo(f"{part:10s} MAE (meV): {json.dumps(values.get('mae_meV'))}")
    click.echo(f"wrote {Path(config.out) / 'model.pt'}")


@click.command(name="train")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--ensemble", default=1, show_default=True, help="Train K seeds and merge.")
@click.option("--no-resume", is_flag=True, help="Ignore an existing checkpoint.")
@click.option("--no-progress", is_flag=True)
def train_command(config, ensemble, no_resume, no_progress) -> None:
    """Train a model from a JSON/TOML CONFIG (datasets, epochs, model size...): member k
    of the ensemble (checkpoint, log) in OUT/member_k, the merged model in OUT/model.pt."""
    _run_training(config, None, ensemble, not no_resume, not no_progress)


@click.command(name="finetune")
@click.option(
    "--from",
    "pretrained",
    required=True,
    type=click.Path(exists=True),
    help="Pretrained model file.",
)
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--ensemble", default=1, show_default=True)
@click.option("--no-resume", is_flag=True)
@click.option("--no-progress", is_flag=True)
def finetune_command(pretrained, config, ensemble, no_resume, no_progress) -> None:
    """Fine-tune (transfer learning): all weights from MODEL, fresh Adam, CONFIG's lr."""
    _run_training(config, pretrained, ensemble, not no_resume, not no_progress)


@click.command(name="predict")
@click.argument("structures", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--model",
    "model_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Model file (default: the bundled MoTe2 model).",
)
@click.option(
    "--soc/--no-soc",
    default=True,
    show_default=True,
    help="Which bundled model when --model is not given.",
)
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False))
@click.option(
    "--stream",
    is_flag=True,
    help="Stream H and S to OUT/<name>.h5 with bounded memory (10^5-atom cells; "
    "the input of bands --mpi) instead of a dftio folder.",
)
@precision_option("single", "Numbers stored by --stream.")
@domain_check_option
def predict_command(structures, model_path, soc, out, stream, precision, no_domain_check) -> None:
    """Predict H and S for any ASE-readable STRUCTURES; write dftio folders to OUT.
    Structures outside the model's training domain are refused or warned about as by
    the calculator (the same check)."""
    bundle, name = _load_model(model_path, soc)
    strict = not no_domain_check
    if stream:
        return _stream_predictions(structures, bundle, Path(out), precision, strict)
    from ase_moireh.io.dataset import write_dftio
    from ase_moireh.model.predict import predict_checked
    from ase_moireh.tightbinding import ElectronicStructure

    for path in structures:
        try:
            atoms = _read_structure(path)
            h, s, spread = predict_checked(bundle, atoms, strict=strict)
        except Exception as err:
            raise click.ClickException(f"{path}: {refusal(err)}") from None
        structure = ElectronicStructure(atoms, h, s, source=f"predicted by {name}")
        folder = write_dftio(structure, Path(out) / Path(path).stem)
        if spread is not None:
            spread.save(folder / "spread.h5")
        click.echo(f"{path}: {len(atoms)} atoms, {h.nedges} blocks -> {folder}")


def _load_model(model_path: str | None, soc: bool):
    """(bundle, file name) of --model, else the bundled model; a named error if unusable."""
    from ase_moireh.model.io import ModelFileError, load_bundle

    path = Path(model_path) if model_path else bundled_model_path(soc)
    try:
        return load_bundle(path), path.name
    except ModelFileError as err:
        raise click.ClickException(str(err)) from None


def _read_structure(path: str):
    import ase.io

    return ase.io.read(path)


@click.command(name="analyze")
@click.argument("pred", type=click.Path(exists=True, file_okay=False))
@click.argument("ref", type=click.Path(exists=True, file_okay=False))
@click.option(
    "-o", "--out", default="analysis", show_default=True, type=click.Path(file_okay=False)
)
def analyze_command(pred, ref, out) -> None:
    """MAE of PRED against REF (dftio folders) per element pair and orbital block."""
    from ase_moireh.files import atomic_file
    from ase_moireh.io.dataset import DatasetError, read_structure
    from ase_moireh.metrics import error_maps, plot_error_maps, shell_pair_mae

    try:
        p, r = read_structure(pred), read_structure(ref)
        maps = error_maps(p.hamiltonian, r.hamiltonian)
    except (DatasetError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    out = Path(out)
    result = {
        "mae_meV": {k: float(v.mean() * 1e3) for k, v in maps.items()},
        "shell_mae_meV": {
            k: {s: v * 1e3 for s, v in d.items()}
            for k, d in shell_pair_mae(maps, p.hamiltonian).items()
        },
    }
    with atomic_file(out / "analysis.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    plot_error_maps(maps, out / "mae_heatmap.png", p.hamiltonian.basis)
    for pair, mae in result["mae_meV"].items():
        click.echo(f"{pair:8s} MAE {mae:.4f} meV")
    click.echo(f"wrote {out / 'analysis.json'} and {out / 'mae_heatmap.png'}")


def _stream_predictions(structures, bundle, out: Path, precision: str, strict: bool) -> None:
    """``predict --stream``: each structure's H and S to OUT/<stem>.h5, behind the domain
    and spread checks of every prediction."""
    from ase_moireh.model.stream import stream_checked

    out.mkdir(parents=True, exist_ok=True)
    for path in structures:
        target = out / f"{Path(path).stem}.h5"
        try:
            atoms = _read_structure(path)
            report = stream_checked(bundle, atoms, target, precision=precision, strict=strict)
        except Exception as err:
            raise click.ClickException(f"{path}: {refusal(err)}") from None
        click.echo(
            f"{path}: {report.atoms} atoms, {report.blocks} blocks, {report.file_GB} GB "
            f"in {report.seconds:.0f} s (peak memory {report.peak_rss_GB} GB) -> {target}"
        )
