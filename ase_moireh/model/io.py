"""Self-describing model files: config + weights + the basis's radial functions + statistics.

One ``torch.save`` file of plain tensors and strings, loaded with
``torch.load(weights_only=True)``: opening a model never runs code from it. The radial
functions of the PAO basis travel with the model, so its exact overlap S needs no
OpenMX files (:mod:`ase_moireh.overlap`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ase_moireh.files import atomic_file
from ase_moireh.model.network import HamiltonianModel, ModelConfig, new_model
from ase_moireh.model.residual import residual_spinful
from ase_moireh.model.soc import SOC_CORRECTION
from ase_moireh.overlap import OverlapError, TwoCentreOverlap

FORMAT = "ase-moireh model 2"
#: format 1 carried a learned overlap model, replaced by the exact two-centre overlap
OLD_FORMATS = ("ase-moireh model 1",)


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file and the problem."""


@dataclass(eq=False)  # arrays inside: == is identity (ASE's set() compares values)
class ModelBundle:
    """A trained Hamiltonian model (or several: an ensemble) and its basis's exact overlap.

    ``corrections``: spinful members that predict dH_SO on top of collinear ``models``
    (:mod:`ase_moireh.model.soc`); the bundle then predicts the SOC Hamiltonian
    H_col (x) 1_2 + dH_SO."""

    models: list[HamiltonianModel]
    overlap: TwoCentreOverlap | None  # None: a basis without radial functions (H only)
    info: dict = field(default_factory=dict)  # training provenance and metrics
    corrections: list[HamiltonianModel] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._attach_overlap()
        if self.corrections:
            if self.models[0].config.spinful:
                raise ValueError("a SOC correction goes on top of a collinear model")
            base, corr = self.models[0].config, self.corrections[0].config
            if not corr.spinful or corr.species != base.species or corr.basis != base.basis:
                raise ValueError("the SOC correction needs spinful members of the same basis")
            for m in self.corrections:
                m.config.extra = {**m.config.extra, "role": SOC_CORRECTION}

    def _attach_overlap(self) -> None:
        """Long-range members add (phi_i + phi_j) / 2 * S_ij: they compute S with the
        bundle's exact overlap, the one their training graphs carried."""
        for model in [*self.models, *self.corrections]:
            if model.config.long_range:
                if self.overlap is None:
                    raise ValueError("a long-range model needs the exact overlap of its basis")
                model.attach_overlap(self.overlap)

    @property
    def config(self) -> ModelConfig:
        """Configuration shared by the members (species, basis, spin, cutoff)."""
        return self.models[0].config

    @property
    def spinful(self) -> bool:
        """Whether the bundle predicts SOC Hamiltonians (directly, as a correction, or
        as dH on a SOC H0)."""
        return self.config.spinful or bool(self.corrections) or residual_spinful(self.info)

    @property
    def partitioned(self) -> bool:
        return any(m.config.extra.get("partition") for m in self.models)


def merge_bundles(bundles: list[ModelBundle], info: dict | None = None) -> ModelBundle:
    """One bundle of all members: a true ensemble (mean and spread) or, when the members
    hold partition shares, the paper's partitioned model (coverage checked here)."""
    from ase_moireh.model.partition import Partition, check_coverage

    models = [m for b in bundles for m in b.models]
    first = models[0].config
    for m in models[1:]:
        c = m.config
        if (c.species, c.basis, c.spinful, c.cutoff) != (
            first.species,
            first.basis,
            first.spinful,
            first.cutoff,
        ):
            raise ValueError("cannot merge models of different species, basis, spin or cutoff")
    corrections = [m for b in bundles for m in b.corrections]
    merged = ModelBundle(models, bundles[0].overlap, info or {}, corrections)
    if merged.partitioned:
        shares = [Partition.from_dict(m.config.extra.get("partition")) for m in models]
        check_coverage(shares, models[0].block_keys, first.basis_obj, first.spinful)
    return merged


