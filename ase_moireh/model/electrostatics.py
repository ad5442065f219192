"""Long-range electrostatics: the Ewald potential of latent atomic charges.

Why: what a residual (dH) model leaves is mostly one potential shift per atom. R-stacked
MoTe2 is a sliding ferroelectric (a stacking-dependent interlayer dipole) and the DFT
cells are periodic along z without a dipole correction, so each atom feels the field of
every periodic image: a cell-wide quantity no local message passing can produce. The
:class:`PotentialHead` gives each atom a latent charge q_i (neutral per structure) from
its node features and the potential phi_i = sum_j q_j G(r_i - r_j) of the structure's own
periodic cell, by Ewald summation in torch (differentiable in q; positions and cell are
fixed inputs). The network adds (phi_i + phi_j) / 2 * S_ij to every block.

Ewald split with screening alpha (Gaussian units, charge x charge / length):

* real space: sum over pairs (j, R) != (i, 0) of q_j erfc(alpha r) / r, over the graph's
  own neighbour pairs: alpha = sqrt(-ln accuracy) / cutoff makes the sum beyond the
  model's cutoff negligible, O(edges);
* reciprocal: (4 pi / V) sum_{k != 0} exp(-k^2 / 4 alpha^2) / k^2 Re[e^{i k.r_i} S(-k)],
  k up to 2 alpha sqrt(-ln accuracy), O(N K) with K ~ V: O(N^2) at a fixed cutoff
  (one layer of the 762-atom cell: ~15,000 k-vectors, a fraction of a second);
* self: -2 alpha / sqrt(pi) q_i. Neutral charges need no background term; k = 0 is left
  out as in periodic DFT without a dipole correction ("tin-foil" boundary).

Every cell with three independent vectors is treated as periodic in all three directions,
as a DFT cell is (a ribbon's vacuum directions included); a structure periodic in no
direction gets the plain Coulomb sum; anything else is refused.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from e3nn import o3
from torch import nn

from ase_moireh.model.graph import edge_vectors

#: e^2 / (4 pi eps_0) in eV A (CODATA 2018): q in e gives phi in V
COULOMB = 14.399645
#: relative size of the neglected terms of both Ewald sums
EWALD_ACCURACY = 1e-6
#: cos/sin values held at once by the reciprocal sum (atoms x k-vectors)
RECIPROCAL_CHUNK = 1 << 22


class PeriodicityError(ValueError):
    """A structure whose periodicity the Ewald sum cannot represent."""


def screening(cutoff: float, accuracy: float = EWALD_ACCURACY) -> float:
    """alpha (1/A) for which erfc(alpha r) falls below ``accuracy`` at ``cutoff``: the
    real-space sum then needs no pairs beyond the graph's."""
    return math.sqrt(-math.log(accuracy)) / cutoff


def reciprocal_vectors(cell: np.ndarray, kmax: float) -> np.ndarray:
    """(K, 3) k-vectors 2 pi n . B with 0 < |k| < kmax, one of each pair +-k."""
    recip = 2 * np.pi * np.linalg.inv(cell).T  # rows b_a with a_a . b_b = 2 pi delta
    reach = np.floor(kmax * np.linalg.norm(cell, axis=1) / (2 * np.pi)).astype(int)
    axes = [np.arange(-r, r + 1) for r in reach]
    n = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    first = np.argmax(n != 0, axis=1)  # half space: the first nonzero index positive
    n = n[n[np.arange(len(n)), first] > 0]
    k = n @ recip
    return k[np.linalg.norm(k, axis=1) < kmax]


