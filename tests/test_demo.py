"""The README's main job on the embedded default (bundled OpenMX run)."""

from ase_moireh.demo import bundled_run, run_demo


def test_main_job_converts_verifies_and_plots(tmp_path):
    assert bundled_run().exists()
    result = run_demo(tmp_path, npoints=20)
    assert result["spinful"] and result["atoms"] == 6
    assert result["kpoints_compared"] == 81
    assert result["max_eig_diff_meV"] < 1.0
    assert result["hermiticity_H_eV"] < 1e-6
    assert (tmp_path / "bands.png").stat().st_size > 10_000
    assert (tmp_path / "dataset" / "bl1x1_soc_s00" / "hamiltonians.h5").exists()
    assert "max_eig_diff_meV" in (tmp_path / "summary.txt").read_text()
