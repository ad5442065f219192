"""OpenMX input files (``openmx_in.dat``), read and written in one place.

Reading: the structure an input describes (cell and atoms in Ang, AU or FRAC; Bohr is
allowed here) and the parts of its text other readers need (blocks, species).

Writing (dataset generation): the writer reproduces the inputs of the shared MoTe2 runs
(``../shared/data/openmx``) keyword for keyword, so new structures are computed exactly
as the ones already in the dataset; only the structure, the k-grid and the mixing (by
cell size) change. :func:`read_openmx_input` reads every written file back
(``tests/test_generate.py``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from ase.units import Bohr

from ase_moireh.files import atomic_file

# --------------------------------------------------------------------------- reading


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


# --------------------------------------------------------------------------- writing

#: (PAO basis, VPS pseudopotential, valence electrons) verified by the shared runs
DEFAULT_SPECIES: dict[str, tuple[str, str, float]] = {
    "Mo": ("Mo7.0-s3p2d1", "Mo_PBE19", 14.0),
    "Te": ("Te7.0-s3p2d2", "Te_PBE19", 16.0),
}

#: OpenMX stops its SCF when the band-energy change < scf.criterion and NormRD < 10 x
#: scf.criterion (DFT.c), so 1e-9 guarantees the NormRD < 1e-8 of the shared reference
#: runs (which used 1e-8 and so sometimes stopped at NormRD 1.1e-8)
SCF_CRITERION = 1.0e-9

#: k-point density: 31.68 A = 9 x 3.52 A gives the shared 9x9x1 (1x1) and 3x3x1 (twisted)
KGRID_LENGTH = 31.68
#: cells up to this many atoms use the 1x1 mixing; larger ones the gentler twisted-cell one
SMALL_CELL_ATOMS = 20
#: (Init.Mixing.Weight, Mixing.History, Mixing.StartPulay) of the shared runs
MIXING_SMALL = (0.30, 7, 5)
MIXING_LARGE = (0.20, 30, 10)  # the small-cell settings stalled for the 42-atom cell

INPUT_NAME = "openmx_in.dat"
_KEY_WIDTH = 27

#: a species entry: (pao, vps) or (pao, vps, valence); valence None = read the VPS file
SpeciesSpec = Sequence[str | float | None]
#: resolved species: (pao, vps, valence)
Species = tuple[str, str, float]


def default_kgrid(cell: np.ndarray) -> tuple[int, int, int]:
    """Monkhorst-Pack grid n_i = max(1, round(31.68 A / |a_i|)) for a1, a2; 1 along a3.

    31.68 A = 9 x 3.52 A reproduces the shared runs: 9x9x1 for the 1x1 MoTe2 cell and
    3x3x1 for the 9.31 A twisted (2, 1) cell; the same k-density for every cell size.
    Halves round up (a 6x6 MoTe2 cell, 21.12 A, gets 2x2x1).
    """
    lengths = np.linalg.norm(np.asarray(cell, dtype=float)[:2], axis=1)
    n1, n2 = (max(1, math.floor(KGRID_LENGTH / length + 0.5)) for length in lengths)
    return n1, n2, 1


def read_vps_valence(path: str | os.PathLike) -> float:
    """Valence charge from the ``valence.electron`` line of an OpenMX VPS file."""
    with open(path, errors="replace") as f:
        for line in f:
            words = line.split()
            if len(words) >= 2 and words[0] == "valence.electron":
                return float(words[1])
    raise ValueError(f"{path}: no 'valence.electron' line")


def resolve_species(
    symbols: Iterable[str],
    species: Mapping[str, SpeciesSpec] | None = None,
    data_path: str | os.PathLike = "../DFT_DATA",
    folder: str | os.PathLike = ".",
) -> dict[str, Species]:
    """(pao, vps, valence) per element, by atomic number (Mo before Te, as in the shared
    runs, whatever the atom order).

    ``species`` overrides :data:`DEFAULT_SPECIES`; a missing valence is read from
    ``<data_path>/VPS/<vps>.vps`` (``data_path`` relative to ``folder``, as OpenMX does).
    """
    table: dict[str, SpeciesSpec] = {**DEFAULT_SPECIES, **(species or {})}
    elements = sorted(set(symbols), key=chemical_symbols.index)
    missing = [symbol for symbol in elements if symbol not in table]
    if missing:
        x = missing[0]
        raise ValueError(
            f"no OpenMX species for element {', '.join(map(repr, missing))}: give "
            f"(pao, vps[, valence]) for each, e.g. species={{{x!r}: ({x + '7.0-s3p2d2'!r}, "
            f"{x + '_PBE19'!r}, None)}} or --species {x}={x}7.0-s3p2d2:{x}_PBE19 "
            "(a missing valence is read from the VPS file)"
        )
    data_dir = Path(os.path.normpath(Path(folder) / data_path))  # folder may not exist yet
    return {symbol: _species_entry(symbol, table[symbol], data_dir) for symbol in elements}


def _species_entry(symbol: str, spec: SpeciesSpec, data_dir: Path) -> Species:
    if len(spec) not in (2, 3):
        raise ValueError(f"species of {symbol!r} must be (pao, vps[, valence]), got {spec!r}")
    pao, vps = str(spec[0]), str(spec[1])
    valence = spec[2] if len(spec) == 3 else None
    if valence is None:
        vps_file = data_dir / "VPS" / f"{vps}.vps"
        if not vps_file.is_file():
            raise ValueError(
                f"valence of element {symbol!r} unknown: give it in species or provide {vps_file}"
            )
        valence = read_vps_valence(vps_file)
    return pao, vps, float(valence)


def _key(name: str, value: object) -> str:
    """Keyword line aligned as in the shared inputs (value at column 28, or 3 spaces)."""
    width = _KEY_WIDTH if len(name) < _KEY_WIDTH else len(name) + 3
    return f"{name:<{width}}{value}"


def _vector_line(vec: Sequence[float]) -> str:
    return "".join(f"{x:19.12f}" for x in vec)


def _structure_lines(atoms: Atoms, species: Mapping[str, Species]) -> list[str]:
    lines = [
        _key("Species.Number", len(species)),
        "<Definition.of.Atomic.Species",
        *(f" {sym:<2s}   {pao}   {vps}" for sym, (pao, vps, _) in species.items()),
        "Definition.of.Atomic.Species>",
        "",
        _key("Atoms.Number", len(atoms)),
        _key("Atoms.SpeciesAndCoordinates.Unit", "Ang"),
        "<Atoms.SpeciesAndCoordinates",
    ]
    for index, (sym, pos) in enumerate(
        zip(atoms.get_chemical_symbols(), atoms.positions, strict=True), 1
    ):
        half = 0.5 * species[sym][2]  # non-magnetic start: up = down
        lines.append(f"{index:5d} {sym:<2s}{_vector_line(pos)} {half:6.2f} {half:5.2f}")
    lines += [
        "Atoms.SpeciesAndCoordinates>",
        _key("Atoms.UnitVectors.Unit", "Ang"),
        "<Atoms.UnitVectors",
        *(_vector_line(vec) for vec in np.asarray(atoms.cell)),
        "Atoms.UnitVectors>",
    ]
    return lines


def _scf_lines(
    natoms: int, soc: bool, kgrid: Sequence[int], ecut: float, temperature: float
) -> list[str]:
    weight, history, start = MIXING_SMALL if natoms <= SMALL_CELL_ATOMS else MIXING_LARGE
    spin = [_key("scf.SpinPolarization", "NC"), _key("scf.SpinOrbit.Coupling", "on")]
    return [
        _key("scf.XcType", "GGA-PBE"),
        *(spin if soc else [_key("scf.SpinPolarization", "off")]),
        _key("scf.ElectronicTemperature", f"{temperature:.1f}"),
        _key("scf.energycutoff", f"{ecut:.1f}"),
        _key("scf.maxIter", 200),
        _key("scf.EigenvalueSolver", "band"),
        _key("scf.Kgrid", " ".join(str(k) for k in kgrid)),
        _key("scf.Mixing.Type", "rmm-diisk"),
        _key("scf.Init.Mixing.Weight", f"{weight:.2f}"),
        _key("scf.Min.Mixing.Weight", "0.001"),
        _key("scf.Max.Mixing.Weight", "0.40"),
        _key("scf.Mixing.History", history),
        _key("scf.Mixing.StartPulay", start),
        _key("scf.Mixing.EveryPulay", 1),
        _key("scf.criterion", f"{SCF_CRITERION:.1e}"),
    ]


def _check_kgrid(kgrid: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(kgrid)
    if len(values) != 3 or not all(isinstance(k, (int, np.integer)) and k >= 1 for k in values):
        raise ValueError(f"kgrid must be three positive integers, got {kgrid!r}")
    return int(values[0]), int(values[1]), int(values[2])


def openmx_input_text(
    atoms: Atoms,
    soc: bool,
    kgrid: Sequence[int] | None = None,
    species: Mapping[str, SpeciesSpec] | None = None,
    data_path: str = "../DFT_DATA",
    system_name: str = "openmx",
    ecut: float = 200.0,
    temperature: float = 300.0,
    folder: str | os.PathLike = ".",
) -> str:
    """The text of ``openmx_in.dat`` in the style of the shared runs.

    ``soc`` selects NC spin + spin-orbit coupling (else spin off). ``kgrid`` defaults to
    :func:`default_kgrid`. ``species`` maps element -> (pao, vps[, valence]) for elements
    beyond Mo and Te; a missing valence is read from ``<data_path>/VPS/<vps>.vps``
    relative to ``folder``. Positions are written as given (Cartesian, A).
    """
    if len(atoms) == 0:
        raise ValueError("cannot write an OpenMX input for an empty structure")
    if abs(np.linalg.det(np.asarray(atoms.cell))) < 1e-9:
        raise ValueError("OpenMX needs a full 3-D cell; this structure has a degenerate one")
    grid = default_kgrid(atoms.cell) if kgrid is None else _check_kgrid(kgrid)
    table = resolve_species(atoms.get_chemical_symbols(), species, data_path, folder)
    lines = [
        _key("System.CurrrentDirectory", "./"),  # sic: OpenMX's spelling
        _key("System.Name", system_name),
        _key("DATA.PATH", data_path),
        _key("level.of.stdout", 1),
        _key("level.of.fileout", 0),
        "",
        *_structure_lines(atoms, table),
        "",
        *_scf_lines(len(atoms), bool(soc), grid, ecut, temperature),
        "",
        _key("HS.fileout", "on"),
        _key("MD.Type", "nomd"),
    ]
    return "\n".join(lines) + "\n"


def write_openmx_input(folder: str | os.PathLike, atoms: Atoms, soc: bool, **settings) -> Path:
    """Write ``folder/openmx_in.dat`` (:func:`openmx_input_text` with ``settings``: kgrid,
    species, data_path, system_name, ecut, temperature); return its path. The file
    appears whole or not at all (temporary file, then rename)."""
    folder = Path(folder)
    text = openmx_input_text(atoms, soc, folder=folder, **settings)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / INPUT_NAME
    with atomic_file(target) as tmp:
        tmp.write_text(text)
    return target
