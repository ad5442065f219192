"""OpenMX input files (``openmx_in.dat``): the structure they describe, and the parts of
their text that other readers need (blocks, species). Bohr is allowed here (``Unit AU``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from ase.units import Bohr


def clean_lines(raw: list[str]) -> list[str]:
    """Lines without comments (``#`` to the end of the line) and blank lines."""
    lines = (line.split("#", 1)[0].strip() for line in raw)
    return [line for line in lines if line]


def _input_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        raise ValueError(f"{path}: cannot read the OpenMX input ({err})") from None
    return clean_lines(text.splitlines())


def _keywords(lines: list[str]) -> dict[str, str]:
    """Single-line keywords (lower-cased) -> value text."""
    out: dict[str, str] = {}
    in_block = False
    for line in lines:
        if line.startswith("<") or line.endswith(">"):
            in_block = line.startswith("<")
            continue
        if not in_block:
            words = line.split(None, 1)
            out[words[0].lower()] = words[1].strip() if len(words) > 1 else ""
    return out


def input_block(lines: list[str], name: str, path: Path | str) -> list[list[str]]:
    """Rows (split into words) of the block ``<name`` ... ``name>``."""
    lowered = [line.lower() for line in lines]
    try:
        start = lowered.index(f"<{name.lower()}")
    except ValueError:
        raise ValueError(f"{path}: no <{name} block") from None
    try:
        end = lowered.index(f"{name.lower()}>", start + 1)
    except ValueError:
        raise ValueError(f"{path}: block <{name} is not closed by '{name}>'") from None
    return [line.split() for line in lines[start + 1 : end]]


def _floats(words: Sequence[str], path: Path, what: str) -> list[float]:
    try:
        return [float(w.replace("D", "e").replace("d", "e")) for w in words]
    except ValueError:
        raise ValueError(f"{path}: cannot read numbers in {what}: {' '.join(words)}") from None


def _unit_scale(value: str, allowed: dict[str, float | None], path: Path, key: str):
    unit = (value.split() or ["ang"])[0].lower()
    if unit not in allowed:
        raise ValueError(f"{path}: unsupported {key} {value!r} (use {', '.join(allowed)})")
    return allowed[unit]


def _element(label: str, pao: str, vps: str, path: Path | str) -> str:
    """Element of a species: from the VPS name (what OpenMX uses), else PAO, else label."""
    for name in (vps, pao, label):
        match = re.match(r"[A-Z][a-z]?", name)
        if match and match.group() in chemical_symbols[1:]:
            return match.group()
    raise ValueError(f"{path}: cannot tell the element of species {label!r} ({pao}, {vps})")


def species_elements(lines: list[str], path: Path | str) -> dict[str, str]:
    elements = {}
    for row in input_block(lines, "Definition.of.Atomic.Species", path):
        if len(row) < 3:
            raise ValueError(f"{path}: species line needs 'label pao vps': {' '.join(row)}")
        elements[row[0]] = _element(*row[:3], path)
    return elements


def read_openmx_input(path: str | os.PathLike) -> Atoms:
    """Structure of an OpenMX input file: cell (Ang or AU), atoms (Ang, AU or FRAC).

    Species labels become elements through ``Definition.of.Atomic.Species`` (the VPS
    name's element, as OpenMX itself decides). Periodic in all directions, as OpenMX is.
    """
    path = Path(path)
    lines = _input_lines(path)
    keys = _keywords(lines)
    length = {"ang": 1.0, "au": Bohr, "bohr": Bohr}
    cell_scale = _unit_scale(
        keys.get("atoms.unitvectors.unit", "Ang"), length, path, "Atoms.UnitVectors.Unit"
    )
    rows = input_block(lines, "Atoms.UnitVectors", path)
    if len(rows) != 3 or any(len(r) < 3 for r in rows):
        raise ValueError(f"{path}: Atoms.UnitVectors needs 3 rows of 3 numbers")
    cell = np.array([_floats(r[:3], path, "Atoms.UnitVectors") for r in rows]) * cell_scale
    pos_scale = _unit_scale(
        keys.get("atoms.speciesandcoordinates.unit", "Ang"),
        {**length, "frac": None},
        path,
        "Atoms.SpeciesAndCoordinates.Unit",
    )
    elements = species_elements(lines, path)
    symbols, coords = [], []
    for row in input_block(lines, "Atoms.SpeciesAndCoordinates", path):
        if len(row) < 5:
            raise ValueError(f"{path}: atom line needs 'index species x y z': {' '.join(row)}")
        if row[1] not in elements:
            raise ValueError(f"{path}: species {row[1]!r} not in Definition.of.Atomic.Species")
        symbols.append(elements[row[1]])
        coords.append(_floats(row[2:5], path, "Atoms.SpeciesAndCoordinates"))
    if "atoms.number" in keys and keys["atoms.number"].split()[:1] != [str(len(symbols))]:
        raise ValueError(
            f"{path}: Atoms.Number is {keys['atoms.number']} but {len(symbols)} atoms are listed"
        )
    xyz = np.array(coords, dtype=float).reshape(-1, 3)
    positions = xyz @ cell if pos_scale is None else xyz * pos_scale
    return Atoms(symbols=symbols, positions=positions, cell=cell, pbc=True)
