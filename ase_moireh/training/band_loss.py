"""Near-gap band loss: what an error of the predicted H does to the levels that matter.

The element MSE weighs every matrix element alike, but the PAO overlap S has
eigenvalues near 0.01: an error along its soft directions moves levels ~100 times
more than its size, so a model with a few meV of element error can miss the gap by
a few hundred meV. For each training structure we keep the DFT levels within
``window`` eV of the gap at Gamma, M, K, K' (:func:`ase_moireh.kpoints.extrema_kpoints`)
and their S-orthonormal eigenvectors C (exact S from the PAOs). To first order an
error dH moves level n by (C^dagger dH(k) C)_nn and mixes levels n, m by the
off-diagonal entries; the loss is, averaged over the watched levels n and the
k-points, sum_m |(C^dagger dH(k) C)_mn|^2 (eV^2): each level's first-order shift and
mixing, not diluted by how many levels the window holds. It is quadratic in the
prediction (no eigensolver to differentiate, no trouble at degeneracies) and bounds the
first-order band errors near the gap, the figure users judge a model by.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ase_moireh.basis import filled_levels
from ase_moireh.block_operator import BlockOperator
from ase_moireh.kpoints import extrema_kpoints
from ase_moireh.model.residual import RESIDUAL, TARGET, add_h0
from ase_moireh.model.soc import SOC_CORRECTION
from ase_moireh.overlap import TwoCentreOverlap
from ase_moireh.tightbinding import ElectronicStructure, TightBinding

#: default half-width (eV) beyond the band edges of the levels the loss watches
BAND_WINDOW = 0.5


class BandLossError(ValueError):
    """A structure the band loss cannot serve (no electron count, no overlap, ...)."""


@dataclass
class BandProbe:
    """Reference near-gap states of one structure, laid out on its graph's targets.

    ``rows``: for every number of the graph's flat targets ``g.y``, its position
    row * n + col in the dense H(k); ``imag``: the number is an imaginary part (SOC);
    ``edge``: its edge. ``phases[k]``: exp(2 pi i k.R) of every edge; ``vectors[k]``:
    the (n, levels) S-orthonormal DFT eigenvectors of the watched levels at k."""

    rows: torch.Tensor
    imag: torch.Tensor
    edge: torch.Tensor
    phases: torch.Tensor
    vectors: list[torch.Tensor]
    n: int

    def loss(self, dy: torch.Tensor) -> torch.Tensor:
        """Per-level sum_m |(C^dagger dH C)_mn|^2 (eV^2), averaged over levels and k, for
        flat errors ``dy`` laid out as ``g.y``."""
        cplx = torch.complex128 if dy.dtype == torch.float64 else torch.complex64
        zero = torch.zeros_like(dy)
        values = torch.complex(torch.where(self.imag, zero, dy), torch.where(self.imag, dy, zero))
        total = dy.new_zeros(())
        for phase, c in zip(self.phases, self.vectors, strict=True):
            dense = torch.zeros(self.n * self.n, dtype=cplx, device=dy.device)
            dense = dense.index_add(0, self.rows, values * phase[self.edge])
            x = c.conj().T @ dense.view(self.n, self.n) @ c
            total = total + x.abs().pow(2).sum() / x.shape[0]
        return total / len(self.vectors)

    def to(self, device) -> BandProbe:
        return BandProbe(
            self.rows.to(device),
            self.imag.to(device),
            self.edge.to(device),
            self.phases.to(device),
            [c.to(device) for c in self.vectors],
            self.n,
        )


def occupied_levels(structure: ElectronicStructure) -> int:
    """Filled levels of the neutral DFT run (SOC: one electron per level)."""
    electrons = structure.extra.get("n_electrons")
    if electrons is None or not np.isfinite(electrons):
        raise BandLossError(f"{structure.source}: no electron count recorded")
    return filled_levels(float(electrons), structure.spinful)


def watched_states(
    tb: TightBinding, kpts: np.ndarray, nocc: int, window: float
) -> list[np.ndarray]:
    """Per k the S-orthonormal eigenvectors of the levels within ``window`` eV below the
    valence maximum and above the conduction minimum (edges over all ``kpts``)."""
    solved = [tb.eigh(k, vectors=True) for k in kpts]
    vbm = max(float(w[nocc - 1]) for w, _ in solved)
    cbm = min(float(w[nocc]) for w, _ in solved)
    return [v[:, (w >= vbm - window) & (w <= cbm + window)] for w, v in solved]


def flat_layout(target: BlockOperator, edges: np.ndarray) -> tuple[np.ndarray, ...]:
    """(rows, imag, edge) of every flat target number of a graph with these edges, in
    the order :func:`ase_moireh.model.graph.build_graph` stores them."""
    found = target.find(edges)
    held = np.flatnonzero(found >= 0)
    f = found[held]
    sizes = target.shapes[f].prod(axis=1)
    parts = 2 if target.spinful else 1  # SOC: real numbers, then imaginary ones
    count = parts * sizes
    t = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    size = np.repeat(sizes, count)
    element = np.repeat(target.offsets[f], count) + t % size
    op_rows, op_cols, _ = target.coo_pattern()
    rows = op_rows[element] * target.dimension + op_cols[element]
    return rows, t >= size, np.repeat(held, count)


def band_probe(
    structure: ElectronicStructure,
    edges: np.ndarray,
    overlap: TwoCentreOverlap,
    window: float = BAND_WINDOW,
    dtype: torch.dtype = torch.float32,
    h0: BlockOperator | None = None,
) -> BandProbe:
    """The probe of one structure whose graph has ``edges`` (i, j, R rows). A dH = H - H0
    target needs its ``h0``: the levels are those of H0 + dH, while an error of the
    predicted dH is one of H."""
    if structure.extra.get(TARGET) == SOC_CORRECTION:
        raise BandLossError(f"{structure.source}: a dH_SO target has no bands of its own")
    h = structure.hamiltonian
    if structure.extra.get(TARGET) == RESIDUAL:
        if h0 is None:
            raise BandLossError(f"{structure.source}: a dH target needs its H0 for the bands")
        full = add_h0(h, h0)
    else:
        full = h
    s = overlap.operator(structure.atoms, full.edges)
    kpts = extrema_kpoints(structure.atoms.cell)
    states = watched_states(TightBinding(full, s), kpts, occupied_levels(structure), window)
    rows, imag, edge = flat_layout(h, edges)
    cplx = torch.complex128 if dtype == torch.float64 else torch.complex64
    phases = np.exp(2j * np.pi * (edges[:, 2:] @ kpts.T)).T
    return BandProbe(
        torch.as_tensor(rows, dtype=torch.long),
        torch.as_tensor(imag),
        torch.as_tensor(edge, dtype=torch.long),
        torch.as_tensor(phases, dtype=cplx),
        [torch.as_tensor(c, dtype=cplx) for c in states],
        h.dimension,
    )
