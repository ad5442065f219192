"""The OpenMX converter plugin: ``moireh-convert openmx RUNS -o OUT``.

The reader itself is :mod:`ase_moireh.io.openmx`; this module only registers it
(entry point ``openmx`` of the ``ase_moireh.converters`` group).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ase_moireh.io.openmx import read_scfout
from ase_moireh.tightbinding import ElectronicStructure

#: System.Name values that name the code, not the structure (our runner and the shared runs)
GENERIC_SYSTEM_NAMES = frozenset({"openmx"})


class OpenMXConverter:
    """Converter plugin for OpenMX 3.9 .scfout files (optionally .xz / .gz compressed)."""

    name = "openmx"
    patterns = ("*.scfout", "*.scfout.xz", "*.scfout.gz")

    @staticmethod
    def read(path: str | os.PathLike) -> ElectronicStructure:
        return read_scfout(path)

    @staticmethod
    def structure_name(path: Path) -> str:
        """File name without the .scfout[.xz|.gz] suffixes (OpenMX's System.Name), or the
        run's folder name when that is the generic default every run shares
        (``openmx.scfout``: two runs would otherwise land in one output folder)."""
        stem = re.sub(r"\.scfout(\.xz|\.gz)?$", "", path.name)
        return path.resolve().parent.name if stem in GENERIC_SYSTEM_NAMES else stem
