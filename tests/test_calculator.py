"""MoireHCalculator: DFT mode reproduces OpenMX; ASE's contract (parameters, caching that
check_state and set() invalidate, the band-structure interface, the ASE tools the module
docstring names); every method answers for the atoms it is given; model mode on any
device."""

import dataclasses

import ase.io
import numpy as np
import pytest
import torch
from ase.dft.bandgap import bandgap

from ase_moireh import calculator, topology
from ase_moireh.block_operator import BlockOperator
from ase_moireh.build import twisted_bilayer
from ase_moireh.build.generate import shifted_bilayers
from ase_moireh.calculator import MoireHCalculator
from ase_moireh.data import bundled_model_path
from ase_moireh.kpoints import extrema_kpoints
from ase_moireh.model.graph import build_graph
from ase_moireh.model.io import ModelBundle, load_bundle
from ase_moireh.solvers import solve
from ase_moireh.solvers.factorization import count_below, mkl_library
from ase_moireh.topology import c3_eigenvalues
from shared_data import converted

OPERATORS = {"hamiltonian", "overlap", "hamiltonian_spread"}
#: 64 electrons in the 6-atom bilayer: 32 bands, below another gap of it (4.4 eV wide)
FEWER_ELECTRONS = {"Mo": 8, "Te": 12}
#: eV: band edges (two levels of eigh) against every level (measured 1.8e-14)
EDGE_TOL = 3e-14
#: C3 eigenvalues from shift-invert against dense diagonalisation (measured 1.3e-15)
C3_TOL = 2e-15


@pytest.fixture(scope="module")
def collinear():
    """The bundled collinear model (one dH member), loaded once for the module."""
    return load_bundle(bundled_model_path(soc=False))


@pytest.mark.slow
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


@pytest.mark.slow
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


def rattled(atoms, seed: int = 1):
    out = atoms.copy()
    out.rattle(0.02, seed=seed)
    return out


def extrema_levels(tb, atoms) -> np.ndarray:
    """Every level at Gamma, M and K (the points of the band-edge search), densely."""
    return np.array([tb.eigh(k) for k in extrema_kpoints(atoms.cell)])


@pytest.mark.slow
def test_extras_are_declared_properties():
    """The ensemble spread is an implemented property in results; the band edges are not
    (a private cache: results holds the operators only)."""
    from ase.calculators.calculator import PropertyNotImplementedError
    from toy_models import tiny_model

    from ase_moireh.overlap import bundled_overlap

    calc = MoireHCalculator(soc=False)
    assert set(calc.implemented_properties) == OPERATORS
    atoms = bilayer()
    atoms.calc = calc
    vbm, cbm = calc.band_edges()
    assert cbm > vbm and set(calc.results) == {"hamiltonian", "overlap"}
    with pytest.raises(PropertyNotImplementedError):  # the bundled model is one member
        calc.get_hamiltonian_spread()
    # two members: the spread is in results, their standard deviation |a - b| / 2
    members = [tiny_model(False, seed) for seed in (0, 1)]
    ensemble = ModelBundle(members, bundled_overlap(), {})
    atoms.calc = MoireHCalculator(model=ensemble)
    spread = atoms.calc.get_hamiltonian_spread()
    assert spread.nedges == atoms.calc.get_hamiltonian().nedges
    assert set(atoms.calc.results) == OPERATORS
    values = []
    for model in members:
        one = MoireHCalculator(model=ModelBundle([model], ensemble.overlap, {}))
        one.set_atoms(atoms)
        values.append(one.get_hamiltonian().values)
    assert spread.values.max() > 1e-4
    np.testing.assert_allclose(spread.values, 0.5 * np.abs(values[0] - values[1]), atol=1e-6)


# ------------------------------------------------------------ answers for the atoms given


