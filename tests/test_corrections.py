"""The fitted corrections: forces and stress are the energy's derivatives, the
interlayer terms act between layers only (zero for separated layers), the springs within
layers only (zero at the material's geometry), unlabelled layers are found from the bond
graph, and the bundled fit reproduces the stacking order of its OpenMX PBE-D3 reference."""

import json
from importlib import resources

import numpy as np
import pytest
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

from ase_moireh.build.corrections import (
    R_CUT,
    Corrections,
    PairTerm,
    Spring,
    bundled_correction,
)
from ase_moireh.workflows.d3_reference import stacked_bilayer

TERMS = [PairTerm(("Te", "Te"), 0.5, 0.6, 1.2), PairTerm(("Mo", "Te"), -2.0, 0.7)]
#: rest lengths of the material's layer (MoTe2: a = 3.52 A, Mo-Te 2.715 A)
SPRINGS = [
    Spring(("Mo", "Te"), "any", 2.7148, 4.0),
    Spring(("Mo", "Mo"), "any", 3.52, 0.5),
    Spring(("Te", "Te"), "same", 3.52, 0.5),
    Spring(("Te", "Te"), "opposite", 3.6, 0.3),
]


def rattled(stacking: str = "MM", distance: float = 7.0, seed: int = 1):
    atoms = stacked_bilayer(stacking, distance).repeat((2, 2, 1))
    atoms.rattle(0.05, seed=seed)
    return atoms


@pytest.mark.parametrize("springs", [[], SPRINGS], ids=["interlayer", "with-springs"])
def test_forces_and_stress_are_derivatives_of_the_energy(springs):
    atoms = rattled()
    atoms.calc = Corrections(TERMS, springs)
    forces = atoms.get_forces()
    assert np.abs(forces).max() > 0.1  # a real test: the forces are not all small
    assert np.allclose(forces, calculate_numerical_forces(atoms, eps=1e-4), atol=1e-6)
    assert np.allclose(atoms.get_stress(), calculate_numerical_stress(atoms, eps=1e-5), atol=1e-8)
    assert np.allclose(forces.sum(axis=0), 0.0, atol=1e-10)


def test_only_pairs_between_layers_count():
    atoms = rattled()
    calc = Corrections(TERMS)
    assert calc.get_potential_energy(atoms) != 0.0
    one_layer = atoms.copy()
    one_layer.arrays["layer"][:] = 0
    assert calc.get_potential_energy(one_layer) == 0.0
    apart = stacked_bilayer("MM", 3.6 + R_CUT + 0.5)  # chalcogen planes R_CUT + 0.5 apart
    assert calc.get_potential_energy(apart) == 0.0


def test_springs_rest_at_the_material_layer_and_act_within_layers():
    springs_only = Corrections([], SPRINGS)
    assert springs_only.get_potential_energy(stacked_bilayer("MX", 6.9)) == pytest.approx(
        0, abs=1e-6
    )
    assert springs_only.get_potential_energy(rattled()) > 1e-3
    apart = stacked_bilayer("MX", 6.9)
    apart.positions[apart.arrays["layer"] == 1] += [0.3, 0.1, -0.2]  # slide and squeeze
    assert springs_only.get_potential_energy(apart) == pytest.approx(0, abs=1e-6)


def test_swapping_layer_labels_changes_nothing():
    atoms = rattled("MX", 6.9)
    calc = Corrections(TERMS)
    energy = calc.get_potential_energy(atoms)
    swapped = atoms.copy()
    swapped.arrays["layer"] = 1 - swapped.arrays["layer"]
    assert calc.get_potential_energy(swapped) == pytest.approx(energy, rel=1e-12)


def test_without_a_layer_array_the_bond_graph_finds_the_layers():
    atoms = rattled()
    calc = Corrections(TERMS)
    labelled = calc.get_potential_energy(atoms)
    del atoms.arrays["layer"]
    assert Corrections(TERMS).get_potential_energy(atoms) == pytest.approx(labelled)


def test_a_broken_parameter_file_is_named(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"terms": [{"species": ["Te"]}]}')
    with pytest.raises(ValueError, match="bad.json: not a corrections file"):
        Corrections.from_file(path)


def test_the_bundled_fit_orders_the_stackings_as_its_reference():
    """Reference: OpenMX PBE + D3(BJ) (benchmarks/results/relax.md): MM binds 88 meV per
    MoTe2 less than MX, with its layers 0.82 A further apart. The correction alone must
    push MM up and apart against MX: repulsive at MM 7.0 A, and more so than at MX."""
    calc = bundled_correction("mote2_7net0")
    assert calc.elements == frozenset({"Mo", "Te"})
    e = {s: calc.get_potential_energy(stacked_bilayer(s, 7.0)) for s in ("MM", "MX")}
    assert e["MM"] > 0.0 and e["MM"] - e["MX"] > 0.05
    source = resources.files("ase_moireh.data") / "corrections" / "mote2_7net0.json"
    fit = json.loads(source.read_text())
    # the fit's record (benchmarks/fit_corrections.py): 2.0 and, SP/XM held out, 3.9 meV
    assert fit["interlayer"]["after"]["energy_rms_meV_per_fu"] < 3.0
    assert fit["interlayer"]["check"]["energy_rms_meV_per_fu"] < 6.0
    assert all(s.stiffness > 0 for s in calc.springs)
