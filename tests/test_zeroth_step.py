"""``moireh dataset h0``: OpenMX's zeroth step of corpus entries, stored beside their H.

The stand-in ``openmx`` (tests/data/fake_openmx.py) stops after ``scf.maxIter`` steps as
OpenMX does, and writes the recorded run's .scfout."""

import json
from pathlib import Path

import ase.io
import pytest
from click.testing import CliRunner
from openmx_standin import make_folder

from ase_moireh.cli import moireh
from ase_moireh.io.corpus import H0_OPENMX, load_manifest, read_hamiltonian
from ase_moireh.workflows.openmx_runner import ScfState, convert_to_corpus, keyword, run_folders
from ase_moireh.workflows.zeroth_step import _check_zeroth, zeroth_step_input, zeroth_steps


@pytest.fixture
def corpus(tmp_path, fake_openmx, recorded) -> Path:
    """A one-entry corpus made by the runner from the recorded 6-atom SOC run."""
    folder = make_folder(tmp_path / "runs", recorded)
    out = tmp_path / "corpus"
    run_folders([folder], fake_openmx, lambda f, r: convert_to_corpus(f, r, out), progress=False)
    return out


@pytest.fixture(autouse=True)
def _fast(fast_polling):
    """Every test here polls its stand-in quickly."""


def test_zeroth_step_input_is_one_fresh_step_with_absolute_data_path(tmp_path):
    text = "DATA.PATH ../DFT_DATA\nscf.maxIter 200\nscf.restart c2n\nHS.fileout off\n"
    out = zeroth_step_input(text, tmp_path / "DFT_DATA")
    assert keyword(out, "scf.maxIter") == "1"
    assert keyword(out, "scf.restart") == "off"
    assert keyword(out, "HS.fileout") == "on"
    assert "scf.Kgrid                  1 1 1" in out
    assert keyword(out, "DATA.PATH") == str((tmp_path / "DFT_DATA").resolve())


def test_h0_of_an_entry_is_stored_recorded_and_skipped_next_time(
    tmp_path,
    corpus,
    fake_openmx,
    recorded,
):
    work = tmp_path / "work"
    assert zeroth_steps(corpus, work, fake_openmx, tmp_path, progress=False) == []
    stored = corpus / "shift1x1_000_soc" / H0_OPENMX
    h0 = read_hamiltonian(stored).hamiltonian
    # the stand-in wrote the recorded run's H: every block, in single precision
    assert h0.nedges == recorded.hamiltonian.nedges
    assert max(h0.mae_by_pair(recorded.hamiltonian).values()) < 1e-6
    assert not (work / "shift1x1_000_soc").exists()  # the large .scfout is gone
    seconds = load_manifest(corpus)["shift1x1_000_soc"].extra["h0_openmx_seconds"]
    assert seconds > 0
    before = stored.stat().st_mtime_ns
    assert zeroth_steps(corpus, work, fake_openmx, tmp_path, progress=False) == []
    assert stored.stat().st_mtime_ns == before


def test_h0_command_runs_one_step(tmp_path, corpus, fake_openmx):
    wrapper = tmp_path / "bin" / "openmx-wrapper"
    wrapper.write_text(f'#!/bin/sh\nexec {" ".join(fake_openmx)} "$@"\n')
    wrapper.chmod(0o755)
    work = tmp_path / "work"
    args = ["dataset", "h0", str(corpus), "--data-path", str(tmp_path), "--work", str(work)]
    args += ["--np", "1", "--openmx", str(wrapper), "--no-progress"]
    result = CliRunner().invoke(moireh, args)
    assert result.exit_code == 0, result.output
    assert (corpus / "shift1x1_000_soc" / H0_OPENMX).is_file()


def test_h0_of_another_structure_is_refused_and_nothing_stored(
    tmp_path,
    corpus,
    fake_openmx,
):
    entry = corpus / "shift1x1_000_soc"
    atoms = ase.io.read(entry / "structure.extxyz")
    atoms.positions[0, 2] += 0.1
    ase.io.write(entry / "structure.extxyz", atoms)
    failed = zeroth_steps(corpus, tmp_path / "work", fake_openmx, tmp_path, progress=False)
    assert len(failed) == 1 and "another structure" in failed[0][1]
    assert not (entry / H0_OPENMX).exists()
    assert "h0_openmx_seconds" not in load_manifest(corpus)["shift1x1_000_soc"].extra


def test_unknown_entry_names_are_refused(tmp_path, corpus, fake_openmx):
    with pytest.raises(ValueError, match="no manifest entries nope"):
        zeroth_steps(corpus, tmp_path, fake_openmx, tmp_path, ["nope"], progress=False)


@pytest.mark.parametrize(
    ("code", "state", "reason"),
    [
        (0, ScfState(steps=1, norm_rd=1.0, finished=True), ""),
        (1, ScfState(steps=1, norm_rd=1.0, finished=False), "OpenMX stopped"),
        (0, ScfState(steps=3, norm_rd=0.1, finished=True), "3 SCF steps"),
        (
            0,
            ScfState(steps=1, norm_rd=1.0, electrons=613, electrons_expected=644, finished=True),
            "electron count",
        ),
    ],
)
def test_zeroth_step_verdict(code, state, reason):
    if not reason:
        _check_zeroth(code, state, Path("f"))
        return
    with pytest.raises(ValueError, match=reason):
        _check_zeroth(code, state, Path("f"))


def test_manifest_stays_valid_json(corpus):
    json.loads((corpus / "manifest.json").read_text())


def test_with_keywords_replaces_every_value_word_of_a_line_up_to_a_comment():
    from ase_moireh.workflows.openmx_runner import with_keywords

    text = "scf.Kgrid   5 5 1\nscf.maxIter 200  # comment\n"
    out = with_keywords(text, {"scf.Kgrid": "1 1 1", "scf.maxIter": "1", "HS.fileout": "on"})
    assert out == "scf.Kgrid   1 1 1\nscf.maxIter 1  # comment\nHS.fileout                 on\n"
