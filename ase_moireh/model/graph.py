"""Atomic graphs for the model: edges (i, j, R) within the cutoff plus self-loops.

The edge set is what OpenMX itself stores (every pair within the sum of the PAO radii,
e.g. 2 x 7.0 Bohr = 7.41 A for the MoTe2 basis, and the on-site blocks): checked
against the shared runs in the tests. Neighbour search is ASE's O(N) binned list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from ase import Atoms
from torch_geometric.data import Data

from ase_moireh.block_operator import (
    BlockOperator,
    lookup_edges,
    packed_offsets,
    reversed_edges,
    sorted_edge_keys,
)
from ase_moireh.model.blocks import block_to_flat
from ase_moireh.neighbours import neighbour_pairs

if TYPE_CHECKING:
    from ase_moireh.overlap import TwoCentreOverlap

#: 2 x 7.0 Bohr, the PAO radius of Mo7.0 and Te7.0, in Angstrom
MOTE2_CUTOFF = 14.0 * 0.529177210903


class HamiltonianGraph(Data):
    """PyG Data whose index-like fields shift correctly when graphs are batched."""

    def __inc__(self, key, value, *args, **kwargs):
        if key == "edge_rev":
            return self.edge_index.shape[1]
        if key == "y_start":
            return 0 if self.y is None else self.y.numel()
        if key == "s_start":
            return self.s_values.numel()
        if key == "h0_start":
            return self.h0_values.numel()
        return super().__inc__(key, value, *args, **kwargs)


def graph_edges(atoms: Atoms, cutoff: float) -> np.ndarray:
    """(E, 5) rows (i, j, Rx, Ry, Rz): self-loops first, then pairs with |r_ij| < cutoff."""
    i, j, shift, _ = neighbour_pairs(atoms, cutoff)
    n = len(atoms)
    self_loops = np.column_stack([np.arange(n), np.arange(n), np.zeros((n, 3), dtype=int)])
    pairs = np.column_stack([i, j, shift]).astype(np.int64)
    order = np.lexsort((pairs[:, 4], pairs[:, 3], pairs[:, 2], pairs[:, 1], pairs[:, 0]))
    return np.vstack([self_loops, pairs[order]]).astype(np.int64)


def build_graph(
    atoms: Atoms,
    species: list[str],
    cutoff: float,
    target: BlockOperator | None = None,
    dtype: torch.dtype = torch.float64,
    overlap: TwoCentreOverlap | None = None,
    h0: BlockOperator | None = None,
) -> HamiltonianGraph:
    """Graph of one structure; with ``target`` the flat blocks of every edge it holds,
    with ``overlap`` the exact S of every edge (what a long-range model reads; without
    it the model computes S itself, as at prediction), with ``h0`` the zeroth-step H0
    of every edge (what a model with ``h0_features`` reads: :func:`attach_h0`)."""
    symbols = atoms.get_chemical_symbols()
    unknown = sorted(set(symbols) - set(species))
    if unknown:
        raise ValueError(f"the model knows {species}, the structure also has {unknown}")
    index = {s: k for k, s in enumerate(species)}
    z = np.array([index[s] for s in symbols])
    edges = graph_edges(atoms, cutoff)
    table = sorted_edge_keys(edges, len(atoms))
    rev = lookup_edges(table, reversed_edges(edges), len(atoms))
    if np.any(rev < 0):
        raise RuntimeError("neighbour list is not symmetric")
    data = HamiltonianGraph(
        species=torch.as_tensor(z, dtype=torch.long),
        pos=torch.as_tensor(atoms.positions, dtype=dtype),
        cell=torch.as_tensor(np.asarray(atoms.cell)[None], dtype=dtype),
        pbc=torch.as_tensor(np.asarray(atoms.pbc, dtype=bool)[None]),
        edge_index=torch.as_tensor(edges[:, :2].T.copy(), dtype=torch.long),
        edge_shift=torch.as_tensor(edges[:, 2:], dtype=dtype),
        edge_rev=torch.as_tensor(rev, dtype=torch.long),
        num_nodes=len(atoms),
    )
    if target is not None:
        _attach_target(data, edges, target, dtype)
    if overlap is not None:
        attach_overlap(data, atoms, edges, overlap)
    if h0 is not None:
        attach_h0(data, h0, edges)
    return data


def attach_overlap(
    data: HamiltonianGraph, atoms: Atoms, edges: np.ndarray, overlap: TwoCentreOverlap
) -> None:
    """S of every edge, packed in edge order (``s_values``, each edge's start in
    ``s_start``): spinless blocks, as :meth:`TwoCentreOverlap.packed_values` gives them."""
    offsets = packed_offsets(overlap.basis.norbs(atoms.numbers), edges)
    values = overlap.packed_values(atoms, edges)
    data.s_values = torch.as_tensor(values, dtype=data.pos.dtype)
    data.s_start = torch.as_tensor(offsets[:-1], dtype=torch.long)


def attach_h0(data: HamiltonianGraph, h0: BlockOperator, edges: np.ndarray | None = None) -> None:
    """H0 of every edge, packed in edge order (``h0_values``, each edge's start in
    ``h0_start``): spinless flat blocks (:func:`block_to_flat`), the layout of a
    collinear target. A SOC H0 gives its spin-independent part Re (H0_uu + H0_dd) / 2
    (the dH network is collinear); an edge H0 lacks gets a zero block."""
    if edges is None:
        shifts = data.edge_shift.cpu().numpy().round().astype(np.int64)
        edges = np.column_stack([data.edge_index.cpu().numpy().T, shifts])
    numbers = h0.numbers
    if len(numbers) != data.num_nodes:
        raise ValueError(f"H0 has {len(numbers)} atoms, the graph {data.num_nodes}")
    norbs = h0.basis.norbs(numbers)
    offsets = packed_offsets(norbs, edges)
    found = h0.find(edges)
    values = np.zeros(offsets[-1])
    have = np.flatnonzero(found >= 0)
    sizes = np.diff(offsets)[have]
    dest = np.repeat(offsets[have], sizes) + _ranges(sizes)
    # blocks are stored row-major: element (p, q) of an (n_i, n_j) block sits at
    # p n_j + q, of a spinor block's up-up part at p 2 n_j + q, down-down n_i + p, n_j + q
    start = np.repeat(h0.offsets[found[have]], sizes)
    if not h0.spinful:
        values[dest] = h0.values[start + _ranges(sizes)].real
    else:
        ni = np.repeat(norbs[edges[have, 0]], sizes)
        nj = np.repeat(norbs[edges[have, 1]], sizes)
        p, q = np.divmod(_ranges(sizes), nj)
        up = start + p * 2 * nj + q
        down = start + (p + ni) * 2 * nj + q + nj
        values[dest] = 0.5 * (h0.values[up] + h0.values[down]).real
    data.h0_values = torch.as_tensor(values, dtype=data.pos.dtype)
    data.h0_start = torch.as_tensor(offsets[:-1], dtype=torch.long)


def _ranges(sizes: np.ndarray) -> np.ndarray:
    """0..n-1 for every n of ``sizes``, concatenated."""
    if len(sizes) == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(sizes)
    return np.arange(ends[-1]) - np.repeat(ends - sizes, sizes)


def _attach_target(
    data: HamiltonianGraph, edges: np.ndarray, target: BlockOperator, dtype: torch.dtype
) -> None:
    found = target.find(edges)
    flats, starts, total = [], [], 0
    for e in found:
        starts.append(total)
        if e >= 0:
            flat = block_to_flat(target.block(int(e)), target.spinful)
            flats.append(flat)
            total += flat.size
    data.y = torch.as_tensor(np.concatenate(flats) if flats else np.zeros(0), dtype=dtype)
    data.y_start = torch.as_tensor(starts, dtype=torch.long)
    data.y_mask = torch.as_tensor(found >= 0)


def edge_vectors(data: Data, edges: torch.Tensor | None = None) -> torch.Tensor:
    """r_ij = pos_j + R . cell - pos_i for every edge, or for the given edge numbers
    (batched graphs allowed)."""
    i, j = data.edge_index if edges is None else data.edge_index[:, edges]
    shifts = data.edge_shift if edges is None else data.edge_shift[edges]
    batch = data.batch[i] if getattr(data, "batch", None) is not None else torch.zeros_like(i)
    cell = data.cell[batch]
    shift = torch.einsum("ea,eab->eb", shifts, cell)
    return data.pos[j] + shift - data.pos[i]
