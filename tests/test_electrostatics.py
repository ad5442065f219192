"""The Ewald potential of the long-range head against known values."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from ase_moireh.build import twisted_bilayer
from ase_moireh.model.electrostatics import (
    EWALD_ACCURACY,
    PeriodicityError,
    ewald_potential,
    is_periodic,
    open_potential,
    reciprocal_potential,
)
from ase_moireh.model.graph import MOTE2_CUTOFF, build_graph
from ase_moireh.neighbours import neighbour_pairs

#: Madelung constant of rock salt referred to the nearest-neighbour distance: C. Kittel,
#: Introduction to Solid State Physics, 8th ed. (Wiley 2005), chapter 3, "Evaluation of
#: the Madelung constant" (alpha = 1.747565 for the NaCl structure)
MADELUNG_NACL = 1.747565


def potential(atoms: Atoms, charges: np.ndarray, alpha: float) -> np.ndarray:
    """The Ewald potential (charge / A) with real-space pairs out to where erfc falls
    below the accuracy for this alpha."""
    cutoff = np.sqrt(-np.log(EWALD_ACCURACY)) / alpha
    i, j, shift, _ = neighbour_pairs(atoms, cutoff)
    vec = atoms.positions[j] + shift @ atoms.cell.array - atoms.positions[i]
    pairs = (torch.as_tensor(i), torch.as_tensor(j), torch.as_tensor(vec))
    q = torch.as_tensor(charges, dtype=torch.float64)
    pos, cell = torch.as_tensor(atoms.positions), torch.as_tensor(atoms.cell.array)
    return ewald_potential(q, pos, cell, pairs, alpha).numpy()


@pytest.mark.parametrize("cubic", [True, False])
@pytest.mark.parametrize("alpha", [0.3, 0.5, 0.9])
def test_rock_salt_madelung_constant_at_any_screening_width(alpha, cubic):
    """phi at Na (Cl) is -M/r0 (+M/r0) for unit charges, r0 = a/2: in the 8-atom cubic
    cell and the 2-atom primitive (fcc) one, for three screening widths (the sum's
    accuracy: 1e-6 relative)."""
    a = 5.64
    atoms = bulk("NaCl", "rocksalt", a=a, cubic=cubic)
    q = np.where(np.array(atoms.get_chemical_symbols()) == "Na", 1.0, -1.0)
    phi = potential(atoms, q, alpha)
    assert np.allclose(-phi * q * a / 2, MADELUNG_NACL, rtol=2e-6, atol=0)


def test_ewald_potential_is_independent_of_the_screening_width_in_a_bilayer():
    """Random neutral charges in a twisted MoTe2 bilayer cell (c = the DFT cells' height):
    the split between real and reciprocal space changes nothing."""
    atoms = twisted_bilayer(2, 1)
    atoms.rattle(0.05, seed=4)
    q = np.random.default_rng(5).normal(size=len(atoms))
    q -= q.mean()
    wide, narrow = potential(atoms, q, 0.35), potential(atoms, q, 0.8)
    assert np.abs(wide - narrow).max() < 1e-5 * np.abs(wide).max()


def test_open_structures_take_the_plain_coulomb_sum_and_mixed_ones_are_refused():
    q = torch.tensor([1.0, -2.0, 1.0], dtype=torch.float64)
    pos = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0]], dtype=torch.float64)
    phi = open_potential(q, pos).numpy()
    assert np.allclose(phi, [-2 + 1 / 3, 1 + 1 / 2, 1 / 3 - 1])
    assert is_periodic(np.eye(3) * 5, np.array([True, False, False]))  # vacuum, as in DFT
    assert not is_periodic(np.zeros((3, 3)), np.zeros(3, dtype=bool))
    with pytest.raises(PeriodicityError, match="three independent vectors"):
        is_periodic(np.diag([5.0, 5.0, 0.0]), np.array([True, True, False]))


def test_reciprocal_sum_backward_is_its_own_transpose():
    """The reciprocal part keeps no phases for backward (G q with G symmetric): the
    gradient through it is checked against finite differences."""
    atoms = twisted_bilayer(2, 1)
    graph = build_graph(atoms, ["Mo", "Te"], MOTE2_CUTOFF)
    q = torch.randn(len(atoms), dtype=torch.float64, requires_grad=True)
    weights = torch.randn(len(atoms), dtype=torch.float64)

    def f(charges):
        return reciprocal_potential(charges, graph.pos, graph.cell[0], 0.5, 1e-6) @ weights

    assert torch.autograd.gradcheck(f, (q,))
