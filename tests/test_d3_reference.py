"""The relaxation reference set: OpenMX energies and forces read in eV and eV/A, and the
stacking structures are the stackings they are named after."""

from pathlib import Path

import numpy as np
import pytest
from ase.units import Bohr, Hartree

from ase_moireh.build.generate import interlayer_distance
from ase_moireh.io.openmx_out import read_openmx_out
from ase_moireh.workflows.d3_reference import (
    STACKING_SHIFTS,
    perturbed_structures,
    stacked_bilayer,
    write_reference_folders,
)

OUT = Path(__file__).parent / "data" / "openmx_out" / "bl1x1_perturbed.out"


def test_energy_and_forces_come_in_ev_and_ev_per_angstrom():
    result = read_openmx_out(OUT)
    # the file's Utot. line and its first force row, in Hartree and Hartree/Bohr
    assert result.energy == pytest.approx(-535.418169189889 * Hartree, abs=1e-9)
    assert result.dispersion == 0.0
    assert result.symbols == ["Te", "Mo", "Te", "Te", "Mo", "Te"]
    assert result.forces.shape == (6, 3)
    assert result.forces[0] == pytest.approx(
        np.array([0.002879318995, -0.004534144578, -0.034870972665]) * Hartree / Bohr
    )


@pytest.mark.parametrize(
    ("cut", "problem"),
    [("Utot.", "no 'Utot.' line"), ("<coordinates.forces", "no <coordinates.forces block")],
)
def test_an_unfinished_output_is_named(tmp_path, cut, problem):
    text = OUT.read_text()
    broken = tmp_path / "openmx.out"
    broken.write_text(text[: text.index(cut)])
    with pytest.raises(ValueError, match=f"{broken}: {problem}"):
        read_openmx_out(broken)


def test_a_malformed_force_table_is_named(tmp_path):
    broken = tmp_path / "openmx.out"
    broken.write_text(OUT.read_text().replace("  6\n", "  7\n", 1))
    with pytest.raises(ValueError, match="malformed <coordinates.forces block"):
        read_openmx_out(broken)


def _over(atoms, top: str, bottom: str) -> bool:
    """Does an atom of element ``top`` in the top layer sit over one of ``bottom`` below?"""
    symbols = np.array(atoms.get_chemical_symbols())
    layer = atoms.arrays["layer"]
    a = atoms.positions[(symbols == top) & (layer == 1)][0, :2]
    b = atoms.positions[(symbols == bottom) & (layer == 0)][0, :2]
    cell = atoms.cell[:2, :2]
    frac = np.linalg.solve(cell.T, a - b)
    return bool(np.linalg.norm((frac - np.round(frac)) @ cell) < 1e-6)


@pytest.mark.parametrize(
    ("site", "metal_over_metal", "metal_over_chalcogen", "chalcogen_over_metal"),
    [
        ("MM", True, False, False),
        ("MX", False, True, False),
        ("XM", False, False, True),
        ("SP", False, False, False),
    ],
)
def test_stackings_are_what_they_are_named(
    site, metal_over_metal, metal_over_chalcogen, chalcogen_over_metal
):
    atoms = stacked_bilayer(site, 7.3)
    assert _over(atoms, "Mo", "Mo") is metal_over_metal
    assert _over(atoms, "Mo", "Te") is metal_over_chalcogen
    assert _over(atoms, "Te", "Mo") is chalcogen_over_metal
    assert interlayer_distance(atoms) == pytest.approx(7.3)


def test_unknown_stacking_is_refused():
    with pytest.raises(ValueError, match="stacking must be one of"):
        stacked_bilayer("AB", 7.0)
    assert set(STACKING_SHIFTS) == {"MM", "MX", "XM", "SP"}


def test_perturbed_cells_continue_the_corpus_samplers_and_folders_resume(tmp_path):
    cells = perturbed_structures(shifted=1, twisted=1)
    assert sorted(cells) == ["shift2x2_043", "twist2-1_014"]
    data = tmp_path / "DFT_DATA"
    (data / "VPS").mkdir(parents=True)
    for element, valence in (("Mo", 14.0), ("Te", 16.0)):
        (data / "VPS" / f"{element}_PBE19.vps").write_text(f"valence.electron   {valence}\n")
    folders = write_reference_folders(tmp_path / "runs", cells, str(data), hs_fileout=True)
    text = (folders[0] / "openmx_in.dat").read_text()
    assert "HS.fileout                 on" in text
    (folders[0] / "openmx_in.dat").write_text(text + "# kept\n")
    write_reference_folders(tmp_path / "runs", cells, str(data), hs_fileout=True)
    assert (folders[0] / "openmx_in.dat").read_text().endswith("# kept\n")
