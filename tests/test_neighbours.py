"""neighbour_pairs against ASE's neighbor_list (the independent reference) on cells that
stress the periodic images: a 1x1 cell smaller than the cutoff, unwrapped and
perturbed positions, a ribbon periodic along one vector, a molecule without a cell."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import mx2
from ase.neighborlist import neighbor_list

from ase_moireh.build import nanoribbon, twisted_bilayer
from ase_moireh.neighbours import neighbour_pairs


def _rows(i, j, shift) -> np.ndarray:
    rows = np.column_stack([i, j, shift]).astype(np.int64)
    return rows[np.lexsort(rows.T[::-1])]


def _same_as_ase(atoms: Atoms, cutoff: float, chunk: int = 4096) -> int:
    i, j, shift, d = neighbour_pairs(atoms, cutoff, chunk=chunk)
    ai, aj, ashift, ad = neighbor_list("ijSd", atoms, cutoff, self_interaction=False)
    np.testing.assert_array_equal(_rows(i, j, shift), _rows(ai, aj, ashift))
    np.testing.assert_allclose(np.sort(d), np.sort(ad), atol=1e-10)
    return len(i)


@pytest.mark.parametrize("cutoff", [3.0, 7.408, 12.0])
def test_small_cell_needs_several_images(cutoff):
    atoms = mx2("MoTe2", a=3.52, vacuum=8.0)
    atoms.pbc = True
    assert _same_as_ase(atoms, cutoff) > 0


def test_unwrapped_perturbed_twisted_cell_in_small_chunks():
    atoms = twisted_bilayer(2, 1)
    rng = np.random.default_rng(3)
    atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
    atoms.positions[::5] += 2 * atoms.cell[0] - 3 * atoms.cell[1]  # far outside the cell
    assert _same_as_ase(atoms, 7.408, chunk=7) > 0


def test_ribbon_and_molecule():
    ribbon = nanoribbon(twisted_bilayer(2, 1), repeats=2)
    assert not ribbon.pbc.all()
    assert _same_as_ase(ribbon, 7.408) > 0
    molecule = Atoms("MoTe2", positions=[[0, 0, 0], [1.8, 0, 1.8], [1.8, 0, -1.8]])
    assert _same_as_ase(molecule, 4.0) == 6  # Mo-Te 2.5 A, Te-Te 3.6 A


def test_exactly_symmetric_with_distances_at_the_cutoff():
    atoms = mx2("MoTe2", a=3.52, vacuum=8.0)
    atoms.pbc = True
    cutoff = 2 * 3.52  # second-neighbour metals sit at the cutoff, within rounding
    i, j, shift, d = neighbour_pairs(atoms, cutoff + 1e-12)
    assert np.any(np.abs(d - cutoff) < 1e-9)
    forward = {(a, b, *s): x for a, b, s, x in zip(i, j, shift.tolist(), d, strict=True)}
    for (a, b, *s), x in forward.items():
        assert forward[(b, a, *(-np.array(s)))] == x  # same float, bit for bit


def test_rejects_bad_input():
    atoms = Atoms("Mo", cell=[[3, 0, 0], [0, 0, 0], [0, 0, 20]], pbc=True)
    with pytest.raises(ValueError, match="zero cell vector"):
        neighbour_pairs(atoms, 3.0)
    with pytest.raises(ValueError, match="cutoff must be positive"):
        neighbour_pairs(Atoms("Mo"), 0.0)
