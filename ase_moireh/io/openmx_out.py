"""Total energy and forces from OpenMX's ``<System.Name>.out``.

OpenMX prints them in Hartree and Hartree/Bohr (``outputfile1.c``: ``Utot.``, ``UvdW.``;
``MD_pac.c``: the ``<coordinates.forces`` block, positions in Angstrom, forces as minus
the gradient). This reader is the one place they become eV and eV/A. ``Utot`` includes
the dispersion energy ``UvdW`` of a DFT-D run.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase.units import Bohr, Hartree

_ENERGY = {
    name: re.compile(rf"^\s*{re.escape(name)}\s+(\S+)\s*$", re.M) for name in ("Utot.", "UvdW.")
}
_FORCES = re.compile(r"<coordinates\.forces\s*\n(.*?)\ncoordinates\.forces>", re.S)


@dataclass(frozen=True)
class OpenMXOutput:
    """What a finished OpenMX run reports about its structure (eV, A, eV/A)."""

    energy: float  # Utot, dispersion included
    dispersion: float  # UvdW (0 without DFT-D)
    symbols: list[str]
    positions: np.ndarray  # (N, 3) as OpenMX printed them (5 decimals)
    forces: np.ndarray  # (N, 3)


def _energy(text: str, name: str, path: Path) -> float:
    found = _ENERGY[name].findall(text)
    if not found:
        raise ValueError(f"{path}: no '{name}' line: not a finished OpenMX run")
    try:
        return float(found[-1]) * Hartree
    except ValueError:
        raise ValueError(f"{path}: cannot read the number of '{name}': {found[-1]!r}") from None


def _forces(text: str, path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    blocks = _FORCES.findall(text)
    if not blocks:
        raise ValueError(f"{path}: no <coordinates.forces block: OpenMX did not compute forces")
    rows = [line.split() for line in blocks[-1].strip().splitlines()]
    try:
        count = int(rows[0][0])
        table = rows[1:]
        if len(table) != count or any(len(row) != 8 for row in table):
            raise ValueError
        numbers = np.array([[float(x) for x in row[2:]] for row in table])
    except (ValueError, IndexError):
        raise ValueError(f"{path}: malformed <coordinates.forces block") from None
    return [row[1] for row in table], numbers[:, :3], numbers[:, 3:] * (Hartree / Bohr)


def read_openmx_out(path: str | os.PathLike) -> OpenMXOutput:
    """The total energy, dispersion energy and forces of the last MD step in ``path``."""
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        raise ValueError(f"{path}: cannot read the OpenMX output ({err})") from None
    energy, dispersion = _energy(text, "Utot.", path), _energy(text, "UvdW.", path)
    symbols, positions, forces = _forces(text, path)
    return OpenMXOutput(
        energy=energy,
        dispersion=dispersion,
        symbols=symbols,
        positions=positions,
        forces=forces,
    )
