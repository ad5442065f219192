"""H = H0 + dH: residual targets, their inverse, and the refusal of a dH model without H0.

Real data: the corpus entry shift2x2_009 (24 atoms) with the H0 of OpenMX's zeroth step
(``moireh dataset h0``), and the packaged 6-atom SOC run as a spinor operator."""

import copy
from pathlib import Path

import numpy as np
import pytest

from ase_moireh.data import demo_scfout_path
from ase_moireh.io.corpus import H0_OPENMX, read_entry, read_hamiltonian
from ase_moireh.io.openmx import read_scfout
from ase_moireh.model.residual import (
    MissingH0Error,
    add_h0,
    add_level_shift,
    h0_settings,
    native_h0,
    require_h0,
    residual,
    residual_structure,
    residual_target,
    scalar_part,
    soc_level_shift,
    with_spin,
)

ENTRY = Path(__file__).parents[1] / "data" / "corpus" / "shift2x2_009"


@pytest.fixture(scope="module")
def entry_pair():
    return read_entry(ENTRY), read_hamiltonian(ENTRY / H0_OPENMX)


def _max_diff(a, b) -> float:
    where = b.find(a.edges)
    assert (where >= 0).all()
    return max(float(np.abs(a.block(e) - b.block(int(f))).max()) for e, f in enumerate(where))


def test_dh_of_a_real_entry_adds_back_to_h(entry_pair):
    run, h0 = entry_pair
    target = residual_structure(run, h0)
    dh = target.hamiltonian
    assert _max_diff(add_h0(dh, h0.hamiltonian), run.hamiltonian) < 1e-12
    # dH is the small part: H - H0 is over 70x smaller than H on average here
    # (measured 2.7 meV against 204 meV)
    assert np.abs(dh.values).mean() < np.abs(run.hamiltonian.values).mean() / 70
    assert target.fermi_level is None and target.extra["target"] == "dH"


def test_collinear_dh_on_a_soc_h0_keeps_h0_spin_orbit():
    h0 = read_scfout(demo_scfout_path()).hamiltonian  # a spinor operator stands in for H0
    rng = np.random.default_rng(0)
    dh = scalar_part(h0)
    dh.values[:] = rng.normal(scale=0.01, size=dh.values.shape)
    h = add_h0(dh, h0)
    assert _max_diff(residual(h, h0), dh) < 1e-12
    spin = np.zeros(0)
    for e, f in enumerate(h0.find(h.edges)):
        diff = h.block(e) - h0.block(int(f))
        n, m = diff.shape[0] // 2, diff.shape[1] // 2
        spin = np.append(
            spin, [np.abs(diff[:n, m:]).max(), np.abs(diff[:n, :m] - diff[n:, m:]).max()]
        )
    assert spin.max() < 1e-14  # up-down and up-up minus down-down are H0's alone


def test_a_dh_model_refuses_to_run_without_h0(entry_pair):
    info = {"target": residual_target()}
    with pytest.raises(MissingH0Error, match="needs H0"):
        require_h0(info, None, "model.pt")
    require_h0(info, entry_pair[1].hamiltonian)
    require_h0({}, None)  # a whole-H model needs none


def test_h_and_h0_of_different_structures_are_refused(entry_pair):
    run, h0 = entry_pair
    moved = copy.copy(h0.hamiltonian)
    moved.positions = moved.positions + 0.01  # a shallow copy: the fixture keeps its own
    with pytest.raises(ValueError, match="positions differ"):
        residual(run.hamiltonian, moved)


def test_band_errors_separate_one_constant_shift_from_the_rest():
    """The gauge figure: a uniform level shift (H - mu S) is all ``shift_meV`` and leaves
    nothing after it; a single moved level is left after the shift."""
    from ase_moireh.metrics import band_errors_near_gap

    ref = np.array([[-3.0, -0.2, 0.0, 1.0, 1.1, 4.0], [-3.1, -0.5, -0.1, 1.2, 1.5, 4.0]])
    out = band_errors_near_gap(ref, ref + 0.007, nocc=3)
    assert out["shift_meV"] == pytest.approx(7.0)
    assert out["max_after_shift_meV"] == pytest.approx(0.0, abs=1e-9)
    pred = ref.copy()
    pred[0, 2] += 0.006  # one of the 6 levels near the gap: mean shift 1 meV, 5 left
    out = band_errors_near_gap(ref, pred, nocc=3)
    assert out["shift_meV"] == pytest.approx(1.0)
    assert out["max_after_shift_meV"] == pytest.approx(5.0)


