"""Sparse factorisations of the shifted Hamiltonian H(k) - sigma S(k) for shift-invert.

Two back ends behind one call, :func:`factorize`:

- ``"pardiso"``: Intel MKL PARDISO through ``ctypes`` (``pip install mkl``), an LDL^T
  with METIS nested dissection for Hermitian (complex, SOC) or real symmetric matrices.
  It keeps only the upper triangle and its fill grows far more slowly than SuperLU's
  for the 2D-periodic moire cells, and it reports the inertia (how many eigenvalues of
  H - sigma S are negative, i.e., by Sylvester's law, how many levels lie below sigma).
- ``"superlu"``: scipy's SuperLU (always available), a general LU.

``"auto"`` takes PARDISO for matrices of more than :data:`PARDISO_FROM` rows when MKL's
runtime library can be loaded, SuperLU otherwise (below that size SuperLU was faster:
benchmarks/results/bands_*.json).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import logging
import os
import sys
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from threadpoolctl import threadpool_limits

from ase_moireh.memory import InsufficientMemory, ensure_fits, superlu_bytes

log = logging.getLogger(__name__)

SOLVERS = ("auto", "pardiso", "superlu")
#: "auto" uses PARDISO from this many rows on (SOC tMoTe2: 3,952 rows 7 s SuperLU vs 9 s
#: PARDISO; 7,696 rows 32 s vs 15 s)
PARDISO_FROM = 6000

_MKL_THREADING_GNU = 3  # mkl_service.h
#: PARDISO matrix types: complex Hermitian indefinite, real symmetric indefinite
_MTYPE = {True: -4, False: -2}
_ERRORS = {
    -1: "input inconsistent",
    -2: "not enough memory",
    -3: "reordering problem",
    -4: "zero pivot, numerical factorization or iterative refinement problem",
    -5: "unclassified (internal) error",
    -6: "reordering failed",
    -7: "diagonal matrix is singular",
    -8: "32-bit integer overflow problem",
    -9: "not enough memory for OOC",
    -10: "error opening OOC files",
    -11: "read/write error with OOC files",
}


#: factorisation precisions: "single" halves the factor's memory (PARDISO
#: iparm(28) = 1, or SuperLU in complex64); solves still take and return double
PRECISIONS = ("double", "single")


def factorize(
    a: sp.spmatrix, solver: str = "auto", precision: str = "double"
) -> Callable[[np.ndarray], np.ndarray]:
    """solve(b) = a^-1 b for a Hermitian sparse matrix, with the chosen back end (see
    the module doc); the factorisation lives as long as the returned callable. With
    ``precision="single"`` the factor (and each solve) is single precision: about 1e-7
    relative, for callers that refine in double (:func:`.solve.shift_invert`)."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}, expected one of {SOLVERS}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}, expected one of {PRECISIONS}")
    single = precision == "single"
    large = a.shape[0] >= PARDISO_FROM
    if solver == "pardiso" or (solver == "auto" and large and mkl_library() is not None):
        return PardisoLDL(a, single).solve
    n = a.shape[0]
    ensure_fits(
        superlu_bytes(n, a.nnz) // (2 if single else 1),
        f"SuperLU factorisation of {n} rows",
        "PARDISO needs far less (solver='pardiso', Intel MKL)." if mkl_library() else "",
    )
    log.info("SuperLU factorisation of %d rows (%s precision)", n, precision)
    dtype = np.complex64 if single else complex
    with threadpool_limits(1, user_api="blas"):  # its small BLAS calls: as solve.py's dense
        lu = spla.splu(sp.csc_matrix(a, dtype=dtype), permc_spec="MMD_AT_PLUS_A")
    if not single:
        return lu.solve
    return lambda b: lu.solve(np.asarray(b, dtype=dtype)).astype(complex)


def release(solve: Callable[[np.ndarray], np.ndarray]) -> None:
    """Free a factorisation from :func:`factorize` now: a PARDISO factor lives outside
    Python's heap, and left to the garbage collector, factors of successive k-points
    overlapped (three k-points of a 7,696-row cell: RSS 3.9 GB, 2.8 GB released)."""
    owner = getattr(solve, "__self__", None)
    if isinstance(owner, PardisoLDL):
        owner.release()


