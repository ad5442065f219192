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


def _factorize(a: sp.csc_matrix):
    """LU of H - sigma S: SuperLU (scipy). Returns a solve(x) callable."""
    lu = spla.splu(a.astype(complex), permc_spec="MMD_AT_PLUS_A")
    return lu.solve


def shift_invert_eigh(
    hk: sp.spmatrix,
    sk: sp.spmatrix,
    sigma: float,
    nev: int,
    s_tol: float = 1e-10,
    return_vectors: bool = False,
):
    """The ``nev`` generalised eigenvalues of H c = E S c nearest ``sigma`` (eV).

    Factorise H - sigma S once, Lanczos (ARPACK) on (H - sigma S)^-1 S, E = sigma + 1/nu;
    then a Rayleigh-Ritz step in the Ritz subspace with the directions in which S is
    nearly singular (relative eigenvalue < s_tol) projected out, which guards against an
    ill-conditioned overlap.
    """
    n = hk.shape[0]
    if nev >= n - 1:
        raise ValueError(f"nev={nev} too large for a {n}x{n} problem: use dense_eigenvalues")
    solve = _factorize((hk - sigma * sk).tocsc())
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
