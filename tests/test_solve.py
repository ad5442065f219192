"""Shift-invert eigenvalues equal dense ones (real DFT operators, SOC and not)."""

import gc
import weakref

import numpy as np
import pytest
import scipy.linalg as sl
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ase_moireh.solvers.factorization import mkl_library
from ase_moireh.solvers.solve import arpack, shift_invert_eigh
from shared_data import converted

needs_mkl = pytest.mark.skipif(
    mkl_library() is None, reason="PARDISO needs Intel MKL (pip install mkl, in the test extra)"
)
#: the 42-atom cell where a test solves it several times over (5-8 s each here)
TWISTED_SLOW = pytest.param("tw2179_nosoc", marks=pytest.mark.slow)


@pytest.mark.parametrize("case", ["bl1x1_soc_s22", TWISTED_SLOW])
@pytest.mark.parametrize("k", [(0.0, 0.0, 0.0), (0.1234, 0.3071, 0.0)])
@pytest.mark.parametrize("solver", ["superlu", pytest.param("pardiso", marks=needs_mkl)])
def test_shift_invert_matches_dense(case, k, solver):
    s = converted(case)
    hk, sk = s.tight_binding.pair(k)
    dense = sl.eigh(hk.toarray(), sk.toarray(), eigvals_only=True)
    sigma = s.fermi_level + 0.01
    nev = 12
    found = shift_invert_eigh(hk, sk, sigma, nev, solver=solver)
    nearest = np.sort(dense[np.argsort(np.abs(dense - sigma))[:nev]])
    assert np.abs(found - nearest).max() < 1e-8
    # TightBinding's lean path: only H - sigma S built, a spinor S only applied
    tb = s.tight_binding
    assert np.array_equal(tb.S.edges, tb.H.edges)  # else the lean path is not taken
    energies, vectors = tb.eigsh(k, sigma, nev, vectors=True, solver=solver)
    assert np.abs(energies - nearest).max() < 1e-8
    residual = hk @ vectors - (sk @ vectors) * energies
    assert np.abs(residual).max() < 1e-6
    assert np.allclose(vectors.conj().T @ (sk @ vectors), np.eye(nev), atol=1e-8)


#: MoireHCalculator's ``precision`` docstring: with a single-precision factor "the
#: levels stay within ~1e-8 eV" of double precision (ase_moireh/calculator.py)
SINGLE_PRECISION_PROMISE_EV = 1e-8


def single_precision_error(case: str, k, solver: str) -> float:
    """Largest difference (eV) of the 12 shift-invert levels nearest E_F + 10 meV from a
    single-precision factor against dense double precision."""
    s = converted(case)
    hk, sk = s.tight_binding.pair(k)
    dense = sl.eigh(hk.toarray(), sk.toarray(), eigvals_only=True)
    sigma, nev = s.fermi_level + 0.01, 12
    nearest = np.sort(dense[np.argsort(np.abs(dense - sigma))[:nev]])
    single = s.tight_binding.eigsh(k, sigma, nev, solver=solver, precision="single")
    return float(np.abs(single - nearest).max())


@pytest.mark.parametrize("case", ["bl1x1_soc_s22", "tw2179_nosoc"])
@pytest.mark.parametrize("solver", ["superlu", pytest.param("pardiso", marks=needs_mkl)])
def test_single_precision_factor_keeps_the_levels(case, solver):
    """A single-precision factorisation (half the memory) with Rayleigh-Ritz in double:
    the levels within the calculator's promised 1e-8 eV of dense double precision
    (measured 2026-12-06: 2.4e-10 to 3.9e-10 eV on these cases, both solvers)."""
    assert single_precision_error(case, (0.1234, 0.3071, 0.0), solver) < (
        SINGLE_PRECISION_PROMISE_EV
    )


@pytest.mark.slow  # ~20 s: a 1456-row SOC cell, dense and shift-invert
@needs_mkl
@pytest.mark.xfail(
    strict=True,
    reason="defect: PARDISO single precision on tw2179_soc at K misses the promised 1e-8 eV "
    "(measured 2026-12-06: 3.4e-7 to 6.3e-7 eV over 5 runs, 4.0e-7 with ARPACK's tol at "
    "1e-10 instead of 1e-6; SuperLU single: 6.8e-10 eV). Strict: flags the fix.",
)
def test_single_precision_pardiso_keeps_the_levels_of_the_twisted_soc_cell():
    assert single_precision_error("tw2179_soc", (1 / 3, 2 / 3, 0.0), "pardiso") < (
        SINGLE_PRECISION_PROMISE_EV
    )


def test_unknown_solver_is_refused():
    import scipy.sparse as sp

    from ase_moireh.solvers.factorization import factorize

    with pytest.raises(ValueError, match="unknown solver"):
        factorize(sp.identity(3, format="csr"), "mumps")