def with_soc_correction(
    collinear: ModelBundle, correction: ModelBundle, info: dict | None = None
) -> ModelBundle:
    """A SOC bundle: the collinear ensemble plus the ensemble that learnt dH_SO from
    SOC/collinear twins (:mod:`ase_moireh.model.soc`); S from the collinear bundle."""
    if collinear.corrections or correction.corrections:
        raise ValueError("the bundles to combine must be a plain collinear and a plain SOC one")
    return ModelBundle(collinear.models, collinear.overlap, info or {}, correction.models)


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temporary file beside ``path``, then rename over it."""
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


def _digest(payload: dict) -> str:
    """SHA-256 over everything stored, so a changed byte anywhere is caught at load."""
    h = hashlib.sha256()
    h.update(payload["format"].encode())
    h.update("".join(payload["configs"]).encode())
    h.update(payload["info"].encode())
    h.update(payload["overlap_basis"].encode())
    for state in [*payload["members"], payload["overlap"]]:
        for name in sorted(state):
            h.update(name.encode())
            h.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def save_bundle(bundle: ModelBundle, path: str | os.PathLike) -> None:
    members = [*bundle.models, *bundle.corrections]
    payload = {
        "format": FORMAT,
        "configs": [m.config.to_json() for m in members],
        "info": json.dumps(bundle.info),
        "members": [{k: v.detach().cpu() for k, v in m.state_dict().items()} for m in members],
    }
    basis, arrays = bundle.overlap.state() if bundle.overlap is not None else ({}, {})
    payload["overlap_basis"] = json.dumps(basis)
    payload["overlap"] = {k: torch.as_tensor(v) for k, v in arrays.items()}
    payload["sha256"] = _digest(payload)
    atomic_torch_save(payload, path)


def update_info(path: str | os.PathLike, update: Callable[[dict], None]) -> None:
    """Change a model file's ``info`` in place (``update`` edits the dict), weights and
    everything else byte for byte as they were; the checksum is verified first and
    renewed."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != FORMAT or payload.get("sha256") != _digest(payload):
        raise ModelFileError(f"{path}: not an intact ase-moireh model file of this format")
    info = json.loads(payload["info"])
    update(info)
    payload["info"] = json.dumps(info)
    payload["sha256"] = _digest(payload)
    atomic_torch_save(payload, path)


def _load_overlap(payload: dict, config: ModelConfig) -> TwoCentreOverlap | None:
    basis = json.loads(payload["overlap_basis"])
    if not basis:
        return None
    arrays = {k: v.numpy() for k, v in payload["overlap"].items()}
    overlap = TwoCentreOverlap.from_state(basis, arrays)
    if not overlap.covers(config.basis_obj):
        raise ValueError("the radial functions do not match the model's basis")
    return overlap


def load_bundle(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> ModelBundle:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file") from None
    except Exception as err:  # unpickling refused or corrupt archive
        raise ModelFileError(f"{path}: not a loadable ase-moireh model ({err})") from None
    if isinstance(payload, dict) and payload.get("format") in OLD_FORMATS:
        raise ModelFileError(
            f"{path}: model file format {payload['format']!r} carries a learned overlap; "
            "this version computes S exactly from the basis: retrain or re-save the model"
        )
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not an ase-moireh model file (format tag missing)")
    try:
        intact = payload.get("sha256") == _digest(payload)
    except (KeyError, TypeError, AttributeError) as err:
        raise ModelFileError(f"{path}: incomplete model file ({err})") from None
    if not intact:
        raise ModelFileError(f"{path}: checksum mismatch, the file was altered or damaged")
    try:
        configs = [ModelConfig.from_json(text) for text in payload["configs"]]
        models, corrections = [], []
        for member_config, state in zip(configs, payload["members"], strict=True):
            model = new_model(member_config, dtype)
            model.load_state_dict(state)
            model.eval()
            role = member_config.extra.get("role")
            (corrections if role == SOC_CORRECTION else models).append(model)
        overlap = _load_overlap(payload, models[0].config)
        info = json.loads(payload.get("info", "{}"))
        return ModelBundle(models, overlap, info, corrections)
    except (KeyError, TypeError, ValueError, RuntimeError, OverlapError, IndexError) as err:
        raise ModelFileError(f"{path}: inconsistent model file ({err})") from None


def training_stages(info: dict) -> dict[str, dict]:
    """The trainer's reports held in a model file's info, by stage, in training order:
    its own (``train``), or those a recipe nests under stage names (``pretrain``,
    ``finetune``; ``col_pretrain``, ``col_finetune``, ``soc_correction``, ...)."""
    if "train" in info:
        return {"train": info["train"]}
    return {k: v["train"] for k, v in info.items() if isinstance(v, dict) and "train" in v}
