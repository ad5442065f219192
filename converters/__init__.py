"""Converter plugins of ase-moireh (import name ``ase_moireh_converters``).

Each DFT code gets one module; :mod:`.base` explains how to add one through the
``ase_moireh.converters`` entry-point group.
"""

from ase_moireh.io.plugins import ConversionError, available_converters, get_converter

__all__ = ["ConversionError", "available_converters", "get_converter"]
