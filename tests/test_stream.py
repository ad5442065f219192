"""Predictions streamed to disk equal the in-memory prediction (ribbons too big to hold)."""

import h5py
import numpy as np
import pytest
from toy_models import tiny_model

from ase_moireh import block_operator
from ase_moireh.build import nanoribbon, twisted_bilayer
from ase_moireh.io import streamed
from ase_moireh.io.streamed import read_streamed
from ase_moireh.model.io import ModelBundle, with_soc_correction
from ase_moireh.model.predict import predict_operators
from ase_moireh.model.soc import on_edges
from ase_moireh.model.stream import stream_prediction
from ase_moireh.overlap import bundled_overlap


def ensemble(spinful: bool, seeds=(1, 2)) -> ModelBundle:
    return ModelBundle([tiny_model(spinful, seed=s) for s in seeds], bundled_overlap())


@pytest.fixture(scope="module")
def ribbon():
    return nanoribbon(twisted_bilayer(2, 1), repeats=1)


def same_operator(a, b) -> float:
    """Largest difference of two operators on a's edges (any edge order)."""
    assert a.spinful == b.spinful and a.nedges == b.nedges
    return float(np.abs(on_edges(b, a.edges)[0].values - a.values).max())


@pytest.mark.slow
def test_streamed_composite_equals_the_prediction_in_memory(ribbon, tmp_path, monkeypatch):
    """H_col (x) 1 + dH_SO and S read back from the file equal predict_operators's,
    in double precision to rounding; the stored spread is each block's largest. Small
    chunks: many appends per group."""
    bundle = with_soc_correction(ensemble(False), ModelBundle([tiny_model(True, 3)], None))
    path = tmp_path / "ribbon.h5"
    appends = []
    add = streamed.GroupWriter.add
    with monkeypatch.context() as patch:
        patch.setattr(block_operator, "BLOCH_CHUNK", 5000)
        patch.setattr(streamed.GroupWriter, "add", lambda *a: appends.append(1) or add(*a))
        report = stream_prediction(bundle, ribbon, path, precision="double")
    assert len(appends) > 10
    h, s, _ = predict_operators(bundle, ribbon)
    back_h, back_s = read_streamed(path)
    assert same_operator(back_h, h) < 1e-12
    assert same_operator(back_s, s) < 1e-14
    assert report.atoms == len(ribbon) and report.orbitals == h.dimension
    assert report.blocks == h.nedges and report.correction_blocks > 0
    _, spread = predict_operators(ensemble(False), ribbon)[::2]
    with h5py.File(path) as f:
        col_edges, block_spread = f["hamiltonian/edges"][()], f["hamiltonian/block_spread"][()]
    expected = [np.abs(spread.block(e)).max() for e in spread.find(col_edges)]
    assert np.allclose(block_spread, expected, rtol=1e-6, atol=1e-9)
    assert report.largest_spread_eV == pytest.approx(max(expected), rel=1e-6)


@pytest.mark.slow
def test_one_collinear_member_leaves_the_spread_unknown(ribbon, tmp_path):
    """As in memory (combine_spread): dH_SO's spread alone is not H's spread."""
    bundle = with_soc_correction(ensemble(False, seeds=(1,)), ensemble(True))
    report = stream_prediction(bundle, ribbon, tmp_path / "one.h5")
    assert report.largest_spread_eV is None
    assert predict_operators(bundle, ribbon)[2] is None


@pytest.mark.slow
def test_single_precision_file_is_half_the_size_and_close(ribbon, tmp_path):
    bundle = ensemble(True)
    double = stream_prediction(bundle, ribbon, tmp_path / "d.h5", precision="double")
    single = stream_prediction(bundle, ribbon, tmp_path / "s.h5")
    h_double, _ = read_streamed(tmp_path / "d.h5")
    h_single, _ = read_streamed(tmp_path / "s.h5")
    scale = np.abs(h_double.values).max()
    assert same_operator(h_single, h_double) < 1e-6 * scale
    assert (tmp_path / "s.h5").stat().st_size < 0.6 * (tmp_path / "d.h5").stat().st_size
    assert single.blocks == double.blocks


def test_bad_files_are_named(tmp_path):
    text = tmp_path / "not.h5"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not.h5"):
        read_streamed(text)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(ValueError, match="other.h5: not a streamed prediction"):
        read_streamed(tmp_path / "other.h5")
    with pytest.raises(ValueError, match="precision"):
        stream_prediction(
            ensemble(False), twisted_bilayer(2, 1), tmp_path / "x.h5", precision="half"
        )
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.slow
def test_predict_stream_command_and_named_errors(tmp_path):
    """``moireh predict --stream`` writes OUT/<name>.h5 readable by read_streamed; a
    structure the model cannot take fails with its file named and no output left."""
    from ase.build import bulk
    from click.testing import CliRunner

    from ase_moireh.cli import moireh

    good, bad = tmp_path / "tw21.extxyz", tmp_path / "copper.extxyz"
    twisted_bilayer(2, 1).write(good)
    bulk("Cu").write(bad)
    out = tmp_path / "out"
    result = CliRunner().invoke(moireh, ["predict", str(good), "-o", str(out), "--stream"])
    assert result.exit_code == 0, result.output
    h, s = read_streamed(out / "tw21.h5")
    assert h.spinful and h.natoms == 42 and s.nedges == h.nedges
    result = CliRunner().invoke(moireh, ["predict", str(bad), "-o", str(out), "--stream"])
    assert result.exit_code != 0 and "copper.extxyz" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["tw21.h5"]


def test_bands_mpi_refuses_a_relative_sigma(tmp_path):
    from click.testing import CliRunner

    from ase_moireh.cli import moireh

    path = tmp_path / "x.h5"
    path.write_text("")
    result = CliRunner().invoke(moireh, ["bands", str(path), "--mpi", "--nbands", "4"])
    assert result.exit_code != 0 and "absolute --sigma" in result.output
