"""Eigenvalue problems of BlockOperators: H(k) c = E S(k) c.

Dense solvers for small cells; shift-invert Lanczos for the levels near a chosen energy
(the gap) of large ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import scipy.linalg as sl
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .factorize import count_below, factorize
from .operator import BlockOperator


def dense_eigenvalues(
    hamiltonian: BlockOperator, overlap: BlockOperator, kpts: Iterable[Sequence[float]]
) -> np.ndarray:
    """All generalised eigenvalues (eV) at each fractional k, shape (nk, nbands)."""
    if hamiltonian.spinful and not overlap.spinful:
        overlap = overlap.to_spinor()  # lift once, not per k
    out = []
    for k in kpts:
        h, s = hamiltonian.bloch(k).toarray(), overlap.bloch(k).toarray()
        out.append(sl.eigh(h, s, eigvals_only=True))
    return np.array(out)


def bloch_pair(
    hamiltonian: BlockOperator, overlap: BlockOperator, k
) -> tuple[sp.csc_matrix, sp.csc_matrix]:
    """Sparse H(k), S(k) in one layout (the spinless S lifted to spinors for SOC)."""
    if hamiltonian.spinful and not overlap.spinful:
        overlap = overlap.to_spinor()
    return hamiltonian.bloch(k).tocsc(), overlap.bloch(k).tocsc()


def shift_invert_eigh(
    hk: sp.spmatrix,
    sk: sp.spmatrix,
    sigma: float,
    nev: int,
    s_tol: float = 1e-10,
    return_vectors: bool = False,
    solver: str = "auto",
):
    """The ``nev`` generalised eigenvalues of H c = E S c nearest ``sigma`` (eV).

    Factorise H - sigma S once, Lanczos (ARPACK) on (H - sigma S)^-1 S, E = sigma + 1/nu;
    then a Rayleigh-Ritz step in the Ritz subspace with the directions in which S is
    nearly singular (relative eigenvalue < s_tol) projected out, which guards against an
    ill-conditioned overlap. ``solver``: see :func:`.factorize.factorize` (PARDISO when
    MKL is installed, SuperLU otherwise).
    """
    n = hk.shape[0]
    if nev >= n - 1:
        raise ValueError(f"nev={nev} too large for a {n}x{n} problem: use dense_eigenvalues")
    solve = factorize(hk - sigma * sk, solver)
    opinv = spla.LinearOperator((n, n), matvec=solve, dtype=complex)
    _, ritz = spla.eigsh(
        hk.astype(complex), k=nev, M=sk.astype(complex), sigma=sigma, OPinv=opinv, which="LM"
    )
    hs = ritz.conj().T @ (hk @ ritz)
    ss = ritz.conj().T @ (sk @ ritz)
    w, u = np.linalg.eigh(0.5 * (ss + ss.conj().T))
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
    sigma = float(np.median(hk.diagonal().real)) if guess is None else guess
    lo = hi = None
    for _ in range(200):
        count = count_below(hk - sigma * sk)
        if count == nocc:
            return sigma
        if count < nocc:
            lo = sigma
        else:
            hi = sigma
        if lo is not None and hi is not None:
            if hi - lo < 1e-6:  # a degenerate level straddles nocc: no gap at this k
                return 0.5 * (lo + hi)
            sigma = 0.5 * (lo + hi)
        else:
            sigma += step if hi is None else -step
            step *= 2.0
    raise RuntimeError(f"no energy with {nocc} levels below it found")


def band_edges(
    hk: sp.spmatrix,
    sk: sp.spmatrix,
    nocc: int,
    sigma: float,
    nev: int = 16,
    solver: str = "auto",
) -> tuple[float, float]:
    """(highest occupied, lowest empty) level at this k for cells too large for dense
    solvers: the inertia count at sigma numbers the ``nev`` shift-invert levels near
    it; sigma moves until levels nocc-1 and nocc are both in that window."""
    for _ in range(50):
        below = count_below(hk - sigma * sk)
        levels = shift_invert_eigh(hk, sk, sigma, nev, solver=solver)
        index = nocc - 1 - (below - int(np.sum(levels < sigma)))  # of the top filled level
        if 0 <= index < len(levels) - 1:
            return float(levels[index]), float(levels[index + 1])
        width = levels[-1] - levels[0]
        sigma = levels[0] - 0.5 * width if index < 0 else levels[-1] + 0.5 * width
    raise RuntimeError(f"band edges around level {nocc} not reached")
