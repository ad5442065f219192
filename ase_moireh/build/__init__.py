"""Structure builders: twisted bilayers, strain, nanoribbons, dataset generation."""

from .materials import MATERIALS, Material, get_material
from .ribbon import nanoribbon
from .twist import (
    CommensurateCell,
    commensurate_cells,
    natoms_twisted,
    twist_angle,
    twisted_bilayer,
)

__all__ = [
    "MATERIALS",
    "CommensurateCell",
    "Material",
    "commensurate_cells",
    "get_material",
    "nanoribbon",
    "natoms_twisted",
    "twist_angle",
    "twisted_bilayer",
]
