"""OpenMX's zeroth-step Hamiltonian H0 in Python, term by term.

H0 is what OpenMX builds before any self-consistency: fixed functions of the structure,
so a model need not learn them. This package holds the two-centre terms (kinetic energy,
non-local pseudopotential) computed by OpenMX's own numerical route, beside the exact
overlap of :mod:`ase_moireh.overlap`.
"""

from ase_moireh.h0.twocentre import (
    KineticEnergy,
    NonlocalPseudopotential,
    RadialSide,
    RadialTable,
    angular_momentum,
    openmx_damping,
    openmx_k_quadrature,
)

__all__ = [
    "KineticEnergy",
    "NonlocalPseudopotential",
    "RadialSide",
    "RadialTable",
    "angular_momentum",
    "openmx_damping",
    "openmx_k_quadrature",
]
