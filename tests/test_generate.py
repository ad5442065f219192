"""Dataset generation: OpenMX inputs as the shared runs had them, shifted/twisted
structures, the folder writer and ``moireh dataset``."""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
from click.testing import CliRunner

from ase_moireh.build.generate import (
    generate_dataset,
    interlayer_distance,
    min_distance,
    perturbed_twisted,
    shifted_bilayers,
    write_structure_folder,
)
from ase_moireh.build.materials import get_material
from ase_moireh.build.twist import twisted_bilayer
from ase_moireh.cli import moireh
from ase_moireh.io.openmx_input import default_kgrid, read_openmx_input, write_openmx_input
from shared_data import OPENMX_CASES, case_dir

#: keywords whose values must equal those of the shared runs (structure aside)
SETTINGS = [
    "System.CurrrentDirectory",
    "System.Name",
    "DATA.PATH",
    "level.of.stdout",
    "level.of.fileout",
    "Species.Number",
    "Atoms.SpeciesAndCoordinates.Unit",
    "Atoms.UnitVectors.Unit",
    "scf.XcType",
    "scf.SpinPolarization",
    "scf.SpinOrbit.Coupling",
    "scf.ElectronicTemperature",
    "scf.energycutoff",
    "scf.maxIter",
    "scf.EigenvalueSolver",
    "scf.Kgrid",
    "scf.Mixing.Type",
    "scf.Init.Mixing.Weight",
    "scf.Min.Mixing.Weight",
    "scf.Max.Mixing.Weight",
    "scf.Mixing.History",
    "scf.Mixing.StartPulay",
    "scf.Mixing.EveryPulay",
    "HS.fileout",
    "MD.Type",
]
FOLDER_FILES = {"openmx_in.dat", "structure.extxyz", "meta.json"}


def keyword_values(path: Path) -> dict[str, str]:
    """Single-line keywords outside blocks -> value (whitespace-normalised)."""
    values, in_block = {}, False
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("<") or line.endswith(">"):
            in_block = line.startswith("<")
        elif line and not in_block:
            key, _, value = line.partition(" ")
            values[key] = " ".join(value.split())
    return values


def block_rows(path: Path, name: str) -> list[list[str]]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    start, end = lines.index(f"<{name}"), lines.index(f"{name}>")
    return [line.split() for line in lines[start + 1 : end]]


def exact_bilayer(material: str = "MoTe2"):
    """Unperturbed 1x1 R-stacked bilayer."""
    return shifted_bilayers(material, shifts=1, amplitude=0.0, interlayer_sigma=0.0)[0]


def assert_same_structure(a, b, tol: float = 1e-6) -> None:
    assert a.get_chemical_symbols() == b.get_chemical_symbols()
    np.testing.assert_allclose(np.asarray(a.cell), np.asarray(b.cell), atol=tol)
    np.testing.assert_allclose(a.positions, b.positions, atol=tol)
    assert a.pbc.all() and b.pbc.all()


# --------------------------------------------------------------------------- OpenMX input


@pytest.mark.parametrize("soc", [False, True])
def test_written_input_reads_back(tmp_path, soc):
    atoms = shifted_bilayers(shifts=2, seed=3)[3]
    path = write_openmx_input(tmp_path, atoms, soc=soc)
    assert path == tmp_path / "openmx_in.dat"
    assert [p.name for p in tmp_path.iterdir()] == ["openmx_in.dat"]  # no temp file left
    assert_same_structure(read_openmx_input(path), atoms)


