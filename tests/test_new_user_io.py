"""What a new user meets at the file boundary: no silent overwrite, clear reader
messages, the installed converters named, ASE's format table right."""

import lzma
import shutil
import subprocess
from pathlib import Path

import ase.io
import pytest
from click.testing import CliRunner

from ase_moireh.cli import moireh_convert
from ase_moireh.data import demo_scfout_path
from ase_moireh.io.openmx import ScfoutError, read_scfout


@pytest.fixture
def two_runs(tmp_path) -> list[Path]:
    """Two OpenMX run folders whose files share OpenMX's generic name."""
    runs = []
    for name in ("run_a", "run_b"):
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        shutil.copy(demo_scfout_path(), folder / "openmx.scfout.xz")
        runs.append(folder)
    return runs


def convert(*args):
    return CliRunner().invoke(moireh_convert, ["openmx", *map(str, args), "--no-progress"])


def test_generic_run_names_become_their_folder_names(two_runs, tmp_path):
    out = tmp_path / "out"
    for run in two_runs:  # one at a time, into the same -o: the report's case
        result = convert(run, "-o", out)
        assert result.exit_code == 0, result.output
        assert f"wrote {out / run.name} (from {run / 'openmx.scfout.xz'})" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["run_a", "run_b"]


def test_existing_output_is_never_replaced_silently(two_runs, tmp_path):
    out = tmp_path / "out"
    assert convert(two_runs[0], "-o", out).exit_code == 0
    marker = out / "run_a" / "mine.txt"
    marker.write_text("a user's file")
    result = convert(two_runs[0], "-o", out)
    assert result.exit_code == 1
    assert f"{out / 'run_a'} exists already; pass --overwrite" in result.output
    assert marker.exists()  # untouched
    assert convert(two_runs[0], "-o", out, "--skip-existing").exit_code == 0
    assert marker.exists()
    result = convert(two_runs[0], "-o", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert not marker.exists() and (out / "run_a" / "hamiltonians.h5").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left


def test_help_lists_the_installed_converters():
    result = CliRunner().invoke(moireh_convert, ["--help"])
    assert "Installed converters (CODE): openmx" in " ".join(result.output.split())


def test_truncated_xz_through_ase_io_names_the_file(tmp_path):
    raw = demo_scfout_path().read_bytes()
    cut = tmp_path / "cut.scfout.xz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ScfoutError, match=rf"{cut}: truncated or corrupt compressed file"):
        ase.io.read(cut)


def test_truncated_gz_names_the_file(tmp_path):
    import gzip

    data = gzip.compress(lzma.decompress(demo_scfout_path().read_bytes()))
    cut = tmp_path / "cut.scfout.gz"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(ScfoutError, match=rf"{cut}: truncated or corrupt compressed file"):
        read_scfout(cut)


def test_junk_is_not_called_truncated(tmp_path):
    junk = tmp_path / "junk.scfout"
    junk.write_bytes(b"12345678")
    with pytest.raises(ScfoutError, match=rf"{junk}: not an OpenMX .scfout: 8 bytes"):
        read_scfout(junk)
    junk.write_bytes(b"x" * 4096)
    with pytest.raises(ScfoutError, match="not an OpenMX 3.9 .scfout"):
        read_scfout(junk)


def test_a_real_file_cut_short_is_truncated(tmp_path):
    raw = lzma.decompress(demo_scfout_path().read_bytes())
    cut = tmp_path / "cut.scfout"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ScfoutError, match=rf"{cut}: truncated: .* needs \d+ bytes"):
        read_scfout(cut)


def test_ase_lists_the_extension_as_a_word():
    ase = Path(shutil.which("ase") or Path(__import__("sys").executable).parent / "ase")
    table = subprocess.run([str(ase), "info", "--formats"], capture_output=True, text=True)
    line = next(r for r in table.stdout.splitlines() if "openmx-scfout" in r)
    assert "ext=scfout]" in line, line
