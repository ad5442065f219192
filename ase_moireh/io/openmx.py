"""OpenMX 3.9 ``.scfout`` reader (pure numpy) and the OpenMX converter plugin.

The binary layout follows OpenMX's ``read_scfout.c`` (format version 3, little-endian
int32 / float64). Hartree and Bohr exist in this module only: everything it returns is
in eV and Angstrom, in the project's orbital order (:mod:`ase_moireh.basis`).

Spin (SOC, SpinP_switch = 3): with H[0..3] and iHNL[0..2] as OpenMX stores them,
uu = H0 + i iHNL0, dd = H1 + i iHNL1, ud = H2 + i (H3 + iHNL2), and the down-up block of
(i, j, R) is the conjugate transpose of the up-down block of the reverse pair (j, i, -R).
"""

from __future__ import annotations

import gzip
import lzma
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers
from ase.units import Bohr, Hartree

from ase_moireh.basis import Basis, BasisError
from ase_moireh.block_operator import (
    BlockOperator,
    lookup_edges,
    packed_offsets,
    reversed_edges,
    sorted_edge_keys,
)
from ase_moireh.io.openmx_input import clean_lines, input_block, species_elements
from ase_moireh.io.plugins import ConversionError
from ase_moireh.tightbinding import ElectronicStructure

SUPPORTED_VERSION = 3
RECORD_BYTES = 256
MAX_ORBITALS_PER_ATOM = 1000  # far above any PAO basis; guards against corrupt headers


class ScfoutError(ConversionError):
    """A .scfout file that cannot be read; the message names the problem."""


# --------------------------------------------------------------------------- bytes


