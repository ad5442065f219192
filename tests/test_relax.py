"""Relaxation mechanics on a cheap potential (Lennard-Jones): convergence in eV/A, resume
from the trajectory, clear refusals; the local interlayer distance of a bilayer."""

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.lj import LennardJones

from ase_moireh.build import twisted_bilayer
from ase_moireh.build.relax import RelaxError, check_elements, local_interlayer_distance, relax


def cluster() -> Atoms:
    """Six atoms near, not at, an LJ minimum."""
    rng = np.random.default_rng(0)
    positions = 1.2 * np.array(
        [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1]], dtype=float
    )
    return Atoms("Mo2Te4", positions=positions + rng.normal(0, 0.05, (6, 3)), cell=[20] * 3)


def lj() -> LennardJones:
    return LennardJones(sigma=1.1, epsilon=0.1, rc=4.0, smooth=True)


def test_relaxes_below_fmax_and_keeps_the_input():
    atoms = cluster()
    before = atoms.positions.copy()
    out = relax(atoms, lj(), fmax=0.005, progress=False)
    forces = lj().get_forces(out)
    assert np.linalg.norm(forces, axis=1).max() < 0.005
    assert out.info["relaxation"]["converged"]
    assert np.array_equal(atoms.positions, before)


def test_a_killed_run_resumes_from_its_trajectory(tmp_path):
    path = tmp_path / "relax.traj"
    first = relax(cluster(), lj(), fmax=1e-4, steps=3, trajectory=path, progress=False)
    assert not first.info["relaxation"]["converged"]
    assert first.info["relaxation"]["steps"] == 3
    resumed = relax(cluster(), lj(), fmax=0.005, trajectory=path, progress=False)
    start = cluster()
    start.positions = first.positions
    fresh = relax(start, lj(), fmax=0.005, progress=False)
    assert resumed.info["relaxation"]["converged"]
    assert np.allclose(resumed.positions, fresh.positions, atol=1e-12)
    assert resumed.info["relaxation"]["steps"] == 3 + fresh.info["relaxation"]["steps"]


def test_a_trajectory_of_another_structure_is_refused(tmp_path):
    path = tmp_path / "relax.traj"
    relax(cluster(), lj(), fmax=1e-4, steps=1, trajectory=path, progress=False)
    other = cluster()
    other.symbols[0] = "Te"
    with pytest.raises(RelaxError, match="holds another structure"):
        relax(other, lj(), trajectory=path, progress=False)


def test_unsupported_elements_are_named():
    with pytest.raises(RelaxError, match="no parameters for Se, W"):
        check_elements(Atoms("WSe2"), ["Mo", "Te"], "the potential")


def test_rigid_bilayer_has_one_interlayer_distance():
    atoms = twisted_bilayer(2, 1)
    local = local_interlayer_distance(atoms)
    assert len(local) == 7
    assert np.allclose(local, 7.0, atol=1e-9)


def test_a_corrugated_top_layer_is_measured_point_by_point():
    atoms = twisted_bilayer(2, 1)
    top_metal = (atoms.arrays["layer"] == 1) & (np.array(atoms.get_chemical_symbols()) == "Mo")
    bump = np.linspace(-0.3, 0.3, int(top_metal.sum()))
    atoms.positions[top_metal, 2] += bump
    assert np.allclose(local_interlayer_distance(atoms), 7.0 + bump, atol=1e-9)