def test_reader_units_and_species_labels(tmp_path):
    """AU cell, FRAC coordinates, labels that are not element names."""
    bohr = 0.52917721
    text = f"""# comment line
Species.Number 2
<Definition.of.Atomic.Species
 M1  Mo7.0-s3p2d1  Mo_PBE19
 X   Te7.0-s3p2d2  Te_PBE19   # chalcogen
Definition.of.Atomic.Species>
Atoms.Number 2
Atoms.SpeciesAndCoordinates.Unit FRAC
<Atoms.SpeciesAndCoordinates
 1 M1 0.0 0.0 0.5 7.0 7.0
 2 X  0.5 0.25 0.5 8.0 8.0
Atoms.SpeciesAndCoordinates>
Atoms.UnitVectors.Unit AU
<Atoms.UnitVectors
 {4 / bohr} 0 0
 0 {6 / bohr} 0
 0 0 {10 / bohr}
Atoms.UnitVectors>
"""
    (tmp_path / "in.dat").write_text(text)
    atoms = read_openmx_input(tmp_path / "in.dat")
    assert atoms.get_chemical_symbols() == ["Mo", "Te"]
    np.testing.assert_allclose(atoms.cell.lengths(), [4, 6, 10], atol=1e-5)
    np.testing.assert_allclose(atoms.positions, [[0, 0, 5], [2, 1.5, 5]], atol=1e-5)


@pytest.mark.parametrize(
    "drop, message",
    [
        ("Atoms.UnitVectors", "no <Atoms.UnitVectors block"),
        ("Atoms.SpeciesAndCoordinates", "no <Atoms.SpeciesAndCoordinates block"),
        ("Definition.of.Atomic.Species", "no <Definition.of.Atomic.Species block"),
    ],
)
def test_reader_names_missing_blocks(tmp_path, drop, message):
    path = write_openmx_input(tmp_path, exact_bilayer(), soc=False)
    lines = path.read_text().splitlines()
    start, end = lines.index(f"<{drop}"), lines.index(f"{drop}>")
    path.write_text("\n".join(lines[:start] + lines[end + 1 :]))
    with pytest.raises(ValueError, match=message) as err:
        read_openmx_input(path)
    assert str(path) in str(err.value)


def test_kgrid_default_reproduces_shared_runs():
    assert default_kgrid(exact_bilayer().cell) == (9, 9, 1)
    assert default_kgrid(twisted_bilayer(2, 1).cell) == (3, 3, 1)


def test_mixing_follows_cell_size(tmp_path):
    small = keyword_values(write_openmx_input(tmp_path / "a", exact_bilayer(), soc=False))
    large = keyword_values(write_openmx_input(tmp_path / "b", twisted_bilayer(2, 1), soc=False))
    weights = [(v["scf.Init.Mixing.Weight"], v["scf.Mixing.History"]) for v in (small, large)]
    # the values of the shared runs' inputs: bl1x1_exact_soc (6 atoms) and tw2179_nosoc
    assert weights == [("0.30", "7"), ("0.20", "30")]


def test_species_beyond_defaults(tmp_path):
    wse2 = exact_bilayer("WSe2")
    with pytest.raises(ValueError, match="element 'Se', 'W'"):
        write_openmx_input(tmp_path / "a", wse2, soc=False)
    species = {"W": ("W7.0-s3p2d2", "W_PBE19", 14), "Se": ("Se7.0-s3p2d2", "Se_PBE19", None)}
    with pytest.raises(ValueError, match="'Se'.*Se_PBE19.vps"):  # valence neither given nor found
        write_openmx_input(tmp_path / "a", wse2, soc=False, species=species)
    vps = tmp_path / "DFT_DATA" / "VPS"
    vps.mkdir(parents=True)
    (vps / "Se_PBE19.vps").write_text("  valence.electron      16.0 \n")
    path = write_openmx_input(tmp_path / "a", wse2, soc=False, species=species)
    spins = {row[1]: row[5:7] for row in block_rows(path, "Atoms.SpeciesAndCoordinates")}
    assert spins == {"W": ["7.00", "7.00"], "Se": ["8.00", "8.00"]}
    assert_same_structure(read_openmx_input(path), wse2)


def test_shared_twisted_input_parses_to_its_structure():
    case = case_dir("tw2179_nosoc")
    assert_same_structure(
        read_openmx_input(case / "openmx_in.dat"), ase.io.read(case / "structure.extxyz")
    )