@pytest.mark.slow
def test_an_unattached_calculator_answers_for_the_atoms_passed(collinear):
    """Regression: band_edges(atoms) on a calculator attached to nothing raised "no Atoms":
    the electron count looked for attached atoms instead of those passed."""
    atoms = bilayer()
    calc = MoireHCalculator(model=collinear)
    with pytest.raises(ValueError, match="no Atoms"):
        calc.midgap()  # nothing given, attached or calculated yet
    vbm, cbm = calc.band_edges(atoms)
    nocc = calc.occupied_bands(atoms)
    assert nocc == 46  # 2 Mo x 14 + 4 Te x 16 electrons, 2 per band
    levels = extrema_levels(calc.get_tight_binding(atoms), atoms)
    edges = (levels[:, nocc - 1].max(), levels[:, nocc].min())
    assert (vbm, cbm) == pytest.approx(edges, abs=EDGE_TOL)
    assert calc.midgap(atoms) == 0.5 * (vbm + cbm)
    near = calc.eigenvalues_at((0, 0, 0), nbands=4, atoms=atoms)  # the bands around the gap
    np.testing.assert_allclose(near, levels[0, nocc - 2 : nocc + 2], atol=EDGE_TOL)
    # without atoms: those of the last calculation (ASE's calc.atoms), here the same
    assert calc.band_edges() == (vbm, cbm) and calc.atoms == atoms


@pytest.mark.slow
def test_alternating_structures_each_keep_their_own_answer(collinear):
    """Regression: with a.calc = calc, midgap(a) gave b's mid-gap once midgap(b) had run
    (the band edges mixed b's H with the attached a's electron count and k-points and
    were cached as a's). Each answer must equal a fresh calculator's."""
    a = bilayer()
    b = rattled(a)
    fresh = {}
    for x in (a, b):
        x.calc = MoireHCalculator(model=collinear)
        fresh[id(x)] = x.calc.band_edges()
    assert abs(sum(fresh[id(a)]) - sum(fresh[id(b)])) > 0.05  # eV: answers that differ
    a.calc = calc = MoireHCalculator(model=collinear)
    # the same answer to rounding: the native H0 sums its grid blocks on worker threads
    # in the order they finish (seen: 2e-15 eV); a mix-up of a and b is 0.05 eV
    same = {"abs": 1e-12}
    for atoms in (a, b, a, b):
        assert np.array_equal(calc.get_hamiltonian(atoms).positions, atoms.positions)
        assert calc.midgap(atoms) == pytest.approx(0.5 * sum(fresh[id(atoms)]), **same)
        assert calc.band_edges(atoms) == pytest.approx(fresh[id(atoms)], **same)
    assert calc.midgap() == pytest.approx(0.5 * sum(fresh[id(a)]), **same)  # the attached


@pytest.mark.skipif(
    mkl_library() is None, reason="the large-cell C3 path needs PARDISO (pip install mkl)"
)
def test_set_valence_drops_band_edges_midgap_and_c3_points(collinear, monkeypatch):
    """Regression: set(valence=...) kept the band edges, mid-gap and C3 points of the old
    electron count. The C3 points take the large-cell path here (the levels just below
    the mid-gap, one factorisation per point), which depends on both."""
    monkeypatch.setattr(topology, "C3_DENSE_LIMIT", 10)
    atoms = bilayer()
    atoms.calc = calc = MoireHCalculator(model=collinear)
    tb = calc.get_tight_binding(atoms)
    levels = extrema_levels(tb, atoms)
    for valence, nocc in ((None, 46), (FEWER_ELECTRONS, 32), (None, 46)):
        calc.set(valence=valence)
        assert calc.occupied_bands(atoms) == nocc
        edges = (levels[:, nocc - 1].max(), levels[:, nocc].min())
        assert calc.band_edges(atoms) == pytest.approx(edges, abs=EDGE_TOL)
        assert edges[1] - edges[0] > 0.9  # eV: both counts fill the bands below a gap
        assert calc.midgap(atoms) == pytest.approx(0.5 * sum(edges), abs=EDGE_TOL)
        c3 = calc.chern_numbers(nbands=1, atoms=atoms).eigenvalues
        dense = c3_eigenvalues(tb, atoms, [nocc - 1]).eigenvalues  # every level, densely
        assert c3.keys() == dense.keys()
        for label, values in dense.items():
            np.testing.assert_allclose(c3[label], values, atol=C3_TOL)