def _apply_reciprocal(
    q: torch.Tensor, positions: torch.Tensor, k: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """sum_k w_k [cos(k.r_i) C_k + sin(k.r_i) S_k], C/S the structure factor of q, a
    chunk of k-vectors at a time."""
    out = torch.zeros_like(q)
    step = max(1, RECIPROCAL_CHUNK // max(len(q), 1))
    for start in range(0, len(k), step):
        phase = positions @ k[start : start + step].T
        cos, sin = torch.cos(phase), torch.sin(phase)
        w = weight[start : start + step]
        out = out + cos @ (w * (q @ cos)) + sin @ (w * (q @ sin))
    return out


class _Reciprocal(torch.autograd.Function):
    """phi = G q with G symmetric: the backward pass is the same sum applied to the
    incoming gradient, so no (atoms x k-vectors) phases are kept for it."""

    @staticmethod
    def forward(ctx, q, positions, k, weight):
        ctx.save_for_backward(positions, k, weight)
        return _apply_reciprocal(q, positions, k, weight)

    @staticmethod
    def backward(ctx, grad):
        positions, k, weight = ctx.saved_tensors
        return _apply_reciprocal(grad, positions, k, weight), None, None, None


def reciprocal_potential(
    q: torch.Tensor, positions: torch.Tensor, cell: torch.Tensor, alpha: float, accuracy: float
) -> torch.Tensor:
    """The reciprocal-space Ewald potential at every atom of one periodic cell."""
    kmax = 2 * alpha * math.sqrt(-math.log(accuracy))
    k_np = reciprocal_vectors(cell.detach().cpu().double().numpy(), kmax)
    k = torch.as_tensor(k_np, dtype=q.dtype, device=q.device)
    volume = abs(float(np.linalg.det(cell.detach().cpu().double().numpy())))
    k2 = (k * k).sum(dim=1)
    weight = 2 * (4 * math.pi / volume) * torch.exp(-k2 / (4 * alpha**2)) / k2  # +-k
    return _Reciprocal.apply(q, positions.to(q.dtype), k, weight)


def real_space_potential(
    q: torch.Tensor, i: torch.Tensor, j: torch.Tensor, vectors: torch.Tensor, alpha: float
) -> torch.Tensor:
    """sum over the given pairs (i, j, r_ij) of q_j erfc(alpha r) / r, at every atom."""
    r = vectors.norm(dim=1)
    return torch.zeros_like(q).index_add(0, i, q[j] * torch.erfc(alpha * r) / r)


def ewald_potential(
    q: torch.Tensor,
    positions: torch.Tensor,
    cell: torch.Tensor,
    pairs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    alpha: float,
    accuracy: float = EWALD_ACCURACY,
) -> torch.Tensor:
    """phi_i = sum_{j, R} q_j / |r_j + R - r_i| (the i = j, R = 0 term left out) of
    neutral charges in a cell periodic in all three directions, in charge / A. ``pairs``
    (i, j, r_ij) must hold every pair within sqrt(-ln accuracy) / alpha."""
    real = real_space_potential(q, *pairs, alpha)
    recip = reciprocal_potential(q, positions, cell, alpha, accuracy)
    return real + recip - 2 * alpha / math.sqrt(math.pi) * q


def open_potential(q: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """phi_i = sum_{j != i} q_j / |r_j - r_i| of a structure periodic in no direction."""
    d = torch.cdist(positions, positions)
    inverse = torch.where(d > 0, 1.0 / d.clamp_min(1e-12), torch.zeros_like(d))
    return inverse.to(q.dtype) @ q


def is_periodic(cell: np.ndarray, pbc: np.ndarray) -> bool:
    """True: Ewald in all three directions (a full cell, as DFT has); False: no
    periodicity (plain Coulomb). Raises for periodicity without a full cell."""
    if abs(np.linalg.det(cell)) > 1e-6:
        return True
    if not np.any(pbc):
        return False
    raise PeriodicityError(
        f"the long-range head needs a cell with three independent vectors (vacuum along "
        f"non-periodic directions, as in a DFT cell) or no periodicity at all; got pbc "
        f"{pbc.tolist()} with cell {cell.tolist()}"
    )


def _zero_linear(irreps_in: o3.Irreps, n: int) -> o3.Linear:
    """A linear map to ``n`` scalars that starts at zero (a head that begins silent)."""
    linear = o3.Linear(irreps_in, o3.Irreps(f"{n}x0e"))
    with torch.no_grad():
        linear.weight.zero_()
    return linear


class PotentialHead(nn.Module):
    """Per atom: a latent charge (neutral per structure) and its Ewald potential in the
    structure's cell, times a learned factor, plus optionally a local learned scalar.
    Both the factor and the local scalar start at zero, so a model with the head begins
    as the model without it.

    With ``orbital_shells`` (per species, the shell number of every spatial orbital),
    the potential is resolved by shell: each (species, shell) adds its own factor on the
    Ewald potential and its own local scalar, so that, e.g., Mo 4d and Te 5p can shift
    by different amounts at one atom (what the dH models' on-site errors are,
    ``benchmarks/results/error_anatomy.md``). The output is then per orbital."""

    def __init__(
        self,
        irreps_in: o3.Irreps,
        cutoff: float,
        local: bool = True,
        orbital_shells: list[np.ndarray] | None = None,
    ):
        super().__init__()
        self.charge = o3.Linear(irreps_in, o3.Irreps("1x0e"))
        self.local = _zero_linear(irreps_in, 1) if local else None
        self.scale = nn.Parameter(torch.zeros(()))
        self.alpha = screening(cutoff)
        self.shells = None
        if orbital_shells is not None:
            self._init_shells(irreps_in, orbital_shells)

    def _init_shells(self, irreps_in: o3.Irreps, orbital_shells: list[np.ndarray]) -> None:
        """Per-(species, shell) factors and local scalars, and the orbital -> output map:
        column species * n_shells + shell, padded orbitals pointing at column 0."""
        n_shells = max(int(s.max()) + 1 for s in orbital_shells)
        width = max(len(s) for s in orbital_shells)
        column = torch.zeros(len(orbital_shells), width, dtype=torch.long)
        for k, shells in enumerate(orbital_shells):
            column[k, : len(shells)] = k * n_shells + torch.as_tensor(shells)
        self.register_buffer("orbital_column", column, persistent=False)
        self.shell_scale = nn.Parameter(torch.zeros(len(orbital_shells) * n_shells))
        self.shell_local = _zero_linear(irreps_in, len(orbital_shells) * n_shells)
        self.shells = n_shells

    def forward(self, data, x: torch.Tensor, hop: torch.Tensor, chunk: int) -> torch.Tensor:
        """phi (N,) at every node of ``data`` (batched graphs allowed), or per orbital
        (N, max orbitals) when resolved by shell; ``hop`` are the graph's hopping edges,
        the real-space pairs, taken ``chunk`` at a time."""
        raw = self.charge(x)[:, 0]
        q = torch.cat([part - part.mean() for part in _per_graph(raw, data)])
        phi = self._real_space(data, q, hop, chunk)
        recip = [
            self._long_part(data, g, q_g)
            for g, q_g in enumerate(_per_graph(q, data))  # per structure
        ]
        phi = COULOMB * (phi + torch.cat(recip))
        out = self.scale * phi
        if self.local is not None:
            out = out + self.local(x)[:, 0]
        if self.shells is None:
            return out
        per_shell = self.shell_scale * phi[:, None] + self.shell_local(x)  # (N, columns)
        column = self.orbital_column[data.species]  # (N, orbitals)
        return out[:, None] + per_shell.gather(1, column)

    def _real_space(self, data, q: torch.Tensor, hop: torch.Tensor, chunk: int) -> torch.Tensor:
        """The real-space sum over the graph's pairs of periodic structures (open ones
        take all of their Coulomb sum in :meth:`_long_part`)."""
        periodic = self._periodic_nodes(data)
        phi = torch.zeros_like(q)
        i, j = data.edge_index
        for start in range(0, len(hop), chunk):
            edges = hop[start : start + chunk]
            edges = edges[periodic[i[edges]]]
            vec = edge_vectors(data, edges).to(q.dtype)
            phi = phi + real_space_potential(q, i[edges], j[edges], vec, self.alpha)
        return phi

    def _periodic_nodes(self, data) -> torch.Tensor:
        flags = [self._periodic(data, g) for g in range(_num_graphs(data))]
        sizes = torch.diff(_node_ptr(data))
        return torch.repeat_interleave(torch.tensor(flags, device=sizes.device), sizes)

    @staticmethod
    def _periodic(data, g: int) -> bool:
        cell = data.cell[g].detach().cpu().double().numpy()
        pbc = getattr(data, "pbc", None)
        flags = np.ones(3, dtype=bool) if pbc is None else pbc[g].cpu().numpy()
        return is_periodic(cell, flags)

    def _long_part(self, data, g: int, q: torch.Tensor) -> torch.Tensor:
        """Reciprocal and self terms of structure ``g``, or its whole open Coulomb sum."""
        ptr = _node_ptr(data)
        positions = data.pos[ptr[g] : ptr[g + 1]].to(q.dtype)
        if not self._periodic(data, g):
            return open_potential(q, positions)
        recip = reciprocal_potential(q, positions, data.cell[g], self.alpha, EWALD_ACCURACY)
        return recip - 2 * self.alpha / math.sqrt(math.pi) * q


def _num_graphs(data) -> int:
    return data.cell.shape[0]


def _node_ptr(data) -> torch.Tensor:
    """Start of every graph's nodes (PyG batches keep them contiguous), and the end."""
    ptr = getattr(data, "ptr", None)
    if ptr is not None:
        return ptr
    return torch.tensor([0, data.num_nodes], device=data.pos.device)


def _per_graph(values: torch.Tensor, data) -> list[torch.Tensor]:
    return list(torch.split(values, torch.diff(_node_ptr(data)).tolist()))
