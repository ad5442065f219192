"""Chern numbers from C3 eigenvalues and from Fukui-Hatsugai-Suzuki agree on known models;
the C3 representation commutes with H(k) at Gamma, K, K'."""

import math

import numpy as np
import pytest
from toy_models import haldane_model, rashba_exchange_model

from ase_moireh.block_operator import BlockOperator
from ase_moireh.solvers.factorization import mkl_library
from ase_moireh.tightbinding import TightBinding
from ase_moireh.topology import (
    c3_eigenvalues,
    c3_group_eigenvalues,
    c3_invariant_kpoints,
    c3_matrix,
    c3_operation,
    fukui_chern,
    sector_c3_eigenvalues,
)
from shared_data import SYMMETRIC_CASES, converted

HALDANE_PHASES = [  # (mass, phi, |C|): Haldane 1988, gap closes at |M| = 3 sqrt3 |t2 sin phi|
    (0.0, math.pi / 2, 1),
    (0.0, -math.pi / 2, 1),
    (0.3, math.pi / 2, 1),
    (0.3, -math.pi / 3, 1),
    (0.7, math.pi / 2, 0),
    (-0.7, -math.pi / 2, 0),
]


def commutator_error(atoms, tb: TightBinding) -> float:
    op = c3_operation(atoms)
    worst = 0.0
    for k in c3_invariant_kpoints(op).values():
        hk, sk = tb.dense(k)
        u = c3_matrix(atoms, tb.H.basis, tb.spinful, op, k)
        worst = max(worst, np.abs(u @ hk - hk @ u).max(), np.abs(u @ sk - sk @ u).max())
    return worst


@pytest.mark.parametrize("mass, phi, expected", HALDANE_PHASES)
def test_haldane_chern_from_two_methods(mass, phi, expected):
    atoms, tb = haldane_model(t1=1.0, t2=0.1, phi=phi, mass=mass)
    lattice = fukui_chern(tb, [0], nk=18)
    assert abs(lattice - round(lattice)) < 1e-6
    assert abs(round(lattice)) == expected
    if expected:  # the sign flips with the chirality of the NNN hopping
        assert np.sign(lattice) == -np.sign(math.sin(phi))
    assert c3_eigenvalues(tb, atoms, [0]).chern_mod3 == round(lattice) % 3
    assert commutator_error(atoms, tb) < 1e-8


@pytest.mark.parametrize("exchange", [0.5, -0.5])
def test_spinful_rashba_exchange_model(exchange):
    atoms, tb = rashba_exchange_model(rashba=0.3, exchange=exchange)
    lattice = fukui_chern(tb, [0, 1], nk=24)
    assert abs(round(lattice)) == 2 and abs(lattice - round(lattice)) < 1e-6
    result = c3_eigenvalues(tb, atoms, [0, 1])
    assert result.chern_mod3 == round(lattice) % 3
    for values in result.eigenvalues.values():  # spin-1/2: cube roots of -1
        assert np.allclose(values**3, -1)
    assert commutator_error(atoms, tb) < 1e-8


@pytest.mark.parametrize(  # the twisted cell: ~6 s here
    "case",
    [pytest.param(c, marks=pytest.mark.slow) if c.startswith("tw") else c for c in SYMMETRIC_CASES],
)
def test_c3_commutes_with_dft_hamiltonians_within_grid_noise(case):
    """The shared symmetric cells: OpenMX's real-space grid breaks C3 by up to ~25 meV
    on a few elements (data README), while a wrong representation breaks it by eV."""
    s = converted(case)
    assert commutator_error(s.atoms, s.tight_binding) < 0.05
    nval = 644 if case.startswith("tw") else 92  # valence electrons (data README)
    top = nval - 1 if s.spinful else nval // 2 - 1
    groups = c3_group_eigenvalues(s.tight_binding, s.atoms, top)
    roots = -1 if s.spinful else 1
    for values in groups.values():
        assert np.allclose(values**3, roots, atol=1e-3)  # clean cube roots


