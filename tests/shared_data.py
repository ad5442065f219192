"""Real DFT data for the tests, in two tiers.

* In the repo (``tests/data/openmx``): five 1x1 bilayer runs (four collinear, one SOC
  whose .scfout.xz is the package's bundled one), so a clone alone runs the tests that
  compare against OpenMX.
* ``../shared/data`` beside the checkout (or ``$MOIREH_SHARED/data``): all the shared
  runs (17, twisted cells included), their PAO/VPS files and the dftio Si64 peer dataset.
  When it is there it is used for everything; CI requires it (MOIREH_REQUIRE_SHARED=1).

A test that reads a run which is not at hand skips, naming the run and where it lives.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MOIREH_SHARED", ROOT.parent / "shared")) / "data"
SHARED_OPENMX = SHARED / "openmx"
REPO_OPENMX = ROOT / "tests" / "data" / "openmx"
#: the shared runs when present, else the in-repo subset
OPENMX = SHARED_OPENMX if SHARED_OPENMX.is_dir() else REPO_OPENMX
SI64 = SHARED / "dftio-si64" / "Si64.0"
PACKAGED = {"bl1x1_soc_s00": ROOT / "ase_moireh" / "data" / "bl1x1_soc_s00.scfout.xz"}

#: unperturbed, exactly symmetric cells (shared data README)
SYMMETRIC_CASES = ["bl1x1_exact_nosoc", "bl1x1_exact_soc", "tw2179_nosoc"]

needs_shared = pytest.mark.skipif(
    not SHARED_OPENMX.is_dir(), reason=f"needs the full shared data at {SHARED_OPENMX}"
)


def _scfout(case: str) -> Path | None:
    path = OPENMX / case / "openmx.scfout.xz"
    if path.exists():
        return path
    packaged = PACKAGED.get(case)
    return packaged if packaged is not None and (OPENMX / case).is_dir() else None


def available(case: str) -> bool:
    return _scfout(case) is not None


#: every shared run (../shared/data/openmx/README.md), whether at hand or not: a test
#: parametrised over them lists each case always, and a case not at hand skips naming
#: its run (:func:`require`) instead of vanishing from the report
OPENMX_CASES = [
    "bl1x1_exact_nosoc",
    "bl1x1_exact_soc",
    *(f"bl1x1_nosoc_s{s}" for s in ("00", "02", "04", "20", "22", "24", "40", "42", "44")),
    *(f"bl1x1_soc_s{s}" for s in ("00", "20", "22", "44")),
    "tw2179_nosoc",
    "tw2179_soc",
]


def require(*cases: str) -> None:
    """Skip the calling test unless every case is at hand."""
    missing = [c for c in cases if not available(c)]
    if missing:
        pytest.skip(f"run(s) {', '.join(missing)} live in ../shared/data/openmx, not here")


def case_dir(case: str) -> Path:
    """Folder of a run (structure.extxyz, openmx_in.dat, ...); skips if not at hand."""
    require(case)
    return OPENMX / case


def scfout_path(case: str) -> Path:
    require(case)
    return _scfout(case)


@functools.cache
def _read(case: str):
    from ase_moireh.io.openmx import read_scfout

    return read_scfout(scfout_path(case))


def converted(case: str):
    """The converted run (read once per test session); skips if not at hand."""
    require(case)
    return _read(case)


# ----------------------------------------------------------- OpenMX term references of H0

#: OpenMX's DATA.PATH of the shared runs (PAO/, VPS/)
DFT_DATA = OPENMX / "DFT_DATA"
H0_REFERENCES = ROOT / "tests" / "data" / "h0"


def h0_reference(name: str, flag: str | None = None) -> dict:
    """Arrays of ``tests/data/h0/NAME`` (blocks OpenMX wrote, see each test's docstring);
    ``flag``: the init.c term flag its ``info`` must name as the build's source."""
    import json

    import numpy as np

    with np.load(H0_REFERENCES / name, allow_pickle=False) as data:
        ref = {key: data[key] for key in data.files}
    if flag is not None:
        assert flag in json.loads(str(ref["info"]))["source"]
    return ref


def reference_atoms(ref: dict, prefix: str = ""):
    """The structure an H0 reference was computed for (``prefix`` picks one of several)."""
    from ase import Atoms

    return Atoms(
        numbers=ref[f"{prefix}numbers"],
        positions=ref[f"{prefix}positions"],
        cell=ref[f"{prefix}cell"],
        pbc=True,
    )
