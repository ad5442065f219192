"""The converter plugin interface and its discovery through entry points.

A converter is any object with ``name``, ``patterns`` (glob patterns of the files it
reads), ``read(path) -> ElectronicStructure`` and ``structure_name(path) -> str``. Register
it in your package's ``pyproject.toml``::

    [project.entry-points."ase_moireh.converters"]
    mycode = "my_package.my_module:MyConverter"

``moireh-convert mycode FILES... -o OUT`` then finds it. Raise :class:`ConversionError`
with a one-line message for bad input; anything else is treated as a bug.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol

from ase_moireh.tightbinding import ElectronicStructure

GROUP = "ase_moireh.converters"


class ConversionError(ValueError):
    """Bad input for a converter: the message says what is wrong with which file."""


class Converter(Protocol):
    name: str
    patterns: tuple[str, ...]

    def read(self, path: str | os.PathLike) -> ElectronicStructure: ...

    def structure_name(self, path: Path) -> str: ...


def converter_names() -> list[str]:
    """Names of the installed converters, without importing them (for help texts)."""
    return sorted(ep.name for ep in entry_points(group=GROUP))


def available_converters() -> dict[str, Converter]:
    """Every converter registered under the ``ase_moireh.converters`` entry-point group."""
    return {ep.name: ep.load() for ep in entry_points(group=GROUP)}


def get_converter(name: str) -> Converter:
    found = available_converters()
    if name not in found:
        raise ConversionError(
            f"no converter named {name!r}; installed: {', '.join(sorted(found)) or 'none'}"
        )
    return found[name]
