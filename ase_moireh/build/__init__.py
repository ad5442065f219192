"""Structure builders: twisted bilayers, strain, nanoribbons, and the structures of DFT
datasets (sampled shifted and twisted bilayers, their OpenMX input folders)."""

from ase_moireh.build.generate import (
    generate_dataset,
    generate_sampled,
    interlayer_distance,
    min_distance,
    perturbed_twisted,
    sampled_shifted_bilayers,
    sampled_twisted_bilayers,
    shifted_bilayers,
    write_structure_folder,
)
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
    "generate_dataset",
    "generate_sampled",
    "get_material",
    "heterostrain_cells",
    "heterostrained_bilayer",
    "homostrain",
    "interlayer_distance",
    "min_distance",
    "nanoribbon",
    "natoms_twisted",
    "perturbed_twisted",
    "sampled_shifted_bilayers",
    "sampled_twisted_bilayers",
    "shifted_bilayers",
    "twist_angle",
    "twisted_bilayer",
    "uniaxial_strain_tensor",
    "write_structure_folder",
]
