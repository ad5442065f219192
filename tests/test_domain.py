"""The calculator checks structures against the model's training domain: named warnings
for milder departures, a named error for structures it cannot describe at all."""

import warnings
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import mx2

from ase_moireh.build import twisted_bilayer
from ase_moireh.build.generate import shifted_bilayers
from ase_moireh.calculator import MoireHCalculator
from ase_moireh.data import bundled_model_path
from ase_moireh.domain import (
    ModelDomain,
    OutOfDomainError,
    OutOfDomainWarning,
    count_layers,
    domain_of,
    findings,
    local_interlayer_range,
    union,
    vacuum_width,
)
from ase_moireh.io.corpus import load_manifest
from ase_moireh.model.io import load_bundle

CUTOFF = 7.4


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(bundled_model_path(soc=False))


@pytest.fixture(scope="module")
def domain(bundle):
    return ModelDomain.from_dict(bundle.info["domain"])


def exact_bilayer():
    return shifted_bilayers(shifts=1, amplitude=0.0, interlayer_sigma=0.0)[0]


def with_vacuum(atoms, vacuum: float):
    """The same layers with ``vacuum`` A between periodic images along c."""
    out = atoms.copy()
    z = out.positions[:, 2]
    out.positions[:, 2] -= z.min()
    out.cell[2] = [0.0, 0.0, z.max() - z.min() + vacuum]
    return out


def test_measures_of_a_bilayer():
    atoms = exact_bilayer()
    assert count_layers(atoms) == 2
    assert count_layers(mx2("MoTe2", a=3.52, thickness=3.6, vacuum=10.0)) == 1
    assert vacuum_width(with_vacuum(atoms, 12.5)) == pytest.approx(12.5)


def test_bundled_models_record_their_training_domain(domain):
    assert domain.species == ["Mo", "Te"] and domain.layers == [2]
    # trained on the corpus's training entries only, and their vacuum is the minimum
    corpus = Path(__file__).resolve().parents[1] / "data" / "corpus"
    manifest = load_manifest(corpus)
    assert {manifest[name].split for name in domain.structures} == {"train"}
    cells = [ase.io.read(corpus / name / "structure.extxyz") for name in domain.structures]
    assert domain.vacuum_min == pytest.approx(min(vacuum_width(a) for a in cells), abs=1e-4)
    spans = [local_interlayer_range(a) for a in cells]
    assert domain.interlayer == pytest.approx([min(s[0] for s in spans), max(s[1] for s in spans)])


@pytest.mark.parametrize("atoms", [twisted_bilayer(2, 1), twisted_bilayer(4, 3), exact_bilayer()])
def test_structures_like_the_training_ones_pass(atoms, domain):
    assert findings(atoms, domain, CUTOFF) == ([], [])


def test_small_thermal_noise_passes(domain):
    atoms = twisted_bilayer(2, 1)
    atoms.positions += np.random.default_rng(0).normal(0, 0.01, atoms.positions.shape)
    assert findings(atoms, domain, CUTOFF) == ([], [])


def test_monolayer_is_flagged(domain):
    severe, mild = findings(mx2("MoTe2", a=3.52, thickness=3.6, vacuum=10.0), domain, CUTOFF)
    assert not severe
    assert any("1 layer(s)" in m and "2-layer" in m for m in mild)


def test_squeezed_lattice_is_flagged(domain):
    severe, mild = findings(mx2("MoTe2", a=3.18, thickness=3.6, vacuum=10.0), domain, CUTOFF)
    assert not severe
    assert any("Mo-Mo atoms 3.18 A apart, closer than in training" in m for m in mild)


def test_bulk_like_stack_is_refused(domain):
    severe, _ = findings(with_vacuum(twisted_bilayer(2, 1), 3.4), domain, CUTOFF)
    assert len(severe) == 1 and "3.40 A of vacuum" in severe[0] and "bulk-like" in severe[0]