def read_bytes(source: str | os.PathLike | bytes | BinaryIO) -> bytes:
    """All bytes of a .scfout, .scfout.xz or .scfout.gz (by content, not by name)."""
    try:
        if isinstance(source, bytes | bytearray):
            raw = bytes(source)
        elif hasattr(source, "read"):  # e.g. ase.io.read's own decompressing file object
            raw = source.read()
        else:
            raw = Path(source).read_bytes()
        if raw.startswith(b"\xfd7zXZ\x00"):
            return lzma.decompress(raw)
        if raw.startswith(b"\x1f\x8b"):
            return gzip.decompress(raw)
    except (lzma.LZMAError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise ScfoutError(f"truncated or corrupt compressed file ({err})") from None
    return raw


#: atomnum, SpinP_switch + 4 version, Catomnum, Latomnum, Ratomnum, TCpyCell, order_max
HEADER_BYTES = 7 * 4


class _Cursor:
    """Sequential reader that refuses to run past the end with a clear message."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, dtype: str, count: int, what: str) -> np.ndarray:
        count = int(count)
        nbytes = count * np.dtype(dtype).itemsize
        if count < 0 or self.pos + nbytes > len(self.data):
            raise ScfoutError(
                f"truncated: {what} needs {nbytes} bytes at offset {self.pos}, "
                f"file has {len(self.data)}"
            )
        out = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
        self.pos += nbytes
        return out

    def skip(self, nbytes: int, what: str) -> None:
        if self.pos + nbytes > len(self.data):
            raise ScfoutError(
                f"truncated: {what} needs {nbytes} bytes at offset {self.pos}, "
                f"file has {len(self.data)}"
            )
        self.pos += nbytes


# --------------------------------------------------------------------------- raw layout


@dataclass
class ScfoutRaw:
    """The arrays of a .scfout exactly as OpenMX wrote them (Hartree, Bohr, 1-based)."""

    spin_switch: int
    natoms: int
    norb: np.ndarray  # Total_NumOrbs (N,)
    edges_i: np.ndarray  # 0-based centre atom per stored block
    natn: np.ndarray  # 1-based neighbour atom per block
    cell_index: np.ndarray  # (E, 3) integer lattice vector per block
    cell_vec: np.ndarray  # (E, 3) Cartesian lattice vector per block, Bohr
    tv: np.ndarray  # (3, 3) Bohr, rows
    gxyz: np.ndarray  # (N, 3) Bohr
    hamiltonian: list[np.ndarray]  # SpinP+1 flat arrays, Hartree
    ihnl: list[np.ndarray]  # 3 flat arrays (SOC) or []
    overlap: np.ndarray  # flat
    chem_pot: float  # Hartree
    n_electrons: float
    input_lines: list[str]
    text: str  # appended openmx.out, may be empty
    offsets: np.ndarray = field(repr=False, default=None)  # (E+1,) block starts in flat arrays


def _header(cur: _Cursor, size: int) -> tuple[int, int, int, int]:
    """(atomnum, SpinP_switch, TCpyCell, order_max), checked."""
    if size < HEADER_BYTES:
        raise ScfoutError(
            f"not an OpenMX .scfout: {size} bytes, fewer than its {HEADER_BYTES}-byte header"
        )
    atomnum, spin_version, _, _, _, tcpycell = (int(x) for x in cur.take("<i4", 6, "header"))
    version, spin = divmod(spin_version, 4) if spin_version >= 0 else (-1, -1)
    if version != SUPPORTED_VERSION:
        raise ScfoutError(
            f"not an OpenMX 3.9 .scfout: header field {spin_version} gives format version "
            f"{version}, only version {SUPPORTED_VERSION} (OpenMX 3.9) is supported"
        )
    if spin not in (0, 1, 3):
        raise ScfoutError(f"unsupported SpinP_switch {spin} (expected 0, 1 or 3)")
    if not 0 < atomnum <= size // 8 or not 0 <= tcpycell <= size // 48:
        raise ScfoutError(f"corrupt header: atomnum={atomnum}, TCpyCell={tcpycell}")
    order_max = int(cur.take("<i4", 1, "order_max")[0])
    if not 0 <= order_max <= 16:
        raise ScfoutError(f"corrupt header: order_max={order_max}")
    return atomnum, spin, tcpycell, order_max


def _neighbours(cur: _Cursor, atomnum: int, tcpycell: int, size: int) -> dict:
    """Cell translations, orbital counts, the neighbour list, cell and positions."""
    atv = cur.take("<f8", 4 * (tcpycell + 1), "atv").reshape(-1, 4)[:, 1:]
    atv_ijk = cur.take("<i4", 4 * (tcpycell + 1), "atv_ijk").reshape(-1, 4)[:, 1:]
    norb = cur.take("<i4", atomnum, "Total_NumOrbs").astype(np.int64)
    fnan = cur.take("<i4", atomnum, "FNAN").astype(np.int64)
    if norb.min() < 1 or norb.max() > MAX_ORBITALS_PER_ATOM:
        raise ScfoutError(f"corrupt orbital counts (range {norb.min()}..{norb.max()})")
    if fnan.min() < 0 or int(fnan.sum()) > size // 8:
        raise ScfoutError(f"corrupt neighbour counts (range {fnan.min()}..{fnan.max()})")
    total = int((fnan + 1).sum())
    natn = cur.take("<i4", total, "natn").astype(np.int64)
    ncn = cur.take("<i4", total, "ncn").astype(np.int64)
    if natn.min() < 1 or natn.max() > atomnum:
        raise ScfoutError("corrupt neighbour list: atom index out of range")
    if ncn.min() < 0 or ncn.max() > tcpycell:
        raise ScfoutError("corrupt neighbour list: cell index out of range")
    tv = cur.take("<f8", 12, "tv").reshape(3, 4)[:, 1:]
    cur.take("<f8", 12, "rtv")
    gxyz = cur.take("<f8", 4 * atomnum, "Gxyz").reshape(-1, 4)[:, 1:]
    edges_i = np.repeat(np.arange(atomnum), fnan + 1)
    return {
        "norb": norb,
        "edges_i": edges_i,
        "natn": natn,
        "cell_index": atv_ijk[ncn].astype(np.int64),
        "cell_vec": atv[ncn],
        "tv": tv.copy(),
        "gxyz": gxyz.copy(),
        "offsets": packed_offsets(norb, np.column_stack([edges_i, natn - 1])),
    }


def _input_records(cur: _Cursor, data: bytes) -> tuple[list[str], str]:
    """The embedded input file's lines and the text appended after them."""
    nlines = int(cur.take("<i4", 1, "input line count")[0])
    if not 0 <= nlines <= (len(data) - cur.pos) // RECORD_BYTES:
        raise ScfoutError(f"corrupt or truncated input records (count {nlines})")
    lines = []
    for _ in range(nlines):
        rec = bytes(cur.take("u1", RECORD_BYTES, "input record"))
        lines.append(rec.split(b"\x00", 1)[0].decode("latin-1").rstrip("\n"))
    tail = data[cur.pos :]
    if b"\x00" in tail[:4096]:
        raise ScfoutError(
            f"binary data after the input records at offset {cur.pos}: corrupt header or sizes"
        )
    return lines, tail.decode("latin-1")


def parse_scfout(data: bytes) -> ScfoutRaw:
    """Parse the binary layout; every size is checked against the bytes present."""
    cur = _Cursor(data)
    atomnum, spin, tcpycell, order_max = _header(cur, len(data))
    grid = _neighbours(cur, atomnum, tcpycell, len(data))
    m = int(grid["offsets"][-1])
    hamiltonian = [cur.take("<f8", m, f"H[spin {s}]") for s in range(spin + 1)]
    ihnl = [cur.take("<f8", m, f"iHNL[{s}]") for s in range(3)] if spin == 3 else []
    overlap = cur.take("<f8", m, "overlap")
    cur.skip((3 * order_max + 3 + (spin + 1) + 2) * m * 8, "OLPpo, OLPmo, DM and iDM")
    cur.take("<i4", 1, "solver")
    scalars = cur.take("<f8", 10, "chemical potential and totals")
    lines, text = _input_records(cur, data)
    for name, arr in (
        [("Gxyz", grid["gxyz"]), ("tv", grid["tv"]), ("overlap", overlap)]
        + [(f"H[{s}]", h) for s, h in enumerate(hamiltonian)]
        + [(f"iHNL[{s}]", h) for s, h in enumerate(ihnl)]
    ):
        if not np.all(np.isfinite(arr)):
            raise ScfoutError(f"non-finite numbers in {name}")
    if not np.isfinite(scalars[0]):
        raise ScfoutError("non-finite chemical potential")
    return ScfoutRaw(
        spin_switch=spin,
        natoms=atomnum,
        hamiltonian=hamiltonian,
        ihnl=ihnl,
        overlap=overlap,
        chem_pot=float(scalars[0]),
        n_electrons=float(scalars[8]),
        input_lines=lines,
        text=text,
        **grid,
    )


# --------------------------------------------------------------------------- input file


def species_from_input(lines: list[str], natoms: int) -> tuple[list[str], dict[str, str]]:
    """Per-atom element symbols and the OpenMX basis string of every element."""
    lines = clean_lines(lines)
    where = "embedded input file"
    try:
        elements = species_elements(lines, where)
        definitions = {
            row[0]: row[1] for row in input_block(lines, "Definition.of.Atomic.Species", where)
        }
        coords = input_block(lines, "Atoms.SpeciesAndCoordinates", where)
    except (ValueError, IndexError) as err:
        raise ScfoutError(str(err)) from None
    if len(coords) != natoms:
        raise ScfoutError(f"embedded input lists {len(coords)} atoms, the binary holds {natoms}")
    symbols, basis = [], {}
    for row in coords:
        if len(row) < 2 or row[1] not in definitions:
            raise ScfoutError(f"atom line {' '.join(row)!r} names an undefined species")
        element = elements[row[1]]
        if basis.setdefault(element, definitions[row[1]]) != definitions[row[1]]:
            raise ScfoutError(f"element {element} has two different bases")
        symbols.append(element)
    return symbols, basis


def valence_from_input(lines: list[str], symbols: list[str], n_electrons: float) -> dict | None:
    """Electrons per element from the atom lines' initial up and down charges (OpenMX
    starts from neutral atoms, so their sum is the pseudopotential's valence), kept only
    when every atom of an element agrees and the total is the run's electron count."""
    rows = input_block(clean_lines(lines), "Atoms.SpeciesAndCoordinates", "embedded input file")
    table: dict[str, float] = {}
    for symbol, row in zip(symbols, rows, strict=True):
        try:
            charge = float(row[5]) + float(row[6])
        except (IndexError, ValueError):
            return None
        if table.setdefault(symbol, charge) != charge:
            return None
    if abs(sum(table[s] for s in symbols) - n_electrons) > 1e-6:
        return None
    return table


# --------------------------------------------------------------------------- eigenvalues


_KPOINT = re.compile(
    r"kloop=\s*\d+\s*\n\s*k1=\s*(\S+)\s+k2=\s*(\S+)\s+k3=\s*(\S+)\s*\n(.*?)(?=\n\s*kloop=|\n\s*\*{5}|\Z)",
    re.S,
)


def kgrid_from_input(lines: list[str]) -> np.ndarray | None:
    """``scf.Kgrid`` of the embedded input file, if given."""
    for line in lines:
        parts = line.split()
        if len(parts) >= 4 and parts[0].lower() == "scf.kgrid":
            try:
                return np.array([int(x) for x in parts[1:4]])
            except ValueError:
                return None
    return None


def snap_to_grid(k: np.ndarray, kgrid: np.ndarray | None) -> np.ndarray:
    """OpenMX prints k with 5 decimals; its k-points lie on multiples of 1/(2 n) of the
    input grid, so snap to those (rounding costs ~0.7 meV on 80-eV bands otherwise)."""
    if kgrid is None:
        return k
    step = 1.0 / (2 * np.maximum(kgrid, 1))
    snapped = np.rint(k / step) * step
    return np.where(np.abs(snapped - k) < 1e-4, snapped, k)


def parse_out_eigenvalues(
    text: str, kgrid: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """k-points (fractional, snapped to ``kgrid``) and eigenvalues (eV, every band printed;
    for collinear runs the up-spin column) from the 'Eigenvalues (Hartree) of SCF KS-eq.'
    part of openmx.out."""
    start = text.find("Eigenvalues (Hartree) of SCF KS-eq.")
    if start < 0:
        return []
    out = []
    for match in _KPOINT.finditer(text, start):
        k = snap_to_grid(np.array([float(match.group(n)) for n in (1, 2, 3)]), kgrid)
        values = []
        for line in match.group(4).splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].isdigit():
                values.append(float(parts[1]))
        out.append((k, np.array(values) * Hartree))
    return out


# --------------------------------------------------------------------------- conversion


def _internal_blocks(raw: ScfoutRaw, flat: np.ndarray, perms: list[np.ndarray]) -> list:
    """Blocks of one flat OpenMX array, permuted to our orbital order."""
    out = []
    for e in range(len(raw.edges_i)):
        i, j = raw.edges_i[e], raw.natn[e] - 1
        block = flat[raw.offsets[e] : raw.offsets[e + 1]].reshape(raw.norb[i], raw.norb[j])
        out.append(block[np.ix_(perms[i], perms[j])])
    return out


def _spinor_blocks(raw: ScfoutRaw, perms: list[np.ndarray], edges: np.ndarray) -> list:
    h = [_internal_blocks(raw, a, perms) for a in raw.hamiltonian]
    ih = [_internal_blocks(raw, a, perms) for a in raw.ihnl]
    uu = [a + 1j * b for a, b in zip(h[0], ih[0], strict=True)]
    dd = [a + 1j * b for a, b in zip(h[1], ih[1], strict=True)]
    ud = [a + 1j * (b + c) for a, b, c in zip(h[2], h[3], ih[2], strict=True)]
    table = sorted_edge_keys(edges, raw.natoms)
    reverse = lookup_edges(table, reversed_edges(edges), raw.natoms)
    if np.any(reverse < 0):
        raise ScfoutError("neighbour list is not symmetric: cannot build the down-up blocks")
    return [np.block([[uu[e], ud[e]], [ud[reverse[e]].conj().T, dd[e]]]) for e in range(len(edges))]


def scfout_to_structure(raw: ScfoutRaw, source: str = "") -> ElectronicStructure:
    """Atoms, H and S (eV, Angstrom, internal order) from a parsed .scfout."""
    if raw.spin_switch == 1:
        raise ScfoutError("collinear spin-polarised runs (SpinP_switch 1) are not supported")
    symbols, basis_strings = species_from_input(raw.input_lines, raw.natoms)
    try:
        basis = Basis.from_openmx(basis_strings)
    except BasisError as err:
        raise ScfoutError(str(err)) from None
    numbers = np.array([atomic_numbers[s] for s in symbols])
    if not np.array_equal(basis.norbs(numbers), raw.norb):
        raise ScfoutError("orbital counts of the embedded basis do not match the binary")
    perms = [basis[s].openmx_permutation() for s in symbols]

    cell = raw.tv * Bohr
    positions = raw.gxyz * Bohr
    edges = np.column_stack([raw.edges_i, raw.natn - 1, raw.cell_index])
    # atv (Cartesian) and atv_ijk (integers) must describe the same translations
    if not np.allclose(raw.cell_index @ raw.tv, raw.cell_vec, atol=1e-6):
        raise ScfoutError("cell translations (atv) disagree with their integer indices")

    meta = {"cell": cell, "positions": positions}
    s_blocks = _internal_blocks(raw, raw.overlap, perms)
    overlap = BlockOperator.from_blocks(numbers, basis, edges, s_blocks, **meta)
    if raw.spin_switch == 3:
        h_blocks = [b * Hartree for b in _spinor_blocks(raw, perms, edges)]
        spinful = True
    else:
        h_blocks = [b * Hartree for b in _internal_blocks(raw, raw.hamiltonian[0], perms)]
        spinful = False
    hamiltonian = BlockOperator.from_blocks(numbers, basis, edges, h_blocks, spinful, **meta)
    atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)
    return ElectronicStructure(
        atoms=atoms,
        hamiltonian=hamiltonian,
        overlap=overlap,
        fermi_level=raw.chem_pot * Hartree,
        source=source,
        extra={
            "n_electrons": raw.n_electrons,
            "openmx_basis": basis_strings,
            "valence": valence_from_input(raw.input_lines, symbols, raw.n_electrons),
            "code": "OpenMX",
            "scfout_version": 3,
        },
        reference_eigenvalues=parse_out_eigenvalues(raw.text, kgrid_from_input(raw.input_lines)),
    )


def _source_name(source) -> str:
    """The file name for messages; lzma.LZMAFile (what ase.io.read opens for .xz)
    keeps it only on its underlying file object."""
    if isinstance(source, str | os.PathLike):
        return str(source)
    if isinstance(source, bytes | bytearray):
        return "<bytes>"
    inner = getattr(source, "_fp", None)
    return str(getattr(source, "name", None) or getattr(inner, "name", None) or "<stream>")


def read_scfout(source: str | os.PathLike | bytes | BinaryIO) -> ElectronicStructure:
    """Read an OpenMX 3.9 .scfout (plain, .xz or .gz) into Atoms, H and S."""
    name = _source_name(source)
    try:
        raw = parse_scfout(read_bytes(source))
    except ScfoutError as err:
        raise ScfoutError(f"{name}: {err}") from None
    except OSError as err:
        raise ScfoutError(f"{name}: cannot read ({err.strerror or err})") from None
    try:
        return scfout_to_structure(raw, source=name)
    except ScfoutError as err:
        raise ScfoutError(f"{name}: {err}") from None
