"""Levels near the gap past one machine: shift-invert on PETSc/SLEPc with MUMPS over MPI.

Run as ``mpirun -np N moireh bands FILE.h5 --mpi ...`` on a streamed prediction
(``moireh predict --stream`` or ``moireh ribbon --write``). Rows of H(k) - sigma S(k)
and of S(k) are split across the ranks by whole atoms, balanced by rows; each rank asks
only for its own atoms' rows (:func:`ase_moireh.io.pencil.local_rows` reads from the file
only their blocks and Bloch-sums only those rows), so no rank ever holds the whole
operator. SLEPc's Krylov-Schur then solves the generalised
Hermitian problem (A, B) = (H - sigma S, S) for the eigenvalues nearest 0 by
shift-invert (ST sinvert at 0: MUMPS factorises A, distributed), and the levels are
those plus sigma.

petsc4py and slepc4py have no wheels on PyPI: Debian's ``python3-slepc4py-complex``
(with ``python3-petsc4py-complex``, ``python3-mpi4py``) works in a venv made with
Debian's Python and ``--system-site-packages`` (docs/large-cells.md, "Past one machine").
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: Debian's install places of the complex builds (used when PETSC_DIR/SLEPC_DIR are unset)
DEBIAN_DIRS = {
    "PETSC_DIR": "/usr/lib/petscdir/petsc3.18/x86_64-linux-gnu-complex",
    "SLEPC_DIR": "/usr/lib/slepcdir/slepc3.18/x86_64-linux-gnu-complex",
}
INSTALL_HINT = (
    "install Debian's python3-slepc4py-complex python3-petsc4py-complex python3-mpi4py and "
    "run in a venv of Debian's python3 made with --system-site-packages (docs/large-cells.md: "
    "Past one machine)"
)


class SlepcUnavailable(RuntimeError):
    """petsc4py/slepc4py with complex scalars cannot be imported here."""


def import_slepc():
    """(PETSc, SLEPc) modules with complex scalars, or SlepcUnavailable saying why."""
    for name, folder in DEBIAN_DIRS.items():
        if name not in os.environ and Path(folder).is_dir():
            os.environ[name] = folder
            sys.path.append(str(Path(folder) / "lib" / "python3" / "dist-packages"))
    try:
        import petsc4py
        import slepc4py

        petsc4py.init(sys.argv[:1])
        slepc4py.init(sys.argv[:1])
        from petsc4py import PETSc
        from slepc4py import SLEPc
    except Exception as err:  # ImportError, or a binary built for another numpy
        raise SlepcUnavailable(f"petsc4py/slepc4py not usable ({err}): {INSTALL_HINT}") from None
    if not np.issubdtype(PETSc.ScalarType, np.complexfloating):
        raise SlepcUnavailable(f"PETSc is built with real scalars: {INSTALL_HINT}")
    return PETSc, SLEPc


def world() -> tuple[int, int]:
    """(rank, number of ranks) of MPI's world, as PETSc sees it."""
    PETSc, _ = import_slepc()  # noqa: N806
    return PETSc.COMM_WORLD.getRank(), PETSc.COMM_WORLD.getSize()


def row_partition(rows_per_atom: np.ndarray, ranks: int) -> list[range]:
    """Whole atoms per rank, contiguous, cut where the running row count passes equal
    shares (a rank may get no atoms when there are fewer atoms than ranks)."""
    ends = np.cumsum(rows_per_atom)
    targets = ends[-1] * np.arange(1, ranks) / ranks
    cuts = [0, *np.searchsorted(ends, targets, side="left").tolist(), len(rows_per_atom)]
    cuts = np.maximum.accumulate(np.minimum(np.array(cuts), len(rows_per_atom)))
    return [range(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def _petsc_matrix(PETSc, comm, csr, n: int):  # noqa: N803 (the module's own name)
    local = csr.shape[0]
    index = PETSc.IntType
    arrays = (csr.indptr.astype(index), csr.indices.astype(index), csr.data.astype(complex))
    mat = PETSc.Mat().createAIJ(size=((local, n), (local, n)), csr=arrays, comm=comm)
    mat.assemble()
    return mat


def distributed_levels(
    rows_per_atom: np.ndarray,
    local_rows: Callable[[range], tuple],
    sigma: float,
    nev: int,
    tol: float = 1e-12,
) -> np.ndarray:
    """The ``nev`` levels nearest ``sigma`` (eV, ascending) of the pencil (H - sigma S, S),
    every rank of MPI's world taking part; every rank returns them. ``local_rows(atoms)``
    gives the rank's rows of H - sigma S and of S (CSR, global columns) for its range of
    atoms (:func:`row_partition` of ``rows_per_atom``)."""
    PETSc, SLEPc = import_slepc()  # noqa: N806
    comm = PETSc.COMM_WORLD
    n = int(np.sum(rows_per_atom))
    if not 0 < nev < n:
        raise ValueError(f"nev must lie in 1..{n - 1} (the matrix has {n} rows), got {nev}")
    atoms = row_partition(rows_per_atom, comm.getSize())[comm.getRank()]
    a, b = local_rows(atoms)[:2]
    eps = SLEPc.EPS().create(comm)
    eps.setOperators(_petsc_matrix(PETSc, comm, a, n), _petsc_matrix(PETSc, comm, b, n))
    eps.setProblemType(SLEPc.EPS.ProblemType.GHEP)
    eps.setDimensions(nev)
    eps.setTarget(0.0)
    eps.setWhichEigenpairs(SLEPc.EPS.Which.TARGET_MAGNITUDE)
    eps.setTolerances(tol, 1000)
    st = eps.getST()
    st.setType(SLEPc.ST.Type.SINVERT)
    ksp = st.getKSP()
    ksp.setType(PETSc.KSP.Type.PREONLY)
    pc = ksp.getPC()
    pc.setType(PETSc.PC.Type.LU)
    pc.setFactorSolverType("mumps")
    eps.solve()
    found = eps.getConverged()
    if found < nev:
        raise RuntimeError(f"SLEPc converged {found} of {nev} levels")
    values = np.array([eps.getEigenvalue(i).real for i in range(found)])
    nearest = values[np.argsort(np.abs(values))[:nev]]
    return np.sort(nearest) + sigma
