"""The README's main job on the embedded default (bundled OpenMX run, bundled models):
its outputs say what was computed and how far to trust it."""

import json

import pytest

from ase_moireh.cli.demo import run_demo
from ase_moireh.data import demo_scfout_path


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, run_demo(out, npoints=18)


def test_main_job_converts_verifies_predicts_and_plots(demo):
    out, result = demo
    assert demo_scfout_path().exists()
    c = result["converter"]
    assert c["spinful"] and c["atoms"] == 6
    assert c["kpoints_compared"] == 81
    assert c["max_eig_diff_meV"] < 1.0
    assert c["hermiticity_H_eV"] < 1e-6
    assert set(result["model"]["H_mae_meV"]) == {"Mo-Mo", "Mo-Te", "Te-Mo", "Te-Te"}
    assert result["twisted"]["atoms"] == 42
    for name in ("bands.png", "bands_model_vs_dft.png", "twisted_bands.png"):
        assert (out / name).stat().st_size > 10_000, name
    assert (out / "dataset" / "bl1x1_soc_s00" / "hamiltonians.h5").exists()
    # the files it says it wrote are there, and it says so for every file it wrote
    listed = {name.rstrip("/") for name in result["files"]}
    assert all((out / name).exists() for name in listed)
    assert {p.name for p in out.iterdir()} == {name.split("/")[0] for name in listed}


def test_outputs_carry_their_trust_information(demo):
    out, result = demo
    model, twisted = result["model"], result["twisted"]
    # provenance from the model file: never trained on the structure it is judged on
    assert model["held_out_structure"] not in model["trained_on"]
    assert model["validation_mae_meV"]
    near = model["bands_near_gap"]
    assert near["levels"] > 0 and near["max_meV"] >= near["mean_meV"] > 0
    # the verdict follows the numbers: a gap below the expected error is not resolved
    assert twisted["expected_band_error_meV"] == near["max_meV"]
    resolved = twisted["gap_meV"] > twisted["expected_band_error_meV"]
    assert twisted["gap_resolved"] == (resolved and not twisted["domain_findings"])
    text = (out / "summary.txt").read_text()
    chern = (out / "chern.txt").read_text()
    flag = "NOT TRUSTWORTHY"
    assert (flag in text) == (flag in chern) == (not twisted["gap_resolved"])
    assert f"model gap over Gamma, M, K: {twisted['gap_meV']:.1f} meV" in text
    assert "relative to OpenMX's Fermi level" in text and "mid-gap" in text
    # summary.json holds the same numbers as the returned result
    assert json.loads((out / "summary.json").read_text())["twisted"]["gap_meV"] == pytest.approx(
        twisted["gap_meV"]
    )
    rows = [r.split() for r in chern.splitlines() if r[0] != "#"]
    assert tuple(int(r[-1]) for r in rows) == tuple(twisted["chern_mod3_top1_top2"])
