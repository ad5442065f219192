"""e3nn building blocks: radial basis, convolution, gated update, equivariant layer norm.

Every module takes and returns features described by ``o3.Irreps`` (e3nn layout) and
checks them, as e3nn's own modules do.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn


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
        for sl, (mul, ir) in zip(self.irreps.slices(), self.irreps, strict=True):
            f = x[:, sl].reshape(-1, mul, ir.dim)
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
        msg = self.conv(self.pre(x)[src], geometry, radial)
        agg = torch.zeros(x.shape[0], msg.shape[1], dtype=msg.dtype, device=msg.device)
        agg.index_add_(0, dst, msg)
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

    def forward(self, x, i, j, geometry, radial) -> torch.Tensor:
        h = (
            self.lin_i(self.conv_i(x[i], geometry, radial))
            + self.lin_j(self.conv_j(x[j], geometry, radial))
            + self.node_i(x[i])
            + self.node_j(x[j])
        )
        return self.norm(self.out(self.gate(h)))


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
        power = torch.zeros(ncopy, dtype=targets.dtype).index_add(
            0, self.copy_of_dim, centred.pow(2).mean(dim=0)
        )
        count = torch.zeros(ncopy, dtype=targets.dtype).index_add(
            0, self.copy_of_dim, torch.ones_like(mean)
        )
        self.scale.copy_(torch.sqrt(power / count).clamp_min(1e-6))


def edge_frame_rotations(vec: torch.Tensor, lmax: int) -> list[torch.Tensor]:
    """Per l = 0..lmax, the (E, 2l+1, 2l+1) Wigner matrices D^l(g_e) of a rotation g_e
    that takes e3nn's polar axis (y) onto each edge direction: x @ D^l brings features
    into the edge frame, where the bond lies along y and rotations about it only mix
    the (+m, -m) components of each irrep.

    g_e = Ry(alpha) Rx(beta) with Rx(beta) = P Ry(beta) P^T (P: y -> x), so only the
    cheap, exactly known rotations about y are evaluated per edge (e3nn's wigner_D takes
    three matrix exponentials per edge, with float32 generators).
    """
    alpha, beta = o3.xyz_to_angles(vec)
    out = []
    for lv in range(lmax + 1):
        p = torch.as_tensor(_y_to_x(lv), dtype=vec.dtype, device=vec.device)
        tilt = p @ _rotation_about_y(lv, beta) @ p.T
        out.append(_rotation_about_y(lv, alpha) @ tilt)
    return out


@functools.cache
def _y_to_x(lv: int) -> np.ndarray:
    """D^l (float64) of the rotation by -90 degrees about z, which takes y onto x."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        q = torch.tensor([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        return o3.Irrep(lv, 1).D_from_matrix(q).numpy()
    finally:
        torch.set_default_dtype(previous)


def _rotation_about_y(lv: int, angle: torch.Tensor) -> torch.Tensor:
    """(E, 2l+1, 2l+1) D^l of rotations about e3nn's polar axis: cos(m a) on the (+-m)
    diagonal, -sin(m a) at (+m, -m), sin(m a) at (-m, +m)."""
    d = angle.new_zeros(angle.shape[0], 2 * lv + 1, 2 * lv + 1)
    d[:, lv, lv] = 1.0
    for m in range(1, lv + 1):
        c, s = torch.cos(m * angle), torch.sin(m * angle)
        d[:, lv + m, lv + m] = c
        d[:, lv - m, lv - m] = c
        d[:, lv + m, lv - m] = -s
        d[:, lv - m, lv + m] = s
    return d