@functools.lru_cache(maxsize=1)
def mkl_library() -> ctypes.CDLL | None:
    """MKL's single dynamic library (``PYPARDISO_MKL_RT`` or ``MKL_RT`` may name it),
    or None when MKL is not installed."""
    names = [os.environ.get("MKL_RT"), os.environ.get("PYPARDISO_MKL_RT")]
    names.append(ctypes.util.find_library("mkl_rt"))
    names += sorted(glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*")), key=len)
    for name in filter(None, names):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        # GNU OpenMP threading: the libgomp torch already loaded, not a second runtime
        lib.MKL_Set_Threading_Layer.restype = ctypes.c_int
        lib.MKL_Set_Threading_Layer(ctypes.c_int(_MKL_THREADING_GNU))
        log.debug("MKL runtime: %s", name)
        return lib
    return None


class PardisoLDL:
    """One PARDISO factorisation (phase 12), solves (phase 33), freed on deletion."""

    def __init__(self, a: sp.spmatrix, single: bool = False):
        lib = mkl_library()
        if lib is None:
            raise RuntimeError("solver 'pardiso' needs Intel MKL: pip install mkl")
        self._pardiso = lib.pardiso
        self._pardiso.restype = None
        complex_ = np.iscomplexobj(a.data) if sp.issparse(a) else np.iscomplexobj(a)
        if complex_:
            self.dtype = np.complex64 if single else np.complex128
        else:
            self.dtype = np.float32 if single else np.float64
        self.mtype = _MTYPE[complex_]
        upper = upper_triangle(sp.csr_matrix(a), self.dtype)
        self.n = upper.shape[0]
        self.data = upper.data
        self.indptr = upper.indptr.astype(np.int32)
        self.indices = upper.indices.astype(np.int32)
        del upper
        self.pt = np.zeros(64, dtype=np.int64)
        self.iparm = np.zeros(64, dtype=np.int32)
        self.iparm[[0, 1, 7, 9, 10, 12, 17, 20, 27, 34]] = [1, 2, 0, 8, 0, 0, -1, 1, single, 1]
        # not default, METIS, no iterative refinement unless pivots were perturbed (it
        # made every solve 7x dearer; Rayleigh-Ritz absorbs 1e-9 residuals), pivot
        # perturbation 1e-8, no scaling / matching (faster here, same residuals), report
        # factor size, Bunch-Kaufman pivoting, single or double precision, 0-based indices
        self._analyse_within_memory()
        log.info("PARDISO factorisation of %d rows", self.n)
        self._call(22, np.zeros((self.n, 1), dtype=self.dtype))
        # inertia: MKL reports it for real symmetric matrices only
        self.negative = int(self.iparm[22]) if self.mtype == _MTYPE[False] else None
        self.perturbed = int(self.iparm[13])
        self.factor_nnz = int(self.iparm[17])

    def _analyse_within_memory(self) -> None:
        """Symbolic phase (11), then refuse (freeing it) if the numerical factorisation
        would need more memory than is available. PARDISO reports that need now, in kB:
        iparm[16], the factor and solve. Its permanent memory, iparm[15], is already
        allocated by phase 11 (the 0.88 deg pencil, 438,776 rows: RSS grew 7.1 GB in
        phase 11 for iparm[15] = 5.8 GB), so it is in the process, not still to come."""
        self._call(11, np.zeros((self.n, 1), dtype=self.dtype))
        need = int(self.iparm[16]) * 1024
        what = (
            f"PARDISO factorisation of {self.n} rows (beyond its analysis's "
            f"{int(self.iparm[15]) / 2**20:.2f} GB, held already)"
        )
        try:
            ensure_fits(need, what)
        except InsufficientMemory:
            self.release()
            raise

    def release(self) -> None:
        """Free PARDISO's memory now (phase -1) rather than when garbage collected."""
        if self.pt.any():
            self._call(-1, np.zeros((self.n, 1), dtype=self.dtype))
            self.pt[:] = 0

    def _call(self, phase: int, b: np.ndarray) -> np.ndarray:
        b = np.asfortranarray(b, dtype=self.dtype)
        x = np.zeros_like(b, order="F")
        error = ctypes.c_int32(0)
        i32 = ctypes.c_int32

        def ptr(array):
            return array.ctypes.data_as(ctypes.c_void_p)

        self._pardiso(
            ptr(self.pt),
            ctypes.byref(i32(1)),  # maxfct
            ctypes.byref(i32(1)),  # mnum
            ctypes.byref(i32(self.mtype)),
            ctypes.byref(i32(phase)),
            ctypes.byref(i32(self.n)),
            ptr(self.data),
            ptr(self.indptr),
            ptr(self.indices),
            None,  # perm
            ctypes.byref(i32(b.shape[1])),
            ptr(self.iparm),
            ctypes.byref(i32(0)),  # msglvl
            ptr(b),
            ptr(x),
            ctypes.byref(error),
        )
        if error.value != 0:
            reason = _ERRORS.get(error.value, "unknown error")
            raise RuntimeError(f"PARDISO phase {phase} failed: {error.value} ({reason})")
        return x

    def solve(self, b: np.ndarray) -> np.ndarray:
        """a^-1 b in double precision (from a single-precision factor, when it is one)."""
        vector = b.ndim == 1
        b = b.reshape(self.n, -1)
        if np.iscomplexobj(b) and not np.iscomplexobj(self.data):  # real factor, complex b
            both = self._call(33, np.hstack([b.real, b.imag]))
            x = both[:, : b.shape[1]] + 1j * both[:, b.shape[1] :]
        else:
            x = self._call(33, b)
        x = x.astype(np.complex128 if np.iscomplexobj(x) else np.float64, copy=False)
        return x[:, 0] if vector else x

    def __del__(self):
        try:  # never raise from a finaliser
            self.release()
        except Exception:  # noqa: BLE001, S110
            pass


def upper_triangle(a: sp.csr_matrix, dtype) -> sp.csr_matrix:
    """The upper triangle (diagonal included, every diagonal entry stored) of a CSR
    matrix in ``dtype``, sorted: what PARDISO reads. One mask over the stored numbers,
    no COO copy of the whole matrix (scipy's triu makes one: gigabytes for big cells)."""
    n = a.shape[0]
    if a.nnz > np.iinfo(np.int32).max:
        raise ValueError("matrix too large for 32-bit PARDISO indices")
    if not a.has_sorted_indices:
        a = a.sorted_indices()
    rows = np.repeat(np.arange(n, dtype=np.int32), np.diff(a.indptr))
    keep = a.indices >= rows
    diagonal = int(np.count_nonzero(a.indices == rows))
    del rows
    kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int32)])
    indptr = kept_before[a.indptr].astype(np.int64)  # kept numbers before each row
    del kept_before
    upper = sp.csr_matrix(
        (a.data[keep].astype(dtype, copy=False), a.indices[keep], indptr), shape=a.shape
    )
    if diagonal < n:  # PARDISO wants every diagonal entry present, zero or not
        coo = upper.tocoo()
        missing = np.setdiff1d(np.arange(n), coo.row[coo.row == coo.col])
        rows = np.concatenate([coo.row, missing])
        cols = np.concatenate([coo.col, missing])
        data = np.concatenate([coo.data, np.zeros(len(missing), dtype=dtype)])
        upper = sp.coo_matrix((data, (rows, cols)), shape=a.shape).tocsr()  # keeps zeros
        upper.sort_indices()
    return upper


