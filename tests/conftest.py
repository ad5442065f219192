"""Test session set-up: where the shared data must exist, say so loudly."""

import os

import pytest

from shared_data import SHARED_OPENMX, SI64

#: fixtures of the stand-in ``openmx`` (runner and zeroth-step tests)
pytest_plugins = ["openmx_standin"]


def pytest_sessionstart(session):
    """With MOIREH_REQUIRE_SHARED=1 (CI sets it) a missing ../shared/data stops the run
    instead of silently skipping the tests that compare against real DFT data."""
    if os.environ.get("MOIREH_REQUIRE_SHARED") == "1":
        missing = [str(p) for p in (SHARED_OPENMX, SI64) if not p.exists()]
        if missing:
            pytest.exit(f"MOIREH_REQUIRE_SHARED=1 but {', '.join(missing)} is missing", 3)