def test_each_parameter_drops_what_it_changes(collinear):
    """New kpts, nbands, sigma or valence give new levels from the same H; a new model
    gives a new H (and only then)."""
    atoms = bilayer()
    atoms.calc = calc = MoireHCalculator(model=collinear, kpts=[(0, 0, 0)], nbands=4)
    h = calc.get_hamiltonian()
    gamma, m = calc.eigenvalues_at((0, 0, 0)), calc.eigenvalues_at((0.5, 0, 0))
    np.testing.assert_allclose(calc.get_eigenvalues(0), gamma[44:48], atol=EDGE_TOL)
    changes = [
        ({"nbands": 2}, gamma[45:47]),
        ({"sigma": gamma[10], "nbands": 1}, gamma[10:11]),
        ({"kpts": [(0.5, 0, 0)], "sigma": None, "nbands": 2}, m[45:47]),
        ({"valence": FEWER_ELECTRONS}, m[31:33]),
    ]
    for change, expected in changes:
        calc.set(**change)
        np.testing.assert_allclose(calc.get_eigenvalues(0), expected, atol=EDGE_TOL)
        assert calc.get_hamiltonian() is h
    calc.set(gap_guess=-4.0, precision="single")  # dense levels: neither changes them
    assert calc.get_hamiltonian() is h
    calc.set(model=ModelBundle(collinear.models[:1], collinear.overlap, collinear.info))
    assert "hamiltonian" not in calc.results and calc.get_hamiltonian() is not h
    assert set(calc.results) == OPERATORS - {"hamiltonian_spread"}  # one member: no spread


def test_set_compares_datasets_by_identity():
    """Regression: set(dft=...) with another dataset raised "truth value of an array is
    ambiguous": ASE's set() compares old and new values, and the dataclasses compared
    their arrays. Datasets and operators compare by identity now."""
    s = converted("bl1x1_nosoc_s00")
    atoms = s.atoms.copy()
    atoms.calc = calc = MoireHCalculator(dft=s)
    h = calc.get_hamiltonian()
    assert (h == BlockOperator(h.numbers, h.basis, h.edges, h.values, h.spinful)) is False
    other = dataclasses.replace(s)  # the same contents, another object
    assert calc.set(dft=other) == {"dft": other}
    assert calc.results == {} and calc.get_hamiltonian() is other.hamiltonian
    assert calc.set(dft=other) == {}  # the same object: nothing changed


@pytest.mark.slow
def test_ase_tools(collinear, tmp_path):
    """The ASE tools the module docstring names, on the collinear model of the 21.79 deg
    cell: band_structure() through get_band_structure, ase.dft.bandgap,
    export_properties() (regression: it raised KeyError on results' operators, a k-point
    dict and a tuple) and ase.io.write of the attached structure."""
    atoms = twisted_bilayer(2, 1)
    path = atoms.cell.bandpath("GMKG", npoints=5)
    atoms.calc = MoireHCalculator(model=collinear, kpts=path)
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
    assert set(atoms.calc.results) == {"hamiltonian", "overlap"}  # one member: no spread
    props = atoms.calc.export_properties()
    standard = {"fermi_level", "eigenvalues", "ibz_kpoints", "kpoint_weights"}
    assert set(props) == standard | {"nspins", "nkpts", "nbands"}  # ASE adds the shapes
    assert props["fermi_level"] == bs.reference and props["nkpts"] == 5
    np.testing.assert_array_equal(props["eigenvalues"], bs.energies)
    np.testing.assert_array_equal(props["ibz_kpoints"], path.kpts)
    ase.io.write(tmp_path / "cell.extxyz", atoms)
    back = ase.io.read(tmp_path / "cell.extxyz")
    assert np.allclose(back.positions, atoms.positions) and back.calc is None  # no results
    atoms.calc.set(nbands=8)
    assert set(atoms.calc.export_properties()) == {"fermi_level"}  # levels dropped
    few = atoms.calc.band_structure("GMKG", npoints=5)  # the same path, by name
    assert few.energies.shape == (1, 5, 8)
    assert np.allclose(few.energies[0], bs.energies[0][:, nocc - 4 : nocc + 4])


@pytest.mark.slow
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
@pytest.mark.slow
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
@pytest.mark.slow
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