def test_writer_matches_shared_soc_input(tmp_path):
    """Same keywords and settings as the shared 1x1 SOC run, for the same kind of cell."""
    shared = case_dir("bl1x1_exact_soc") / "openmx_in.dat"
    ours = write_openmx_input(tmp_path, exact_bilayer(), soc=True)
    theirs_kw, ours_kw = keyword_values(shared), keyword_values(ours)
    assert set(ours_kw) == set(theirs_kw)
    assert {k: ours_kw.get(k) for k in SETTINGS} == {k: theirs_kw.get(k) for k in SETTINGS}
    # ten times tighter, so that OpenMX's own stop (NormRD < 10 x criterion) meets theirs
    assert float(ours_kw["scf.criterion"]) * 10 == pytest.approx(float(theirs_kw["scf.criterion"]))
    species = "Definition.of.Atomic.Species"
    assert block_rows(ours, species) == block_rows(shared, species)
    ours_atoms = block_rows(ours, "Atoms.SpeciesAndCoordinates")
    shared_atoms = block_rows(shared, "Atoms.SpeciesAndCoordinates")
    assert len(ours_atoms) == 6
    assert sorted(r[1] for r in ours_atoms) == sorted(r[1] for r in shared_atoms)
    spins = {(r[1], *r[5:]) for r in ours_atoms}
    assert spins == {(r[1], *r[5:]) for r in shared_atoms}
    assert spins == {("Mo", "7.00", "7.00"), ("Te", "8.00", "8.00")}


@pytest.mark.parametrize("case", OPENMX_CASES)
def test_regenerating_each_shared_input_reproduces_it(case, tmp_path):
    """Each shared run's input, written again by our writer from the run's own records,
    is the run's input. From its openmx_in.dat read back: word for word, structure
    included, but for the ten times tighter scf.criterion (see
    test_writer_matches_shared_soc_input). From its structure.extxyz and meta.json (spin,
    k-grid): the same keywords and settings, and the same structure to 1e-6 A; the
    default k-grid is the run's."""
    folder = case_dir(case)
    path, meta = folder / "openmx_in.dat", json.loads((folder / "meta.json").read_text())
    settings = keyword_values(path)
    assert meta["soc"] == (settings["scf.SpinPolarization"] == "NC")
    ours = write_openmx_input(
        tmp_path / "read", read_openmx_input(path), soc=meta["soc"], data_path=settings["DATA.PATH"]
    )
    theirs = path.read_text().split()
    criterion = theirs.index("scf.criterion") + 1
    theirs[criterion] = f"{float(theirs[criterion]) / 10:.1e}"
    assert ours.read_text().split() == theirs
    structure = ase.io.read(folder / "structure.extxyz")
    assert default_kgrid(np.asarray(structure.cell)) == tuple(meta["kgrid"])
    again = write_openmx_input(
        tmp_path / "extxyz", structure, soc=meta["soc"], data_path=settings["DATA.PATH"]
    )
    assert keyword_values(again) == keyword_values(ours)
    assert_same_structure(read_openmx_input(again), structure)


# --------------------------------------------------------------------------- structures


def test_shifted_bilayers_grid_and_reproducibility():
    supercell = (2, 1)
    a = shifted_bilayers(supercell=supercell, shifts=3, seed=7)
    assert len(a) == 3**2
    assert all(len(x) == 6 * np.prod(supercell) for x in a)
    assert sorted(x.info["shift_index"] for x in a) == [(i, j) for i in range(3) for j in range(3)]
    b = shifted_bilayers(supercell=supercell, shifts=3, seed=7)
    c = shifted_bilayers(supercell=supercell, shifts=3, seed=8)
    for x, y, z in zip(a, b, c, strict=True):
        np.testing.assert_array_equal(x.positions, y.positions)
        assert x.info == y.info
        assert np.abs(x.positions - z.positions).max() > 1e-3
        np.testing.assert_array_equal(x.arrays["layer"], y.arrays["layer"])
        assert x.info["seed"] == 7 and x.info["amplitude"] == 0.15


def test_shift_moves_only_the_top_layer_by_the_grid_fraction():
    prim = np.array([[3.52, 0.0], [1.76, 3.52 * np.sqrt(3) / 2]])
    exact = shifted_bilayers(shifts=3, amplitude=0.0, interlayer_sigma=0.0)
    base = exact[0]
    for atoms in exact:
        i, j = atoms.info["shift_index"]
        delta = atoms.positions - base.positions
        delta[:, :2] -= np.outer(atoms.arrays["layer"], np.array([i / 3, j / 3]) @ prim)
        frac = delta @ np.linalg.inv(np.asarray(base.cell))
        np.testing.assert_allclose(frac - np.rint(frac), 0.0, atol=1e-9)


