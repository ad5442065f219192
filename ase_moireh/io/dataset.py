"""Datasets on disk: dftio's folder layout (read and write) and a DeepH-layout export.

dftio layout, one folder per structure (what dftio itself writes, e.g. for DeePTB)::

    atomic_numbers.dat  positions.dat (Cartesian A)  cell.dat  pbc.dat
    basis.dat           {'Mo': '3s2p1d', 'Te': '3s2p2d'}
    hamiltonians.h5     group "0" per frame, dataset "{i}_{j}_{Rx}_{Ry}_{Rz}" per block (eV)
    overlaps.h5         same keys, spinless even for SOC; always written (the exact S,
                        :mod:`ase_moireh.overlap`, when the source has none)
    info.json           nframes, pos_type, pbc: dftio's keys only (DeePTB refuses others)
    moireh.json         ours: spinful, fermi_level, source, and when known n_electrons,
                        valence per element and openmx_basis, e.g. {'Mo': 'Mo7.0-s3p2d1'},
                        which names the radial functions of the exact overlap; target
                        "soc_correction" when H is a learned-SOC target dH_SO, "dH" (with
                        h0, which H0) when H is H - H0. Folders
                        written before it kept these keys in info.json; both are read.

Atoms are 0-based; both (i, j, R) and (j, i, -R) are stored; orbital order and spin
layout are those of :mod:`ase_moireh.basis`.

DeepH layout (export for DeepH tools): keys "[Rx, Ry, Rz, i, j]" with 1-based atoms,
OpenMX orbital order, same spin layout, ``lat.dat`` / ``rlat.dat`` / ``site_positions.dat``
with vectors as columns, ``element.dat``, ``orbital_types.dat``, ``info.json``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import h5py
import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from ase_moireh.basis import Basis, spin_factor
from ase_moireh.block_operator import BlockOperator
from ase_moireh.files import atomic_folder
from ase_moireh.tightbinding import ElectronicStructure

#: ElectronicStructure.extra entries that travel in :data:`METADATA_FILE`
INFO_EXTRAS = ("n_electrons", "openmx_basis", "valence", "target", "h0", "h0_settings")
#: our metadata, beside dftio's files (old folders kept it in info.json)
METADATA_FILE = "moireh.json"
#: every key info.json may hold. dftio's own writer (deepmodeling/dftio, io/parse.py)
#: writes no info.json; its reader, DeePTB, defines the file: 2.2.1's
#: dptb/utils/argcheck.py ``set_info_options`` (nframes, pos_type and pbc required;
#: natoms and bandinfo optional), checked with strict=True by ``normalize_setinfo``
#: (dptb/data/build.py), which refuses any other key
DFTIO_INFO_KEYS = ("nframes", "natoms", "pos_type", "pbc", "bandinfo")


class DatasetError(ValueError):
    """A dataset folder that cannot be read; the message names the folder and problem."""


# --------------------------------------------------------------------------- dftio


def _dftio_key(edge: np.ndarray) -> str:
    return "_".join(str(int(x)) for x in edge)


def _write_blocks(path: Path, op: BlockOperator, key) -> None:
    with h5py.File(path, "w") as f:
        group = f.create_group("0")
        for e, block in enumerate(op.blocks()):
            group[key(op.edges[e])] = block


def _pbc_info(pbc: np.ndarray) -> bool | list[bool]:
    """info.json's pbc: one bool when all directions agree (as dftio's peers write it),
    else one per direction (DeePTB loads no cell when a lone bool is False)."""
    flags = [bool(x) for x in pbc]
    return flags[0] if len(set(flags)) == 1 else flags


def write_dftio(structure: ElectronicStructure, folder: str | os.PathLike) -> Path:
    """Write one structure as a dftio folder (atomically) that DeePTB loads as it is:
    info.json with dftio's keys only, our metadata in :data:`METADATA_FILE`, and always
    an overlaps.h5 (``get_overlap`` needs it): a structure without S (a corpus entry
    stores H only) is refused; :func:`ase_moireh.overlap.with_overlap` adds the exact S."""
    atoms = structure.atoms
    h = structure.hamiltonian
    s = structure.overlap
    if s is None:
        raise DatasetError(
            f"{folder}: {structure.source or 'the structure'} has no S to write "
            "(ase_moireh.overlap.with_overlap adds the exact one)"
        )
    info = {"nframes": 1, "pos_type": "cart", "pbc": _pbc_info(atoms.pbc)}
    meta = {
        "spinful": h.spinful,
        "fermi_level": structure.fermi_level,
        "source": structure.source,
        **{k: structure.extra[k] for k in INFO_EXTRAS if structure.extra.get(k) is not None},
    }
    with atomic_folder(folder) as tmp:
        np.savetxt(tmp / "atomic_numbers.dat", atoms.numbers, fmt="%d")
        np.savetxt(tmp / "positions.dat", atoms.positions)
        np.savetxt(tmp / "cell.dat", np.asarray(atoms.cell))
        np.savetxt(tmp / "pbc.dat", atoms.pbc.astype(float))
        (tmp / "basis.dat").write_text(repr(h.basis.to_dftio()))
        _write_blocks(tmp / "hamiltonians.h5", h, _dftio_key)
        _write_blocks(tmp / "overlaps.h5", s, _dftio_key)
        (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return Path(folder)


_DFTIO_KEY = re.compile(r"^(-?\d+)_(-?\d+)_(-?\d+)_(-?\d+)_(-?\d+)$")


def _read_blocks(
    path: Path, frame: int, numbers: np.ndarray, basis: Basis, spinful: bool | None
) -> BlockOperator:
    """Blocks of one frame of a dftio HDF5 file, checked against the basis."""
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DatasetError(f"{path}: not a readable HDF5 file ({err})") from None
    with f:
        group = f.get(str(frame))
        if group is None:
            raise DatasetError(f"{path}: no frame group {frame!r}")
        keys = list(group.keys())
        edges = []
        for key in keys:
            match = _DFTIO_KEY.match(key)
            if match is None:
                raise DatasetError(f"{path}: block key {key!r} is not 'i_j_Rx_Ry_Rz'")
            edges.append([int(x) for x in match.groups()])
        blocks = [group[key][()] for key in keys]
    edges_arr = np.array(edges, dtype=np.int64).reshape(-1, 5)
    if len(edges_arr) and (edges_arr[:, :2].max() >= len(numbers) or edges_arr[:, :2].min() < 0):
        raise DatasetError(f"{path}: block keys name atoms beyond the {len(numbers)} present")
    spatial = basis.norbs(numbers)
    if spinful is None:  # infer: complex blocks of twice the spatial size
        spinful = (
            bool(blocks)
            and np.iscomplexobj(blocks[0])
            and blocks[0].shape == (2 * spatial[edges_arr[0, 0]], 2 * spatial[edges_arr[0, 1]])
        )
    m = spin_factor(spinful)
    for key, edge, block in zip(keys, edges_arr, blocks, strict=True):
        expected = (m * spatial[edge[0]], m * spatial[edge[1]])
        if block.shape != expected:
            raise DatasetError(
                f"{path}: block {key} has shape {block.shape}, basis says {expected}"
            )
    dtype = np.complex128 if spinful else np.float64
    if not spinful and any(np.iscomplexobj(b) for b in blocks):
        raise DatasetError(f"{path}: complex blocks in a spinless dataset")
    return BlockOperator.from_blocks(
        numbers, basis, edges_arr, (b.astype(dtype) for b in blocks), spinful
    )


def _load_array(path: Path, ndmin: int = 1) -> np.ndarray:
    if not path.exists():
        raise DatasetError(f"{path}: missing")
    try:
        return np.loadtxt(path, ndmin=ndmin)
    except ValueError as err:
        raise DatasetError(f"{path}: not a numeric table ({err})") from None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: {err}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: not a JSON object")
    return data


def _read_info(folder: Path) -> dict:
    """info.json of the structure folder, else of the dataset root (dftio puts it there)."""
    for path in (folder / "info.json", folder.parent / "info.json"):
        if path.exists():
            return _read_json(path)
    return {}


def _read_metadata(folder: Path, info: dict) -> dict:
    """Our metadata: :data:`METADATA_FILE`, else info.json (our folders written before
    the split kept it there; a peer's folder has none of these keys)."""
    path = folder / METADATA_FILE
    return _read_json(path) if path.exists() else info


def _pbc_from_info(info: dict) -> np.ndarray:
    """pbc.dat's stand-in: info.json's pbc, one bool or one per direction."""
    return np.broadcast_to(np.asarray(info.get("pbc", False), dtype=bool), (3,)).copy()


def read_dftio(folder: str | os.PathLike, frame: int = 0) -> ElectronicStructure:
    """Load one frame of a dftio folder (ours or one written by dftio itself)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a dataset folder")
    info = _read_info(folder)
    numbers = _load_array(folder / "atomic_numbers.dat").astype(np.int64).ravel()
    nframes = int(info.get("nframes", 1))
    if not 0 <= frame < nframes:
        raise DatasetError(f"{folder}: frame {frame} requested, info.json says {nframes}")
    rows = _load_array(folder / "positions.dat", 2)
    if len(numbers) == len(rows) and len(numbers) % nframes == 0:  # numbers per frame
        numbers = numbers.reshape(nframes, -1)[frame]
    natoms = len(numbers)
    if rows.shape != (nframes * natoms, 3):
        raise DatasetError(f"{folder / 'positions.dat'}: expected {nframes * natoms} rows of 3")
    positions = rows.reshape(nframes, natoms, 3)[frame]
    cell = _load_array(folder / "cell.dat", 2).reshape(-1, 3, 3)[frame]
    pbc_path = folder / "pbc.dat"
    pbc = _load_array(pbc_path).astype(bool) if pbc_path.exists() else _pbc_from_info(info)
    if info.get("pos_type", "cart") in ("frac", "fractional"):
        positions = positions @ cell
    try:
        basis = Basis.from_dftio((folder / "basis.dat").read_text())
    except (OSError, ValueError) as err:
        raise DatasetError(f"{folder / 'basis.dat'}: {err}") from None
    missing = {chemical_symbols[z] for z in numbers} - set(basis)
    if missing:
        raise DatasetError(f"{folder / 'basis.dat'}: no basis for {sorted(missing)}")
    metadata = _read_metadata(folder, info)
    spinful = metadata.get("spinful")
    meta = {"cell": cell, "positions": positions}
    h = _read_blocks(folder / "hamiltonians.h5", frame, numbers, basis, spinful)
    h.cell, h.positions = cell, positions
    s = None
    if (folder / "overlaps.h5").exists():
        s = _read_blocks(folder / "overlaps.h5", frame, numbers, basis, False)
        s.cell, s.positions = meta["cell"], meta["positions"]
    atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=pbc)
    return ElectronicStructure(
        atoms=atoms,
        hamiltonian=h,
        overlap=s,
        fermi_level=metadata.get("fermi_level"),
        source=str(metadata.get("source", folder)),
        extra={k: metadata[k] for k in INFO_EXTRAS if k in metadata},
    )


def read_structure(folder: str | os.PathLike) -> ElectronicStructure:
    """Any dataset folder: a corpus entry (compact H, :mod:`ase_moireh.io.corpus`) or a
    dftio folder."""
    if (Path(folder) / "hamiltonian.h5").is_file():
        from ase_moireh.io.corpus import CorpusError, read_entry

        try:
            return read_entry(folder)
        except CorpusError as err:
            raise DatasetError(str(err)) from None
    return read_dftio(folder)


# --------------------------------------------------------------------------- DeepH


def _deeph_key(edge: np.ndarray) -> str:
    return f"[{edge[2]}, {edge[3]}, {edge[4]}, {edge[0] + 1}, {edge[1] + 1}]"


def _to_openmx_order(op: BlockOperator) -> BlockOperator:
    """The same operator with every block in OpenMX's orbital order."""
    return op.permute_orbitals(
        {sym: np.argsort(spec.openmx_permutation()) for sym, spec in op.basis.items()}
    )


def write_deeph(structure: ElectronicStructure, folder: str | os.PathLike) -> Path:
    """Export one structure in DeepH's layout (atomically)."""
    atoms = structure.atoms
    h = structure.hamiltonian
    cell = np.asarray(atoms.cell)
    with atomic_folder(folder) as tmp:
        np.savetxt(tmp / "lat.dat", cell.T)
        np.savetxt(tmp / "rlat.dat", 2 * np.pi * np.linalg.inv(cell))
        np.savetxt(tmp / "site_positions.dat", atoms.positions.T)
        np.savetxt(tmp / "element.dat", atoms.numbers, fmt="%d")
        with open(tmp / "orbital_types.dat", "w") as f:
            for z in atoms.numbers:
                f.write(" ".join(str(l) for l in h.basis[chemical_symbols[z]].shells) + "\n")
        info = {
            "nsites": len(atoms),
            "isorthogonal": False,
            "isspinful": h.spinful,
            "norbits": int(h.basis.norbs(atoms.numbers).sum()),
            "fermi_level": structure.fermi_level,
        }
        (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")
        for name, op in (("hamiltonians.h5", h), ("overlaps.h5", structure.overlap)):
            if op is None:
                continue
            with h5py.File(tmp / name, "w") as f:
                for e, block in enumerate(_to_openmx_order(op).blocks()):
                    f[_deeph_key(op.edges[e])] = block
    return Path(folder)
