"""A stand-in ``openmx`` for the runner tests: fixtures and a run folder.

The stand-in (tests/data/fake_openmx.py) replays a recorded 6-atom SOC run; tests import
its fixtures through ``pytest_plugins`` in conftest.py."""

import shutil
import sys
from pathlib import Path

import pytest

from ase_moireh.build.generate import write_structure_folder
from ase_moireh.io.openmx import read_scfout
from ase_moireh.workflows import openmx_runner

DATA = Path(__file__).parent / "data"
PACKAGED = Path(__file__).parents[1] / "ase_moireh" / "data" / "bl1x1_soc_s00.scfout.xz"


@pytest.fixture
def fast_polling(monkeypatch):
    monkeypatch.setattr(openmx_runner, "POLL_SECONDS", 0.01)


@pytest.fixture
def fake_openmx(tmp_path) -> list[str]:
    script = tmp_path / "bin" / "openmx"
    script.parent.mkdir()
    shutil.copy(DATA / "fake_openmx.py", script)
    script.write_text(
        script.read_text().replace(
            "HERE = Path(__file__).resolve().parent", f"HERE = Path({str(DATA)!r})"
        )
    )
    script.chmod(0o755)
    return [sys.executable, str(script)]


@pytest.fixture(scope="module")
def recorded():
    """The recorded run (the packaged 6-atom SOC bilayer)."""
    return read_scfout(PACKAGED)


def make_folder(root: Path, recorded, name="shift1x1_000_soc", scenario: str = "") -> Path:
    atoms = recorded.atoms.copy()
    meta = {
        "kind": "shifted",
        "sample": 0,
        "split": "train",
        "twin": "shift1x1_000",
        "rng_entropy": [10, 1, 0],
        "shift": [0.0, 0.0],
        "noise_sigma": 0.03,
    }
    folder = write_structure_folder(root / name, atoms, True, meta, kgrid=(9, 9, 1))
    if scenario:
        (folder / "scenario").write_text(scenario)
    return folder