def test_perturbation_bounded_by_amplitude():
    amplitude, sigma = 0.15, 0.2
    noisy = shifted_bilayers(shifts=2, amplitude=amplitude, interlayer_sigma=sigma, seed=4)
    clean = shifted_bilayers(shifts=2, amplitude=0.0, interlayer_sigma=sigma, seed=4)
    largest = 0.0
    for x, y in zip(noisy, clean, strict=True):
        frac = (x.positions - y.positions) @ np.linalg.inv(np.asarray(x.cell))
        cart = (frac - np.rint(frac)) @ np.asarray(x.cell)  # undo wrapping
        largest = max(largest, np.abs(cart).max())
        assert np.abs(cart).max() <= amplitude
        assert interlayer_distance(y) == pytest.approx(x.info["interlayer"])
        assert abs(interlayer_distance(x) - x.info["interlayer"]) <= 2 * amplitude
    assert largest > 0.5 * amplitude  # the noise is really there


def test_min_distance_physical_and_periodic():
    structures = shifted_bilayers(supercell=(2, 2), shifts=3, seed=1)
    assert min(min_distance(x) for x in structures) > 2.2
    mat = get_material("MoTe2")
    bond = np.hypot(mat.a / np.sqrt(3), mat.d)  # Mo-Te, 2.715 A
    assert min_distance(exact_bilayer()) == pytest.approx(bond)
    # brute force with images on a perturbed cell
    atoms = structures[4]
    cell = np.asarray(atoms.cell)
    shifts = np.array([[i, j, 0] for i in (-1, 0, 1) for j in (-1, 0, 1)]) @ cell
    d = np.linalg.norm(
        atoms.positions[:, None, None] - atoms.positions[None, :, None] - shifts, axis=-1
    )
    assert min_distance(atoms) == pytest.approx(d[d > 1e-9].min())


def test_perturbed_twisted():
    a = perturbed_twisted(2, 1, count=2, seed=5, interlayer_sigma=0.1)
    assert [x.info["sample"] for x in a] == [0, 1]
    assert all(len(x) == 42 and x.info["twist_nm"] == (2, 1) for x in a)
    assert np.abs(a[0].positions - a[1].positions).max() > 1e-3
    again = perturbed_twisted(2, 1, count=2, seed=5, interlayer_sigma=0.1)
    np.testing.assert_array_equal(a[1].positions, again[1].positions)
    assert min(min_distance(x) for x in a) > 2.2


def _moved(atoms, dz: float = 0.1):
    """A stand-in for a relaxed cell: the top layer 0.1 A higher (no potential needed)."""
    out = atoms.copy()
    out.positions[out.arrays["layer"] == 1, 2] += dz
    return out


def test_perturbed_twisted_starts_from_a_relaxed_cell(tmp_path):
    from ase_moireh.build import twisted_bilayer

    relaxed = _moved(twisted_bilayer(2, 1))
    kept = perturbed_twisted(2, 1, count=1, seed=5, amplitude=0.0, relaxed=relaxed)[0]
    np.testing.assert_allclose(kept.positions, relaxed.positions, atol=1e-12)
    assert kept.info["relaxed"] is True and kept.info["twist_nm"] == (2, 1)
    noisy = perturbed_twisted(2, 1, count=1, seed=5, relaxed=relaxed)[0]
    rigid = perturbed_twisted(2, 1, count=1, seed=5)[0]
    np.testing.assert_allclose(
        noisy.positions - rigid.positions,
        relaxed.positions - twisted_bilayer(2, 1).positions,
        atol=1e-12,
    )
    with pytest.raises(ValueError, match=r"not the twisted \(3, 2\) cell"):
        perturbed_twisted(3, 2, relaxed=relaxed)
    path = tmp_path / "relaxed.extxyz"
    ase.io.write(path, relaxed)
    out = tmp_path / "ds"
    args = ["dataset", "twisted", "2", "1", "--relaxed", str(path), "--no-soc", "-o", str(out)]
    result = CliRunner().invoke(moireh, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "twist_2_1_0" / "meta.json").read_text())
    assert meta["relaxed"] is True


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="unknown material"):
        shifted_bilayers("MoXe2")
    with pytest.raises(ValueError, match="stacking"):
        shifted_bilayers(stacking="AB")
    with pytest.raises(ValueError, match="amplitude"):
        shifted_bilayers(amplitude=-0.1)
    with pytest.raises(ValueError, match="supercell"):
        shifted_bilayers(supercell=(0, 1))
    with pytest.raises(ValueError, match="seed"):
        perturbed_twisted(2, 1, seed=-1)


