"""e3nn building blocks: radial basis, convolution, gated update, equivariant layer norm.

Every module takes and returns features described by ``o3.Irreps`` (e3nn layout) and
checks them, as e3nn's own modules do.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn

from ase_moireh.model.so2 import SO2Convolution


class RadialBasis(nn.Module):
    """Gaussians on [0, cutoff] times a cosine envelope that vanishes at the cutoff."""

    def __init__(self, cutoff: float, num: int):
        super().__init__()
        self.cutoff = cutoff
        self.register_buffer("centers", torch.linspace(0.0, cutoff, num))
        self.width = cutoff / num

    def envelope(self, r: torch.Tensor) -> torch.Tensor:
        """0.5 (cos(pi r / cutoff) + 1) inside the cutoff, 0 beyond."""
        return 0.5 * (torch.cos(math.pi * r / self.cutoff) + 1.0) * (r < self.cutoff)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        gauss = torch.exp(-(((r[:, None] - self.centers) / self.width) ** 2))
        return gauss * self.envelope(r)[:, None]


class EquivariantLayerNorm(nn.Module):
    """Per node: scalars standardised over channels, l > 0 divided by their RMS norm;
    a learnable scale per channel (and bias for even scalars). Rotation-equivariant."""

    def __init__(self, irreps: o3.Irreps, eps: float = 1e-6):
        super().__init__()
        self.irreps = o3.Irreps(irreps)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(self.irreps.num_irreps))
        n_bias = sum(mul for mul, ir in self.irreps if ir == o3.Irrep("0e"))
        self.bias = nn.Parameter(torch.zeros(n_bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, w0, b0 = [], 0, 0
        # split, not slices: each slice would cost a full-size zero tensor in backward
        parts = torch.split(x, [mul * ir.dim for mul, ir in self.irreps], dim=1)
        for part, (mul, ir) in zip(parts, self.irreps, strict=True):
            f = part.reshape(-1, mul, ir.dim)
            if ir.l == 0:
                f = f - f.mean(dim=1, keepdim=True)
            norm = f.pow(2).sum(-1).mean(dim=1, keepdim=True)
            f = f / torch.sqrt(norm + self.eps)[..., None]
            f = f * self.weight[w0 : w0 + mul, None]
            if ir == o3.Irrep("0e"):
                f = f + self.bias[b0 : b0 + mul, None]
                b0 += mul
            w0 += mul
            out.append(f.reshape(-1, mul * ir.dim))
        return torch.cat(out, dim=1)


def gate_for(irreps_out: o3.Irreps) -> Gate:
    """Gate whose output is ``irreps_out``: scalars activated, others gated by sigmoids."""
    irreps_out = o3.Irreps(irreps_out)
    scalars = o3.Irreps([(m, ir) for m, ir in irreps_out if ir.l == 0])
    gated = o3.Irreps([(m, ir) for m, ir in irreps_out if ir.l > 0])
    acts = [torch.nn.functional.silu if ir.p == 1 else torch.tanh for _, ir in scalars]
    gates = o3.Irreps(f"{gated.num_irreps}x0e") if gated.num_irreps else o3.Irreps("")
    return Gate(scalars, acts, gates, [torch.sigmoid] * len(gates), gated)


class Convolution(nn.Module):
    """sum_j TP(x_j, Y(r_ij); w(|r_ij|)) over the edges of each node i (NequIP-style 'uvu')."""

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_sh: o3.Irreps,
        irreps_target: o3.Irreps,
        num_radial: int,
        radial_hidden: int,
    ):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        mid, instructions = [], []
        for a, (mul, ir_in) in enumerate(self.irreps_in):
            for b, (_, ir_sh) in enumerate(o3.Irreps(irreps_sh)):
                for ir_out in ir_in * ir_sh:
                    if ir_out in o3.Irreps(irreps_target):
                        instructions.append((a, b, len(mid), "uvu", True))
                        mid.append((mul, ir_out))
        mid = o3.Irreps(mid)
        self.irreps_out, perm, _ = mid.sort()
        instructions = [(a, b, perm[k], mode, t) for a, b, k, mode, t in instructions]
        self.tp = o3.TensorProduct(
            self.irreps_in,
            irreps_sh,
            self.irreps_out,
            instructions,
            shared_weights=False,
            internal_weights=False,
        )
        self.radial = FullyConnectedNet(
            [num_radial, radial_hidden, self.tp.weight_numel], torch.nn.functional.silu
        )

    def forward(self, x_src, sh, radial) -> torch.Tensor:
        """Per-edge messages; the caller sums them where it needs."""
        return self.tp(x_src, sh, self.radial(radial))


#: convolution kinds: full tensor products with Y(r) ("tp") or edge-frame maps ("so2")
CONVOLUTIONS = ("tp", "so2")


def make_convolution(
    kind: str, irreps_in, irreps_sh, irreps_target, num_radial: int, radial_hidden: int
) -> nn.Module:
    """Either convolution; both are called as conv(x_src, edge_geometry, radial), the
    geometry being Y(r) for "tp" and the edge-frame rotations for "so2"."""
    if kind == "tp":
        return Convolution(irreps_in, irreps_sh, irreps_target, num_radial, radial_hidden)
    if kind == "so2":
        return SO2Convolution(irreps_in, irreps_target, num_radial, radial_hidden)
    raise ValueError(f"unknown convolution {kind!r}, expected one of {CONVOLUTIONS}")


class Interaction(nn.Module):
    """Node update: convolution, sum over neighbours, gate, residual, layer norm."""

    def __init__(self, irreps_node, irreps_sh, num_radial, radial_hidden, avg_neighbors, kind="tp"):
        super().__init__()
        self.irreps_node = o3.Irreps(irreps_node)
        self.gate = gate_for(self.irreps_node)
        self.pre = o3.Linear(self.irreps_node, self.irreps_node)
        self.conv = make_convolution(
            kind, self.irreps_node, irreps_sh, self.gate.irreps_in, num_radial, radial_hidden
        )
        self.post = o3.Linear(self.conv.irreps_out, self.gate.irreps_in)
        self.skip = o3.Linear(self.irreps_node, self.gate.irreps_in)
        self.norm = EquivariantLayerNorm(self.irreps_node)
        self.avg_neighbors = avg_neighbors

    def forward(self, x, src, dst, geometry, radial) -> torch.Tensor:
        return self.update(x, self.aggregate(self.pre(x), src, dst, geometry, radial))

    def aggregate(self, pre_x, src, dst, geometry, radial, agg=None) -> torch.Tensor:
        """Messages of the edges src -> dst summed onto ``agg`` (new zeros if None): edges
        may come in chunks, each adding to the same sum."""
        msg = self.conv(pre_x.index_select(0, src), geometry, radial)
        if agg is None:
            agg = msg.new_zeros(pre_x.shape[0], msg.shape[1])
        return agg.index_add_(0, dst, msg)

    def update(self, x, agg) -> torch.Tensor:
        h = self.post(agg / self.avg_neighbors) + self.skip(x)
        return self.norm(x + self.gate(h))


class EdgeUpdate(nn.Module):
    """Edge features from both end nodes and the bond: TP(x_i, Y) + TP(x_j, Y), gated."""

    def __init__(self, irreps_node, irreps_sh, irreps_edge, num_radial, radial_hidden, kind="tp"):
        super().__init__()
        self.gate = gate_for(irreps_edge)
        args = (irreps_node, irreps_sh, self.gate.irreps_in, num_radial, radial_hidden)
        self.conv_i = make_convolution(kind, *args)
        self.conv_j = make_convolution(kind, *args)
        self.lin_i = o3.Linear(self.conv_i.irreps_out, self.gate.irreps_in)
        self.lin_j = o3.Linear(self.conv_j.irreps_out, self.gate.irreps_in)
        self.node_i = o3.Linear(irreps_node, self.gate.irreps_in)
        self.node_j = o3.Linear(irreps_node, self.gate.irreps_in)
        self.out = o3.Linear(irreps_edge, irreps_edge)
        self.norm = EquivariantLayerNorm(irreps_edge)

    def forward(self, x, i, j, geometry, radial, extra=None) -> torch.Tensor:
        """``extra``: per-edge features already in the gate's input irreps
        (:attr:`irreps_gate`), added before the gate (e.g. the edge's H0)."""
        # index_select: its backward is an index_add, cheaper than indexing's index_put
        xi, xj = x.index_select(0, i), x.index_select(0, j)
        h = (
            self.lin_i(self.conv_i(xi, geometry, radial))
            + self.lin_j(self.conv_j(xj, geometry, radial))
            + self.node_i(xi)
            + self.node_j(xj)
        )
        if extra is not None:
            h = h + extra
        return self.norm(self.out(self.gate(h)))

    @property
    def irreps_gate(self) -> o3.Irreps:
        """Irreps of the pre-gate sum (what ``extra`` must be)."""
        return self.gate.irreps_in


class NodeUpdate(nn.Module):
    """A gated self-interaction of node features into ``irreps_out``: widens them (e.g.
    to the multiplicities of the on-site blocks) with a nonlinearity between, so that
    the linear head after it is not bounded by the rank of the hidden features."""

    def __init__(self, irreps_node, irreps_out):
        super().__init__()
        self.gate = gate_for(o3.Irreps(irreps_out))
        self.lin = o3.Linear(irreps_node, self.gate.irreps_in)
        self.out = o3.Linear(irreps_out, irreps_out)
        self.norm = EquivariantLayerNorm(irreps_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.out(self.gate(self.lin(x))))


class NormFeatures(nn.Module):
    """x + [W |x_c|^2, 0]: the squared norm of every l > 0 copy c of a node's features,
    mapped linearly onto its even scalars.

    Why: a node's l > 0 features hold sums over its bonds (e.g. sum_j f(r_ij) Y1(r_ij)),
    and a Te's height above its three Mo is the length of such a sum, a three-body
    invariant. Convolutions only read neighbours' features and the heads are linear,
    so nothing formed that length, and the bundled models missed Te's on-site response
    to it (``benchmarks/results/onsite_response.md``). Norms are invariant under O(3),
    so the map keeps the features equivariant. W starts at zero: a model gains the
    features without changing what it predicts (a pretrained model may take them on)."""

    def __init__(self, irreps: o3.Irreps):
        super().__init__()
        self.irreps = o3.Irreps(irreps)
        self._copies = [
            (sl.start, sl.stop, mul, ir.dim)
            for sl, (mul, ir) in zip(self.irreps.slices(), self.irreps, strict=True)
            if ir.l > 0
        ]
        scalars = [
            sl
            for sl, (_, ir) in zip(self.irreps.slices(), self.irreps, strict=True)
            if ir == o3.Irrep("0e")
        ]
        if len(scalars) != 1 or not self._copies:
            raise ValueError(f"{self.irreps}: needs one block of 0e and some l > 0 irreps")
        self._scalars = (scalars[0].start, scalars[0].stop)
        self.mix = nn.Linear(sum(c[2] for c in self._copies), scalars[0].stop - scalars[0].start)
        nn.init.zeros_(self.mix.weight)
        nn.init.zeros_(self.mix.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        norms = torch.cat(
            [x[:, a:b].reshape(n, mul, dim).pow(2).sum(-1) for a, b, mul, dim in self._copies],
            dim=1,
        )
        start, stop = self._scalars
        added = self.mix(norms)
        return torch.cat([x[:, :start], x[:, start:stop] + added, x[:, stop:]], dim=1)


class Standardize(nn.Module):
    """(x - mean) / scale in irreps space, the inverse of :class:`ScaleShift`'s map: a
    mean for 0e copies only, one RMS per irrep copy (equivariant). Both are buffers
    saved with the model, set once from training statistics (:meth:`set_statistics`)."""

    def __init__(self, irreps: o3.Irreps):
        super().__init__()
        self.irreps = o3.Irreps(irreps)
        stats = ScaleShift(self.irreps)
        self.register_buffer("copy_of_dim", stats.copy_of_dim.clone(), persistent=False)
        self.register_buffer("scalar_dims", stats.scalar_dims.clone(), persistent=False)
        self.register_buffer("scale", torch.ones_like(stats.scale.detach()))
        self.register_buffer("mean", torch.zeros_like(stats.shift.detach()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x.index_add(1, self.scalar_dims, -self.mean.expand(x.shape[0], -1))
        return centred / self.scale[self.copy_of_dim]

    @torch.no_grad()
    def set_statistics(self, samples: torch.Tensor) -> None:
        """samples: (N, dim) in irreps space; scales below 1e-2 of the largest are
        raised to it (an irrep copy that H0 barely fills, e.g. its grid noise, is not
        blown up to unit size)."""
        if len(samples) == 0:
            return
        stats = ScaleShift(self.irreps).to(samples.dtype)
        stats.set_statistics(samples)
        floor = 1e-2 * float(stats.scale.max())
        self.scale.copy_(stats.scale.clamp_min(max(floor, 1e-8)))
        self.mean.copy_(stats.shift)


class ScaleShift(nn.Module):
    """x * scale + shift in irreps space: one scale per irrep copy, a shift for 0e only
    (anything else would break equivariance). Initialised from training statistics."""

    def __init__(self, irreps: o3.Irreps):
        super().__init__()
        self.irreps = o3.Irreps(irreps)
        copy_of_dim, scalar_dims = [], []
        copy = 0
        for mul, ir in self.irreps:
            for _ in range(mul):
                if ir == o3.Irrep("0e"):
                    scalar_dims.append(len(copy_of_dim))
                copy_of_dim += [copy] * ir.dim
                copy += 1
        self.register_buffer("copy_of_dim", torch.tensor(copy_of_dim, dtype=torch.long))
        self.register_buffer("scalar_dims", torch.tensor(scalar_dims, dtype=torch.long))
        self.scale = nn.Parameter(torch.ones(copy))
        self.shift = nn.Parameter(torch.zeros(len(scalar_dims)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x * self.scale[self.copy_of_dim]
        return out.index_add(1, self.scalar_dims, self.shift.expand(x.shape[0], -1))

    @torch.no_grad()
    def set_statistics(self, targets: torch.Tensor) -> None:
        """targets: (samples, dim) in irreps space."""
        if len(targets) == 0:
            return
        mean = targets.mean(dim=0)
        self.shift.copy_(mean[self.scalar_dims])
        centred = targets.clone()
        centred[:, self.scalar_dims] -= mean[self.scalar_dims]
        ncopy = self.scale.numel()
        power = targets.new_zeros(ncopy).index_add(0, self.copy_of_dim, centred.pow(2).mean(dim=0))
        count = targets.new_zeros(ncopy).index_add(0, self.copy_of_dim, torch.ones_like(mean))
        self.scale.copy_(torch.sqrt(power / count).clamp_min(1e-6))
