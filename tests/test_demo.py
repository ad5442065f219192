"""The README's main job on the embedded default (bundled OpenMX run, bundled models)."""

from ase_moireh.demo import bundled_run, run_demo


def test_main_job_converts_verifies_predicts_and_plots(tmp_path):
    assert bundled_run().exists()
    result = run_demo(tmp_path, npoints=18)
    assert result["spinful"] and result["atoms"] == 6
    assert result["kpoints_compared"] == 81
    assert result["max_eig_diff_meV"] < 1.0
    assert result["hermiticity_H_eV"] < 1e-6
    assert set(result["model_H_mae_meV"]) == {"Mo-Mo", "Mo-Te", "Te-Mo", "Te-Te"}
    assert result["twisted_atoms"] == 42 and result["twisted_gap_meV"] > 0
    assert all(c in (0, 1, 2) for c in result["twisted_chern_mod3_top1_top2"])
    for name in ("bands.png", "bands_model_vs_dft.png", "twisted_bands.png"):
        assert (tmp_path / name).stat().st_size > 10_000, name
    assert "Chern_mod3" in (tmp_path / "chern.txt").read_text()
    assert (tmp_path / "dataset" / "bl1x1_soc_s00" / "hamiltonians.h5").exists()
    assert "max_eig_diff_meV" in (tmp_path / "summary.txt").read_text()
