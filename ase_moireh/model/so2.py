"""SO(2) convolutions in the edge frame (eSCN-style): the default convolution.

Features are rotated so that the bond lies along e3nn's polar axis (y); there a tensor
product with the bond's spherical harmonics reduces to linear maps between components
of equal |m|, parity deciding which irreps may couple (A for parity-even pairs, the cross
map B for the others). The rotations are built from exact rotations about y and one
constant float64 tilt, not from e3nn's float32 matrix exponentials.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet
from torch import nn


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
        self._build_layout()

    def _build_layout(self) -> None:
        """Constant index maps, so that a forward pass is a few gathers and splits rather
        than one slice per (l, m): every slice of a large tensor costs a full-size zero
        tensor in the backward pass, which dominated training time.

        ``in_perm``: e3nn columns in l-major order (l, copy, component); ``m_gather``:
        the l-major framed columns of each (m, +/-) chunk, l ascending then copy;
        ``m_scatter``: for every l-major output column, its place among the stacked
        chunk outputs (the last place is a zero column: components no m reaches);
        ``out_perm``: l-major output columns back to e3nn order."""

        def lmajor(lists: dict[int, torch.Tensor]) -> dict[int, int]:
            offsets, at = {}, 0
            for lv, idx in lists.items():
                offsets[lv] = at
                at += idx.numel()
            return offsets

        off_in, off_out = lmajor(self._lists_in), lmajor(self._lists_out)
        gather, scatter_pos, self._chunk_in, self._chunk_out = [], [], [], []
        self._plus_flags: list[bool] = []
        for m in self.ms:
            for sign in (+1, -1) if m > 0 else (+1,):
                cols = [
                    off_in[lv] + u * (2 * lv + 1) + lv + sign * m
                    for lv, idx in self._lists_in.items()
                    if lv >= m
                    for u in range(idx.shape[0])
                ]
                pos = [
                    off_out[lv] + u * (2 * lv + 1) + lv + sign * m
                    for lv, idx in self._lists_out.items()
                    if lv >= m
                    for u in range(idx.shape[0])
                ]
                gather += cols
                scatter_pos += pos
                self._chunk_in.append(len(cols))
                self._chunk_out.append(len(pos))
                self._plus_flags.append(sign > 0)
        total_out = sum(idx.numel() for idx in self._lists_out.values())
        scatter = torch.full((total_out,), len(scatter_pos), dtype=torch.long)
        scatter[torch.tensor(scatter_pos, dtype=torch.long)] = torch.arange(len(scatter_pos))
        in_perm = torch.cat([idx.flatten() for idx in self._lists_in.values()])
        out_perm = torch.cat([idx.flatten() for idx in self._lists_out.values()])
        self.register_buffer("in_perm", in_perm, persistent=False)
        self.register_buffer("m_gather", torch.tensor(gather, dtype=torch.long), persistent=False)
        self.register_buffer("m_scatter", scatter, persistent=False)
        self.register_buffer("out_perm", torch.argsort(out_perm), persistent=False)
        self._sizes_in = [idx.numel() for idx in self._lists_in.values()]
        self._sizes_out = [idx.numel() for idx in self._lists_out.values()]
        # one radial scale per (m, copy), shared by +m and -m
        self._scale_sizes = [n for n, m in zip(self._chunk_in, self._plus_flags, strict=True) if m]

    def forward(self, x_src, rotations: list[torch.Tensor], radial) -> torch.Tensor:
        """Per-edge messages; ``rotations`` from :func:`edge_frame_rotations`."""
        n = x_src.shape[0]
        # into the edge frame: per l (E, copies_l, 2l+1) @ D^l, stacked l-major
        parts = torch.split(x_src.index_select(1, self.in_perm), self._sizes_in, dim=1)
        framed = torch.cat(
            [
                (part.view(n, -1, 2 * lv + 1) @ rotations[lv]).reshape(n, -1)
                for part, lv in zip(parts, self._lists_in, strict=True)
            ],
            dim=1,
        )
        chunks = torch.split(framed.index_select(1, self.m_gather), self._chunk_in, dim=1)
        scales = torch.split(self.radial(radial), self._scale_sizes, dim=1)
        outs, k = [], 0
        for j, m in enumerate(self.ms):
            scale = scales[j]
            plus = chunks[k] * scale
            if m == 0:
                outs.append(self._couple("a", m, plus, self._chunk_out[k]))
                k += 1
                continue
            minus = chunks[k + 1] * scale
            size = self._chunk_out[k]
            outs.append(self._couple("a", m, plus, size) - self._couple("b", m, minus, size))
            outs.append(self._couple("a", m, minus, size) + self._couple("b", m, plus, size))
            k += 2
        stacked = torch.cat([*outs, x_src.new_zeros(n, 1)], dim=1).index_select(1, self.m_scatter)
        parts = torch.split(stacked, self._sizes_out, dim=1)
        back = torch.cat(
            [
                (part.view(n, -1, 2 * lv + 1) @ rotations[lv].transpose(1, 2)).reshape(n, -1)
                for part, lv in zip(parts, self._lists_out, strict=True)
            ],
            dim=1,
        )
        return back.index_select(1, self.out_perm)

    def _couple(self, name: str, m: int, x: torch.Tensor, size: int) -> torch.Tensor:
        """x times the masked, fan-in normalised weights of kind ``name`` at this m
        (zeros of ``size`` columns where parity lets no pair couple)."""
        weights = getattr(self, f"weights_{name}")
        if str(m) not in weights:
            return x.new_zeros(x.shape[0], size)
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
