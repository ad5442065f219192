"""Generalised eigenvalue problems H(k) c = E S(k) c of Bloch matrices.

Dense solvers for small cells; shift-invert Lanczos for the levels near a chosen energy
(the gap) of large ones. S(k) must be positive definite (a PAO overlap always is); when a
supplied S is not, :class:`OverlapNotPositiveDefinite` names the k-point and the smallest
eigenvalue instead of a raw linear-algebra traceback.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.linalg as sl
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from threadpoolctl import threadpool_limits

from ase_moireh.solvers.factorization import count_below, counting_factor, factorize, release

#: S(k) up to this size is diagonalised densely to report its smallest eigenvalue
DENSE_CHECK_LIMIT = 4000

#: ARPACK's relative accuracy of the Ritz values in double precision. The Rayleigh-Ritz
#: step after it refines the levels (1e-14 eV from a run to machine precision on the
#: (3,2) SOC cell) for ~20 % fewer solves
ARPACK_TOL = 1e-10


class _Detachable(spla.LinearOperator):
    """An operand handed to ARPACK that can be emptied afterwards (see :func:`arpack`)."""

    def __init__(self, operand):
        self.target = spla.aslinearoperator(operand)
        super().__init__(self.target.dtype, self.target.shape)

    def _matvec(self, x):
        return self.target.matvec(x)

    def _matmat(self, x):
        return self.target.matmat(x)


def arpack(routine: Callable, a, **kwargs):
    """``routine`` (``spla.eigsh`` or ``spla.eigs``) on ``a`` and the operands among
    ``M``, ``Minv``, ``OPinv``, which it lets go of when it returns. scipy's ARPACK
    wrappers keep their operands in a reference cycle (lambdas closing over the params
    object), so the matrices and factors behind them lived until the next full garbage
    collection: along the band path of the (3,2) SOC cell RSS grew by ~0.46 GB per
    k-point. Each operand goes in wrapped, and the wrapper is emptied on return, so the
    cycle scipy leaves holds nothing large. A matrix ``a`` with ``sigma`` needs
    ``OPinv`` (scipy would factorise ``a`` itself, and this wraps it as an operator)."""
    if kwargs.get("sigma") is not None and kwargs.get("OPinv") is None:
        raise ValueError("arpack: shift-invert needs OPinv (a is passed as an operator)")
    names = [key for key in ("M", "Minv", "OPinv") if kwargs.get(key) is not None]
    wrapped = [_Detachable(a), *(_Detachable(kwargs[key]) for key in names)]
    kwargs.update(zip(names, wrapped[1:], strict=True))
    try:
        return routine(wrapped[0], **kwargs)
    finally:
        for operand in wrapped:
            operand.target = None


class OverlapNotPositiveDefinite(ValueError):
    """S(k) has a non-positive eigenvalue: the overlap is wrong (or atoms coincide)."""

    def __init__(self, k, smallest: float):
        kt = ", ".join(f"{x:.4g}" for x in np.asarray(k, dtype=float).ravel())
        super().__init__(
            f"the overlap S(k) is not positive definite at k = ({kt}): smallest eigenvalue "
            f"{smallest:.3e}. A PAO overlap always is; check where S came from (a learned "
            "or edited overlap, a truncated edge list) and that no two atoms coincide"
        )
        self.k = k
        self.smallest = smallest


def smallest_overlap_eigenvalue(sk: sp.spmatrix) -> float:
    """Lowest eigenvalue of S(k): dense for small matrices; for large ones the lowest of
    the few nearest 0 (shift-invert at 0 separates them well: 1/lambda), which is the
    lowest of all for a positive-definite S and a non-positive one otherwise."""
    if sk.shape[0] <= DENSE_CHECK_LIMIT:
        return float(np.linalg.eigvalsh(sk.toarray())[0])
    n = sk.shape[0]
    try:
        solve = factorize(sk, "auto")
    except RuntimeError:  # exactly singular: the factorisation fails
        return 0.0
    opinv = spla.LinearOperator((n, n), matvec=solve, dtype=complex)
    try:
        values = arpack(
            spla.eigsh, sk.astype(complex), k=6, sigma=0.0, OPinv=opinv, return_eigenvectors=False
        )
    finally:
        release(solve)
    return float(np.min(values.real))


def check_positive_definite(sk: sp.spmatrix, k) -> None:
    """Raise :class:`OverlapNotPositiveDefinite` unless S(k) is positive definite."""
    smallest = smallest_overlap_eigenvalue(sk)
    if smallest <= 0:
        raise OverlapNotPositiveDefinite(k, smallest)


#: dense problems up to this many rows run on one BLAS thread. Threads gain little
#: there, and while the other cores are busy OpenBLAS's waiting threads are ruinous:
#: 81 generalised eighs of 208 rows took 474 s with its default threads and 3 s on one
#: (2-core machine, OpenMX running beside it)
ONE_THREAD_DENSE = 2000


def generalized_eigh(
    h: np.ndarray, s: np.ndarray, k, vectors: bool = False, bands: slice | None = None
):
    """Dense H c = E S c (eigenvalues ascending; with eigenvectors when ``vectors``),
    with a clear error when S is not positive definite. ``bands`` (a slice of band
    indices with a step of 1): only those levels, by LAPACK's subset driver (a quarter
    less time for 48 of 1456 levels)."""
    threads = 1 if len(h) <= ONE_THREAD_DENSE else None
    subset = None
    if bands is not None:
        first, stop, step = bands.indices(len(h))
        if step != 1 or stop <= first:
            raise ValueError(f"bands={bands}: a non-empty range of consecutive bands")
        subset = {"subset_by_index": (first, stop - 1), "driver": "gvx"}
    try:
        with threadpool_limits(threads, user_api="blas"):
            return sl.eigh(h, s, eigvals_only=not vectors, **(subset or {}))
    except np.linalg.LinAlgError:
        smallest = float(np.linalg.eigvalsh(s)[0])
        if smallest <= 0:
            raise OverlapNotPositiveDefinite(k, smallest) from None
        raise


def check_nev(nev: int, n: int) -> None:
    """ARPACK finds at most n - 2 levels of n rows: refuse more before factorising."""
    if nev >= n - 1:
        raise ValueError(f"nev={nev} too large for a {n}x{n} problem: use dense eigenvalues")


def shift_invert_eigh(
    hk: sp.spmatrix,
    sk: sp.spmatrix,
    sigma: float,
    nev: int,
    s_tol: float = 1e-10,
    return_vectors: bool = False,
    solver: str = "auto",
    k=None,
    opinv: Callable[[np.ndarray], np.ndarray] | None = None,
    which: str = "LM",
    tol: float = ARPACK_TOL,
):
    """The ``nev`` generalised eigenvalues of H c = E S c nearest ``sigma`` (eV), or with
    ``which="SA"`` / ``"LA"`` the ``nev`` just below / just above it (ARPACK's ``which``
    acts on 1/(E - sigma)). ``tol``: ARPACK's relative accuracy (0: machine precision);
    the Rayleigh-Ritz step refines the values either way.

    Factorise H - sigma S once, Lanczos (ARPACK) on (H - sigma S)^-1 S, E = sigma + 1/nu;
    then a Rayleigh-Ritz step in the Ritz subspace with the directions in which S is
    nearly singular (relative eigenvalue < s_tol) projected out, which guards against an
    ill-conditioned overlap. ``solver``: see :func:`.factorize.factorize` (PARDISO when
    MKL is installed, SuperLU otherwise). ``k`` only labels errors: a Ritz subspace in
    which S is not positive definite (or an ARPACK failure caused by such an S) raises
    :class:`OverlapNotPositiveDefinite`. ``opinv``: a solve of H - sigma S already
    factorised (then ``solver`` is unused).
    """
    check_nev(nev, hk.shape[0])
    solve = factorize(hk - sigma * sk, solver) if opinv is None else opinv
    try:
        return shift_invert(
            solve, hk.__matmul__, sk, sigma, nev, sk, s_tol, return_vectors, k, which, tol
        )
    finally:
        if opinv is None:  # ours: free it now, not when the garbage collector finds it
            release(solve)


def shift_invert(
    solve: Callable[[np.ndarray], np.ndarray],
    apply_h: Callable[[np.ndarray], np.ndarray],
    overlap,
    sigma: float,
    nev: int,
    s_check: sp.spmatrix,
    s_tol: float = 1e-10,
    return_vectors: bool = False,
    k=None,
    which: str = "LM",
    tol: float = ARPACK_TOL,
):
    """The core of :func:`shift_invert_eigh` on operators alone: ``solve`` applies
    (H - sigma S)^-1, ``apply_h`` H and ``overlap`` S (a sparse matrix or a
    LinearOperator, e.g. a spinor S that is never built); ``s_check`` is a matrix that is
    positive definite exactly when S is (S itself, or the spinless S of a spinor S),
    diagonalised only to explain a failure. H and S never need to exist as matrices
    beside the factorised H - sigma S. ``tol``: ARPACK's relative accuracy of the Ritz
    values (0: machine precision); a single-precision ``solve`` needs ~1e-6, and the
    Rayleigh-Ritz step in double then restores the eigenvalues."""
    n = overlap.shape[0]
    check_nev(nev, n)
    shape = (n, n)
    h_op = spla.LinearOperator(shape, matvec=apply_h, matmat=apply_h, dtype=complex)
    m_op = spla.aslinearoperator(overlap)
    operator = spla.LinearOperator(shape, matvec=solve, dtype=complex)
    try:
        _, ritz = arpack(
            spla.eigsh, h_op, k=nev, M=m_op, sigma=sigma, OPinv=operator, which=which, tol=tol
        )
    except spla.ArpackError:
        check_positive_definite(s_check, k)
        raise
    hs = ritz.conj().T @ apply_h(ritz)
    ss = ritz.conj().T @ (m_op @ ritz)
    w, u = np.linalg.eigh(0.5 * (ss + ss.conj().T))
    if w.min() <= 0:
        check_positive_definite(s_check, k)
    keep = w > s_tol * w.max()
    x = u[:, keep] / np.sqrt(w[keep])
    energies, y = np.linalg.eigh(x.conj().T @ (0.5 * (hs + hs.conj().T)) @ x)
    if return_vectors:
        return energies, ritz @ x @ y
    return energies


def gap_energy(
    hk: sp.spmatrix, sk: sp.spmatrix, nocc: int, guess: float | None = None, step: float = 1.0
) -> float:
    """An energy with exactly ``nocc`` levels below it at this k (inside the gap there),
    by bracketing and bisection on inertia counts alone (PARDISO, no diagonalisation).
    The default first guess is the median on-site energy."""
    return _search_gap(hk, sk, nocc, guess, step, lambda a: (count_below(a), None))[0]


def _search_gap(hk, sk, nocc: int, guess: float | None, step: float, factor):
    """(sigma, count, payload) of the first sigma that ``factor(H - sigma S)`` =
    (count, payload) finds with ``count == nocc``; or, when a degenerate level straddles
    nocc (no gap at this k), a sigma within 1e-6 eV of it. Payloads not returned are
    released."""
    sigma = float(np.median(hk.diagonal().real)) if guess is None else guess
    lo = hi = None
    for _ in range(200):
        count, payload = factor(hk - sigma * sk)
        if count == nocc or (lo is not None and hi is not None and hi - lo < 1e-6):
            return sigma, count, payload
        if payload is not None:
            payload.release()
        if count < nocc:
            lo = sigma
        else:
            hi = sigma
        if lo is not None and hi is not None:
            sigma = 0.5 * (lo + hi)
        else:
            sigma += step if hi is None else -step
            step *= 2.0
    raise RuntimeError(f"no energy with {nocc} levels below it found")


def band_edges(
    hk: sp.spmatrix, sk: sp.spmatrix, nocc: int, sigma: float | None, nev: int = 6, k=None
) -> tuple[float, float]:
    """(highest occupied, lowest empty) level at this k for cells too large for dense
    solvers. From ``sigma``, inertia counts find an energy with exactly ``nocc`` levels
    below it; its one PARDISO factorisation then serves both edges: one shift-invert
    Lanczos run on the ``2 nev`` levels nearest it, which hold both edges when sigma
    sits inside the gap rather than next to one edge (the next k starts mid-gap); a side
    it misses gets a run of its own (``which`` "SA" below, "LA" above), however wide the
    gap. Near band edges of moire cells the levels are dense, so a run takes ~200 solves
    whatever ``nev``: one run instead of two per k (measured: 2.7x fewer solves on the
    (3,2) SOC cell)."""
    sigma, count, solve = _search_gap(hk, sk, nocc, sigma, 1.0, counting_factor)

    def levels(nev: int, which: str) -> np.ndarray:
        return shift_invert_eigh(hk, sk, sigma, nev, k=k, opinv=solve, which=which)

    try:
        if count == nocc:
            near = levels(min(2 * nev, hk.shape[0] - 2), "LM")
            below, above = near[near < sigma], near[near > sigma]
            if not len(below):
                below = levels(nev, "SA")
            if not len(above):
                above = levels(nev, "LA")
            return float(below.max()), float(above.min())
        # no gap here: a degenerate group at sigma holds levels nocc - 1 and nocc
        levels = shift_invert_eigh(hk, sk, sigma, nev, k=k, opinv=solve)
        first = count - int(np.sum(levels < sigma))  # number of the window's lowest level
        if not (0 <= nocc - 1 - first and nocc - first < len(levels)):
            raise RuntimeError(f"band edges around level {nocc} not reached at k = {k}")
        return float(levels[nocc - 1 - first]), float(levels[nocc - first])
    finally:
        solve.release()
