"""Eigenvalue problems of BlockOperators: H(k) c = E S(k) c.

Dense solvers for small cells; the sparse shift-invert solver for large ones joins here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import scipy.linalg as sl

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
