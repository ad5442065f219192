"""moireh bands / chern / ribbon, and C3 symmetry of predicted Hamiltonians."""

import json
import re

import numpy as np
import pytest
import torch
from ase.io import read
from click.testing import CliRunner

from ase_moireh.build import nanoribbon, twisted_bilayer
from ase_moireh.calculator import MoireHCalculator
from ase_moireh.cli import moireh
from ase_moireh.data import bundled_model_path
from ase_moireh.io.dataset import write_dftio
from ase_moireh.model.io import load_bundle
from ase_moireh.topology import c3_invariant_kpoints, c3_matrix, c3_operation
from shared_data import case_dir, converted


@pytest.mark.slow
@pytest.mark.parametrize("soc", [False, True])
def test_predicted_hamiltonians_commute_with_c3(soc):
    atoms = twisted_bilayer(2, 1)
    atoms.calc = MoireHCalculator(model=load_bundle(bundled_model_path(soc), torch.float64))
    tb = atoms.calc.get_tight_binding()
    op = c3_operation(atoms)
    for k in c3_invariant_kpoints(op).values():
        hk, sk = tb.dense(k)
        u = c3_matrix(atoms, tb.H.basis, tb.spinful, op, k)
        assert np.abs(u @ hk - hk @ u).max() < 1e-8
        assert np.abs(u @ sk - sk @ u).max() < 1e-8


@pytest.mark.slow
def test_bands_model_vs_dft_and_chern(tmp_path):
    """The commands print the library's numbers: the band MAE of model against DFT and
    the C3 table and Chern number of chern_numbers()."""
    case = "bl1x1_exact_soc"
    write_dftio(converted(case), tmp_path / case)
    structure = str(case_dir(case) / "structure.extxyz")
    runner = CliRunner()
    out = tmp_path / "bands.png"
    args = ["bands", structure, "--dft", str(tmp_path / case), "--npoints", "6"]
    result = runner.invoke(moireh, [*args, "--nbands", "8", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 10_000
    printed = float(re.search(r"band MAE model vs DFT: (\S+) meV", result.output).group(1))
    atoms = read(structure)
    curves = []
    for calc in (MoireHCalculator(dft=str(tmp_path / case)), MoireHCalculator()):
        atoms.calc = calc
        calc.set(nbands=8)
        curves.append(calc.band_structure("GMKG", 6).energies)
    assert printed == pytest.approx(np.abs(curves[0] - curves[1]).mean() * 1e3, abs=1e-3)
    vbm, cbm = calc.band_edges()  # the model's, printed as the plots' energy zero
    assert f"model: VBM {vbm:+.4f} eV, CBM {cbm:+.4f} eV, gap {(cbm - vbm) * 1e3:.1f} meV" in (
        result.output
    )
    assert f"mid-gap {0.5 * (vbm + cbm):+.4f} eV is the energy zero" in result.output

    json_out = tmp_path / "c.json"
    args = ["chern", structure, "--dft", str(tmp_path / case), "--nbands", "1"]
    result = runner.invoke(moireh, [*args, "-o", str(json_out)])
    assert result.exit_code == 0, result.output
    atoms.calc = MoireHCalculator(dft=str(tmp_path / case))
    library = atoms.calc.chern_numbers(nbands=1, spin=1)
    assert f"Chern number mod 3: {library.chern_mod3}" in result.output
    written = json.loads(json_out.read_text())
    assert written["chern_mod3"] == library.chern_mod3
    for label, values in library.eigenvalues.items():
        phases = np.array(written["c3_phases_deg"][label])
        assert np.all((phases > -180) & (phases <= 180))
        turn = np.exp(1j * np.radians(phases))
        assert np.allclose(turn, values / np.abs(values), atol=1e-3)


@pytest.mark.slow
def test_ribbon_edge_state_weights(tmp_path):
    """Every state's Mulliken weights on the lower edge, upper edge and bulk lie in
    [0, 1] and add up to 1 (a partition of the atoms), its eigenvector is S-normalised,
    and the plot is written."""
    atoms = twisted_bilayer(2, 1)
    atoms.calc = MoireHCalculator(soc=False)
    midgap = atoms.calc.midgap()
    out, data = tmp_path / "ribbon.png", tmp_path / "ribbon.json"
    args = ["ribbon", "2", "1", "--repeats", "2", "--no-soc", "--sigma", "0.05"]
    result = CliRunner().invoke(
        moireh, [*args, "--nk", "4", "--nbands", "6", "-o", str(out), "--json", str(data)]
    )
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 10_000
    bands = json.loads(data.read_text())
    lower, upper, bulk = (np.array(bands[k]) for k in ("lower", "upper", "bulk"))
    assert lower.shape == (4, 6)
    for w in (lower, upper, bulk):
        assert np.all(w > -1e-3) and np.all(w < 1 + 1e-3)
    assert np.allclose(lower + upper + bulk, 1.0, atol=1e-10)  # edge_side partitions
    assert np.allclose(bands["norm"], 1.0, atol=1e-8)
    # some states live on one edge: an evenly spread state puts on each edge the share
    # of atoms it holds (a third here); these hold over 0.8 on one edge (seen: 0.94)
    ribbon = nanoribbon(twisted_bilayer(2, 1), repeats=2)
    share = max(np.mean(ribbon.arrays["edge_side"] == side) for side in (-1, 1))
    assert np.maximum(lower, upper).max() > max(0.8, 2 * share)
    # --sigma is relative to the periodic cell's mid-gap, which the command prints
    assert f"mid-gap {midgap:+.4f} eV is the energy zero" in result.output
    energies = np.array(bands["energies"])
    assert energies.min() < midgap + 0.05 < energies.max()
    # with an absolute --sigma the periodic cell's gap search is skipped: same levels
    args = ["ribbon", "2", "1", "--repeats", "2", "--no-soc", "--sigma", str(midgap + 0.05)]
    args += ["--absolute-sigma", "--nk", "4", "--nbands", "6", "-o", str(out)]
    result = CliRunner().invoke(moireh, [*args, "--json", str(data)])
    assert result.exit_code == 0, result.output
    assert "periodic" not in result.output and "energy zero of the plot" in result.output
    again = np.array(json.loads(data.read_text())["energies"])
    assert np.abs(again - energies).max() < 1e-8


@pytest.mark.slow
def test_ribbon_streamed_to_disk_gives_the_same_levels(tmp_path):
    """--write streams H and S to HDF5 and the band solve reads them back: the levels
    equal those of the prediction in memory (double precision stored)."""
    args = ["ribbon", "2", "1", "--repeats", "2", "--no-soc", "--nk", "2", "--nbands", "4"]
    levels = {}
    for name, extra in (("memory", []), ("disk", ["--write", str(tmp_path / "r.h5")])):
        data = tmp_path / f"{name}.json"
        extra += ["--precision", "double", "-o", str(tmp_path / f"{name}.png")]
        result = CliRunner().invoke(moireh, [*args, *extra, "--json", str(data)])
        assert result.exit_code == 0, result.output
        levels[name] = np.array(json.loads(data.read_text())["energies"])
    assert "atoms/s), peak memory" in result.output
    assert np.abs(levels["disk"] - levels["memory"]).max() < 1e-8
    result = CliRunner().invoke(moireh, [*args, "--write", str(tmp_path / "d"), "--no-bands"])
    assert result.exit_code == 0 and "wrote" in result.output and "mid-gap" not in result.output
