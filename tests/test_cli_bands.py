"""moireh bands / chern / ribbon, and C3 symmetry of predicted Hamiltonians."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ase_moireh.build import twisted_bilayer
from ase_moireh.calculator import MoireHCalculator
from ase_moireh.cli import moireh
from ase_moireh.cli_model import bundled_model_path
from ase_moireh.dataset import write_dftio
from ase_moireh.model.io import load_bundle
from ase_moireh.topology import c3_invariant_kpoints, c3_matrix, c3_operation, dense_pair
from shared_data import OPENMX, converted, needs_shared

pytestmark = needs_shared


@pytest.mark.parametrize("soc", [False, True])
def test_predicted_hamiltonians_commute_with_c3(soc):
    atoms = twisted_bilayer(2, 1)
    atoms.calc = MoireHCalculator(model=load_bundle(bundled_model_path(soc), torch.float64))
    h, s = atoms.calc.operators()
    op = c3_operation(atoms)
    for k in c3_invariant_kpoints(op).values():
        hk, sk = dense_pair(h, s, k)
        u = c3_matrix(atoms, h.basis, h.spinful, op, k)
        assert np.abs(u @ hk - hk @ u).max() < 1e-8
        assert np.abs(u @ sk - sk @ u).max() < 1e-8


def test_bands_model_vs_dft_and_chern(tmp_path):
    case = "bl1x1_exact_soc"
    write_dftio(converted(case), tmp_path / case)
    structure = str(OPENMX / case / "structure.extxyz")
    runner = CliRunner()
    out = tmp_path / "bands.png"
    result = runner.invoke(
        moireh,
        [
            "bands",
            structure,
            "--dft",
            str(tmp_path / case),
            "--npoints",
            "6",
            "--nbands",
            "8",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "band MAE model vs DFT" in result.output and out.stat().st_size > 10_000
    result = runner.invoke(
        moireh,
        [
            "chern",
            structure,
            "--dft",
            str(tmp_path / case),
            "--nbands",
            "1",
            "-o",
            str(tmp_path / "c.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Chern number mod 3" in result.output and (tmp_path / "c.json").exists()


def test_ribbon_edge_state_plot(tmp_path):
    atoms = twisted_bilayer(2, 1)
    atoms.calc = MoireHCalculator(soc=False)
    sigma = atoms.calc.midgap()
    out = tmp_path / "ribbon.png"
    result = CliRunner().invoke(
        moireh,
        [
            "ribbon",
            "2",
            "1",
            "--repeats",
            "2",
            "--no-soc",
            "--sigma",
            str(sigma),
            "--nk",
            "4",
            "--nbands",
            "6",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 10_000
