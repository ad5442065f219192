"""OpenMX's zeroth-step Hamiltonian H0 in Python, term by term.

H0 is what OpenMX builds before any self-consistency: fixed functions of the structure,
so a model need not learn them. This package holds the two-centre terms (kinetic energy,
non-local pseudopotential) computed by OpenMX's own numerical route, beside the exact
overlap of :mod:`ase_moireh.overlap`, the neutral-atom term by OpenMX's projector
expansion (:mod:`ase_moireh.h0.vna`), and the exchange-correlation term of the superposed
atomic densities on OpenMX's real-space grid (:mod:`ase_moireh.h0.vxc`), and their sum
in the corpus's layout with OpenMX's edges (:mod:`ase_moireh.h0.hamiltonian`:
:func:`resolve_h0` is the H0 source beside :func:`~ase_moireh.overlap.resolve_overlap`).
"""

from ase_moireh.h0.hamiltonian import (
    H0Error,
    ZerothStepHamiltonian,
    h0_builder,
    h0_of,
    openmx_edges,
    resolve_h0,
)
from ase_moireh.h0.twocentre import (
    KineticEnergy,
    NonlocalPseudopotential,
    RadialSide,
    RadialTable,
    angular_momentum,
    openmx_damping,
    openmx_k_quadrature,
)
from ase_moireh.h0.vna import NeutralAtomPotential
from ase_moireh.h0.vxc import ExchangeCorrelation, OpenMXGrid

__all__ = [
    "ExchangeCorrelation",
    "H0Error",
    "KineticEnergy",
    "NeutralAtomPotential",
    "NonlocalPseudopotential",
    "OpenMXGrid",
    "RadialSide",
    "RadialTable",
    "ZerothStepHamiltonian",
    "angular_momentum",
    "h0_builder",
    "h0_of",
    "openmx_damping",
    "openmx_edges",
    "openmx_k_quadrature",
    "resolve_h0",
]
