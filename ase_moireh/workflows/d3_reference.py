"""PBE-D3 reference runs (OpenMX PBE plus Grimme's D3) that interatomic potentials for
``moireh relax`` are judged by.

The corpus runs are PBE without dispersion: they say nothing reliable about interlayer
binding. D3 is a pair (and three-body) sum added after the SCF: it changes the energy and
the forces, never the Kohn-Sham Hamiltonian. So PBE-D3 = OpenMX's PBE run (the corpus
inputs keyword for keyword, :func:`ase_moireh.io.openmx_input.openmx_input_text`) plus
D3(BJ) of the same structure from a maintained D3 package, the same one that is added
to candidate potentials that lack dispersion. OpenMX 3.9's own D3 (``scf.dftD on``,
``version.dftD 3``) was tried first: it reads its parameters (Mo, Te C6 tables printed at
``level.of.stdout 3``) but reports ``UvdW = 0.000000000000`` for the MoTe2 bilayer with
either damping (checked 2026-12-06, scratch build of BUILD.md); it is not used. A run's
``.scfout`` stays a valid corpus entry.

Two sets (choices written down here, once):

* **stackings**: the rigid 1x1 R-stacked bilayer (the parent of small-angle twisted
  MoTe2) slid to MM, MX, XM and the saddle point SP between MX and XM, at a ladder of
  metal-metal distances. The monolayers keep the material's geometry; only the
  interlayer distance is scanned. Collinear PBE (no SOC): spin-orbit coupling moves
  stacking energies far less than the differences sought, and the potentials are
  fitted to collinear data.
* **perturbed**: 2x2 shifted and (2, 1) twisted cells drawn by the corpus samplers at
  the next unused indices (energies and forces of off-equilibrium cells).

Each run is a dataset folder (``openmx_in.dat``, ``structure.extxyz``, ``meta.json``)
run by :func:`ase_moireh.workflows.openmx_runner.run_folders` (resumable); results are
read from ``openmx.out`` (:func:`ase_moireh.io.openmx_out.read_openmx_out`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

from ase_moireh.build.generate import (
    sampled_shifted_bilayers,
    sampled_twisted_bilayers,
    write_structure_folder,
)
from ase_moireh.build.materials import get_material
from ase_moireh.build.twist import DEFAULT_VACUUM, assemble_bilayer, primitive_vectors
from ase_moireh.files import atomic_file
from ase_moireh.io.openmx_input import INPUT_NAME
from ase_moireh.io.openmx_out import read_openmx_out
from ase_moireh.workflows.openmx_runner import RunRecord, with_keywords

#: in-plane slide of the top layer, in the bottom layer's primitive vectors: along the
#: long diagonal MM -> MX -> SP -> XM -> MM (top metal over bottom metal, over bottom
#: chalcogen, the bridge between, bottom metal under top chalcogen)
STACKING_SHIFTS = {"MM": (0.0, 0.0), "MX": (1 / 3, 1 / 3), "SP": (0.5, 0.5), "XM": (2 / 3, 2 / 3)}

#: metal-metal distances (A) of each stacking's binding curve: wide at MM and MX (the
#: issue's binding curves), around the minimum at SP and XM (their optimal distance);
#: 17 A is two layers 10 A further apart than bound, the reference for binding energies
STACKING_DISTANCES = {
    "MM": (6.8, 7.0, 7.2, 7.4, 7.6, 7.8, 8.0, 8.4, 17.0),
    "MX": (6.4, 6.6, 6.8, 7.0, 7.2, 7.4, 7.8),
    "SP": (6.8, 7.0, 7.2, 7.4),
    "XM": (6.8, 7.0, 7.2),
}

OUTPUT_NAME = "openmx.out"


def stacked_bilayer(stacking: str, distance: float, material: str = "MoTe2") -> Atoms:
    """The rigid 1x1 R-stacked bilayer at ``stacking`` (a key of :data:`STACKING_SHIFTS`)
    with metal planes ``distance`` A apart."""
    if stacking not in STACKING_SHIFTS:
        raise ValueError(f"stacking must be one of {sorted(STACKING_SHIFTS)}, got {stacking!r}")
    mat = get_material(material)
    prim = primitive_vectors(mat.a)
    atoms = assemble_bilayer(mat, prim, [(prim, False), (prim, False)], distance, DEFAULT_VACUUM)
    atoms.positions[atoms.arrays["layer"] == 1, :2] += np.array(STACKING_SHIFTS[stacking]) @ prim
    atoms.wrap()
    atoms.info.update(
        kind="stacking", material=mat.name, stacking_site=stacking, interlayer=float(distance)
    )
    return atoms


def stacking_structures(material: str = "MoTe2") -> dict[str, Atoms]:
    """Folder name -> structure of every binding-curve point."""
    return {
        f"{site}_{d:05.2f}": stacked_bilayer(site, d, material)
        for site, distances in STACKING_DISTANCES.items()
        for d in distances
    }


def perturbed_structures(shifted: int = 3, twisted: int = 2) -> dict[str, Atoms]:
    """The corpus samplers' next structures (corpus: shift2x2_000-042, twist2-1_000-013)."""
    out = {
        f"shift2x2_{a.info['sample']:03d}": a
        for a in sampled_shifted_bilayers(2, shifted, first=43)
    }
    out |= {
        f"twist2-1_{a.info['sample']:03d}": a
        for a in sampled_twisted_bilayers(2, 1, twisted, first=14)
    }
    return out


def write_reference_folders(
    root: str | os.PathLike, structures: dict[str, Atoms], data_path: str, hs_fileout: bool
) -> list[Path]:
    """One dataset folder per structure under ``root`` (``.scfout`` only with
    ``hs_fileout``); folders already there are kept (a rerun resumes)."""
    folders = []
    for name, atoms in structures.items():
        folder = Path(root) / name
        if not (folder / INPUT_NAME).exists():
            meta = dict(atoms.info)
            write_structure_folder(folder, atoms, soc=False, meta=meta, data_path=data_path)
            path = folder / INPUT_NAME
            keywords = {"HS.fileout": "on" if hs_fileout else "off"}
            with atomic_file(path) as tmp:
                tmp.write_text(with_keywords(path.read_text(), keywords))
        folders.append(folder)
    return folders


def collect(folders: Iterable[str | os.PathLike]) -> dict[str, dict]:
    """Energy (eV), dispersion energy (eV) and forces (eV/A) of every converged folder,
    keyed by folder name; the structure is checked against the one written."""
    out = {}
    for folder in map(Path, folders):
        record = RunRecord.read(folder)
        if record.status != "converged":
            continue
        result = read_openmx_out(folder / OUTPUT_NAME)
        atoms = ase.io.read(folder / "structure.extxyz")
        if result.symbols != atoms.get_chemical_symbols():
            raise ValueError(f"{folder}: {OUTPUT_NAME} lists other atoms than structure.extxyz")
        out[folder.name] = {
            "energy_eV": result.energy,
            "dispersion_eV": result.dispersion,
            "natoms": len(atoms),
            "info": json.loads(json.dumps(atoms.info, default=str)),
            "forces_eV_per_A": result.forces.round(6).tolist(),
            "scf_steps": record.scf_steps,
            "wall_seconds": round(record.wall_seconds, 1),
        }
    return out