# --------------------------------------------------------------------------- folders


def test_structure_folder(tmp_path):
    atoms = shifted_bilayers(shifts=2, seed=2)[1]
    folder = write_structure_folder(tmp_path / "s", atoms, soc=True, meta={"note": "x"})
    assert {p.name for p in folder.iterdir()} == FOLDER_FILES
    assert [p.name for p in tmp_path.iterdir()] == ["s"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["note"] == "x" and meta["soc"] is True and meta["kgrid"] == [9, 9, 1]
    back = ase.io.read(folder / "structure.extxyz")
    assert_same_structure(back, atoms, tol=1e-8)
    np.testing.assert_array_equal(back.arrays["layer"], atoms.arrays["layer"])
    assert_same_structure(read_openmx_input(folder / "openmx_in.dat"), atoms)


def test_overlapping_atoms_refused(tmp_path):
    atoms = exact_bilayer()
    atoms.positions[1] = atoms.positions[0] + [0.5, 0.0, 0.0]
    with pytest.raises(ValueError, match="overlapping atoms"):
        write_structure_folder(tmp_path / "bad", atoms, soc=False, meta={})
    assert list(tmp_path.iterdir()) == []


def test_generate_dataset_twisted(tmp_path):
    folders = generate_dataset(
        "twisted", tmp_path / "out", soc=False, progress=False, n=2, m=1, count=2
    )
    assert [f.name for f in folders] == ["twist_2_1_0", "twist_2_1_1"]
    assert "scf.SpinOrbit.Coupling" not in keyword_values(folders[0] / "openmx_in.dat")
    assert (tmp_path / "out" / "interlayer_hist.png").stat().st_size > 0
    with pytest.raises(ValueError, match="already exist"):  # finished runs are not clobbered
        generate_dataset("twisted", tmp_path / "out", progress=False, n=2, m=1)


# --------------------------------------------------------------------------- CLI


def test_cli_shifted(tmp_path):
    out = tmp_path / "ds"
    args = ["dataset", "shifted", "--supercell", "1", "1", "--shifts", "2", "-o", str(out)]
    result = CliRunner().invoke(moireh, args)
    assert result.exit_code == 0, result.output
    folders = sorted(p for p in out.iterdir() if p.is_dir())
    assert [p.name for p in folders] == ["shift_0_0_0", "shift_0_1_0", "shift_1_0_0", "shift_1_1_0"]
    for folder in folders:
        assert {p.name for p in folder.iterdir()} == FOLDER_FILES
        assert keyword_values(folder / "openmx_in.dat")["scf.SpinPolarization"] == "NC"
    assert (out / "interlayer_hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {p.name for p in out.iterdir()} == {p.name for p in folders} | {"interlayer_hist.png"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["shifted", "--material", "MoXe2"], "unknown material 'MoXe2'"),
        (["shifted", "--material", "WSe2", "--supercell", "1", "1"], "no OpenMX species"),
        (["shifted", "--amplitude", "1.5", "--supercell", "1", "1"], "overlapping atoms"),
        (["twisted", "1", "1"], "no twist"),
    ],
)
def test_cli_errors_leave_nothing(tmp_path, args, message):
    out = tmp_path / "ds"
    result = CliRunner().invoke(moireh, ["dataset", *args, "-o", str(out), "--no-progress"])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()