class SO2Convolution(nn.Module):
    """Edge-frame convolution (eSCN / EquiformerV2 'SO(2) convolution').

    In the frame where the bond is the polar axis, a tensor product with the bond's
    spherical harmonics reduces to linear maps between components of equal |m|:
    out_{+m} = A x_{+m} - B x_{-m}, out_{-m} = A x_{-m} + B x_{+m}. Parity fixes which
    of A ('even' pairs, p_in p_out (-1)^(l_in + l_out) = +1) and B (the others, m > 0)
    may couple two irreps, so the map spans exactly the O(3)-equivariant tensor products
    with Y_L for every L up to l_in + l_out. Cost per edge is a few small dense matrix
    products instead of one path per (l_in, L, l_out). The bond length enters as a
    per-edge, per-(m, copy) scale of the inputs from a radial MLP, shared by +m and -m.
    """

    def __init__(
        self, irreps_in: o3.Irreps, irreps_out: o3.Irreps, num_radial: int, radial_hidden: int
    ):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        self.lmax = max(self.irreps_in.lmax, self.irreps_out.lmax)
        copies_in = _irrep_copies(self.irreps_in)
        copies_out = _irrep_copies(self.irreps_out)
        self._lists_in = _component_lists(self.irreps_in)
        self._lists_out = _component_lists(self.irreps_out)
        for lv, idx in self._lists_in.items():
            self.register_buffer(f"in_{lv}", idx, persistent=False)
        for lv, idx in self._lists_out.items():
            self.register_buffer(f"out_{lv}", idx, persistent=False)
        # weights per m (keys str(m)), only where parity lets some pair couple
        self.weights_a = nn.ParameterDict()
        self.weights_b = nn.ParameterDict()
        self.ms: list[int] = []
        n_mod = 0
        for m in range(self.lmax + 1):
            cin = [c for c in copies_in if c[0] >= m]
            cout = [c for c in copies_out if c[0] >= m]
            if not cin or not cout:
                continue
            even = torch.tensor(
                [[float(po * pi * (-1) ** (lo + li) == 1) for li, pi in cin] for lo, po in cout]
            )
            odd = (1.0 - even) * (m > 0)  # cross terms vanish for m = 0
            for name, mask in (("a", even), ("b", odd)):
                if mask.any():
                    self.register_buffer(f"mask_{name}_{m}", mask / _fan_in(mask), persistent=False)
                    weights = getattr(self, f"weights_{name}")
                    weights[str(m)] = nn.Parameter(torch.randn(len(cout), len(cin)))
            self.ms.append(m)
            n_mod += len(cin)
        self.radial = FullyConnectedNet(
            [num_radial, radial_hidden, n_mod], torch.nn.functional.silu
        )

    def forward(self, x_src, rotations: list[torch.Tensor], radial) -> torch.Tensor:
        """Per-edge messages; ``rotations`` from :func:`edge_frame_rotations`."""
        # into the edge frame, one (E, copies_l, 2l+1) tensor per l
        framed = {lv: x_src[:, getattr(self, f"in_{lv}")] @ rotations[lv] for lv in self._lists_in}
        out_framed = {
            lv: x_src.new_zeros(x_src.shape[0], len(idx), 2 * lv + 1)
            for lv, idx in self._lists_out.items()
        }
        scales = self.radial(radial)
        start = 0
        for m in self.ms:
            plus = torch.cat([framed[lv][:, :, lv + m] for lv in framed if lv >= m], dim=1)
            scale = scales[:, start : start + plus.shape[1]]
            start += plus.shape[1]
            plus = plus * scale
            if m == 0:
                _scatter_m(out_framed, 0, self._couple("a", m, plus), +1)
                continue
            minus = torch.cat([framed[lv][:, :, lv - m] for lv in framed if lv >= m], dim=1)
            minus = minus * scale
            out_plus = self._couple("a", m, plus) - self._couple("b", m, minus)
            out_minus = self._couple("a", m, minus) + self._couple("b", m, plus)
            _scatter_m(out_framed, m, out_plus, +1)
            _scatter_m(out_framed, m, out_minus, -1)
        out = x_src.new_zeros(x_src.shape[0], self.irreps_out.dim)
        for lv, block in out_framed.items():
            back = block @ rotations[lv].transpose(1, 2)
            out[:, getattr(self, f"out_{lv}")] = back
        return out

    def _couple(self, name: str, m: int, x: torch.Tensor) -> torch.Tensor | float:
        """x times the masked, fan-in normalised weights of kind ``name`` at this m
        (0 where parity lets no pair couple)."""
        weights = getattr(self, f"weights_{name}")
        if str(m) not in weights:
            return 0.0
        return x @ (weights[str(m)] * getattr(self, f"mask_{name}_{m}")).T


def _irrep_copies(irreps: o3.Irreps) -> list[tuple[int, int]]:
    """(l, parity) of every irrep copy, grouped by l in increasing order (the order in
    which :func:`_component_lists` stacks them)."""
    return sorted(((ir.l, ir.p) for mul, ir in irreps for _ in range(mul)), key=lambda c: c[0])


def _component_lists(irreps: o3.Irreps) -> dict[int, torch.Tensor]:
    """Per l: (copies, 2l+1) positions in the flat e3nn layout of every copy with that l."""
    rows: dict[int, list[list[int]]] = {}
    for sl, (mul, ir) in zip(irreps.slices(), irreps, strict=True):
        for u in range(mul):
            first = sl.start + u * ir.dim
            rows.setdefault(ir.l, []).append(list(range(first, first + ir.dim)))
    return {lv: torch.tensor(rows[lv], dtype=torch.long) for lv in sorted(rows)}


def _fan_in(mask: torch.Tensor) -> torch.Tensor:
    return mask.sum(dim=1, keepdim=True).clamp_min(1.0).sqrt()


def _scatter_m(out_framed: dict[int, torch.Tensor], m: int, values, sign: int) -> None:
    """Write the (E, copies with l >= m) component +m or -m back into per-l tensors."""
    start = 0
    for lv, block in out_framed.items():
        if lv < m:
            continue
        n = block.shape[1]
        block[:, :, lv + sign * m] = values[:, start : start + n]
        start += n
