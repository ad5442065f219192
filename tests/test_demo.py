"""The README's main job on the embedded default (bundled OpenMX run, bundled models)."""

from ase_moireh.cli.demo import run_demo
from ase_moireh.data import demo_scfout_path


def test_main_job_converts_verifies_predicts_and_plots(tmp_path):
    assert demo_scfout_path().exists()
    result = run_demo(tmp_path, npoints=18)
    assert result["spinful"] and result["atoms"] == 6
    assert result["kpoints_compared"] == 81
    assert result["max_eig_diff_meV"] < 1.0
    assert result["hermiticity_H_eV"] < 1e-6
    assert set(result["model_H_mae_meV"]) == {"Mo-Mo", "Mo-Te", "Te-Mo", "Te-Te"}
    # what the files say is what was computed
    assert result["twisted_atoms"] == 42
    summary = (tmp_path / "summary.txt").read_text()
    assert f"{result['twisted_gap_meV']}" in summary
    rows = [r.split() for r in (tmp_path / "chern.txt").read_text().splitlines() if r[0] != "#"]
    assert tuple(int(r[-1]) for r in rows) == result["twisted_chern_mod3_top1_top2"]
    for name in ("bands.png", "bands_model_vs_dft.png", "twisted_bands.png"):
        assert (tmp_path / name).stat().st_size > 10_000, name
    assert "Chern_mod3" in (tmp_path / "chern.txt").read_text()
    assert (tmp_path / "dataset" / "bl1x1_soc_s00" / "hamiltonians.h5").exists()
    assert "max_eig_diff_meV" in (tmp_path / "summary.txt").read_text()
