"""Twisted bilayers and nanoribbons: counts, angles, symmetry, the shared twisted cell."""

import math

import numpy as np
import pytest
from ase.io import read
from ase.neighborlist import neighbor_list

from ase_moireh.build import (
    commensurate_cells,
    nanoribbon,
    natoms_twisted,
    twist_angle,
    twisted_bilayer,
)
from ase_moireh.symmetry import space_group_operations
from shared_data import case_dir

#: Mo-Te bond of the shared MoTe2 geometry (shared data README: 2.715 A)
MO_TE_BOND = 2.715


def has_c3_about_z(atoms) -> bool:
    return any(
        np.isclose(np.trace(op.Q), 0.0) and np.isclose(op.Q[2, 2], 1.0)
        for op in space_group_operations(atoms)
    )


def min_distance(atoms) -> float:
    return float(neighbor_list("d", atoms, 3.5).min())


@pytest.mark.parametrize("n, m", [(2, 1), (3, 2), (5, 3), (7, 6), (9, 8), (5, 1)])
def test_atom_count_formula(n, m):
    atoms = twisted_bilayer(n, m)
    assert len(atoms) == natoms_twisted(n, m) == 6 * (n * n + n * m + m * m)
    assert list(np.bincount(atoms.arrays["layer"])) == [len(atoms) // 2] * 2


@pytest.mark.parametrize("n, m", [(4, 1), (5, 2), (7, 4)])
def test_a_third_when_three_divides_n_minus_m(n, m):
    atoms = twisted_bilayer(n, m)
    assert len(atoms) == 2 * (n * n + n * m + m * m)
    assert has_c3_about_z(atoms)
    assert min_distance(atoms) > MO_TE_BOND - 1e-3


def test_angles_and_counts_quoted_in_the_paper_tables():
    # (n, m) -> (theta, atoms) as listed for R-stacked tMoTe2 (arXiv 2501.12452)
    assert twist_angle(2, 1) == pytest.approx(21.787, abs=1e-3)
    assert twist_angle(3, 2) == pytest.approx(13.174, abs=1e-3)
    assert twist_angle(7, 6) == pytest.approx(5.086, abs=1e-3)
    assert natoms_twisted(7, 6) == 762
    assert twist_angle(38, 37) == pytest.approx(0.88, abs=5e-3)
    assert natoms_twisted(38, 37) == 25_314
    assert math.cos(math.radians(twist_angle(2, 1))) == pytest.approx(13 / 14)


def test_commensurate_cells_inverse():
    # the paper's 3.89 and 3.48 deg cells are (9, 8) and (10, 9): cos(theta) =
    # (n^2 + 4nm + m^2) / (2 (n^2 + nm + m^2)) gives 3.890 and 3.481 deg
    assert twist_angle(9, 8) == pytest.approx(3.890, abs=5e-4)
    assert twist_angle(10, 9) == pytest.approx(3.481, abs=5e-4)
    assert [(c.n, c.m) for c in commensurate_cells(3.89, tol=0.01)] == [(9, 8)]
    assert [(c.n, c.m) for c in commensurate_cells(3.48, tol=0.01)] == [(10, 9)]
    near = commensurate_cells(5.0, tol=0.5, max_atoms=2000)
    assert near and all(abs(c.theta - 5.0) <= 0.5 and c.natoms <= 2000 for c in near)
    assert [abs(c.theta - 5.0) for c in near] == sorted(abs(c.theta - 5.0) for c in near)


@pytest.mark.parametrize("stacking", ["R", "H"])
@pytest.mark.parametrize("n, m", [(2, 1), (3, 2), (5, 4)])
def test_c3_axis_and_physical_distances(n, m, stacking):
    atoms = twisted_bilayer(n, m, stacking=stacking)
    assert has_c3_about_z(atoms)
    assert min_distance(atoms) == pytest.approx(MO_TE_BOND, abs=1e-3)  # intralayer bond
    cell = np.asarray(atoms.cell)
    assert np.dot(cell[0], cell[1]) == pytest.approx(0.5 * np.dot(cell[0], cell[0]))


def test_non_coprime_and_impossible_requests():
    a, b = twisted_bilayer(4, 2), twisted_bilayer(2, 1)
    assert np.allclose(a.positions, b.positions) and len(a) == 42
    for bad in [(3, 3), (0, 2), (-2, 1), (2.5, 1)]:
        with pytest.raises(ValueError):
            twisted_bilayer(*bad)
    with pytest.raises(ValueError, match="unknown material"):
        twisted_bilayer(2, 1, material="Unobtainium")
    with pytest.raises(ValueError, match="overlap"):
        twisted_bilayer(2, 1, interlayer=2.0)


def test_matches_the_shared_twisted_cell():
    ref = read(case_dir("tw2179_nosoc") / "structure.extxyz")
    ours = twisted_bilayer(2, 1)
    assert np.allclose(ours.cell, ref.cell, atol=1e-4)
    frac_diff = ours.get_scaled_positions()[:, None] - ref.get_scaled_positions()[None]
    frac_diff -= np.rint(frac_diff)
    dist = np.linalg.norm(frac_diff @ np.asarray(ours.cell), axis=-1)
    dist[ours.numbers[:, None] != ref.numbers[None]] = np.inf
    assert dist.min(axis=1).max() < 1e-4  # every atom has its partner (same frame)
    assert sorted(dist.argmin(axis=1)) == list(range(len(ref)))
    bottom = ours.positions[ours.arrays["layer"] == 0, 2]
    assert bottom.max() < 11.0  # bottom layer around z = 9 A, as in the shared run


def test_nanoribbon_geometry_and_edges():
    cell = twisted_bilayer(3, 2)
    ribbon = nanoribbon(cell, repeats=3, axis=0, vacuum=12.0, edge_width=4.0)
    assert len(ribbon) == 3 * len(cell)
    assert list(ribbon.pbc) == [True, False, False]
    assert np.allclose(ribbon.cell[0], cell.cell[0])
    normal = ribbon.cell[1] / np.linalg.norm(ribbon.cell[1])
    assert abs(np.dot(normal, ribbon.cell[0])) < 1e-9
    proj = ribbon.positions @ normal
    width = 3 * abs(np.dot(cell.cell[1], normal))
    assert proj.max() - proj.min() == pytest.approx(width, abs=3.0)
    assert proj.min() == pytest.approx(6.0) and np.linalg.norm(ribbon.cell[1]) - proj.max() == (
        pytest.approx(6.0)
    )
    side = ribbon.arrays["edge_side"]
    assert (side == -1).sum() > 0 and (side == 1).sum() > 0 and (side == 0).sum() > 0
    assert np.all(ribbon.arrays["edge_distance"][side != 0] <= 4.0)
    assert np.all(ribbon.arrays["edge_distance"][side == 0] > 4.0)
    assert min_distance(ribbon) > MO_TE_BOND - 1e-3
    with pytest.raises(ValueError):
        nanoribbon(cell, repeats=0)
