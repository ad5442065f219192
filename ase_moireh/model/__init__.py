"""The E(3)-equivariant Hamiltonian model (DeepH-E3-like, on e3nn): the network and its
blocks, model files, prediction in memory or streamed to HDF5, SOC as a correction on a
collinear model. Needs torch; :mod:`ase_moireh.model.residual` (models of H - H0) is
imported from its module."""

from ase_moireh.model.graph import build_graph
from ase_moireh.model.io import (
    ModelBundle,
    ModelFileError,
    load_bundle,
    merge_bundles,
    save_bundle,
    training_stages,
    with_soc_correction,
)
from ase_moireh.model.network import HamiltonianModel, ModelConfig, new_model
from ase_moireh.model.partition import Partition
from ase_moireh.model.predict import (
    check_domain,
    predict_checked,
    predict_hamiltonian,
    predict_operators,
)
from ase_moireh.model.soc import combine_spread, correction_structure, soc_correction
from ase_moireh.model.stream import StreamReport, stream_checked, stream_prediction

__all__ = [
    "HamiltonianModel",
    "ModelBundle",
    "ModelConfig",
    "ModelFileError",
    "Partition",
    "StreamReport",
    "build_graph",
    "check_domain",
    "combine_spread",
    "correction_structure",
    "load_bundle",
    "merge_bundles",
    "new_model",
    "predict_checked",
    "predict_hamiltonian",
    "predict_operators",
    "save_bundle",
    "soc_correction",
    "stream_checked",
    "stream_prediction",
    "training_stages",
    "with_soc_correction",
]
