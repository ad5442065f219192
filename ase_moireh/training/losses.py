"""The element loss: prediction - target of every block with a target, per block key
(over the model's partition share), the loss of one structure (element MSE, on-site
blocks weighted, plus the near-gap band loss of :mod:`ase_moireh.training.band_loss`)
and the validation figures."""

from __future__ import annotations

import numpy as np
import torch

from ase_moireh.model.network import HamiltonianModel
from ase_moireh.model.partition import Partition
from ase_moireh.training.band_loss import BandProbe


def gather_targets(g, edges: torch.Tensor) -> torch.Tensor | None:
    """Flat target blocks of the given edges (all must have targets), or None."""
    if len(edges) == 0 or not bool(g.y_mask[edges].all()):
        return None
    size = _block_size(g, edges[0])
    index = g.y_start[edges][:, None] + torch.arange(size, device=edges.device)
    return g.y[index]


def _block_size(g, e) -> int:
    start = int(g.y_start[e])
    nxt = g.y_start[g.y_start > start]
    return int(nxt.min() - start) if len(nxt) else int(g.y.numel() - start)


def element_masks(model: HamiltonianModel) -> dict[str, torch.Tensor | None]:
    """Per block key the elements this model is trained on (its partition share)."""
    share = Partition.from_dict(model.config.extra.get("partition"))
    basis, spinful = model.config.basis_obj, model.config.spinful
    device = next(model.parameters()).device
    out = {}
    for key in model.block_keys:
        m = share.mask(key, basis, spinful)
        out[key] = None if m is None else torch.as_tensor(m, device=device)
    return out


def semicore_weights(model: HamiltonianModel, weight: float) -> dict[str, torch.Tensor | None]:
    """Per block key, the weight of every flat element's squared error: ``weight`` where
    either orbital is semicore (:data:`ase_moireh.basis.SEMICORE_SHELLS`), 1 elsewhere;
    None everywhere at weight 1. Semicore errors are the largest on-site errors yet leave
    the bands near the gap unchanged: at 1 they dominate the element MSE."""
    if weight == 1.0:
        return dict.fromkeys(model.block_keys)
    basis, spinful = model.config.basis_obj, model.config.spinful
    device = next(model.parameters()).device
    out = {}
    for key in model.block_keys:
        a, b = key.split("-") if "-" in key else (key, key)
        deep = basis[a].semicore_orbitals()[:, None] | basis[b].semicore_orbitals()[None, :]
        w = np.where(deep, weight, 1.0)
        flat = np.concatenate([w.ravel(), w.ravel()]) if spinful else w.ravel()
        out[key] = torch.as_tensor(flat, device=device)
    return out


def block_diffs(model: HamiltonianModel, g) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per block key: (positions in ``g.y``, prediction - target) of its edges with targets."""
    out = {}
    for key, (edges, pred) in model(g).items():
        keep = g.y_mask[edges]
        if not bool(keep.any()):
            continue
        index = g.y_start[edges[keep]][:, None] + torch.arange(pred.shape[1], device=edges.device)
        out[key] = (index, pred[keep] - g.y[index])
    return out


def block_errors(
    model: HamiltonianModel, g, diffs=None, weights=None
) -> dict[str, tuple[float, float, int]]:
    """Per block key: (sum of squared errors, x ``weights`` when given, sum of absolute
    errors, element count), over the elements of the model's partition share."""
    out = {}
    masks = element_masks(model)
    for key, (_, diff) in (block_diffs(model, g) if diffs is None else diffs).items():
        if masks[key] is None:
            continue
        diff = diff[:, masks[key]]
        sq = diff.pow(2)
        if weights is not None and weights.get(key) is not None:
            sq = sq * weights[key][masks[key]]
        out[key] = (sq.sum(), diff.abs().sum().item(), diff.numel())
    return out


def flat_errors(g, diffs: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """prediction - target laid out as ``g.y`` (what a :class:`BandProbe` reads)."""
    index = torch.cat([i.reshape(-1) for i, _ in diffs.values()])
    values = torch.cat([d.reshape(-1) for _, d in diffs.values()])
    return torch.zeros_like(g.y).index_put((index,), values)


def structure_loss(
    model: HamiltonianModel,
    g,
    probe: BandProbe | None = None,
    band_weight: float = 0.0,
    onsite_weight: float = 1.0,
    semicore_weight: float = 1.0,
) -> torch.Tensor:
    """Element MSE (eV^2), on-site blocks' squared errors x ``onsite_weight``, elements
    of semicore orbitals x ``semicore_weight`` (:func:`semicore_weights`), plus
    ``band_weight`` x the band loss when a probe is given."""
    diffs = block_diffs(model, g)
    errors = block_errors(model, g, diffs, semicore_weights(model, semicore_weight))
    species = set(model.config.species)  # on-site keys are element names
    total = sum(
        sq * (onsite_weight if key in species else 1.0) for key, (sq, _, _) in errors.items()
    )
    count = sum(n for _, _, n in errors.values())
    loss = total / max(count, 1)
    if probe is not None and band_weight > 0:
        loss = loss + band_weight * probe.loss(flat_errors(g, diffs))
    return loss


@torch.no_grad()
def evaluate(model: HamiltonianModel, graphs, probes=None) -> tuple[float, dict[str, float], float]:
    """(MSE eV^2, MAE per element pair in eV; on-site blocks count for their pair, mean
    band loss eV^2 over the graphs with a probe or nan), one forward pass per graph.

    Errors are over the real numbers the model predicts: for SOC the real and imaginary
    parts of every element separately (BlockOperator.mae_by_pair instead averages the
    modulus of complex differences, which is larger)."""
    sq, n, bands = 0.0, 0, []
    pair_abs: dict[str, list[float]] = {}
    for g, probe in zip(graphs, probes or [None] * len(graphs), strict=True):
        diffs = block_diffs(model, g)
        if probe is not None:
            bands.append(float(probe.loss(flat_errors(g, diffs))))
        for key, (s, a, c) in block_errors(model, g, diffs).items():
            sq += float(s)
            n += c
            pair = key if "-" in key else f"{key}-{key}"
            acc = pair_abs.setdefault(pair, [0.0, 0])
            acc[0] += a
            acc[1] += c
    mae = {k: v[0] / v[1] for k, v in sorted(pair_abs.items())}
    return sq / max(n, 1), mae, float(np.mean(bands)) if bands else float("nan")
