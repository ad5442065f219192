"""ASE IO format: ``ase.io.read("run.scfout")`` (also .scfout.xz / .gz) gives the Atoms.

Registered through the ``ase.ioformats`` entry point as ``openmx-scfout``.
"""

from __future__ import annotations

from typing import BinaryIO

from ase import Atoms
from ase.utils.plugins import ExternalIOFormat

openmx_scfout_format = ExternalIOFormat(
    desc="OpenMX 3.9 .scfout (binary Hamiltonian file)",
    code="1B",
    module="ase_moireh_converters.ase_io",
    ext=["scfout"],  # a list: ASE would split a string into letters
)


def read_openmx_scfout(fd: BinaryIO, **kwargs) -> Atoms:
    """Atoms of a .scfout; ``atoms.info['fermi_level']`` in eV."""
    from ase_moireh.io.openmx import read_scfout

    structure = read_scfout(fd)
    atoms = structure.atoms
    atoms.info["fermi_level"] = structure.fermi_level
    atoms.info["spinful"] = structure.spinful
    return atoms