def test_overlapping_images_are_refused(domain):
    atoms = exact_bilayer()
    atoms.set_cell(np.r_[atoms.cell[:2], [[0, 0, 8.0]]], scale_atoms=False)
    severe, _ = findings(atoms, domain, CUTOFF)
    assert any("overlap" in s for s in severe)


def test_unknown_elements_are_refused(domain):
    severe, _ = findings(shifted_bilayers("WSe2", shifts=1)[0], domain, CUTOFF)
    assert severe == ["element(s) Se, W unknown to the model (it knows Mo, Te)"]


def test_union_spans_both(domain):
    small = domain_of([exact_bilayer()], ["exact"])
    joined = union(domain, small)
    assert joined.structures[-1] == "exact"
    assert joined.nearest["Te"][1] >= domain.nearest["Te"][1]
    assert ModelDomain.from_dict(joined.to_dict()) == joined


def _raised(atoms, dz: float):
    out = atoms.copy()
    out.positions[out.arrays["layer"] == 1, 2] += dz
    return out


def test_the_interlayer_range_is_recorded_and_checked():
    """Rigid bilayers 6.9-7.1 A apart span that range; the same cell 0.4 A further apart
    (the MM regions of a relaxed small-angle cell reach 7.6 A) leaves it by 0.3 A."""
    cells = [_raised(exact_bilayer(), dz) for dz in (-0.1, 0.1)]
    d = domain_of(cells, ["low", "high"])
    assert d.interlayer == pytest.approx([6.9, 7.1], abs=1e-9)
    assert findings(_raised(exact_bilayer(), 0.05), d, CUTOFF) == ([], [])
    severe, mild = findings(_raised(exact_bilayer(), 0.4), d, CUTOFF)
    assert not severe and any(
        "7.40-7.40 A, outside the training range 6.90-7.10" in m for m in mild
    )
    single = domain_of([mx2("MoTe2", a=3.52, thickness=3.6, vacuum=10.0)])
    assert single.interlayer is None  # a monolayer has no interlayer distance
    old = d.to_dict()
    del old["interlayer"]  # a model file written before the range was recorded
    assert ModelDomain.from_dict(old).interlayer is None
    assert union(d, ModelDomain.from_dict(old)).interlayer == d.interlayer


# --------------------------------------------------------------------------- calculator


def test_calculator_warns_on_a_monolayer_and_still_answers(bundle):
    atoms = mx2("MoTe2", a=3.52, thickness=3.6, vacuum=10.0)
    atoms.calc = MoireHCalculator(model=bundle)
    with pytest.warns(OutOfDomainWarning, match="trained on 2-layer"):
        h = atoms.calc.get_hamiltonian()
    # a whole answer: Hermitian, with every atom's on-site block
    assert h.hermiticity_error() < 1e-6
    onsite = h.edges[(h.edges[:, 0] == h.edges[:, 1]) & ~h.edges[:, 2:].any(axis=1)]
    assert sorted(onsite[:, 0]) == list(range(len(atoms)))


def test_calculator_refuses_a_squeezed_cell_with_a_named_error(bundle):
    atoms = exact_bilayer()
    atoms.set_cell(np.r_[atoms.cell[:2], [[0, 0, 8.0]]], scale_atoms=False)
    atoms.calc = MoireHCalculator(model=bundle)
    with pytest.raises(OutOfDomainError, match="outside the model's domain.*domain_check=False"):
        atoms.calc.get_eigenvalues()


def test_domain_check_off_turns_refusal_into_warning(bundle):
    atoms = with_vacuum(exact_bilayer(), 3.4)
    atoms.calc = MoireHCalculator(model=bundle, domain_check=False)
    with pytest.warns(OutOfDomainWarning, match="bulk-like"):
        atoms.calc.get_hamiltonian()


def test_no_warning_inside_the_domain(bundle):
    atoms = exact_bilayer()
    atoms.calc = MoireHCalculator(model=bundle)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfDomainWarning)
        atoms.calc.get_hamiltonian()
