"""MoireHCalculator: DFT mode reproduces OpenMX; ASE's contract (parameters, caching that
check_state invalidates, the band-structure interface); model mode on any device."""

import numpy as np
import pytest
import torch
from ase.dft.bandgap import bandgap

from ase_moireh import calculator, solve
from ase_moireh.build import twisted_bilayer
from ase_moireh.build.generate import shifted_bilayers
from ase_moireh.calculator import MoireHCalculator
from ase_moireh.data import bundled_model_path
from ase_moireh.factorize import count_below, mkl_library
from ase_moireh.kpoints import extrema_kpoints
from ase_moireh.model.graph import build_graph
from ase_moireh.model.io import load_bundle
from shared_data import converted


@pytest.mark.parametrize("case", ["bl1x1_nosoc_s00", "bl1x1_soc_s44", "tw2179_nosoc"])
def test_dft_mode_reproduces_openmx_eigenvalues(case):
    s = converted(case)
    atoms = s.atoms.copy()
    atoms.calc = MoireHCalculator(dft=s)
    worst = 0.0
    for k, printed in s.reference_eigenvalues[:4]:
        ours = atoms.calc.eigenvalues_at(k)
        worst = max(worst, np.abs(ours[: len(printed)] - printed).max())
    assert worst < 1e-3
    # nbands: the levels around the gap, three on each side of the mid-gap
    near = atoms.calc.eigenvalues_at(s.reference_eigenvalues[0][0], nbands=6)
    full = atoms.calc.eigenvalues_at(s.reference_eigenvalues[0][0])
    nocc = atoms.calc.occupied_bands()
    np.testing.assert_allclose(near, full[nocc - 3 : nocc + 3], atol=1e-9)
    assert near[2] < atoms.calc.midgap() < near[3]


def test_dft_mode_refuses_another_structure():
    s = converted("bl1x1_nosoc_s00")
    other = converted("bl1x1_nosoc_s22").atoms.copy()
    other.calc = MoireHCalculator(dft=s)
    with pytest.raises(ValueError, match="different structure"):
        other.calc.get_hamiltonian()


def test_options_are_ase_parameters():
    calc = MoireHCalculator(soc=False, nbands=8)
    assert calc.parameters["soc"] is False and calc.parameters["model"] is None
    assert calc.todict() == {"soc": False, "nbands": 8}  # defaults are not repeated
    assert MoireHCalculator().todict() == {}
    with pytest.raises(ValueError, match="unknown parameter"):
        MoireHCalculator(socc=True)


def bilayer():
    """The 6-atom MM-stacked bilayer: small, so contract tests stay cheap."""
    return shifted_bilayers(shifts=1, amplitude=0.0, interlayer_sigma=0.0)[0]


def test_results_follow_the_atoms():
    """Regression: midgap() once returned a cached value after an atom moved 0.5 A."""
    atoms = bilayer()
    atoms.calc = MoireHCalculator(soc=False)
    h1 = atoms.calc.get_hamiltonian()
    assert atoms.calc.get_hamiltonian() is h1  # cached
    assert h1.hermiticity_error() < 1e-5 and not h1.spinful
    mid1 = atoms.calc.midgap()
    assert atoms.calc.midgap() == mid1
    atoms.positions[0, 0] += 0.5
    assert atoms.calc.midgap() != mid1  # recomputed for the moved atoms
    h2 = atoms.calc.get_hamiltonian()
    assert h2 is not h1
    hk = atoms.calc.get_hamiltonian(k=(0.2, 0.1, 0))
    assert hk.shape == (h2.dimension, h2.dimension)
    # new k-points keep H; a new model drops it
    atoms.calc.set(nbands=4)
    assert atoms.calc.get_hamiltonian() is h2
    atoms.calc.set(soc=True)
    assert atoms.calc.get_hamiltonian().spinful


def test_extras_are_declared_properties():
    """The ensemble spread and the band edges are implemented properties in results."""
    calc = MoireHCalculator(soc=False)
    assert {"hamiltonian", "overlap", "hamiltonian_spread", "band_edges"} <= set(
        calc.implemented_properties
    )
    atoms = bilayer()
    atoms.calc = calc
    vbm, cbm = calc.band_edges()
    assert calc.results["band_edges"] == (vbm, cbm) and cbm > vbm
    from ase.calculators.calculator import PropertyNotImplementedError

    from ase_moireh.model.io import ModelBundle

    spread = calc.get_hamiltonian_spread()  # the bundled model is an ensemble
    assert spread.nedges == calc.get_hamiltonian().nedges
    bundle = calc.bundle
    # the spread is the members' standard deviation: |a - b| / 2 for two members
    members = []
    for model in bundle.models:
        one = MoireHCalculator(model=ModelBundle([model], bundle.overlap, bundle.info))
        one.set_atoms(atoms)
        members.append(one.get_hamiltonian().values)
    assert len(members) == 2 and spread.values.max() > 1e-4
    np.testing.assert_allclose(spread.values, 0.5 * np.abs(members[0] - members[1]), atol=1e-6)
    single = ModelBundle(bundle.models[:1], bundle.overlap, bundle.info)
    atoms.calc = MoireHCalculator(model=single)
    with pytest.raises(PropertyNotImplementedError):  # a single model has no spread
        atoms.calc.get_hamiltonian_spread()


