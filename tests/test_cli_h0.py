"""``moireh h0``: H0 and S of a structure as a dftio folder, against OpenMX's zeroth step
(``tests/data/h0/bl1x1_s22_h0.npz``, see test_h0_hamiltonian.py), and its refusals: one
line naming the file or the problem, a non-zero exit, nothing written."""

from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from click.testing import CliRunner

from ase_moireh.cli import moireh
from ase_moireh.cli.h0 import ENERGY_CUTOFF
from ase_moireh.data import bundled_openmx_data_path
from ase_moireh.h0 import vxc
from ase_moireh.io.dataset import read_dftio
from ase_moireh.overlap import bundled_overlap

REFERENCE = Path(__file__).parent / "data" / "h0" / "bl1x1_s22_h0.npz"
#: see test_h0_hamiltonian.py (measured 1.9e-5 eV)
TOL_EV = 3e-5


@pytest.fixture(scope="module")
def reference() -> dict:
    with np.load(REFERENCE, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def _structure(ref: dict, folder: Path, prefix: str = "") -> Path:
    atoms = Atoms(
        numbers=ref[f"{prefix}numbers"],
        positions=ref[f"{prefix}positions"],
        cell=ref[f"{prefix}cell"],
        pbc=True,
    )
    path = folder / f"{prefix}cell.extxyz"
    ase.io.write(path, atoms)
    return path


def _refused(args: list[str], where: Path, *words: str) -> None:
    """Non-zero exit, one line naming ``words``, nothing left in ``where`` but inputs."""
    before = set(where.iterdir())
    result = CliRunner().invoke(moireh, args)
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for word in words:
        assert word in lines[0], lines[0]
    assert set(where.iterdir()) == before


def _check_against_openmx(out: Path, ref: dict, prefix: str) -> None:
    stored = read_dftio(out)
    h0, s = stored.hamiltonian, stored.overlap
    assert h0.spinful == bool(prefix) and h0.nedges == int(ref[f"{prefix}all_edges"])
    found = h0.find(ref[f"{prefix}edges"])
    assert (found >= 0).all()
    ours = np.concatenate([h0.block(int(e)).ravel() for e in found])
    assert np.abs(ours - ref[f"{prefix}h0"]).max() < TOL_EV
    exact = bundled_overlap().operator(stored.atoms, s.edges)
    assert np.abs(s.values - exact.values).max() < 1e-12
    assert stored.extra["n_electrons"] == 92 and stored.extra["openmx_basis"]["Te"]


@pytest.mark.slow
def test_h0_command_writes_openmx_zeroth_step_h0_and_s(tmp_path, reference):
    out = tmp_path / "h0"
    args = ["h0", str(_structure(reference, tmp_path)), "-o", str(out), "--no-soc"]
    result = CliRunner().invoke(moireh, args)
    assert result.exit_code == 0, result.output
    assert "6 atoms, 330 blocks, collinear H0" in result.output
    assert (out / "hamiltonians.h5").is_file() and (out / "overlaps.h5").is_file()
    _check_against_openmx(out, reference, "")
    _refused(args, tmp_path, "exists")  # a second run does not replace it silently


@pytest.mark.slow
def test_h0_command_spin_orbit(tmp_path, reference):
    out = tmp_path / "h0"
    result = CliRunner().invoke(
        moireh, ["h0", str(_structure(reference, tmp_path, "soc_")), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    _check_against_openmx(out, reference, "soc_")


def test_missing_or_broken_openmx_files_are_named(tmp_path, reference):
    structure = _structure(reference, tmp_path)
    data = tmp_path / "DFT_DATA"
    for sub in ("PAO", "VPS"):
        (data / sub).mkdir(parents=True)
    for name in ("Mo7.0.pao.xz", "Te7.0.pao.xz"):
        (data / "PAO" / name).write_bytes((bundled_openmx_data_path() / "PAO" / name).read_bytes())
    args = ["h0", str(structure), "-o", str(tmp_path / "out"), "--data-path", str(data)]
    _refused(args, tmp_path, "no Mo_PBE19.vps")
    (data / "VPS" / "Mo_PBE19.vps").write_text("not a pseudopotential\n")
    _refused(args, tmp_path, "Mo_PBE19.vps", "not an OpenMX .vps file")
    (data / "PAO" / "Te7.0.pao.xz").write_bytes(b"\xfd7zXZ\x00 cut short")
    (data / "VPS" / "Mo_PBE19.vps").unlink()
    (data / "PAO" / "Mo7.0.pao.xz").unlink()
    _refused(args, tmp_path, "no Mo7.0.pao")


def test_unknown_element_and_overlapping_atoms_are_refused(tmp_path):
    cell = np.diag([6.0, 6.0, 20.0])
    tungsten = tmp_path / "w.extxyz"
    ase.io.write(tungsten, Atoms("WTe2", positions=np.eye(3) * 2, cell=cell, pbc=True))
    out = str(tmp_path / "out")
    _refused(["h0", str(tungsten), "-o", out], tmp_path, "element W")
    close = tmp_path / "close.extxyz"
    ase.io.write(close, Atoms("MoTe", positions=[[1, 1, 5], [1.3, 1, 5]], cell=cell, pbc=True))
    _refused(["h0", str(close), "-o", out], tmp_path, "close.extxyz", "overlapping atoms")
    garbage = tmp_path / "garbage.extxyz"
    garbage.write_text("this is no structure\n")
    _refused(["h0", str(garbage), "-o", out], tmp_path, "garbage.extxyz", "cannot read")
    result = CliRunner().invoke(moireh, ["h0", str(close), "-o", out, "--species", "W=W7.0"])
    assert result.exit_code == 2 and "'W=W7.0' is not EL=BASIS:VPS" in result.output


def test_energy_cutoff_default_is_the_corpus_one():
    assert ENERGY_CUTOFF == vxc.ENERGY_CUTOFF


@pytest.mark.slow
def test_native_h0_of_corpus_entries_is_stored_and_skipped_next_time(tmp_path, reference):
    """``moireh dataset h0 CORPUS --native``: the entry's H0 beside its H (corpus format,
    OpenMX's blocks), from its input's species and its H's geometry; resumable."""
    from ase_moireh.io.corpus import H0_NATIVE, read_hamiltonian, write_entry
    from shared_data import case_dir, converted

    case = "bl1x1_nosoc_s22"  # the reference's structure, as converged by OpenMX
    corpus = tmp_path / "corpus"
    write_entry(corpus / "entry", converted(case), case_dir(case))
    args = ["dataset", "h0", str(corpus), "--native", "--no-progress"]
    result = CliRunner().invoke(moireh, args)
    assert result.exit_code == 0, result.output
    stored = corpus / "entry" / H0_NATIVE
    h0 = read_hamiltonian(stored).hamiltonian
    assert h0.nedges == converted(case).hamiltonian.nedges
    found = h0.find(reference["edges"])
    ours = np.concatenate([h0.block(int(e)).ravel() for e in found])
    assert np.abs(ours - reference["h0"]).max() < TOL_EV  # float32 storage: 4e-6 eV
    before = stored.stat().st_mtime_ns
    assert CliRunner().invoke(moireh, args).exit_code == 0
    assert stored.stat().st_mtime_ns == before
