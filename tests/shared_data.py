"""Shared test fixtures: the real OpenMX runs and the dftio peer dataset in ../shared."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OPENMX = SHARED / "openmx"
SI64 = SHARED / "dftio-si64" / "Si64.0"

OPENMX_CASES = sorted(p.parent.name for p in OPENMX.glob("*/openmx.scfout.xz"))
#: unperturbed, exactly symmetric cells (shared data README)
SYMMETRIC_CASES = ["bl1x1_exact_nosoc", "bl1x1_exact_soc", "tw2179_nosoc"]

needs_shared = pytest.mark.skipif(
    not OPENMX.is_dir(), reason=f"shared OpenMX data not found at {OPENMX}"
)


def scfout_path(case: str) -> Path:
    return OPENMX / case / "openmx.scfout.xz"


@functools.cache
def converted(case: str):
    """The converted run (read once per test session)."""
    from ase_moireh.io.openmx import read_scfout

    return read_scfout(scfout_path(case))
