"""K and K' come from the cell: checked against spglib's C3 (an independent route) and
ASE's special points, in both hexagonal settings."""

import numpy as np
import pytest
from ase.build import mx2

from ase_moireh.build import twisted_bilayer
from ase_moireh.build.generate import shifted_bilayers
from ase_moireh.kpoints import extrema_kpoints, zone_corners
from ase_moireh.topology import c3_invariant_kpoints, c3_operation


def as_set(points) -> set[tuple[float, float]]:
    return {tuple(np.round(np.asarray(p)[:2] % 1.0, 6)) for p in points}


@pytest.mark.parametrize("twist", [(2, 1), (3, 2)])
def test_zone_corners_are_the_c3_invariant_points_of_a_twisted_cell(twist):
    atoms = twisted_bilayer(*twist)
    assert atoms.cell.cellpar()[5] == pytest.approx(60.0)
    points = c3_invariant_kpoints(c3_operation(atoms))
    assert as_set(zone_corners(atoms.cell)) == as_set([points["K"], points["K'"]])


@pytest.mark.parametrize(
    "atoms",
    [mx2("MoTe2", vacuum=10.0), twisted_bilayer(2, 1)],
    ids=["gamma120", "gamma60"],
)
def test_zone_corners_contain_ases_k_and_m_points_are_zone_edge_midpoints(atoms):
    special = atoms.cell.bandpath().special_points
    corners = zone_corners(atoms.cell)
    assert len(corners) == 2
    assert as_set([special["K"]]) <= as_set(corners)
    assert as_set([special["M"]]) <= as_set(extrema_kpoints(atoms.cell)[1:4])


def test_gamma_and_the_two_settings_differ_in_k_only():
    k120 = as_set(zone_corners(mx2("MoTe2", vacuum=10.0).cell))
    k60 = as_set(zone_corners(twisted_bilayer(2, 1).cell))
    assert k120 == {(round(1 / 3, 6), round(1 / 3, 6)), (round(2 / 3, 6), round(2 / 3, 6))}
    assert k60 == {(round(1 / 3, 6), round(2 / 3, 6)), (round(2 / 3, 6), round(1 / 3, 6))}


def test_a_perturbed_supercell_keeps_the_corners_of_its_lattice():
    atoms = shifted_bilayers(supercell=(2, 2), seed=3)[0]
    assert as_set(zone_corners(atoms.cell)) == as_set(zone_corners(twisted_bilayer(2, 1).cell))
