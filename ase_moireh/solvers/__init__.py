"""Generalised eigenproblems H c = E S c of sparse Bloch matrices, without reference to
where the matrices come from: factorisations (PARDISO, SuperLU) and inertia counts,
dense and shift-invert solves and the gap search by electron counting, densities of
states by KPM, and the shift-invert solve across MPI ranks (PETSc/SLEPc). Below the
tight-binding layer: :class:`ase_moireh.tightbinding.TightBinding` calls them."""

from ase_moireh.solvers.distributed import (
    SlepcUnavailable,
    distributed_levels,
    row_partition,
    world,
)
from ase_moireh.solvers.factorization import (
    PRECISIONS,
    SOLVERS,
    count_below,
    counting_factor,
    factorize,
    mkl_library,
    release,
)
from ase_moireh.solvers.kpm import (
    KPMDensity,
    hermitian_product,
    kpm_dos,
    kpm_window_dos,
    window_dos,
)
from ase_moireh.solvers.solve import (
    OverlapNotPositiveDefinite,
    band_edges,
    gap_energy,
    generalized_eigh,
    shift_invert,
    shift_invert_eigh,
    smallest_overlap_eigenvalue,
)

__all__ = [
    "PRECISIONS",
    "SOLVERS",
    "KPMDensity",
    "OverlapNotPositiveDefinite",
    "SlepcUnavailable",
    "band_edges",
    "count_below",
    "counting_factor",
    "distributed_levels",
    "factorize",
    "gap_energy",
    "generalized_eigh",
    "hermitian_product",
    "kpm_dos",
    "kpm_window_dos",
    "mkl_library",
    "release",
    "row_partition",
    "shift_invert",
    "shift_invert_eigh",
    "smallest_overlap_eigenvalue",
    "window_dos",
    "world",
]
