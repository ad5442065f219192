"""H and S in one type: the tight-binding model of a structure in its orbital basis.

:class:`TightBinding` pairs the Hamiltonian with its (spinless) overlap, like sisl's
``Hamiltonian`` with its overlap: ``Hk(k)``, ``Sk(k)`` (S lifted to H's spinor layout,
the one place that lift is made), ``eigh(k)`` for all levels and ``eigsh(k, sigma, n)``
for the levels nearest an energy. Solvers, topology, ribbon states and the calculator
all take it. :class:`ElectronicStructure` is what readers and loaders return: a
structure with its H, its S if stored, and what the DFT code said about it.

k is fractional (reciprocal lattice units); O(k) = sum_R O(R) exp(2 pi i k.R), the
gauge of :mod:`ase_moireh.block_operator`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from ase import Atoms

from ase_moireh.block_operator import BlockOperator
from ase_moireh.memory import dense_eigh_bytes, dense_rows_fitting, ensure_fits
from ase_moireh.solvers.factorization import factorize, release
from ase_moireh.solvers.solve import (
    ARPACK_TOL,
    band_edges,
    check_nev,
    gap_energy,
    generalized_eigh,
    shift_invert,
)

#: ARPACK's tolerance on a single-precision factor: it cannot converge to machine
#: precision on an operator known to ~1e-7; Rayleigh-Ritz in double refines the levels
SINGLE_PRECISION_TOL = 1e-6


class TightBinding:
    """H (spinless or SOC) and its spinless overlap S on the same atoms."""

    def __init__(self, hamiltonian: BlockOperator, overlap: BlockOperator):
        if overlap.spinful:
            raise ValueError("the overlap must be spinless (it is lifted to spinors here)")
        if not np.array_equal(hamiltonian.numbers, overlap.numbers):
            raise ValueError("H and S describe different atoms")
        self.H = hamiltonian
        self.S = overlap
        self._lift: tuple[np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ shape
    @property
    def spinful(self) -> bool:
        return self.H.spinful

    @property
    def dimension(self) -> int:
        """Rows of H(k) (2x the spatial orbitals with SOC)."""
        return self.H.dimension

    @property
    def natoms(self) -> int:
        return self.H.natoms

    # ------------------------------------------------------------------ Bloch matrices
    def Hk(self, k: Sequence[float]) -> sp.csr_matrix:  # noqa: N802 (sisl's name)
        """H(k) as CSR."""
        return self.H.bloch(k)

    def Sk(self, k: Sequence[float]) -> sp.csr_matrix:  # noqa: N802 (sisl's name)
        """S(k) as CSR in H's layout: for SOC S x 1_2, i.e. per atom the spatial block
        on the spin-up rows and again on the spin-down rows (never a spinful S(R))."""
        sk = self.S.bloch(k)
        if not self.spinful:
            return sk
        up, down = self._spinor_rows()
        coo = sk.tocoo()
        rows = np.concatenate([up[coo.row], down[coo.row]])
        cols = np.concatenate([up[coo.col], down[coo.col]])
        data = np.concatenate([coo.data, coo.data])
        n = self.dimension
        return sp.csr_matrix((data, (rows, cols)), shape=(n, n))

    def _spinor_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Row of every spatial orbital's spin-up and spin-down copy in H's layout."""
        if self._lift is None:
            spatial = self.S.norbs
            start = np.concatenate([[0], np.cumsum(spatial)[:-1]])
            atom = np.repeat(np.arange(self.natoms), spatial)
            local = np.arange(int(spatial.sum())) - start[atom]
            up = 2 * start[atom] + local
            self._lift = (up, up + spatial[atom])
        return self._lift

    def spin_z(self) -> np.ndarray:
        """Diagonal of s_z (+1 up, -1 down) in H's rows (SOC layout of basis.py)."""
        if not self.spinful:
            raise ValueError("s_z needs a spinful (SOC) Hamiltonian")
        up, down = self._spinor_rows()
        out = np.empty(self.dimension)
        out[up], out[down] = 1.0, -1.0
        return out

    def shifted(self, k: Sequence[float], sigma: float) -> sp.csr_matrix:
        """H(k) - sigma S(k) in H's layout, built in one pass (no spinor S, no H(k)
        beside it): the matrix shift-invert factorises."""
        if np.array_equal(self.S.edges, self.H.edges):
            return self.H.bloch(k, overlap=self.S, sigma=sigma)
        return (self.Hk(k) - sigma * self.Sk(k)).tocsr()  # S stored on other edges

    def overlap_operator(self, k: Sequence[float]) -> sp.csr_matrix | spla.LinearOperator:
        """S(k) in H's layout as an operator: for SOC, S x 1_2 applied as the spinless
        S(k) on the spin-up rows and on the spin-down rows, never built."""
        return self._in_h_layout(self.S.bloch(k))

    def _in_h_layout(self, sk: sp.csr_matrix) -> sp.csr_matrix | spla.LinearOperator:
        if not self.spinful:
            return sk
        up, down = self._spinor_rows()

        def apply(x: np.ndarray) -> np.ndarray:
            out = np.empty(x.shape, dtype=complex)
            out[up], out[down] = sk @ x[up], sk @ x[down]
            return out

        n = self.dimension
        return spla.LinearOperator((n, n), matvec=apply, matmat=apply, dtype=complex)

    def pair(self, k: Sequence[float]) -> tuple[sp.csc_matrix, sp.csc_matrix]:
        """(H(k), S(k)) as CSC, for factorisations."""
        return self.Hk(k).tocsc(), self.Sk(k).tocsc()

    def dense(self, k: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """(H(k), S(k)) as dense arrays."""
        return self.Hk(k).toarray(), self.Sk(k).toarray()

    # ------------------------------------------------------------------ eigenproblems
    def eigh(self, k: Sequence[float], vectors: bool = False, bands: slice | None = None):
        """All levels (eV, ascending) at k by dense diagonalisation, or only ``bands`` (a
        slice of band indices); with ``vectors`` also the S-orthonormal eigenvectors
        (columns). Refuses with
        :class:`~ase_moireh.memory.InsufficientMemory` before allocating what cannot fit."""
        n = self.dimension
        fits = dense_rows_fitting(vectors)
        ensure_fits(
            dense_eigh_bytes(n, vectors),
            f"dense diagonalisation of {n} rows",
            f"About {fits} rows would fit; for large cells ask for the levels near the gap "
            "(eigsh, shift-invert: nbands=... in the calculator)."
            if fits
            else "",
        )
        h, s = self.dense(k)
        return generalized_eigh(h, s, k, vectors, bands)

    def eigenvalues(
        self, kpts: Iterable[Sequence[float]], bands: slice | None = None
    ) -> np.ndarray:
        """All levels at each k, shape (nk, dimension), or only ``bands``."""
        return np.array([self.eigh(k, bands=bands) for k in kpts])

    def eigsh(
        self,
        k: Sequence[float],
        sigma: float,
        n: int,
        vectors: bool = False,
        solver: str = "auto",
        precision: str = "double",
    ):
        """The ``n`` levels nearest ``sigma`` (eV) by shift-invert, for large cells.
        Only H(k) - sigma S(k) is built as a matrix (:meth:`shifted`); H applies as it
        plus sigma S, and a spinor S is never built (:meth:`overlap_operator`).
        ``precision="single"`` factorises in single precision (half the memory of the
        factor); the Rayleigh-Ritz step in double keeps the levels to ~1e-6 eV."""
        check_nev(n, self.dimension)
        a = self.shifted(k, sigma)
        sk = self.S.bloch(k)  # spinless: positive definite exactly when S x 1_2 is
        overlap = self._in_h_layout(sk)
        solve = factorize(a, solver, precision)
        tol = SINGLE_PRECISION_TOL if precision == "single" else ARPACK_TOL

        def apply_h(x: np.ndarray) -> np.ndarray:
            return a @ x + sigma * (overlap @ x)

        try:
            return shift_invert(
                solve, apply_h, overlap, sigma, n, sk, return_vectors=vectors, k=k, tol=tol
            )
        finally:
            release(solve)

    def gap_energy(self, k: Sequence[float], nocc: int, guess: float | None = None) -> float:
        """An energy with ``nocc`` levels below it at k (inertia counts, PARDISO),
        searched from ``guess`` (eV; default: the median on-site energy)."""
        return gap_energy(*self.pair(k), nocc, guess)

    def band_edges(self, k: Sequence[float], nocc: int, sigma: float | None) -> tuple[float, float]:
        """(highest occupied, lowest empty) level at k for large cells, searched from
        ``sigma`` (eV; default: the median on-site energy)."""
        return band_edges(*self.pair(k), nocc, sigma, k=k)


@dataclass(eq=False)  # arrays inside: == is identity (ASE's set() compares values)
class ElectronicStructure:
    """A structure with its Hamiltonian and (if stored) overlap: what readers return."""

    atoms: Atoms
    hamiltonian: BlockOperator
    overlap: BlockOperator | None
    fermi_level: float | None = None  # eV
    source: str = ""
    #: what the DFT code also said: n_electrons, valence per element, openmx_basis, ...
    extra: dict = field(default_factory=dict)
    #: (k fractional, eigenvalues eV) printed by the DFT code, when it printed them
    reference_eigenvalues: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    @property
    def spinful(self) -> bool:
        return self.hamiltonian.spinful

    @property
    def tight_binding(self) -> TightBinding:
        """H with the stored S (:func:`ase_moireh.overlap.resolve_overlap` gives S when
        the dataset holds none)."""
        if self.overlap is None:
            raise ValueError(f"{self.source or 'this structure'}: no overlap stored")
        return TightBinding(self.hamiltonian, self.overlap)