@needs_mkl
@pytest.mark.parametrize("case", ["bl1x1_soc_s22", TWISTED_SLOW])
@pytest.mark.parametrize("where", ["above_vbm", "below_cbm", "in_valence", "far_above"])
def test_band_edges_from_any_start_equal_dense(case, where):
    """One factorisation in the gap gives both edges (levels just below and just above
    it), wherever the search starts: next to one edge of a wide gap, or in a band."""
    from ase_moireh.calculator import MoireHCalculator
    from ase_moireh.solvers.solve import band_edges

    s = converted(case)
    calc = MoireHCalculator(dft=s)
    calc.set_atoms(s.atoms)
    nocc = calc.occupied_bands()
    k = (1 / 3, 2 / 3, 0.0)
    hk, sk = s.tight_binding.pair(k)
    dense = sl.eigh(hk.toarray(), sk.toarray(), eigvals_only=True)
    vbm, cbm = dense[nocc - 1], dense[nocc]
    start = {
        "above_vbm": vbm + 1e-3,
        "below_cbm": cbm - 1e-3,
        "in_valence": vbm - 1.5,
        "far_above": cbm + 4.0,
    }[where]
    assert band_edges(hk, sk, nocc, start, k=k) == pytest.approx((vbm, cbm), abs=1e-8)


@needs_mkl
def test_one_sided_shift_invert_gives_the_levels_on_that_side():
    s = converted("tw2179_nosoc")
    hk, sk = s.tight_binding.pair((0.5, 0.0, 0.0))
    dense = sl.eigh(hk.toarray(), sk.toarray(), eigvals_only=True)
    sigma = s.fermi_level + 0.01
    below = shift_invert_eigh(hk, sk, sigma, 5, which="SA")
    above = shift_invert_eigh(hk, sk, sigma, 5, which="LA")
    np.testing.assert_allclose(below, dense[dense < sigma][-5:], atol=1e-8)
    np.testing.assert_allclose(above, dense[dense > sigma][:5], atol=1e-8)


def test_upper_triangle_for_pardiso_keeps_every_diagonal_entry():
    """PARDISO reads the upper triangle with every diagonal entry stored: rows that are
    empty or lack their diagonal get an explicit zero; nothing else changes."""
    import scipy.sparse as sp

    from ase_moireh.solvers.factorization import upper_triangle

    a = sp.csr_matrix(
        np.array([[0, 2, 0, 1], [2, 5, 0, 0], [0, 0, 0, 0], [1, 0, 0, 3]], dtype=complex)
    )
    upper = upper_triangle(a, np.complex64)
    assert upper.dtype == np.complex64 and upper.has_sorted_indices
    assert np.array_equal(upper.toarray(), np.triu(a.toarray()))
    assert np.array_equal(upper.diagonal() == 0, [True, False, True, False])
    rows = np.repeat(np.arange(4), np.diff(upper.indptr))
    assert sorted(upper.indices[upper.indices == rows]) == [0, 1, 2, 3]  # all stored


@pytest.mark.parametrize("case", ["bl1x1_soc_s22", "tw2179_nosoc"])
def test_a_band_window_equals_those_of_all_levels(case):
    """LAPACK's subset driver for ``bands`` gives the same levels as the full solve."""
    tb = converted(case).tight_binding
    kpts = [(0.0, 0.0, 0.0), (0.1234, 0.3071, 0.0)]
    every = tb.eigenvalues(kpts)
    for bands in (slice(3, 17), slice(tb.dimension - 5, None)):
        assert np.abs(tb.eigenvalues(kpts, bands=bands) - every[:, bands]).max() < 1e-9
    for bad in (slice(0, 10, 2), slice(5, 5)):
        with pytest.raises(ValueError, match="consecutive bands"):
            tb.eigenvalues(kpts, bands=bad)


def test_shift_invert_lets_go_of_its_matrices_at_once():
    """scipy's ARPACK wrapper keeps its operands in a reference cycle; through
    :func:`arpack` the matrices are freed when the solve returns, not at the next full
    garbage collection (without it the band path of the (3,2) SOC cell grew ~0.46 GB per
    k-point). Checked with the collector off, so only reference counts free them."""
    rng = np.random.default_rng(3)
    n = 60
    x = rng.normal(size=(n, n))
    hk = sp.csr_matrix(x + x.T)
    sk = sp.csr_matrix(np.eye(n) + 0.01 * (x @ x.T) / n)
    dense = sl.eigh(hk.toarray(), sk.toarray(), eigvals_only=True)
    gc.collect()
    gc.disable()
    try:
        levels = shift_invert_eigh(hk, sk, 0.05, 4, solver="superlu")
        refs = weakref.ref(hk), weakref.ref(sk)
        del hk, sk
        assert [r() for r in refs] == [None, None]
    finally:
        gc.enable()
    nearest = dense[np.argsort(np.abs(dense - 0.05))[:4]]
    np.testing.assert_allclose(levels, np.sort(nearest), atol=1e-8)


def test_arpack_refuses_shift_invert_without_opinv():
    with pytest.raises(ValueError, match="needs OPinv"):
        arpack(spla.eigsh, sp.eye(10), k=2, sigma=0.5)