def test_ase_band_structure_and_bandgap_tools():
    """ASE's own machinery: band_structure() through get_band_structure, and
    ase.dft.bandgap, on the collinear model of the 21.79 deg cell."""
    atoms = twisted_bilayer(2, 1)
    path = atoms.cell.bandpath("GMKG", npoints=5)
    atoms.calc = MoireHCalculator(soc=False, kpts=path)
    assert atoms.calc.get_number_of_spins() == 1
    assert np.allclose(atoms.calc.get_ibz_k_points(), path.kpts)
    bs = atoms.calc.band_structure()
    nocc = atoms.calc.occupied_bands()
    assert bs.energies.shape == (1, 5, atoms.calc.get_tight_binding().dimension)
    assert nocc == 322  # 14 Mo x 14 + 28 Te x 16 electrons, 2 per band
    rel = bs.energies[0] - bs.reference
    assert np.all(rel[:, nocc - 1] < 0) and np.all(rel[:, nocc] > 0)  # reference in the gap
    assert bs.reference == pytest.approx(atoms.calc.get_fermi_level())
    gap, _, _ = bandgap(atoms.calc, output=None)
    indirect = rel[:, nocc].min() - rel[:, nocc - 1].max()
    assert gap == pytest.approx(indirect, abs=1e-9) and gap > 0.5  # eV: a semiconductor
    atoms.calc.set(nbands=8)
    few = atoms.calc.band_structure("GMKG", npoints=5)  # the same path, by name
    assert few.energies.shape == (1, 5, 8)
    assert np.allclose(few.energies[0], bs.energies[0][:, nocc - 4 : nocc + 4])


def test_model_makes_no_tensor_off_its_device():
    """Regression: tensors made without a device (on the CPU) and indexed with the
    input's. With the default device set elsewhere (meta: placement only, no data), any
    tensor the forward pass makes without device= lands there and the pass fails, as
    on a GPU; tensors made on the input's device keep it working."""
    bundle = load_bundle(bundled_model_path(soc=False))
    model = bundle.models[0]
    atoms = twisted_bilayer(2, 1)
    data = build_graph(atoms, model.config.species, model.config.cutoff, dtype=torch.float32)
    reference = model(data)
    torch.set_default_device("meta")
    try:
        out = model(data)
    finally:
        torch.set_default_device(None)
    for key, (_edges, pred) in out.items():
        assert pred.device.type == "cpu" and torch.equal(pred, reference[key][1]), key


def test_band_edges_match_dense_diagonalisation_at_the_extrema():
    s = converted("bl1x1_soc_s00")
    atoms = s.atoms.copy()
    atoms.calc = MoireHCalculator(dft=s)
    nocc = atoms.calc.occupied_bands()
    assert nocc == 92  # SOC: one electron per band (data README: 92 electrons)
    edges = np.array([atoms.calc.eigenvalues_at(k) for k in extrema_kpoints(atoms.cell)])
    assert atoms.calc.band_edges() == pytest.approx(
        (edges[:, nocc - 1].max(), edges[:, nocc].min())
    )


@pytest.mark.skipif(
    mkl_library() is None, reason="inertia counting needs PARDISO (pip install mkl)"
)
@pytest.mark.parametrize("case", ["tw2179_nosoc", "bl1x1_soc_s22", "bl1x1_soc_s00"])
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
    hk, sk = sparse.get_tight_binding().pair((0.5, 0, 0))
    below = np.sum(dense.eigenvalues_at((0.5, 0, 0)) < expected)
    assert count_below(hk - expected * sk) == below and below == nocc


@pytest.mark.skipif(
    mkl_library() is None, reason="inertia counting needs PARDISO (pip install mkl)"
)
def test_a_gap_guess_saves_the_bisection_and_never_changes_the_answer(monkeypatch):
    """Large cells count electrons from ``gap_guess``: one inside the gap needs a single
    inertia count; one far off costs a bisection but gives the same band edges."""
    s = converted("tw2179_nosoc")
    dense = MoireHCalculator(dft=s)
    dense.set_atoms(s.atoms)
    edges, nocc = dense.band_edges(), dense.occupied_bands()
    tb = dense.get_tight_binding()
    counts = []
    counted = solve.count_below
    monkeypatch.setattr(solve, "count_below", lambda a: counts.append(1) or counted(a))
    for guess, expected_counts in ((0.5 * sum(edges), 1), (edges[0] - 3.0, None)):
        counts.clear()
        energy = tb.gap_energy((0, 0, 0), nocc, guess)
        assert counted(tb.Hk((0, 0, 0)) - energy * tb.Sk((0, 0, 0))) == nocc
        assert len(counts) == expected_counts if expected_counts else len(counts) > 1
    monkeypatch.setattr(calculator, "DENSE_LIMIT", 10)
    calc = MoireHCalculator(dft=s, gap_guess=edges[0] - 3.0)
    calc.set_atoms(s.atoms)
    assert calc.band_edges() == pytest.approx(edges, abs=1e-8)
