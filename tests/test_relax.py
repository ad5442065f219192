"""Relaxation mechanics on a cheap potential (Lennard-Jones): convergence in eV/A, resume
from the trajectory, clear refusals; the local interlayer distance of a bilayer."""

import ase.io
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


# ---------------------------------------------------------------------- command line


@pytest.fixture
def lj_potential(monkeypatch):
    """A registered potential named 'lj' (no optional package needed)."""
    from ase_moireh.build import potentials

    spec = potentials.Potential("Lennard-Jones test", (), lambda: (lj(), frozenset({"Mo", "Te"})))
    monkeypatch.setitem(potentials.POTENTIALS, "lj", spec)


def _run(*args):
    from click.testing import CliRunner

    from ase_moireh.cli import moireh

    return CliRunner().invoke(moireh, ["relax", *map(str, args), "--no-progress"])


def test_cli_relaxes_resumes_and_writes_only_a_converged_structure(tmp_path, lj_potential):
    structure, out = tmp_path / "cell.extxyz", tmp_path / "relaxed.extxyz"
    cluster().write(structure)
    stopped = _run(structure, "-o", out, "--potential", "lj", "--fmax", "0.005", "--steps", "2")
    assert stopped.exit_code == 1
    assert "not converged after 2 steps" in stopped.output and "Traceback" not in stopped.output
    assert not out.exists() and (tmp_path / "relaxed.traj").exists()
    done = _run(structure, "-o", out, "--potential", "lj", "--fmax", "0.005")
    assert done.exit_code == 0, done.output
    relaxed = ase.io.read(out)
    assert np.linalg.norm(lj().get_forces(relaxed), axis=1).max() < 0.005
    assert relaxed.info["relaxation"]["steps"] > 2


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--potential", "nope"], "unknown potential 'nope'"),
        (["--potential", "lj", "-o", "{tmp}/out.what"], "cannot tell a structure format"),
    ],
)
def test_cli_refusals_are_one_line(tmp_path, lj_potential, args, problem):
    structure = tmp_path / "cell.extxyz"
    cluster().write(structure)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = [] if "-o" in args else ["-o", tmp_path / "out.extxyz"]
    result = _run(structure, *out, *args)
    assert result.exit_code == 1 and problem in result.output
    assert "Traceback" not in result.output


def test_cli_names_an_element_the_potential_lacks(tmp_path, lj_potential):
    structure = tmp_path / "ws2.extxyz"
    Atoms("WS2", positions=[[0, 0, 0], [1.6, 0, 1.5], [1.6, 0, -1.5]], cell=[10] * 3).write(
        structure
    )
    result = _run(structure, "-o", tmp_path / "out.extxyz", "--potential", "lj")
    assert result.exit_code == 1 and "has no parameters for S, W" in result.output


def test_a_missing_optional_package_says_how_to_install(monkeypatch):
    import importlib.util

    from ase_moireh.build.potentials import load_potential

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"needs the package\(s\) sevenn, dftd3: pip install"):
        load_potential("7net-0+d3")


@pytest.mark.slow
def test_the_default_potential_separates_mm_from_mx_as_its_reference():
    """The default potential relaxes the 1x1 bilayer at MM and MX stacking (positions
    free, cell fixed; the slide is kept by symmetry). OpenMX PBE + D3(BJ)
    (benchmarks/results/relax.md, from data/d3_reference/stackings): MX at 6.81 A, MM
    0.82 A further apart; Mao et al.'s relaxed twisted MoTe2 has MM 7.63-7.66 A. 7net-0 +
    D3 alone gives 0.42 A (relax.md), which this test refuses."""
    pytest.importorskip("sevenn", reason="pip install -e '.[relax]'")
    pytest.importorskip("dftd3", reason="pip install -e '.[relax]'")
    from ase_moireh.build.potentials import DEFAULT_POTENTIAL, load_potential
    from ase_moireh.workflows.d3_reference import stacked_bilayer

    calculator, elements = load_potential()
    distance = {}
    for site, start in (("MM", 7.3), ("MX", 7.0)):
        atoms = stacked_bilayer(site, start)
        check_elements(atoms, elements, DEFAULT_POTENTIAL)
        out = relax(atoms, calculator, fmax=0.01, steps=200, progress=False)
        assert out.info["relaxation"]["converged"]
        distance[site] = float(local_interlayer_distance(out).mean())
    # measured 2026-12-06: MX 6.813 A, MM - MX 0.784 A; bounds at ~1.5x those deviations
    assert distance["MX"] == pytest.approx(6.81, abs=0.02)
    assert distance["MM"] - distance["MX"] == pytest.approx(0.82, abs=0.06)
