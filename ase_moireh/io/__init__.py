"""Every file format, read and written in one place: OpenMX output (``.scfout``), input
(``openmx_in.dat``), ``.pao`` and ``.vps`` files (Hartree and Bohr only here), dftio and
DeepH datasets, the compact corpus, streamed predictions (and their pencil, a window of
atoms at a time), and the converter protocol of the plugins. Torch-free."""

from ase_moireh.io.corpus import (
    CorpusError,
    ManifestEntry,
    load_manifest,
    read_entry,
    save_manifest,
    write_entry,
)
from ase_moireh.io.dataset import DatasetError, read_dftio, read_structure, write_deeph, write_dftio
from ase_moireh.io.openmx import ScfoutError, read_scfout
from ase_moireh.io.openmx_input import (
    DEFAULT_SPECIES,
    default_kgrid,
    openmx_input_text,
    read_openmx_input,
    write_openmx_input,
)
from ase_moireh.io.pao import PAOError, RadialFunction, find_pao, read_pao
from ase_moireh.io.pencil import local_rows, rows_per_atom, upper_pencil
from ase_moireh.io.plugins import (
    ConversionError,
    Converter,
    available_converters,
    converter_names,
    get_converter,
)
from ase_moireh.io.streamed import read_streamed
from ase_moireh.io.vps import VPSError, VPSFile, find_vps, read_vps

__all__ = [
    "DEFAULT_SPECIES",
    "ConversionError",
    "Converter",
    "CorpusError",
    "DatasetError",
    "ManifestEntry",
    "PAOError",
    "RadialFunction",
    "ScfoutError",
    "VPSError",
    "VPSFile",
    "available_converters",
    "converter_names",
    "default_kgrid",
    "find_pao",
    "find_vps",
    "get_converter",
    "load_manifest",
    "local_rows",
    "openmx_input_text",
    "read_dftio",
    "read_entry",
    "read_openmx_input",
    "read_pao",
    "read_scfout",
    "read_streamed",
    "read_structure",
    "read_vps",
    "rows_per_atom",
    "save_manifest",
    "upper_pencil",
    "write_deeph",
    "write_dftio",
    "write_entry",
    "write_openmx_input",
]
