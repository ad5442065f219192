"""The equivariant Hamiltonian model (DeepH-E3 class): structure -> blocks H_ij(R).

Species embedding -> interaction layers (convolutions with the bond: SO(2) maps in the
edge frame by default, or full tensor products with its spherical harmonics; gates,
layer norm, residuals) -> edge update -> per element pair (and per species
for on-site blocks) a linear map to the block's irreps, a scale/shift from training
statistics, and the constant Wigner-Eckart matrix of :mod:`.blocks`. Predictions are
made Hermitian by construction: B_ij(R) <- (B_ij(R) + B_ji(-R)^dagger) / 2.

With ``long_range`` (opt-in), every block also gets (phi_i + phi_j) / 2 * S_ij, phi the
per-atom potential of :class:`~ase_moireh.model.electrostatics.PotentialHead` (latent
charges in the structure's periodic cell, by Ewald summation) and S the exact overlap:
a potential shift felt by all of an atom's orbitals, which local message passing cannot
make when it comes from a cell-wide field. Scalar phi and equivariant S keep the blocks
equivariant; S is Hermitian, so they stay Hermitian. With ``long_range_shells`` phi is
resolved by shell (phi_ia: a factor on the Ewald potential and a local scalar per species
and shell) and block (i, j) gets (phi_ia + phi_jb) / 2 * S_ij[a, b]: constant within each
shell pair, so still equivariant, and symmetric in (i, a) <-> (j, b), so still Hermitian.

With ``h0_features`` (opt-in), the network also reads the zeroth-step H0 of every block
(NextHAM, arXiv 2509.19877): M^T flat(H0) are the block's irreps (M the block's
Wigner-Eckart matrix, orthogonal: M^T is its pseudo-inverse), standardised per block key
(:class:`~ase_moireh.model.layers.Standardize`); per species a linear map of the on-site
ones adds to the initial node features, per element pair one of the hopping ones adds
to the edge update's pre-gate sum. Linear maps between irreps keep it equivariant.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch
from e3nn import o3
from scipy.sparse.csgraph import connected_components
from torch import nn

from ase_moireh.basis import E3NN_FRAME, Basis, spin_factor
from ase_moireh.model.blocks import block_basis
from ase_moireh.model.electrostatics import PotentialHead
from ase_moireh.model.graph import MOTE2_CUTOFF, edge_vectors
from ase_moireh.model.layers import (
    EdgeUpdate,
    Interaction,
    NodeUpdate,
    NormFeatures,
    RadialBasis,
    ScaleShift,
    Standardize,
)
from ase_moireh.model.so2 import edge_frame_rotations

if TYPE_CHECKING:
    from ase_moireh.overlap import TwoCentreOverlap


#: where :class:`~ase_moireh.model.layers.NormFeatures` enter (``ModelConfig.norm_features``)
NORM_PLACES = ("", "all", "onsite")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model (stored in model files as JSON)."""

    species: list[str]
    basis: dict[str, str]  # dftio strings, e.g. {"Mo": "3s2p1d"}
    spinful: bool
    cutoff: float = MOTE2_CUTOFF  # A
    num_radial: int = 16
    sh_lmax: int = 4
    multiplicity: int = 8  # channels per hidden irrep (even scalars get twice as many)
    num_layers: int = 2
    radial_hidden: int = 32
    avg_neighbors: float = 50.0
    convolution: str = "so2"  # "so2" (edge-frame maps) or "tp" (full tensor products)
    #: heads read features at least as wide as their blocks (per irrep), not the hidden
    #: width: a linear head from 8 hidden 2e features cannot give the 20 independent 2e
    #: parts of a Te-Te block (see :func:`head_irreps`)
    wide_heads: bool = False
    #: add (phi_i + phi_j) / 2 * S_ij to every block, phi the Ewald potential of latent
    #: charges in the structure's periodic cell (:mod:`.electrostatics`): the cell-wide
    #: field of a sliding-ferroelectric bilayer's dipole and its periodic images
    long_range: bool = False
    #: with ``long_range``: phi also gets a local learned scalar per atom
    long_range_local: bool = True
    #: with ``long_range``: phi resolved by shell (a factor on the Ewald potential and a
    #: local scalar per species and shell), (phi_ia + phi_jb) / 2 * S_ij[a, b]
    long_range_shells: bool = False
    #: the network reads the zeroth-step H0 of every block (as NextHAM does): each H0
    #: block in irreps (the inverse Wigner-Eckart map), standardised per block key with
    #: training statistics, on-site ones added to the initial node features, hopping
    #: ones to the edge update before the heads. Graphs must carry H0 (``attach_h0``)
    h0_features: bool = False
    #: the squared norms of the final node features' l > 0 copies, mapped onto their
    #: scalars (:class:`~ase_moireh.model.layers.NormFeatures`): three-body invariants
    #: such as a Te's height above its three Mo. Where they go (:data:`NORM_PLACES`):
    #: "all" heads (on-site, hopping, long range), the "onsite" heads only, or none ("");
    #: files written with a bool say True for "all"
    norm_features: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.norm_features, bool):
            self.norm_features = "all" if self.norm_features else ""
        if self.norm_features not in NORM_PLACES:
            raise ValueError(f"norm_features={self.norm_features!r}: expected one of {NORM_PLACES}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        fields = json.loads(text)
        fields.setdefault("convolution", "tp")  # files written before "so2" existed
        return cls(**fields)

    @property
    def basis_obj(self) -> Basis:
        return Basis.from_dftio(self.basis)


def pair_key(a: str, b: str) -> str:
    return f"{a}-{b}"


def head_irreps(hidden: o3.Irreps, blocks: list[o3.Irreps]) -> o3.Irreps:
    """Per irrep, the larger of the hidden multiplicity and the largest one any of
    ``blocks`` needs: what the heads of those blocks read when ``wide_heads``."""
    need: dict[o3.Irrep, int] = {ir: mul for mul, ir in hidden}
    for irreps in blocks:
        for mul, ir in irreps.simplify():
            need[ir] = max(need.get(ir, 0), mul)
    return o3.Irreps([(mul, ir) for ir, mul in need.items()]).sort()[0].simplify()


def _hermitian_map(ni: int, nj: int, spinful: bool) -> tuple[np.ndarray, np.ndarray]:
    """Index into the flat block of (j, i, -R) and sign giving flat(B_ji^dagger)."""
    m = spin_factor(spinful)
    p, q = np.meshgrid(np.arange(m * ni), np.arange(m * nj), indexing="ij")
    index = (q * (m * ni) + p).ravel()
    if not spinful:
        return index, np.ones(index.size)
    half = index.size
    return np.concatenate([index, index + half]), np.concatenate([np.ones(half), -np.ones(half)])


class BlockMap(nn.Module):
    """The constant Wigner-Eckart matrix M (D, dim) of one block key, applied as dense
    products on its independent parts: M is block-sparse (each irrep feeds one shell
    pair), and the parts of equal shape are batched. Far faster than a sparse product."""

    def __init__(self, mat: np.ndarray):
        super().__init__()
        self.shape = mat.shape
        parts: dict[tuple[int, int], list] = {}
        for rows, cols in _independent_parts(mat):
            parts.setdefault((len(rows), len(cols)), []).append((rows, cols))
        self.nshapes = len(parts)
        dtype = torch.get_default_dtype()
        for n, group in enumerate(parts.values()):
            rows = np.array([r for r, _ in group])
            cols = np.array([c for _, c in group])
            sub = np.stack([mat[np.ix_(r, c)] for r, c in group])
            self.register_buffer(f"rows_{n}", torch.as_tensor(rows), persistent=False)
            self.register_buffer(f"cols_{n}", torch.as_tensor(cols), persistent=False)
            self.register_buffer(f"mat_{n}", torch.tensor(sub, dtype=dtype), persistent=False)

    def forward(self, x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """(E, dim) -> (E, D); with ``transpose`` (E, D) -> (E, dim) by M^T."""
        out = x.new_zeros(x.shape[0], self.shape[1] if transpose else self.shape[0])
        for n in range(self.nshapes):
            rows, cols = getattr(self, f"rows_{n}"), getattr(self, f"cols_{n}")
            mat = getattr(self, f"mat_{n}")
            if transpose:
                out[:, cols] = torch.einsum("epr,prc->epc", x[:, rows], mat)
            else:
                out[:, rows] = torch.einsum("epc,prc->epr", x[:, cols], mat)
        return out


def _independent_parts(mat: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rows, columns) of the connected components of the nonzero pattern of ``mat``."""
    pattern = sp.csr_matrix(np.abs(mat) > 1e-12)
    nrow = mat.shape[0]
    graph = sp.bmat([[None, pattern], [pattern.T, None]])
    _, label = connected_components(graph, directed=False)
    parts = []
    for c in np.unique(label):
        members = np.flatnonzero(label == c)
        rows, cols = members[members < nrow], members[members >= nrow] - nrow
        if len(rows) and len(cols):
            parts.append((rows, cols))
    return parts


#: hopping edges per chunk of the streamed message passing (inference on big cells)
EDGE_CHUNK = 16384


class _HeadInputs:
    """What the output heads read: node and hop-edge features, where each edge's hop
    features sit (-1 for on-site edges), the cutoff envelope, the edges' first atoms."""

    def __init__(self, data, x, e, hop, envelope):
        self.x, self.e, self.envelope = x, e, envelope
        self.i = data.edge_index[0]
        self.position = torch.full_like(self.i, -1)
        self.position[hop] = torch.arange(len(hop), device=hop.device)


class HamiltonianModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.wigner_eckart_maps = nn.ModuleDict()
        basis = config.basis_obj
        species = config.species
        self.block_keys: list[str] = []  # pair keys, then on-site keys "Mo"
        out_irreps: dict[str, o3.Irreps] = {}
        for a in species:
            for b in species:
                key = pair_key(a, b)
                irreps, mat = block_basis(basis[a], basis[b], config.spinful)
                self._add_block(key, irreps, mat, basis[a].norb, basis[b].norb)
                out_irreps[key] = irreps
        for a in species:
            irreps, mat = block_basis(basis[a], basis[a], config.spinful)
            self._add_block(a, irreps, mat, basis[a].norb, basis[a].norb)
            out_irreps[a] = irreps
        needed = sorted({ir for irreps in out_irreps.values() for _, ir in irreps})
        mul = config.multiplicity
        self.irreps_hidden = (
            o3.Irreps([(2 * mul if ir == o3.Irrep("0e") else mul, ir) for ir in needed])
            .sort()[0]
            .simplify()
        )
        self.irreps_sh = o3.Irreps.spherical_harmonics(config.sh_lmax)
        self.register_buffer(
            "frame", torch.tensor(E3NN_FRAME, dtype=torch.get_default_dtype()), persistent=False
        )
        self.radial = RadialBasis(config.cutoff, config.num_radial)
        self.embed = o3.Linear(o3.Irreps(f"{len(species)}x0e"), self.irreps_hidden)
        self.layers = nn.ModuleList(
            Interaction(
                self.irreps_hidden,
                self.irreps_sh,
                config.num_radial,
                config.radial_hidden,
                config.avg_neighbors,
                config.convolution,
            )
            for _ in range(config.num_layers)
        )
        self.norm_features = NormFeatures(self.irreps_hidden) if config.norm_features else None
        hop_keys = [k for k in self.block_keys if k not in species]
        irreps_edge = irreps_node = self.irreps_hidden
        self.onsite = None
        if config.wide_heads:
            irreps_edge = head_irreps(self.irreps_hidden, [out_irreps[k] for k in hop_keys])
            irreps_node = head_irreps(self.irreps_hidden, [out_irreps[a] for a in species])
            self.onsite = NodeUpdate(self.irreps_hidden, irreps_node)
        self.edge = EdgeUpdate(
            self.irreps_hidden,
            self.irreps_sh,
            irreps_edge,
            config.num_radial,
            config.radial_hidden,
            config.convolution,
        )
        self.heads = nn.ModuleDict(
            {
                k: o3.Linear(irreps_node if k in species else irreps_edge, out_irreps[k])
                for k in self.block_keys
            }
        )
        self.scale_shift = nn.ModuleDict({k: ScaleShift(out_irreps[k]) for k in self.block_keys})
        if config.h0_features:
            self._init_h0_features(basis, species)
        self.potential_head = None
        if config.long_range:
            shells = None
            if config.long_range_shells:
                shells = [basis[s].orbital_shells() for s in species]
            self.potential_head = PotentialHead(
                self.irreps_hidden, config.cutoff, config.long_range_local, shells
            )
        #: the exact overlap a long-range model computes S with when a graph carries none
        self.overlap_source: TwoCentreOverlap | None = None

    def _init_h0_features(self, basis: Basis, species: list[str]) -> None:
        """Spinless Wigner-Eckart maps of H0's blocks (whatever the model's spin: the
        graph carries H0's spin-independent part), standardisers and linear maps."""
        self.h0_maps = nn.ModuleDict()
        self.h0_norm = nn.ModuleDict()
        self.h0_in = nn.ModuleDict()
        for key in self.block_keys:
            a, b = (key, key) if key in species else key.split("-")
            irreps, mat = block_basis(basis[a], basis[b], False)
            self.h0_maps[key] = BlockMap(mat)
            self.h0_norm[key] = Standardize(irreps)
            target = self.irreps_hidden if key in species else self.edge.irreps_gate
            self.h0_in[key] = o3.Linear(irreps, target)

    @torch.no_grad()
    def set_h0_statistics(self, graphs) -> None:
        """Mean and RMS per irrep copy of the H0 features of every block key over
        ``graphs`` (the training graphs, before the first epoch)."""
        per_key: dict[str, list[torch.Tensor]] = {}
        for g in graphs:
            for key, edges in self.edge_groups(g).items():
                if len(edges):
                    per_key.setdefault(key, []).append(self._h0_irreps(key, g, edges, False))
        for key, chunks in per_key.items():
            self.h0_norm[key].set_statistics(torch.cat(chunks))

    def _h0_irreps(self, key: str, data, edges: torch.Tensor, standardize: bool = True):
        """(E, dim) irreps of the graph's H0 on ``edges`` (all of block key ``key``)."""
        if getattr(data, "h0_values", None) is None:
            raise RuntimeError(
                "a model with h0_features reads H0: build the graph with it "
                "(build_graph(..., h0=...) or ase_moireh.model.graph.attach_h0)"
            )
        width = self.h0_maps[key].shape[0]
        index = data.h0_start[edges][:, None] + torch.arange(width, device=edges.device)
        flat = data.h0_values[index].to(self.frame.dtype)
        irreps = self.h0_maps[key](flat, transpose=True)
        return self.h0_norm[key](irreps) if standardize else irreps

    def _h0_node(self, data) -> torch.Tensor:
        """(N, hidden) the on-site H0 features add to the initial node features."""
        i, j = data.edge_index
        onsite = (i == j) & (data.edge_shift.abs().sum(dim=1) == 0)
        out = self.frame.new_zeros(data.num_nodes, self.irreps_hidden.dim)
        for a_idx, a in enumerate(self.config.species):
            edges = torch.nonzero(onsite & (data.species[i] == a_idx)).flatten()
            if len(edges):
                part = self.h0_in[a](self._h0_irreps(a, data, edges))
                out = out.index_add(0, i[edges], part)
        return out

    def _h0_edge(self, data, edges: torch.Tensor) -> torch.Tensor | None:
        """(len(edges), gate) the hopping H0 features add to the edge update (None
        without ``h0_features``); ``edges``: hopping edge numbers."""
        if not self.config.h0_features:
            return None
        i, j = data.edge_index[:, edges]
        si, sj = data.species[i], data.species[j]
        out = self.frame.new_zeros(len(edges), self.edge.irreps_gate.dim)
        for a_idx, a in enumerate(self.config.species):
            for b_idx, b in enumerate(self.config.species):
                where = torch.nonzero((si == a_idx) & (sj == b_idx)).flatten()
                if len(where):
                    key = pair_key(a, b)
                    part = self.h0_in[key](self._h0_irreps(key, data, edges[where]))
                    out = out.index_copy(0, where, part)
        return out

    def attach_overlap(self, overlap: TwoCentreOverlap | None) -> None:
        """The exact overlap of the model's basis (a long-range model's S_ij)."""
        if overlap is not None and not overlap.covers(self.config.basis_obj):
            raise ValueError("the overlap's radial functions do not match the model's basis")
        self.overlap_source = overlap

    def _add_block(self, key: str, irreps, mat: np.ndarray, ni: int, nj: int) -> None:
        self.block_keys.append(key)
        # constants rebuilt from the config: not stored in model files
        self.wigner_eckart_maps[key] = BlockMap(mat)
        index, sign = _hermitian_map(ni, nj, self.config.spinful)
        self.register_buffer(
            f"herm_index_{key}", torch.tensor(index, dtype=torch.long), persistent=False
        )
        self.register_buffer(
            f"herm_sign_{key}",
            torch.tensor(sign, dtype=torch.get_default_dtype()),
            persistent=False,
        )

    def to_blocks(self, key: str, irreps_vectors: torch.Tensor) -> torch.Tensor:
        """(E, dim) irreps vectors -> (E, D) flat blocks."""
        return self.wigner_eckart_maps[key](irreps_vectors)

    def to_irreps(self, key: str, blocks: torch.Tensor) -> torch.Tensor:
        """(E, D) flat blocks -> (E, dim) irreps vectors (M has orthonormal columns)."""
        return self.wigner_eckart_maps[key](blocks, transpose=True)

    # ------------------------------------------------------------------ forward
    def edge_groups(self, data) -> dict[str, torch.Tensor]:
        """Edge numbers of every block key (pair type, or species for on-site)."""
        i, j = data.edge_index
        onsite = (i == j) & (data.edge_shift.abs().sum(dim=1) == 0)
        groups = {}
        species = self.config.species
        for a_idx, a in enumerate(species):
            is_a = data.species[i] == a_idx
            groups[a] = torch.nonzero(is_a & onsite).flatten()
            for b_idx, b in enumerate(species):
                mask = is_a & (data.species[j] == b_idx) & ~onsite
                groups[pair_key(a, b)] = torch.nonzero(mask).flatten()
        return groups

    def features(self, data) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Node features, hopping-edge features, the hopping edge numbers and their
        smooth cutoff envelope."""
        i, j = data.edge_index
        hop = self.hopping_edges(data)
        geometry, radial, envelope = self._bond(data, hop)
        x = self._embed(data)
        for layer in self.layers:
            x = layer(x, j[hop], i[hop], geometry, radial)
        x = self._with_norms(x)
        e = self.edge(x, i[hop], j[hop], geometry, radial, self._h0_edge(data, hop))
        return x, e, hop, envelope

    def hopping_edges(self, data) -> torch.Tensor:
        i, j = data.edge_index
        onsite = (i == j) & (data.edge_shift.abs().sum(dim=1) == 0)
        return torch.nonzero(~onsite).flatten()

    def _embed(self, data) -> torch.Tensor:
        onehot = torch.nn.functional.one_hot(data.species, len(self.config.species))
        x = self.embed(onehot.to(self.frame.dtype))
        return x + self._h0_node(data) if self.config.h0_features else x

    def _bond(self, data, edges: torch.Tensor):
        """(geometry, radial basis, cutoff envelope) of the given hopping edges: the
        edge-frame rotations ("so2") or spherical harmonics ("tp") of the bond."""
        vec = edge_vectors(data, edges) @ self.frame.T  # into e3nn's y-polar frame
        r = vec.norm(dim=1)
        if self.config.convolution == "so2":
            geometry = edge_frame_rotations(vec, self.irreps_hidden.lmax)
        else:
            geometry = o3.spherical_harmonics(
                self.irreps_sh, vec, normalize=True, normalization="component"
            )
        return geometry, self.radial(r), self.radial.envelope(r)

    def node_features_in_chunks(self, data, hop: torch.Tensor, chunk: int) -> torch.Tensor:
        """The node features of :meth:`features` with the bonds taken ``chunk`` hopping
        edges at a time in every layer (their geometry recomputed per layer): memory
        bounded by the nodes and one chunk, whatever the number of edges."""
        i, j = data.edge_index
        x = self._embed(data)
        for layer in self.layers:
            pre, agg = layer.pre(x), None
            for start in range(0, len(hop), chunk):
                edges = hop[start : start + chunk]
                geometry, radial, _ = self._bond(data, edges)
                agg = layer.aggregate(pre, j[edges], i[edges], geometry, radial, agg)
            if agg is None:  # no bonds at all
                agg = layer.aggregate(pre, hop, hop, *self._bond(data, hop)[:2])
            x = layer.update(x, agg)
        return self._with_norms(x)

    def _with_norms(self, x: torch.Tensor) -> torch.Tensor:
        """Node features as every head reads them: with their norms when they go to "all"."""
        return self.norm_features(x) if self.config.norm_features == "all" else x

    def irreps_output(
        self, data, groups: dict | None = None, parts: _HeadInputs | None = None
    ) -> dict[str, torch.Tensor]:
        """Per block key: (edges of that key, irreps vectors after scale/shift).

        Hopping blocks are multiplied by the smooth cutoff envelope: PAO matrix elements
        vanish beyond the sum of the orbital radii, and without it the per-pair shift
        (dominated by short bonds) would put spurious meV onto every long-range block.
        """
        parts = parts or _HeadInputs(data, *self.features(data))
        out = {}
        for key, edges in (groups or self.edge_groups(data)).items():
            if len(edges):
                out[key] = self._irreps_of(key, edges, parts)
        return out

    def _onsite_features(self, x: torch.Tensor) -> torch.Tensor:
        """What the on-site heads read: node features (with their norms when those go to
        the on-site heads only), widened when ``wide_heads``."""
        if self.config.norm_features == "onsite":
            x = self.norm_features(x)
        return x if self.onsite is None else self.onsite(x)

    def _irreps_of(self, key: str, edges: torch.Tensor, f: _HeadInputs) -> torch.Tensor:
        if key in self.config.species:
            return self._head(key, self._onsite_features(f.x.index_select(0, f.i[edges])))
        hops = f.position[edges]
        return self._head(key, f.e.index_select(0, hops), f.envelope[hops])

    def _reverse_key(self, key: str) -> str:
        if key in self.config.species:
            return key
        a, b = key.split("-")
        return pair_key(b, a)

    def _hermitian(self, key: str, own: torch.Tensor, reverse: torch.Tensor) -> torch.Tensor:
        """(B_ij(R) + B_ji(-R)^dagger) / 2 from the flat blocks of both edges."""
        partner = reverse[:, getattr(self, f"herm_index_{key}")]
        return 0.5 * (own + partner * getattr(self, f"herm_sign_{key}"))

    def forward(self, data) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per block key: (edge numbers, flat Hermitian blocks (E_key, D_key))."""
        groups = self.edge_groups(data)
        parts = _HeadInputs(data, *self.features(data))
        irreps = self.irreps_output(data, groups, parts)
        raw = {key: self.to_blocks(key, y) for key, y in irreps.items()}
        phi = self.potential(data, parts.x)
        # position of every edge inside its key's prediction
        device = data.edge_index.device
        where = torch.full((data.edge_index.shape[1],), -1, dtype=torch.long, device=device)
        for edges in groups.values():
            where[edges] = torch.arange(len(edges), device=device)
        result = {}
        for key, edges in groups.items():
            if len(edges) == 0:
                continue
            reverse = raw[self._reverse_key(key)][where[data.edge_rev[edges]]]
            blocks = self._hermitian(key, raw[key], reverse)
            result[key] = (edges, self._with_potential(key, edges, data, blocks, phi))
        return result

    # ------------------------------------------------------------ long range
    def potential(self, data, x: torch.Tensor, chunk: int = EDGE_CHUNK) -> torch.Tensor | None:
        """phi (N,) of the long-range head from node features ``x``, per orbital (N,
        orbitals) when resolved by shell, None without the head."""
        if self.potential_head is None:
            return None
        return self.potential_head(data, x, self.hopping_edges(data), chunk)

    def _with_potential(self, key: str, edges, data, blocks, phi) -> torch.Tensor:
        """``blocks`` + (phi_i + phi_j) / 2 * S_ij on the given edges of one key (per
        orbital pair (a, b) with (phi_ia + phi_jb) / 2 when phi is resolved by shell)."""
        if phi is None:
            return blocks
        i, j = data.edge_index[:, edges]
        if phi.dim() == 1:
            s = self.overlap_blocks(key, edges, data)
            return blocks + 0.5 * (phi[i] + phi[j])[:, None] * s
        s = self._spinless_overlap(key, edges, data)
        ni, nj = s.shape[1:]
        weight = 0.5 * (phi[i, :ni, None] + phi[j, None, :nj])
        return blocks + _layout(weight.to(s.dtype) * s, self.config.spinful)

    def overlap_blocks(self, key: str, edges: torch.Tensor, data) -> torch.Tensor:
        """Flat S blocks (E, D) of the edges of one key, in the model's block layout
        (SOC: S (x) 1_2): from the graph when it carries S, else computed exactly with
        :attr:`overlap_source` (the same two-centre integrals)."""
        return _layout(self._spinless_overlap(key, edges, data), self.config.spinful)

    def _spinless_overlap(self, key: str, edges: torch.Tensor, data) -> torch.Tensor:
        """S blocks (E, ni, nj) of the edges of one key (see :meth:`overlap_blocks`)."""
        a, b = (key, key) if key in self.config.species else key.split("-")
        basis = self.config.basis_obj
        ni, nj = basis[a].norb, basis[b].norb
        if getattr(data, "s_values", None) is not None:
            index = data.s_start[edges][:, None] + torch.arange(ni * nj, device=edges.device)
            s = data.s_values[index].reshape(-1, ni, nj).to(self.frame.dtype)
        elif self.overlap_source is None:
            raise RuntimeError(
                "a long-range model needs the exact overlap S: attach one "
                "(HamiltonianModel.attach_overlap) or build the graph with it"
            )
        else:
            vec = edge_vectors(data, edges).detach().cpu().double().numpy()
            s = torch.as_tensor(
                self.overlap_source.blocks(a, b, vec), dtype=self.frame.dtype, device=edges.device
            )
        return s

    @torch.no_grad()
    def stream_blocks(self, data, chunk: int | None = None, edge_chunk: int = EDGE_CHUNK):
        """Yield (key, edge numbers, flat Hermitian blocks) of :meth:`forward`, a chunk
        of about ``chunk`` numbers at a time (inference on big cells). Node features
        come from :meth:`node_features_in_chunks` (``edge_chunk`` bonds at a time); edge
        features, heads and Wigner-Eckart maps then run per chunk of blocks, a reverse
        edge's blocks recomputed rather than kept: no tensor over all edges beyond the
        edge list itself ever exists."""
        from ase_moireh.block_operator import chunk_slices

        x = self.node_features_in_chunks(data, self.hopping_edges(data), edge_chunk)
        phi = self.potential(data, x, edge_chunk)
        for key, edges in self.edge_groups(data).items():
            if len(edges) == 0:
                continue
            width = self.wigner_eckart_maps[key].shape[0]
            reverse_key = self._reverse_key(key)
            for part in chunk_slices(np.full(len(edges), width), chunk):
                own = edges[part]
                blocks = self.to_blocks(key, self._streamed_irreps(key, own, data, x))
                rev = data.edge_rev[own]
                back = self.to_blocks(reverse_key, self._streamed_irreps(reverse_key, rev, data, x))
                hermitian = self._hermitian(key, blocks, back)
                yield key, own, self._with_potential(key, own, data, hermitian, phi)

    def _streamed_irreps(self, key: str, edges: torch.Tensor, data, x) -> torch.Tensor:
        i, j = data.edge_index
        if key in self.config.species:
            return self._head(key, self._onsite_features(x.index_select(0, i[edges])))
        geometry, radial, envelope = self._bond(data, edges)
        extra = self._h0_edge(data, edges)
        return self._head(key, self.edge(x, i[edges], j[edges], geometry, radial, extra), envelope)

    def _head(self, key: str, features: torch.Tensor, envelope=None) -> torch.Tensor:
        y = self.scale_shift[key](self.heads[key](features))
        return y if envelope is None else y * envelope[:, None]


def _layout(s: torch.Tensor, spinful: bool) -> torch.Tensor:
    """(E, ni, nj) spinless blocks -> the flat layout of :mod:`.blocks`: row-major, or
    for SOC the real part of S (x) 1_2 (spin blocks [[S, 0], [0, S]]), then zeros."""
    if not spinful:
        return s.reshape(len(s), -1)
    n, ni, nj = s.shape
    spinor = s.new_zeros(n, 2 * ni, 2 * nj)
    spinor[:, :ni, :nj] = s
    spinor[:, ni:, nj:] = s
    flat = spinor.reshape(n, -1)
    return torch.cat([flat, torch.zeros_like(flat)], dim=1)


def new_model(config: ModelConfig, dtype: torch.dtype = torch.float32) -> HamiltonianModel:
    """A network in ``dtype``, built with it as torch's default so that its constants
    (Wigner-Eckart maps, frames) are computed in that precision: built in float32 and
    cast up, a float64 network kept float32-rounded constants, and rotated blocks were
    off by ~1e-7 eV instead of ~1e-13 (tests/test_model.py)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return HamiltonianModel(config).to(dtype)
    finally:
        torch.set_default_dtype(previous)
