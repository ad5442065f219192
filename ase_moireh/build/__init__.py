"""Structure builders: twisted bilayers, strain, nanoribbons, dataset generation."""

from ase_moireh.build.materials import MATERIALS, Material, get_material
from ase_moireh.build.ribbon import nanoribbon
from ase_moireh.build.strain import (
    HeterostrainCell,
    HeterostrainError,
    heterostrain_cells,
    heterostrained_bilayer,
    homostrain,
    uniaxial_strain_tensor,
)
from ase_moireh.build.twist import (
    CommensurateCell,
    commensurate_cells,
    natoms_twisted,
    twist_angle,
    twisted_bilayer,
)

__all__ = [
    "MATERIALS",
    "CommensurateCell",
    "HeterostrainCell",
    "HeterostrainError",
    "Material",
    "commensurate_cells",
    "get_material",
    "heterostrain_cells",
    "heterostrained_bilayer",
    "homostrain",
    "nanoribbon",
    "natoms_twisted",
    "twist_angle",
    "twisted_bilayer",
    "uniaxial_strain_tensor",
]
