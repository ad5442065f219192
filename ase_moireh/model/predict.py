"""Inference: Atoms -> predicted H (and S) as BlockOperators, ensemble mean and spread."""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms

from ase_moireh.operator import BlockOperator

from .blocks import flat_to_block
from .graph import build_graph
from .io import ModelBundle
from .partition import Partition


def _flat_predictions(model, data) -> dict[int, np.ndarray]:
    """Edge number -> flat predicted block; only the model's partition share is kept
    (other elements zero), so shares of a partitioned bundle simply add up."""
    share = Partition.from_dict(model.config.extra.get("partition"))
    basis, spinful = model.config.basis_obj, model.config.spinful
    with torch.no_grad():
        out = model(data)
    flat = {}
    for key, (edges, pred) in out.items():
        values = pred.cpu().numpy().astype(np.float64)
        mask = share.mask(key, basis, spinful)
        values = values * mask if mask is not None else np.zeros_like(values)
        for e, row in zip(edges.tolist(), values, strict=True):
            flat[e] = row
    return flat


def predict_operators(
    bundle: ModelBundle, atoms: Atoms, device: str = "cpu"
) -> tuple[BlockOperator, BlockOperator, BlockOperator | None]:
    """(H, S, spread): H is the ensemble mean (or the sum of the shares of a partitioned
    bundle), spread the members' per-element standard deviation (None for a single or
    partitioned model); S from the two-centre overlap model."""
    config = bundle.config
    dtype = next(bundle.models[0].parameters()).dtype
    data = build_graph(atoms, config.species, config.cutoff, dtype=dtype).to(device)
    edges = np.column_stack(
        [data.edge_index.cpu().numpy().T, data.edge_shift.cpu().numpy().round().astype(np.int64)]
    )
    members = []
    for model in bundle.models:
        flat = _flat_predictions(model.to(device), data)
        members.append(np.concatenate([flat[e] for e in range(len(edges))]))
    stack = np.array(members)
    mean = stack.sum(axis=0) if bundle.partitioned else stack.mean(axis=0)
    basis = config.basis_obj
    meta = {"cell": np.asarray(atoms.cell), "positions": atoms.positions}
    h = _to_operator(atoms, basis, edges, mean, config.spinful, meta)
    spread = None
    if len(members) > 1 and not bundle.partitioned:
        spread = _to_operator(atoms, basis, edges, stack.std(axis=0), config.spinful, meta)
    s = bundle.overlap.predict(atoms, edges)
    return h, s, spread


def _to_operator(atoms, basis, edges, flat, spinful, meta) -> BlockOperator:
    norb = basis.norbs(atoms.numbers)
    blocks, start = [], 0
    for i, j in edges[:, :2]:
        size = norb[i] * norb[j] * (8 if spinful else 1)
        blocks.append(flat_to_block(flat[start : start + size], norb[i], norb[j], spinful))
        start += size
    return BlockOperator.from_blocks(atoms.numbers, basis, edges, blocks, spinful, **meta)
