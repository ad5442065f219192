"""moireh predict / analyze end to end (train and finetune run in test_train.py)."""

import json

import pytest
from click.testing import CliRunner

from ase_moireh.cli import moireh
from ase_moireh.io.dataset import read_dftio, write_dftio
from shared_data import case_dir, converted


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ref") / "tw2179_nosoc"
    write_dftio(converted("tw2179_nosoc"), folder)
    return folder


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
