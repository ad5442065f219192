"""moireh-convert end to end, the converter plugin group and the ASE IO format."""

import gzip
import lzma
import struct
import subprocess
import sys

import ase.io
import numpy as np
import pytest
from click.testing import CliRunner

from ase_moireh.cli import moireh, moireh_convert
from ase_moireh.io.dataset import read_dftio
from ase_moireh_converters import available_converters
from shared_data import OPENMX, converted, scfout_path


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


@pytest.mark.slow
def test_all_shared_runs_convert_in_parallel(tmp_path):
    result = CliRunner().invoke(
        moireh_convert, ["openmx", str(OPENMX), "-o", str(tmp_path), "-j", "2", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert len(list(tmp_path.iterdir())) == len(list(OPENMX.glob("*/openmx.scfout.xz")))