def test_a_dh_bundle_predicts_h0_plus_dh_and_never_dh_alone(entry_pair, tmp_path):
    """Every prediction route goes through predict_operators or the stream: with H0 the
    bundle's answer is H0 + its dH; without, a clear refusal and no file."""
    from toy_models import tiny_model

    from ase_moireh.model.io import ModelBundle
    from ase_moireh.model.predict import predict_operators
    from ase_moireh.model.stream import stream_prediction
    from ase_moireh.overlap import bundled_overlap

    run, h0 = entry_pair
    plain = ModelBundle([tiny_model(False)], bundled_overlap(), {})
    dh, _, _ = predict_operators(plain, run.atoms)
    residual_bundle = ModelBundle(plain.models, plain.overlap, {"target": residual_target()})
    h, s, _ = predict_operators(residual_bundle, run.atoms, h0=h0.hamiltonian)
    assert _max_diff(h, add_h0(dh, h0.hamiltonian)) < 1e-12
    assert s.nedges == h.nedges == h0.hamiltonian.nedges
    # trained against OpenMX's zeroth step, an H0 the package does not rebuild
    with pytest.raises(MissingH0Error, match="pass that H0"):
        predict_operators(residual_bundle, run.atoms)
    with pytest.raises(MissingH0Error, match="pass that H0"):
        stream_prediction(residual_bundle, run.atoms, tmp_path / "h.h5")
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def native_bundle():
    """A tiny untrained dH model recorded as trained against the bundled native H0."""
    from toy_models import tiny_model

    from ase_moireh.h0.hamiltonian import SOURCE, resolve_h0
    from ase_moireh.model.io import ModelBundle
    from ase_moireh.overlap import bundled_overlap

    overlap = bundled_overlap()
    settings = h0_settings(resolve_h0(overlap.basis))
    info = {"target": residual_target(SOURCE, settings), "valence": {"Mo": 14.0, "Te": 16.0}}
    return ModelBundle([tiny_model(False)], overlap, info)


@pytest.mark.slow
def test_every_route_rebuilds_the_native_h0_a_dh_model_was_trained_against(
    native_bundle, entry_pair, tmp_path
):
    """In memory and streamed, collinear and SOC: H = native H0 + the members' dH, the
    same numbers by either route; H0 itself is the corpus's stored native H0."""
    from ase_moireh.io.corpus import H0_NATIVE
    from ase_moireh.io.streamed import read_streamed
    from ase_moireh.model.io import ModelBundle
    from ase_moireh.model.predict import predict_operators
    from ase_moireh.model.stream import stream_prediction

    run, _ = entry_pair
    stored = read_hamiltonian(ENTRY / H0_NATIVE).hamiltonian
    plain = ModelBundle(native_bundle.models, native_bundle.overlap, {})
    dh, _, _ = predict_operators(plain, run.atoms)
    h, s, _ = predict_operators(native_bundle, run.atoms)
    assert not native_bundle.spinful and not h.spinful
    # h0.h5 is stored in float32 (4e-6 eV steps at its largest, 64 eV, elements) and
    # V_xc's grid sums run in single precision (1.9e-5 eV against OpenMX, h0.md)
    assert _max_diff(h, add_h0(dh, stored)) < 3e-5
    streamed, s_streamed = read_streamed(
        stream_prediction(native_bundle, run.atoms, tmp_path / "h.h5", precision="double").path
    )
    assert streamed.nedges == h.nedges and _max_diff(streamed, h) < 1e-10
    assert _max_diff(s_streamed, s) < 1e-12
    mu = 0.0084  # eV, as fitted on the corpus's twins
    soc = ModelBundle(native_bundle.models, native_bundle.overlap,
                      with_spin(native_bundle.info, True, mu))  # fmt: skip
    h_soc, s_soc, _ = predict_operators(soc, run.atoms)
    assert soc.spinful and h_soc.spinful
    h0_soc = native_h0(soc.info, run.atoms, soc.config.basis_obj)
    shifted = copy.deepcopy(dh)
    add_level_shift(shifted, s_soc, mu)
    assert _max_diff(residual(h_soc, h0_soc), shifted) < 1e-10  # spin-orbit is H0's alone
    streamed, _ = read_streamed(
        stream_prediction(soc, run.atoms, tmp_path / "soc.h5", precision="double").path
    )
    assert _max_diff(streamed, h_soc) < 1e-10


def test_a_dh_model_refuses_other_h0_files_than_it_was_trained_with(native_bundle, entry_pair):
    from ase_moireh.model.io import ModelBundle
    from ase_moireh.model.predict import predict_operators

    info = copy.deepcopy(native_bundle.info)
    info["target"]["settings"]["digests"]["Te_PBE19.vps"] = "0" * 64
    with pytest.raises(MissingH0Error, match="other Te_PBE19.vps"):
        predict_operators(ModelBundle(native_bundle.models, native_bundle.overlap, info),
                          entry_pair[0].atoms)  # fmt: skip


def test_the_soc_level_shift_fit_recovers_a_known_shift(entry_pair):
    """scalar dH_SOC = dH_col + mu S (x) 1_2 gives back mu; the spinor form is read
    through its scalar part."""
    from ase_moireh.block_operator import spinor_lift
    from ase_moireh.overlap import with_overlap

    run = with_overlap(entry_pair[0])
    dh_col = residual(run.hamiltonian, entry_pair[1].hamiltonian)
    soc = copy.deepcopy(dh_col)
    add_level_shift(soc, run.overlap, 0.0084)
    mu, each = soc_level_shift([(dh_col, spinor_lift(soc), run.overlap)] * 2)
    assert mu == pytest.approx(0.0084, rel=1e-10) and each == pytest.approx([0.0084] * 2)


def test_a_dh_model_says_when_its_h0_will_not_fit(native_bundle, entry_pair, monkeypatch):
    """A cell whose H0 exceeds the memory left is refused before any work, by name."""
    from ase_moireh.memory import InsufficientMemory
    from ase_moireh.model.predict import predict_operators

    monkeypatch.setenv("MOIREH_MEMORY_LIMIT", "1MB")  # less than the process holds
    with pytest.raises(InsufficientMemory, match="native H0 of Mo8Te16 .24 atoms. needs"):
        predict_operators(native_bundle, entry_pair[0].atoms)
