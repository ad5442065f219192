"""Training the Hamiltonian model: pretrain and fine-tune (transfer learning), ensembles,
the element loss and the near-gap band loss. Needs torch."""

from ase_moireh.training.band_loss import BAND_WINDOW, BandLossError, BandProbe, band_probe
from ase_moireh.training.losses import block_errors, evaluate, structure_loss
from ase_moireh.training.trainer import (
    TrainConfig,
    load_train_config,
    member_config,
    train,
    train_ensemble,
)

__all__ = [
    "BAND_WINDOW",
    "BandLossError",
    "BandProbe",
    "TrainConfig",
    "band_probe",
    "block_errors",
    "evaluate",
    "load_train_config",
    "member_config",
    "structure_loss",
    "train",
    "train_ensemble",
]
