"""moireh predict / analyze end to end (train and finetune run in test_train.py); every
route to a prediction passes the same domain check."""

import json

import ase.io
import pytest
from ase.build import mx2
from click.testing import CliRunner

from ase_moireh.build import twisted_bilayer
from ase_moireh.calculator import MoireHCalculator
from ase_moireh.cli import moireh
from ase_moireh.data import bundled_model_path
from ase_moireh.domain import OutOfDomainError, OutOfDomainWarning
from ase_moireh.io.dataset import read_dftio, write_dftio
from ase_moireh.model import io as model_io
from shared_data import case_dir, converted

ROUTES = ["calculator", "write_operators", "predict", "predict --stream"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ref") / "tw2179_nosoc"
    write_dftio(converted("tw2179_nosoc"), folder)
    return folder


@pytest.mark.slow
def test_predict_with_bundled_model_then_analyze(reference, tmp_path):
    structure = case_dir("tw2179_nosoc") / "structure.extxyz"
    runner = CliRunner()
    result = runner.invoke(
        moireh, ["predict", "--no-soc", str(structure), "-o", str(tmp_path / "pred")]
    )
    assert result.exit_code == 0, result.output
    pred = read_dftio(tmp_path / "pred" / "structure")
    assert not pred.spinful and pred.overlap is not None
    assert pred.hamiltonian.hermiticity_error() < 1e-5
    ref = converted("tw2179_nosoc")
    assert max(pred.overlap.mae_by_pair(ref.overlap).values()) < 1e-5
    out = tmp_path / "analysis"
    result = runner.invoke(
        moireh, ["analyze", str(tmp_path / "pred" / "structure"), str(reference), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "analysis.json").read_text())
    assert set(report["mae_meV"]) == {"Mo-Mo", "Mo-Te", "Te-Mo", "Te-Te"}
    assert "d1-d1" in report["shell_mae_meV"]["Mo-Mo"]
    assert (out / "mae_heatmap.png").stat().st_size > 10_000
    direct = pred.hamiltonian.mae_by_pair(ref.hamiltonian)
    assert report["mae_meV"]["Mo-Te"] == pytest.approx(direct["Mo-Te"] * 1e3, rel=1e-6)


@pytest.mark.slow
def test_predict_soc_default_and_bad_inputs(tmp_path):
    structure = case_dir("bl1x1_soc_s00") / "structure.extxyz"
    runner = CliRunner()
    result = runner.invoke(moireh, ["predict", str(structure), "-o", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert read_dftio(tmp_path / "p" / "structure").spinful
    bad_model = tmp_path / "bad.pt"
    bad_model.write_bytes(b"junk")
    result = runner.invoke(
        moireh, ["predict", "--model", str(bad_model), str(structure), "-o", str(tmp_path / "q")]
    )
    assert result.exit_code != 0 and "bad.pt" in result.output
    assert not (tmp_path / "q").exists()


# --------------------------------------------------------------------------- domain check


@pytest.fixture(scope="module")
def collinear():
    """The bundled collinear model, read once for the module's routes."""
    return model_io.load_bundle(bundled_model_path(soc=False))


def collapsed_bilayer():
    """The (2, 1) bilayer with its top layer pushed 3 A down, into the bottom one."""
    atoms = twisted_bilayer(2, 1)
    atoms.positions[atoms.arrays["layer"] == 1, 2] -= 3.0
    return atoms


def monolayer():
    return mx2("MoTe2", a=3.52, thickness=3.6, vacuum=10.0)


def predict_by(route: str, atoms, bundle, folder, monkeypatch) -> str | None:
    """Predict ``atoms`` by one route (results under ``folder``); the refusal's message,
    None when it predicted."""
    try:
        if route == "calculator":
            MoireHCalculator(model=bundle).get_hamiltonian(atoms)
        elif route == "write_operators":
            MoireHCalculator(model=bundle).write_operators(folder / "out" / "cell.h5", atoms)
        else:  # the command line, on the bundled collinear model (read once per module)
            monkeypatch.setattr(model_io, "load_bundle", lambda *args, **kwargs: bundle)
            ase.io.write(folder / "cell.extxyz", atoms)
            args = ["predict", "--no-soc", str(folder / "cell.extxyz"), "-o", str(folder / "out")]
            result = CliRunner().invoke(moireh, args + route.split()[1:])
            return None if result.exit_code == 0 else result.output
    except OutOfDomainError as err:
        return str(err)
    return None


@pytest.mark.parametrize("route", ROUTES)
def test_every_prediction_route_refuses_a_collapsed_bilayer(
    route, collinear, tmp_path, monkeypatch
):
    """Regression: moireh predict wrote a dataset (exit code 0) of a bilayer whose layers
    overlap, which the calculator refused. Every route refuses it, alike, writing nothing."""
    (tmp_path / "out").mkdir()
    message = predict_by(route, collapsed_bilayer(), collinear, tmp_path, monkeypatch)
    assert message is not None
    assert "Mo14Te28 (42 atoms) is outside the model's domain: Te-Te atoms 0.87 A" in message
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("route", ROUTES)
def test_every_prediction_route_warns_on_a_monolayer(route, collinear, tmp_path, monkeypatch):
    """Regression: moireh predict said nothing of a monolayer, which the calculator warns
    about (the model knows bilayers only). Every route warns alike and predicts."""
    (tmp_path / "out").mkdir()
    expected = r"MoTe2 \(3 atoms\): 1 layer\(s\), while the model was trained on 2-layer"
    with pytest.warns(OutOfDomainWarning, match=expected):
        assert predict_by(route, monolayer(), collinear, tmp_path, monkeypatch) is None
    written = list((tmp_path / "out").iterdir())
    assert bool(written) == (route != "calculator")  # the calculator keeps H in memory


@pytest.mark.slow
@pytest.mark.parametrize("route", [r for r in ROUTES if r.startswith("predict")])
def test_the_command_line_names_its_flag_and_predicts_with_it(
    route, collinear, tmp_path, monkeypatch
):
    """A refusal on the command line names --no-domain-check, not the calculator's
    keyword; with the flag the command predicts the structure, warning, and writes it.
    The collapsed bilayer then meets the next guard: the bundled dH model's H0 refuses
    atoms 0.87 A apart, naming the file, and writes nothing."""
    from ase_moireh.model import predict

    (tmp_path / "out").mkdir()
    message = predict_by(route, collapsed_bilayer(), collinear, tmp_path, monkeypatch)
    assert "Te-Te atoms 0.87 A" in message and "pass --no-domain-check" in message
    assert "domain_check=False" not in message
    opted_out = f"{route} --no-domain-check"
    with pytest.warns(OutOfDomainWarning, match="Te-Te atoms 0.87 A"):
        message = predict_by(opted_out, collapsed_bilayer(), collinear, tmp_path, monkeypatch)
    assert "cell.extxyz: overlapping atoms" in message and "0.866 A apart" in message
    assert not list((tmp_path / "out").iterdir())
    # a structure H0 can be built for, refused on made-up grounds: the flag predicts it
    monkeypatch.setattr(predict, "findings", lambda *args: (["made-up finding"], []))
    assert "made-up finding" in predict_by(
        route, twisted_bilayer(2, 1), collinear, tmp_path, monkeypatch
    )
    with pytest.warns(OutOfDomainWarning, match="made-up finding"):
        assert (
            predict_by(opted_out, twisted_bilayer(2, 1), collinear, tmp_path, monkeypatch) is None
        )
    assert len(list((tmp_path / "out").iterdir())) == 1


@pytest.mark.slow
def test_ribbon_refuses_and_opts_out_as_predict(tmp_path, monkeypatch):
    """``moireh ribbon`` passes the same check through the calculator (a severe finding
    made up here: every ribbon of a twisted cell is in the domain) and takes the flag."""
    from ase_moireh.model import predict

    monkeypatch.setattr(predict, "findings", lambda *args: (["made-up finding"], []))
    args = ["ribbon", "2", "1", "--repeats", "1", "--no-soc", "--no-bands"]
    args += ["--write", str(tmp_path / "r.h5")]
    refused = CliRunner().invoke(moireh, args)
    assert refused.exit_code == 1
    assert "made-up finding" in refused.output and "--no-domain-check" in refused.output
    assert not (tmp_path / "r.h5").exists()
    with pytest.warns(OutOfDomainWarning, match="made-up finding"):
        done = CliRunner().invoke(moireh, [*args, "--no-domain-check"])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "r.h5").is_file()


@pytest.mark.parametrize("command", ["predict", "bands", "chern", "ribbon"])
def test_every_predicting_command_takes_the_flag_its_refusal_names(command):
    from ase_moireh.cli.bands import NO_DOMAIN_CHECK, refusal

    result = CliRunner().invoke(moireh, [command, "--help"])
    assert result.exit_code == 0 and NO_DOMAIN_CHECK in result.output
    err = OutOfDomainError("Mo14Te28 (42 atoms)", ["Te-Te atoms 0.87 A apart"])
    assert f"pass {NO_DOMAIN_CHECK} to compute it anyway" in refusal(err)
    assert "domain_check=False" in str(err)  # the calculator's own wording
    assert refusal(ValueError("other")) == "other"
