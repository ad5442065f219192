"""``moireh dataset run / status / sample``: OpenMX runs that resume, restart in stages,
record why they fail, and land in the corpus losslessly. A stand-in ``openmx``
(tests/data/fake_openmx.py) replays a recorded run; one test runs the real OpenMX when
it is on PATH."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from openmx_standin import make_folder

from ase_moireh.build.generate import (
    INTERLAYER_RANGE,
    NOISE_RANGE,
    generate_sampled,
    sampled_shifted_bilayers,
    write_structure_folder,
)
from ase_moireh.cli import moireh
from ase_moireh.io.corpus import load_manifest, read_entry, save_manifest
from ase_moireh.overlap import bundled_overlap
from ase_moireh.tightbinding import TightBinding
from ase_moireh.workflows import openmx_runner
from ase_moireh.workflows.openmx_runner import RunRecord, convert_to_corpus, parse_std, run_folders
from shared_data import SHARED_OPENMX

DATA = Path(__file__).parent / "data"
PACKAGED = Path(__file__).parents[1] / "ase_moireh" / "data" / "bl1x1_soc_s00.scfout.xz"


@pytest.fixture(autouse=True)
def _fast(fast_polling):
    """Every test here polls its stand-in quickly."""


def invocations(folder: Path) -> list[str]:
    return (folder / "invocations").read_text().splitlines()


def test_converged_run_is_recorded_converted_and_skipped_next_time(tmp_path, fake_openmx, recorded):
    folder = make_folder(tmp_path / "runs", recorded)
    corpus = tmp_path / "corpus"

    def convert(f, record):
        return convert_to_corpus(f, record, corpus)

    [(_, record)] = run_folders([folder], fake_openmx, convert, progress=False)
    assert record.status == "converged" and record.stage == "target"
    # the recorded run's last SCF line (tests/data/openmx_soc_6atoms.std): step 28,
    # NormRD 4.669e-9; 92 electrons: 2 Mo x 14 + 4 Te x 16 valence
    assert record.scf_steps == 28 and record.norm_rd == pytest.approx(4.669e-9)
    assert record.electrons == record.electrons_expected == 92
    row = load_manifest(corpus)["shift1x1_000_soc"]
    assert (row.split, row.soc, row.scf_steps, row.twin) == ("train", True, 28, "shift1x1_000")
    assert row.n_atoms == 6 and row.status == "converged"
    run_folders([folder], fake_openmx, convert, progress=False)
    assert len(invocations(folder)) == 1  # converged: skipped


@pytest.mark.slow
def test_stored_entry_is_lossless_for_bands(tmp_path, fake_openmx, recorded):
    """H in one triangle and single precision, with the exact S: eigenvalues equal the
    ones OpenMX printed to 1 meV (the corpus issue's check), all printed bands."""
    folder = make_folder(tmp_path / "runs", recorded)
    [(_, record)] = run_folders([folder], fake_openmx, progress=False)
    entry = Path(convert_to_corpus(folder, record, tmp_path / "corpus"))
    stored = read_entry(entry)
    assert stored.spinful and stored.overlap is None
    assert stored.hamiltonian.hermiticity_error() < 1e-7  # on-site blocks as OpenMX wrote them
    index = recorded.hamiltonian.find(stored.hamiltonian.edges)
    assert sorted(index) == list(range(recorded.hamiltonian.nedges))
    s = bundled_overlap().operator(stored.atoms, stored.hamiltonian.edges)
    kpts = np.array([k for k, _ in stored.reference_eigenvalues])
    printed = np.array([e for _, e in stored.reference_eigenvalues])
    ours = TightBinding(stored.hamiltonian, s).eigenvalues(kpts)[:, : printed.shape[1]]
    assert len(kpts) > 20 and np.abs(ours - printed).max() < 1e-3  # every printed k-point
    sizes = sum(p.stat().st_size for p in entry.iterdir())
    assert sizes < 0.4 * PACKAGED.stat().st_size  # H alone, compact


def test_stalled_scf_gets_a_staged_restart(tmp_path, fake_openmx, recorded):
    folder = make_folder(tmp_path / "runs", recorded, scenario="stall\nconverge\nconverge")
    [(_, record)] = run_folders([folder], fake_openmx, progress=False)
    assert invocations(folder) == [
        "openmx_in.dat off",
        "openmx_gentle.dat off",
        "openmx_restart.dat on",
    ]
    gentle = (folder / "openmx_gentle.dat").read_text()
    assert "scf.ElectronicTemperature  1000.0" in gentle
    assert "scf.Init.Mixing.Weight     0.0750" in gentle  # a quarter of the 0.30 written
    assert record.status == "converged" and record.stage == "restart"
    assert record.scf_steps == 10 + 28 + 28


def test_failures_are_recorded_with_reasons_and_retried_on_request(tmp_path, fake_openmx, recorded):
    crash = make_folder(tmp_path / "runs", recorded, "a_soc", scenario="crash\nconverge")
    bad = make_folder(tmp_path / "runs", recorded, "b_soc", scenario="electrons")
    results = dict(run_folders([crash, bad], fake_openmx, progress=False))
    assert results[crash].status == "failed"
    assert "stopped (exit code 1) after 5 SCF steps" in results[crash].reason
    assert results[bad].status == "failed" and "electron count 613.0 != neutral 644.0" in (
        results[bad].reason
    )
    run_folders([crash], fake_openmx, progress=False)
    assert len(invocations(crash)) == 1  # failed folders wait for --retry-failed
    [(_, again)] = run_folders([crash], fake_openmx, retry_failed=True, progress=False)
    assert again.status == "converged" and again.attempts == 2


def test_a_killed_runner_leaves_a_folder_that_is_run_again(tmp_path, fake_openmx, recorded):
    folder = make_folder(tmp_path / "runs", recorded)
    RunRecord(status="running", stage="target", scf_steps=3).write(folder)
    (folder / "openmx_rst").mkdir()  # a stale density from the killed run
    [(_, record)] = run_folders([folder], fake_openmx, progress=False)
    assert record.status == "converged" and record.scf_steps == 28


def test_soc_run_starts_from_its_converged_collinear_twin(tmp_path, fake_openmx, recorded):
    runs = tmp_path / "runs"
    collinear = make_folder(runs, recorded, "shift1x1_000")
    soc = make_folder(runs, recorded, "shift1x1_000_soc")
    meta = json.loads((soc / "meta.json").read_text())
    assert meta["soc"] and meta["twin"] == "shift1x1_000"
    run_folders([collinear, soc], fake_openmx, progress=False)
    assert invocations(soc) == ["openmx_target.dat c2n"]
    assert RunRecord.read(soc).seeded_from == "shift1x1_000"
    assert "scf.restart                c2n" in (soc / "openmx_target.dat").read_text()
    lone = make_folder(tmp_path / "other", recorded, "shift1x1_001_soc")
    run_folders([lone], fake_openmx, progress=False)  # no converged twin: from scratch
    assert invocations(lone) == ["openmx_in.dat off"]


def test_parse_std_reads_steps_normrd_and_electrons():
    state = parse_std((DATA / "openmx_soc_6atoms.std").read_text())
    assert (state.steps, state.electrons, state.finished) == (28, 92.0, True)
    assert parse_std("").steps == 0 and parse_std("").norm_rd is None


def test_run_and_status_commands(tmp_path, fake_openmx, recorded):
    runs = tmp_path / "runs"
    make_folder(runs, recorded, "a_soc")
    make_folder(runs, recorded, "b_soc", scenario="crash")
    wrapper = tmp_path / "openmx-wrapper"
    wrapper.write_text(f'#!/bin/sh\nexec {" ".join(fake_openmx)} "$@"\n')
    wrapper.chmod(0o755)
    cli = CliRunner()
    result = cli.invoke(
        moireh,
        [
            "dataset",
            "run",
            str(runs),
            "--np",
            "1",
            "--openmx",
            str(wrapper),
            "--corpus",
            str(tmp_path / "corpus"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 1, result.output  # one failure: non-zero exit
    assert "1 converged, 1 not" in result.output and "exit code 1" in result.output
    status = cli.invoke(moireh, ["dataset", "status", str(runs)])
    assert status.exit_code == 0
    assert "shifted SOC: 1 converged, 1 failed" in status.output
    missing = cli.invoke(moireh, ["dataset", "run", str(runs), "--openmx", "no-such-openmx"])
    assert missing.exit_code == 1 and "no OpenMX executable 'no-such-openmx'" in missing.output


def test_status_of_a_corpus_checks_every_stored_entry(tmp_path, fake_openmx, recorded):
    """A corpus folder is tabled from its manifest (its entries hold no run.json); an
    entry whose NormRD or electron count is off, or whose H is gone, fails the status."""
    folder = make_folder(tmp_path / "runs", recorded, "a_soc")
    [(_, record)] = run_folders([folder], fake_openmx, progress=False)
    corpus = tmp_path / "corpus"
    convert_to_corpus(folder, record, corpus)
    cli = CliRunner()
    good = cli.invoke(moireh, ["dataset", "status", str(corpus)])
    assert good.exit_code == 0, good.output
    assert "a_soc" in good.output and "converged" in good.output
    assert "shifted SOC: 1 converged" in good.output and "pending" not in good.output
    manifest = load_manifest(corpus)
    manifest["a_soc"].norm_rd, manifest["a_soc"].electrons = 2e-8, 643.0
    save_manifest(corpus, manifest)
    bad = cli.invoke(moireh, ["dataset", "status", str(corpus)])
    assert bad.exit_code == 1
    assert "NormRD 2e-08 not below 1e-08" in bad.output
    assert "electrons 643.0 != neutral" in bad.output
    manifest["a_soc"].norm_rd, manifest["a_soc"].electrons = 1e-9, record.electrons_expected
    save_manifest(corpus, manifest)
    (corpus / "a_soc" / "hamiltonian.h5").unlink()
    gone = cli.invoke(moireh, ["dataset", "status", str(corpus)])
    assert gone.exit_code == 1 and f"{corpus / 'a_soc'}: no hamiltonian.h5" in gone.output


def test_sample_command_writes_twins_with_fixed_splits(tmp_path):
    out = tmp_path / "sampled"
    result = CliRunner().invoke(
        moireh,
        [
            "dataset",
            "sample",
            "shifted",
            "--supercell",
            "2",
            "--count",
            "2",
            "--first",
            "8",
            "--spin",
            "both",
            "-o",
            str(out),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert names == ["shift2x2_008", "shift2x2_008_soc", "shift2x2_009", "shift2x2_009_soc"]
    meta = json.loads((out / "shift2x2_009_soc" / "meta.json").read_text())
    assert (meta["split"], meta["twin"], meta["soc"]) == ("holdout", "shift2x2_009", True)
    low, high = NOISE_RANGE
    assert low <= meta["noise_sigma"] <= high
    assert abs(meta["interlayer_change"]) <= INTERLAYER_RANGE
    import ase.io

    written = ase.io.read(out / "shift2x2_009" / "structure.extxyz")
    again = sampled_shifted_bilayers(2, 1, first=9)[0]  # reproducible from its seed alone
    assert np.abs(written.positions - again.positions).max() < 1e-6
    assert (
        "scf.SpinOrbit.Coupling     on" in (out / "shift2x2_009_soc" / "openmx_in.dat").read_text()
    )
    # one spin only: no twin to name (a SOC run would look for it to start from)
    (lone,) = generate_sampled(
        "shifted", tmp_path / "lone", "collinear", progress=False, n=1, count=1, seed=10
    )
    assert json.loads((lone / "meta.json").read_text())["twin"] is None


def test_sample_split_override(tmp_path):
    """--split holdout puts a structure the default rule calls train (index 0) into
    holdout, its SOC twin too; an unknown split is refused before anything is written."""
    args = ["dataset", "sample", "shifted", "--supercell", "1", "--spin", "both"]
    out = tmp_path / "held"
    result = CliRunner().invoke(
        moireh, [*args, "--split", "holdout", "-o", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    for name in ("shift1x1_000", "shift1x1_000_soc"):
        assert json.loads((out / name / "meta.json").read_text())["split"] == "holdout"
    bad = CliRunner().invoke(moireh, [*args, "--split", "tests", "-o", str(tmp_path / "no")])
    assert bad.exit_code == 2 and "'tests' is not one of" in bad.output
    assert not (tmp_path / "no").exists()
    with pytest.raises(ValueError, match="split must be one of"):
        generate_sampled("shifted", tmp_path / "no", split="tests", n=1, count=1, seed=10)
    assert not (tmp_path / "no").exists()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("openmx") is None, reason="no real openmx on PATH")
@pytest.mark.skipif(
    not (SHARED_OPENMX / "DFT_DATA").is_dir(), reason="no OpenMX DFT_DATA in ../shared"
)
def test_real_openmx_run_lands_in_the_corpus(tmp_path):
    """A 6-atom collinear bilayer at a coarse k-grid and cutoff: converged, stored, and
    its stored H reproduces the eigenvalues OpenMX printed."""
    atoms = sampled_shifted_bilayers(1, 1)[0]
    folder = write_structure_folder(
        tmp_path / "runs" / "real",
        atoms,
        False,
        {"kind": "shifted", "sample": 0},
        kgrid=(3, 3, 1),
        ecut=120.0,
        data_path=str(SHARED_OPENMX / "DFT_DATA"),
    )
    corpus = tmp_path / "corpus"
    result = CliRunner().invoke(
        moireh,
        ["dataset", "run", str(folder), "--np", "1", "--corpus", str(corpus), "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    entry = read_entry(corpus / "real")
    s = bundled_overlap().operator(entry.atoms, entry.hamiltonian.edges)
    kpts = np.array([k for k, _ in entry.reference_eigenvalues])
    printed = np.array([e for _, e in entry.reference_eigenvalues])
    ours = TightBinding(entry.hamiltonian, s).eigenvalues(kpts)[:, : printed.shape[1]]
    assert np.abs(ours - printed).max() < 1e-3


@pytest.mark.parametrize(
    ("norm_rd", "steps", "met"),
    [
        (4.7e-9, 28, True),  # below the criterion
        (1.0042e-8, 33, True),  # OpenMX's own stop (campaign run shift2x2_002)
        (1.0042e-8, 200, False),  # ran into scf.maxIter: OpenMX's test never passed
        (1.2e-7, 33, False),  # above OpenMX's 10 x criterion
        (None, 0, False),
    ],
)
def test_scf_met_follows_openmx_own_test(norm_rd, steps, met):
    state = openmx_runner.ScfState(steps=steps, norm_rd=norm_rd)
    assert openmx_runner._scf_met(state, 1e-8, 200) is met