def count_below(a: sp.spmatrix) -> int:
    """Number of negative eigenvalues of the Hermitian matrix ``a`` from the inertia of
    PARDISO's LDL^T. For a = H - sigma S with S positive definite this is, by Sylvester's
    law, the number of levels of H c = E S c below sigma: electron counting without
    diagonalising."""
    count, solve = counting_factor(a)
    solve.release()  # the factor is not needed once counted
    return count


class RealFormSolve:
    """a^-1 b through the LDL^T of a's real form [[Re, -Im], [Im, Re]] (a itself when
    real): x = xr + i xi solves (Re + i Im)(xr + i xi) = br + i bi."""

    def __init__(self, ldl: PardisoLDL, twice: bool):
        self.ldl, self.twice = ldl, twice

    def __call__(self, b: np.ndarray) -> np.ndarray:
        if not self.twice:
            return self.ldl.solve(b)
        n = self.ldl.n // 2
        x = self.ldl.solve(np.concatenate([b.real, b.imag]).astype(np.float64))
        return x[:n] + 1j * x[n:]

    def release(self) -> None:
        self.ldl.release()


def counting_factor(a: sp.spmatrix) -> tuple[int, RealFormSolve]:
    """(levels below sigma, solve) from one PARDISO factorisation of a = H - sigma S:
    what shift-invert at sigma needs, with the count that numbers its levels. MKL
    reports inertia for real matrices only, so a complex ``a`` is factorised in its real
    form, whose spectrum is that of ``a`` twice over (about the cost of a complex LDL^T:
    twice the rows, a quarter of the flops per entry)."""
    a = sp.csr_matrix(a)
    twice = np.iscomplexobj(a.data) and bool(np.any(a.data.imag))
    if twice:
        a = sp.bmat([[a.real, -a.imag], [a.imag, a.real]], format="csr")
    ldl = PardisoLDL(a.real.astype(np.float64))
    if ldl.perturbed:
        log.warning("PARDISO perturbed %d pivots: inertia may be off", ldl.perturbed)
    return (ldl.negative // 2 if twice else ldl.negative), RealFormSolve(ldl, twice)
