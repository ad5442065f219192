"""MoireHCalculator: DFT mode reproduces OpenMX, model mode, ASE caching, band structures."""

import numpy as np
import pytest

from ase_moireh import calculator
from ase_moireh.build import twisted_bilayer
from ase_moireh.calculator import EXTREMA_KPOINTS, MoireHCalculator
from ase_moireh.factorize import count_below, mkl_library
from ase_moireh.solve import bloch_pair
from shared_data import converted, needs_shared

pytestmark = needs_shared


@pytest.mark.parametrize("case", ["bl1x1_soc_s44", "tw2179_nosoc"])
def test_dft_mode_reproduces_openmx_eigenvalues(case):
    s = converted(case)
    atoms = s.atoms.copy()
    atoms.calc = MoireHCalculator(dft=s)
    worst = 0.0
    for k, printed in s.reference_eigenvalues[:4]:
        ours = atoms.calc.get_eigenvalues(k)
        worst = max(worst, np.abs(ours[: len(printed)] - printed).max())
    assert worst < 1e-3
    near = atoms.calc.get_eigenvalues(s.reference_eigenvalues[0][0], nbands=6)
    full = atoms.calc.get_eigenvalues(s.reference_eigenvalues[0][0])
    assert np.all(np.isin(np.round(near, 9), np.round(full, 9)))


def test_dft_mode_refuses_another_structure():
    s = converted("bl1x1_nosoc_s00")
    other = converted("bl1x1_nosoc_s22").atoms.copy()
    other.calc = MoireHCalculator(dft=s)
    with pytest.raises(ValueError, match="different structure"):
        other.calc.get_hamiltonian()


def test_model_mode_caches_and_recomputes():
    atoms = twisted_bilayer(2, 1)
    atoms.calc = MoireHCalculator(soc=False)
    h1 = atoms.calc.get_hamiltonian()
    assert atoms.calc.get_hamiltonian() is h1  # cached
    assert h1.hermiticity_error() < 1e-5 and not h1.spinful
    atoms.positions[0, 0] += 0.05
    h2 = atoms.calc.get_hamiltonian(atoms)
    assert h2 is not h1
    hk = atoms.calc.get_hamiltonian(k=(0.2, 0.1, 0))
    assert hk.shape == (h2.dimension, h2.dimension)


def test_band_structure_is_an_ase_band_structure(tmp_path):
    s = converted("bl1x1_soc_s00")
    atoms = s.atoms.copy()
    atoms.calc = MoireHCalculator(dft=s)
    bs = atoms.calc.band_structure(npoints=12)
    nocc = atoms.calc.occupied_bands()
    assert bs.energies.shape == (1, 12, 208) and nocc == 92  # 92 electrons, SOC
    rel = bs.energies[0] - bs.reference
    assert np.all(rel[:, nocc - 1] < 0) and np.all(rel[:, nocc] > 0)  # reference in the gap
    edges = np.array([atoms.calc.get_eigenvalues(k) for k in EXTREMA_KPOINTS])
    vbm, cbm = edges[:, nocc - 1].max(), edges[:, nocc].min()
    assert bs.reference == pytest.approx(0.5 * (vbm + cbm))
    near = atoms.calc.band_structure(npoints=12, nbands=8)
    assert near.energies.shape == (1, 12, 8)
    assert np.all(np.isin(np.round(near.energies, 8), np.round(bs.energies, 8)))
    ax = bs.plot(filename=str(tmp_path / "bands.png"), show=False)
    assert ax is not None and (tmp_path / "bands.png").exists()


@pytest.mark.skipif(
    mkl_library() is None, reason="inertia counting needs PARDISO (pip install mkl)"
)
@pytest.mark.parametrize("case", ["tw2179_nosoc", "bl1x1_soc_s22"])
def test_sparse_midgap_equals_dense(case, monkeypatch):
    """Electron counting by LDL^T inertia + shift-invert finds the same band edges as dense
    diagonalisation (the path large cells take)."""
    s = converted(case)
    atoms = s.atoms.copy()
    atoms.calc = dense = MoireHCalculator(dft=s)
    expected = dense.midgap()
    monkeypatch.setattr(calculator, "DENSE_LIMIT", 10)
    atoms.calc = sparse = MoireHCalculator(dft=s)
    assert abs(sparse.midgap() - expected) < 1e-8
    nocc = sparse.occupied_bands()
    hk, sk = bloch_pair(s.hamiltonian, s.overlap, (0.5, 0, 0))
    below = np.sum(dense.get_eigenvalues((0.5, 0, 0)) < expected)
    assert count_below(hk - expected * sk) == below and below == nocc
