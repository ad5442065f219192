"""moireh-convert end to end, the converter plugin group and the ASE IO format."""

import gzip
import json
import lzma
import struct
import subprocess
import sys

import ase.io
import numpy as np
import pytest
from click.testing import CliRunner

from ase_moireh.cli import moireh, moireh_convert
from ase_moireh.io.dataset import DFTIO_INFO_KEYS, read_dftio
from ase_moireh_converters import available_converters
from shared_data import OPENMX_CASES, SHARED_OPENMX, available, converted, require, scfout_path


@pytest.fixture(scope="module")
def raw_scfout() -> bytes:
    return lzma.open(scfout_path("bl1x1_nosoc_s00")).read()


@pytest.fixture()
def inputs(tmp_path, raw_scfout):
    """One good run per folder (plain, .xz, .gz), plus four kinds of bad file."""
    folder = tmp_path / "in"
    for name, data in {
        "good_plain/run.scfout": raw_scfout,
        "good_xz/run.scfout.xz": lzma.compress(raw_scfout, preset=0),
        "good_gz/run.scfout.gz": gzip.compress(raw_scfout, compresslevel=1),
        "empty/run.scfout": b"",
        "text/run.scfout": b"this is an OpenMX input file, not its output\n" * 50,
        "truncated/run.scfout": raw_scfout[: len(raw_scfout) // 3],
        "version/run.scfout": raw_scfout[:4] + struct.pack("<i", 2 * 4) + raw_scfout[8:],
    }.items():
        (folder / name).parent.mkdir(parents=True)
        (folder / name).write_bytes(data)
    return folder


@pytest.mark.slow
def test_plugin_group_and_ase_format_are_registered():
    assert "openmx" in available_converters()
    atoms = ase.io.read(scfout_path("tw2179_nosoc"))  # format found from .scfout(.xz)
    assert atoms.get_chemical_formula() == "Mo14Te28"
    assert atoms.info["fermi_level"] == pytest.approx(converted("tw2179_nosoc").fermi_level)


def test_convert_good_and_bad_files_together(inputs, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        moireh, ["convert", "openmx", str(inputs), "-o", str(out), "--no-progress", "-j", "2"]
    )
    assert result.exit_code == 1
    assert "converted 3, skipped 0, failed 4" in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 4
    expected = {
        "empty": "not an OpenMX .scfout: 0 bytes",
        "text": "format version",
        "truncated": "truncated",
        "version": "not an OpenMX 3.9 .scfout: header field 8 gives format version 2",
    }
    for name, problem in expected.items():
        assert any(f"/{name}/run.scfout" in e and problem in e for e in errors), name
    assert sorted(p.name for p in out.iterdir()) == ["good_gz", "good_plain", "good_xz"]
    a = read_dftio(out / "good_plain")
    for other in ("good_xz", "good_gz"):
        b = read_dftio(out / other)
        assert np.array_equal(a.hamiltonian.values, b.hamiltonian.values)


def test_skip_existing_and_deeph_format(tmp_path):
    out = tmp_path / "out"
    args = ["openmx", str(scfout_path("bl1x1_nosoc_s22")), "-o", str(out), "--no-progress"]
    runner = CliRunner()
    first = runner.invoke(moireh_convert, [*args, "--format", "deeph"])
    assert first.exit_code == 0, first.output
    # the generic file name openmx.scfout.xz: named after its run folder
    assert (out / "bl1x1_nosoc_s22" / "element.dat").exists()
    again = runner.invoke(moireh_convert, [*args, "--skip-existing"])
    assert "converted 0, skipped 1" in again.output


def test_unknown_converter_and_no_inputs_fail_cleanly(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(moireh_convert, ["vasp", str(tmp_path), "-o", str(tmp_path / "o")])
    assert bad.exit_code != 0 and "no converter named 'vasp'" in bad.output
    empty = runner.invoke(moireh_convert, ["openmx", str(tmp_path), "-o", str(tmp_path / "o")])
    assert empty.exit_code != 0 and "no input files" in empty.output


def test_console_script_exit_code_and_single_line_error(tmp_path):
    bad = tmp_path / "broken.scfout"
    bad.write_bytes(b"\x00" * 10)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from ase_moireh.cli import moireh_convert; moireh_convert()",
            "openmx",
            str(bad),
            "-o",
            str(tmp_path / "out"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {bad}: not an OpenMX .scfout: 10 bytes, fewer than its 28-byte header"
    ]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.fixture(scope="module")
def every_run_converted(tmp_path_factory):
    """Every run at hand (all 17 with ../shared, else the in-repo five) through one
    ``moireh-convert`` call on two workers: (output folder, the command's result)."""
    sources = [str(scfout_path(case)) for case in OPENMX_CASES if available(case)]
    out = tmp_path_factory.mktemp("converted")
    args = ["openmx", *sources, "-o", str(out), "-j", "2", "--no-progress"]
    return out, CliRunner().invoke(moireh_convert, args)


@pytest.mark.slow
def test_all_shared_runs_convert_in_parallel(every_run_converted):
    out, result = every_run_converted
    assert result.exit_code == 0, result.output
    at_hand = sorted(case for case in OPENMX_CASES if available(case))
    assert sorted(p.name for p in out.iterdir()) == at_hand
    assert f"converted {len(at_hand)}, skipped 0, failed 0" in result.output
    if SHARED_OPENMX.is_dir():  # every shared run is one of OPENMX_CASES
        assert sorted(p.parent.name for p in SHARED_OPENMX.glob("*/openmx.scfout.xz")) == at_hand


@pytest.mark.slow
@pytest.mark.parametrize("case", OPENMX_CASES)
def test_each_converted_run_holds_the_runs_h_and_s(case, every_run_converted):
    """Each run's folder written by moireh-convert reads back to the reader's H and S,
    block for block and bit for bit, with its structure and Fermi level; info.json
    holds dftio's keys only and overlaps.h5 is there (what DeePTB asks)."""
    require(case)
    out, result = every_run_converted
    assert result.exit_code == 0, result.output
    folder = out / case
    run, back = converted(case), read_dftio(folder)
    for a, b in ((run.hamiltonian, back.hamiltonian), (run.overlap, back.overlap)):
        found = b.find(a.edges)
        assert b.nedges == a.nedges and np.all(found >= 0) and b.spinful == a.spinful
        for e, f in enumerate(found):
            assert np.array_equal(a.block(e), b.block(int(f)))
    assert np.array_equal(back.atoms.numbers, run.atoms.numbers)
    assert np.allclose(back.atoms.positions, run.atoms.positions)
    assert np.allclose(back.atoms.cell, run.atoms.cell)
    assert back.fermi_level == run.fermi_level
    assert set(json.loads((folder / "info.json").read_text())) <= set(DFTIO_INFO_KEYS)
    assert (folder / "overlaps.h5").is_file()
