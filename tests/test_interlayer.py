"""The fitted interlayer correction: forces and stress are the energy's derivatives, it
acts between layers only, is zero for separated layers, finds unlabelled layers itself,
and the bundled fit reproduces the stacking order of its OpenMX PBE-D3 reference."""

import json
from importlib import resources

import numpy as np
import pytest
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

from ase_moireh.build.interlayer import (
    R_CUT,
    InterlayerCorrection,
    PairTerm,
    bundled_correction,
)
from ase_moireh.workflows.d3_reference import stacked_bilayer

TERMS = [PairTerm(("Te", "Te"), 0.5, 0.6, 1.2), PairTerm(("Mo", "Te"), -2.0, 0.7)]


def rattled(stacking: str = "MM", distance: float = 7.0, seed: int = 1):
    atoms = stacked_bilayer(stacking, distance).repeat((2, 2, 1))
    atoms.rattle(0.05, seed=seed)
    return atoms


def test_forces_and_stress_are_derivatives_of_the_energy():
    atoms = rattled()
    atoms.calc = InterlayerCorrection(TERMS)
    forces = atoms.get_forces()
    assert np.abs(forces).max() > 0.1  # a real test: the forces are not all small
    assert np.allclose(forces, calculate_numerical_forces(atoms, eps=1e-4), atol=1e-6)
    assert np.allclose(atoms.get_stress(), calculate_numerical_stress(atoms, eps=1e-5), atol=1e-8)
    assert np.allclose(forces.sum(axis=0), 0.0, atol=1e-10)


def test_only_pairs_between_layers_count():
    atoms = rattled()
    calc = InterlayerCorrection(TERMS)
    assert calc.get_potential_energy(atoms) != 0.0
    one_layer = atoms.copy()
    one_layer.arrays["layer"][:] = 0
    assert calc.get_potential_energy(one_layer) == 0.0
    apart = stacked_bilayer("MM", 3.6 + R_CUT + 0.5)  # chalcogen planes R_CUT + 0.5 apart
    assert calc.get_potential_energy(apart) == 0.0


def test_swapping_layer_labels_changes_nothing():
    atoms = rattled("MX", 6.9)
    calc = InterlayerCorrection(TERMS)
    energy = calc.get_potential_energy(atoms)
    swapped = atoms.copy()
    swapped.arrays["layer"] = 1 - swapped.arrays["layer"]
    assert calc.get_potential_energy(swapped) == pytest.approx(energy, rel=1e-12)


def test_without_a_layer_array_the_bond_graph_finds_the_layers():
    atoms = rattled()
    calc = InterlayerCorrection(TERMS)
    labelled = calc.get_potential_energy(atoms)
    del atoms.arrays["layer"]
    assert InterlayerCorrection(TERMS).get_potential_energy(atoms) == pytest.approx(labelled)


def test_a_broken_parameter_file_is_named(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"terms": [{"species": ["Te"]}]}')
    with pytest.raises(ValueError, match="bad.json: not an interlayer-correction file"):
        InterlayerCorrection.from_file(path)


def test_the_bundled_fit_orders_the_stackings_as_its_reference():
    """Reference: OpenMX PBE + D3(BJ) (benchmarks/results/relax.md): MM binds 88 meV per
    MoTe2 less than MX, with its layers 0.82 A further apart. The correction alone must
    push MM up and apart against MX: repulsive at MM 7.0 A, and more so than at MX."""
    calc = bundled_correction("mote2_7net0")
    assert calc.elements == frozenset({"Mo", "Te"})
    e = {s: calc.get_potential_energy(stacked_bilayer(s, 7.0)) for s in ("MM", "MX")}
    assert e["MM"] > 0.0 and e["MM"] - e["MX"] > 0.05
    source = resources.files("ase_moireh.data") / "interlayer" / "mote2_7net0.json"
    fit = json.loads(source.read_text())
    assert fit["after"]["energy_rms_meV_per_fu"] < 5.0
    assert fit["check"]["energy_rms_meV_per_fu"] < 8.0
