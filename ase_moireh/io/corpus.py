"""The DFT training corpus: compact entries and their manifest.

An entry is one converged DFT run, in a folder ``<corpus>/<name>/``::

    hamiltonian.h5   H only (S is exact from the basis, :mod:`ase_moireh.overlap`): one
                     block of every (i, j, R) / (j, i, -R) pair, float32 (complex64 for
                     SOC), gzip; the other half is H_ji(-R) = H_ij(R)^dagger
    eigenvalues.npz  the eigenvalues the DFT code printed (k fractional, eV): the check
                     that the stored form is lossless for our use
    structure.extxyz the structure (with its generation metadata)
    openmx_in.dat    the input, DATA.PATH relative, so anyone can recompute the entry
    h0_openmx.h5     (optional) OpenMX's zeroth-step H0 of the same structure, in the
                     format of hamiltonian.h5 (:mod:`ase_moireh.workflows.zeroth_step`)
    h0.h5            (optional) the same H0 computed natively (:mod:`ase_moireh.h0`,
                     :mod:`ase_moireh.workflows.native_h0`), same format: what training
                     reads instead of recomputing it

``manifest.json`` lists every entry with how it was made and how it converged, and
its split (train / validation / test / holdout), fixed by :func:`assign_split` when the
structure is generated, before any training.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ase.io
import h5py
import numpy as np
from ase import Atoms

from ase_moireh.basis import Basis
from ase_moireh.block_operator import BlockOperator, reversed_edges
from ase_moireh.files import atomic_file, atomic_folder
from ase_moireh.tightbinding import ElectronicStructure

FORMAT = "ase-moireh corpus H 1"
MANIFEST = "manifest.json"
#: OpenMX's zeroth-step H0 of an entry (the H of the superposed atomic densities)
H0_OPENMX = "h0_openmx.h5"
#: the same H0 computed by :mod:`ase_moireh.h0` (no OpenMX), for every entry
H0_NATIVE = "h0.h5"
SPLITS = ("train", "validation", "test", "holdout")
#: a stored run's SCF must end below this NormRD: the criterion of the shared reference
#: runs (``../shared/data/openmx/README.md``), which the corpus matches
NORM_RD_MAX = 1e-8
#: electrons may differ from the neutral count by this much (OpenMX prints 5 decimals)
ELECTRON_TOL = 1e-3


class CorpusError(ValueError):
    """A corpus entry or manifest that cannot be used; names the file and the problem."""


# --------------------------------------------------------------------------- splits


def assign_split(kind: str, index: int) -> str:
    """Fixed split of a generated structure, from its kind and sample index (SOC twins
    share their collinear twin's): shifted 10 % holdout (index 9 mod 10), 10 % test,
    10 % validation; twisted 20 % holdout (4 mod 5: at least 2 of 10), 20 % validation."""
    if kind == "twisted":
        return {4: "holdout", 3: "validation"}.get(index % 5, "train")
    return {9: "holdout", 8: "test", 7: "validation"}.get(index % 10, "train")


# --------------------------------------------------------------------------- H storage


def _half(edges: np.ndarray) -> np.ndarray:
    """Mask of one edge of every (i, j, R) / (j, i, -R) pair (on-site blocks kept)."""
    i, j, r = edges[:, 0], edges[:, 1], edges[:, 2:]
    first_nonzero = np.where(r[:, 0] != 0, r[:, 0], np.where(r[:, 1] != 0, r[:, 1], r[:, 2]))
    return np.where(i != j, i < j, first_nonzero >= 0)


def write_hamiltonian(path: str | os.PathLike, structure: ElectronicStructure) -> None:
    """H of ``structure`` as one triangle in single precision (atomic write)."""
    h = structure.hamiltonian
    if h.reverse_edges().min() < 0:
        raise CorpusError(f"{structure.source}: H lacks the (j, i, -R) partner of some block")
    keep = np.flatnonzero(_half(h.edges))
    values = np.concatenate([h.values[h.offsets[e] : h.offsets[e + 1]] for e in keep])
    dtype = np.complex64 if h.spinful else np.float32
    extra = structure.extra
    with atomic_file(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["spinful"] = h.spinful
        f.attrs["basis"] = repr(h.basis.to_dftio())
        f.attrs["openmx_basis"] = json.dumps(extra.get("openmx_basis") or {})
        f.attrs["n_electrons"] = float(extra.get("n_electrons", np.nan))
        f.attrs["valence"] = json.dumps(extra.get("valence") or {})
        f.attrs["fermi_level"] = np.nan if structure.fermi_level is None else structure.fermi_level
        f["numbers"] = structure.atoms.numbers
        f["cell"] = np.asarray(structure.atoms.cell)
        f["positions"] = structure.atoms.positions
        f["edges"] = h.edges[keep].astype(np.int32)
        f.create_dataset(
            "values",
            data=values.astype(dtype),
            compression="gzip",
            compression_opts=9,
            shuffle=True,
        )


def read_hamiltonian(path: str | os.PathLike) -> ElectronicStructure:
    """The full H (both triangles, float64 / complex128) and its Atoms; S is None."""
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise CorpusError(f"{path}: not a readable HDF5 file ({err})") from None
    with f:
        if f.attrs.get("format") != FORMAT:
            raise CorpusError(f"{path}: not a corpus Hamiltonian ({FORMAT!r} tag missing)")
        spinful = bool(f.attrs["spinful"])
        basis = Basis.from_dftio(f.attrs["basis"])
        numbers, cell, positions = f["numbers"][()], f["cell"][()], f["positions"][()]
        half = f["edges"][()].astype(np.int64)
        values = f["values"][()].astype(complex if spinful else float)
        extra = {
            "openmx_basis": json.loads(f.attrs["openmx_basis"]) or None,
            "n_electrons": float(f.attrs["n_electrons"]),
            "valence": json.loads(f.attrs.get("valence", "{}")) or None,
        }
        fermi = float(f.attrs["fermi_level"])
    stored = BlockOperator(numbers, basis, half, values, spinful)
    onsite = np.flatnonzero((half[:, 0] == half[:, 1]) & ~half[:, 2:].any(axis=1))
    mirror = np.setdiff1d(np.arange(len(half)), onsite)
    edges = np.vstack([half, reversed_edges(half[mirror])])
    blocks = [stored.block(e) for e in range(len(half))]
    blocks += [stored.block(int(e)).conj().T for e in mirror]
    meta = {"cell": cell, "positions": positions}
    h = BlockOperator.from_blocks(numbers, basis, edges, blocks, spinful, **meta)
    atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)
    extra = {k: v for k, v in extra.items() if v is not None and v == v}
    return ElectronicStructure(atoms, h, None, None if np.isnan(fermi) else fermi, str(path), extra)


def write_eigenvalues(path: str | os.PathLike, structure: ElectronicStructure) -> None:
    ref = structure.reference_eigenvalues
    kpts = np.array([k for k, _ in ref]) if ref else np.zeros((0, 3))
    nb = min((len(e) for _, e in ref), default=0)
    energies = np.array([e[:nb] for _, e in ref]) if ref else np.zeros((0, 0))
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, kpoints=kpts, eigenvalues=energies)


def read_eigenvalues(path: str | os.PathLike) -> list[tuple[np.ndarray, np.ndarray]]:
    with np.load(path, allow_pickle=False) as data:
        return list(zip(data["kpoints"], data["eigenvalues"], strict=True))


# --------------------------------------------------------------------------- entries


def is_entry(folder: str | os.PathLike) -> bool:
    return (Path(folder) / "hamiltonian.h5").is_file()


def write_entry(
    folder: str | os.PathLike, structure: ElectronicStructure, run_folder: str | os.PathLike
) -> Path:
    """One entry from a converged run (its input and structure files come along)."""
    folder, run_folder = Path(folder), Path(run_folder)
    with atomic_folder(folder) as tmp:
        write_hamiltonian(tmp / "hamiltonian.h5", structure)
        write_eigenvalues(tmp / "eigenvalues.npz", structure)
        shutil.copy(run_folder / "structure.extxyz", tmp / "structure.extxyz")
        text = (run_folder / "openmx_in.dat").read_text()
        (tmp / "openmx_in.dat").write_text(portable_input(text))
    return folder


def portable_input(text: str, data_path: str = "../DFT_DATA") -> str:
    """The input with DATA.PATH relative (machine paths do not belong in the corpus)."""
    return re.sub(r"(?im)^(\s*DATA\.PATH\s+)\S+", lambda m: m.group(1) + data_path, text)


def read_entry(folder: str | os.PathLike) -> ElectronicStructure:
    """An entry as an ElectronicStructure (H; S None: compute it exactly), with the
    printed eigenvalues as ``reference_eigenvalues`` and the generation metadata."""
    folder = Path(folder)
    if not is_entry(folder):
        raise CorpusError(f"{folder}: not a corpus entry (no hamiltonian.h5)")
    s = read_hamiltonian(folder / "hamiltonian.h5")
    if (folder / "eigenvalues.npz").exists():
        s.reference_eigenvalues = read_eigenvalues(folder / "eigenvalues.npz")
    if (folder / "structure.extxyz").exists():
        s.atoms.info.update(ase.io.read(folder / "structure.extxyz").info)
    s.source = str(folder)
    return s


# --------------------------------------------------------------------------- manifest


@dataclass
class ManifestEntry:
    """One structure of the corpus: how it was made and how its SCF ended."""

    name: str
    kind: str  # shifted | twisted
    n_atoms: int
    soc: bool
    split: str
    seed: list[int]  # entropy of default_rng
    shift: list[float]
    noise_sigma: float
    interlayer: float  # metal-metal distance, A
    supercell: list[int] | None = None
    twist: list[int] | None = None
    twin: str | None = None  # the other-spin run of the same structure
    scf_steps: int | None = None
    norm_rd: float | None = None
    electrons: float | None = None
    electrons_expected: float | None = None
    wall_seconds: float | None = None
    status: str = "pending"  # pending | converged | failed
    reason: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def electrons_right(self) -> bool:
        """OpenMX's electron count is the neutral one (within :data:`ELECTRON_TOL`)."""
        if self.electrons is None or self.electrons_expected is None:
            return False
        return abs(self.electrons - self.electrons_expected) <= ELECTRON_TOL

    def problems(self) -> list[str]:
        """Why a converged entry is not fit to train on ([] if it is): NormRD at or
        above :data:`NORM_RD_MAX`, or an electron count off the neutral one."""
        if self.status != "converged":
            return []
        out = []
        if self.norm_rd is None or self.norm_rd >= NORM_RD_MAX:
            out.append(f"NormRD {self.norm_rd} not below {NORM_RD_MAX:g}")
        if not self.electrons_right:
            out.append(f"electrons {self.electrons} != neutral {self.electrons_expected}")
        return out


def load_manifest(corpus: str | os.PathLike) -> dict[str, ManifestEntry]:
    path = Path(corpus) / MANIFEST
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {e["name"]: ManifestEntry(**e) for e in raw["entries"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CorpusError(f"{path}: unreadable manifest ({err})") from None


def save_manifest(corpus: str | os.PathLike, entries: dict[str, ManifestEntry]) -> Path:
    path = Path(corpus) / MANIFEST
    rows = [asdict(e) for _, e in sorted(entries.items())]
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps({"format": 1, "entries": rows}, indent=1) + "\n")
    return path


def entry_paths(corpus: str | os.PathLike, splits: tuple[str, ...], soc: bool | None = None):
    """Entry folders of the given splits (and spin) that hold converted data."""
    corpus = Path(corpus)
    return [
        corpus / e.name
        for e in load_manifest(corpus).values()
        if e.split in splits and (soc is None or e.soc == soc) and is_entry(corpus / e.name)
    ]


def manifest_entry(name: str, meta: dict, record: dict) -> ManifestEntry:
    """A manifest row from a folder's ``meta.json`` (generation) and run record."""
    kind = meta.get("kind", "")
    split = meta.get("split") or assign_split(kind, int(meta.get("sample", 0)))
    if split not in SPLITS:
        raise CorpusError(f"{name}: split {split!r} not one of {SPLITS}")
    return ManifestEntry(
        name=name,
        kind=kind,
        n_atoms=int(meta["natoms"]),
        soc=bool(meta["soc"]),
        split=split,
        seed=list(meta.get("rng_entropy") or [meta.get("seed", 0)]),
        shift=list(meta.get("shift", [])),
        noise_sigma=float(meta.get("noise_sigma", meta.get("amplitude", 0.0))),
        interlayer=float(meta.get("interlayer_actual", meta.get("interlayer", 0.0))),
        supercell=meta.get("supercell") if kind == "shifted" else None,
        twist=meta.get("twist_nm") if kind == "twisted" else None,
        twin=meta.get("twin"),
        scf_steps=record.get("scf_steps"),
        norm_rd=record.get("norm_rd"),
        electrons=record.get("electrons"),
        electrons_expected=record.get("electrons_expected"),
        wall_seconds=record.get("wall_seconds"),
        status=record.get("status", "pending"),
        reason=record.get("reason", ""),
    )