def test_spin_sector_c3_chern_of_an_sz_conserving_model():
    """Spin up = Haldane(phi), spin down = Haldane(-phi) (Kane-Mele with s_z conserved):
    the sector Chern numbers from C3 eigenvalues match FHS of each sector, C_up = -C_down."""
    atoms, up_tb = haldane_model(t2=0.1, phi=math.pi / 2)
    _, down_tb = haldane_model(t2=0.1, phi=-math.pi / 2)
    up, down, s = up_tb.H, down_tb.H, up_tb.S
    zero = np.zeros((1, 1))
    blocks = [
        np.block([[up.block(e), zero], [zero, down.block(down.index(i, j, r))]])
        for e, (i, j, *r) in enumerate(up.edges)
    ]
    h = BlockOperator.from_blocks(atoms.numbers, up.basis, up.edges, blocks, spinful=True)
    for spin, sector in ((1, up_tb), (-1, down_tb)):
        lattice = round(fukui_chern(sector, [0], nk=12))
        result = sector_c3_eigenvalues(TightBinding(h, s), atoms, nbands=1, nocc=2, spin=spin)
        assert result.chern_mod3 == lattice % 3 and lattice == -spin


def test_phases_are_printed_in_one_branch():
    """-180 and 180 deg are one phase: printed as 180 everywhere, never -0.0."""
    from ase_moireh.topology import phases_deg

    values = np.exp(1j * np.radians([-180.0, 180.0, -179.99, 0.0, -0.01, 120.0]))
    assert phases_deg(values) == [180.0, 180.0, 180.0, 0.0, 0.0, 120.0]
    assert str(phases_deg(np.exp(-0.0001j))[0]) == "0.0"


def test_a_cut_degenerate_group_says_how_many_bands_to_count():
    """Spin-degenerate bands (no Rashba, no exchange): counting one of a pair is refused
    with the number of bands that would count whole groups."""
    atoms, tb = rashba_exchange_model(rashba=0.0, exchange=0.0)
    with pytest.raises(ValueError, match=r"levels 0-1 .* nbands=2 \(moireh chern --nbands 2\)"):
        c3_eigenvalues(tb, atoms, [1])
    with pytest.raises(ValueError, match=r"at K .*levels 0-3 .*touches the bands above"):
        c3_eigenvalues(tb, atoms, [0, 1])  # the Dirac point of graphene: no gap


@pytest.mark.slow
@pytest.mark.skipif(
    mkl_library() is None,
    reason="the window of levels below the gap needs PARDISO's inertia (pip install mkl)",
)
def test_large_cell_window_gives_the_dense_c3_eigenvalues(monkeypatch):
    """Large cells take only the levels just below the gap at Gamma, K, K' (one-sided
    shift-invert); the C3 eigenvalues and Chern numbers equal the dense route's."""
    from ase_moireh import topology
    from ase_moireh.build import twisted_bilayer
    from ase_moireh.calculator import MoireHCalculator

    atoms = twisted_bilayer(2, 1)
    atoms.calc = calc = MoireHCalculator()  # bundled SOC model
    # the widest window first: the others reuse its points (the calculator's cache)
    cases = ((2, 1), (1, 1), (2, None))
    dense = [calc.chern_numbers(nbands=n, spin=s) for n, s in cases]
    monkeypatch.setattr(topology, "C3_DENSE_LIMIT", 10)
    calc._cache.pop("c3_points")  # the same H and S, now through the window route
    for (n, s), expected in zip(cases, dense, strict=True):
        found = calc.chern_numbers(nbands=n, spin=s)
        assert found.chern_mod3 == expected.chern_mod3
        for label, values in expected.eigenvalues.items():
            np.testing.assert_allclose(found.eigenvalues[label], values, atol=1e-6)
    reach, points = calc._cache["c3_points"]
    assert reach == topology.sector_window(2) and points[0].first > 0
