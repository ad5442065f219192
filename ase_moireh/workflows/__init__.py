"""The DFT campaign and batch jobs on DFT outputs: OpenMX runs of a folder of inputs
(resumable, staged restarts, every converged run into the corpus), OpenMX's zeroth-step
H0 of corpus entries, and batch conversion of DFT outputs to datasets. Torch-free."""

from ase_moireh.workflows.convert import WRITERS, ConversionReport, convert_files
from ase_moireh.workflows.openmx_runner import (
    RunRecord,
    ScfState,
    convert_to_corpus,
    find_openmx,
    openmx_command,
    parse_std,
    read_run,
    run_folders,
)
from ase_moireh.workflows.zeroth_step import zeroth_step_input, zeroth_steps

__all__ = [
    "WRITERS",
    "ConversionReport",
    "RunRecord",
    "ScfState",
    "convert_files",
    "convert_to_corpus",
    "find_openmx",
    "openmx_command",
    "parse_std",
    "read_run",
    "run_folders",
    "zeroth_step_input",
    "zeroth_steps",
]
