"""Small models the tests share: tight-binding models with known Chern numbers (topology
routines), a random Hermitian block operator (BlockOperator routines) and a tiny untrained
MoTe2 network (model, SOC-correction, streaming and training tests). Test files import
helpers from here, never from one another."""

from __future__ import annotations

import math

import numpy as np
import torch
from ase import Atoms

from ase_moireh.basis import Basis
from ase_moireh.block_operator import BlockOperator
from ase_moireh.model.network import HamiltonianModel, ModelConfig, new_model
from ase_moireh.tightbinding import TightBinding

#: the MoTe2 basis of the shared OpenMX runs (Mo7.0-s3p2d1, Te7.0-s3p2d2), dftio names
MOTE2_BASIS = {"Mo": "3s2p1d", "Te": "3s2p2d"}
#: a two-species toy basis: C with 4 orbitals (s, p), H with 1
CHAIN_BASIS = Basis.from_dftio({"H": "1s", "C": "1s1p"})


def tiny_model(
    spinful: bool,
    seed: int = 0,
    convolution: str = "so2",
    wide: bool = False,
    long_range: bool = False,
    h0_features: bool = False,
    shells: bool = False,
    norms: str = "",
) -> HamiltonianModel:
    """An untrained float64 MoTe2 network, as small as the architecture allows (one layer,
    multiplicity 2), with random non-trivial output scale and shift; with ``long_range``
    the potential head with a non-zero Ewald factor and local scalar, and the bundled
    exact overlap attached (``shells``: resolved by shell, its per-shell terms random
    too); with ``h0_features`` random standardisation of the H0 inputs
    (graphs must carry H0: :func:`toy_h0`); with ``norms`` ("all" heads or "onsite"
    heads) the node features' norms mapped onto their scalars by random (not zero)
    weights."""
    torch.manual_seed(seed)
    config = ModelConfig(
        convolution=convolution,
        wide_heads=wide,
        species=["Mo", "Te"],
        basis=MOTE2_BASIS,
        spinful=spinful,
        multiplicity=2,
        num_layers=1,
        radial_hidden=8,
        num_radial=8,
        long_range=long_range or shells,
        long_range_shells=shells,
        h0_features=h0_features,
        norm_features=norms,
    )
    model = new_model(config, torch.float64)
    with torch.no_grad():  # non-trivial scale/shift so they are part of the test
        for ss in model.scale_shift.values():
            ss.scale.uniform_(0.5, 2.0)
            ss.shift.normal_()
        if long_range or shells:  # they start at zero: make the head's terms part of the test
            model.potential_head.scale.fill_(0.3)
            model.potential_head.local.weight.normal_()
        if shells:
            model.potential_head.shell_scale.normal_(0.0, 0.3)
            model.potential_head.shell_local.weight.normal_()
        if norms:  # they start at zero: make them part of the test
            model.norm_features.mix.weight.normal_()
            model.norm_features.mix.bias.normal_()
        if h0_features:
            for norm in model.h0_norm.values():
                norm.scale.uniform_(0.5, 2.0)
                norm.mean.normal_()
    if long_range or shells:
        from ase_moireh.overlap import bundled_overlap

        model.attach_overlap(bundled_overlap())
    return model.eval()


def random_hermitian_operator(spinful: bool = False, seed: int = 0) -> BlockOperator:
    """Two atoms (C: 4 orbitals, H: 1) in a 1D chain with R in {-1, 0, 1}, Hermitian."""
    rng = np.random.default_rng(seed)
    numbers = [6, 1]
    n = np.array([4, 1]) * (2 if spinful else 1)
    blocks = {}
    for i in range(2):
        for j in range(2):
            for r in (-1, 0, 1):
                if (j, i, -r) in blocks:
                    blocks[(i, j, r)] = blocks[(j, i, -r)].conj().T
                    continue
                b = rng.normal(size=(n[i], n[j]))
                if spinful:
                    b = b + 1j * rng.normal(size=b.shape)
                if i == j and r == 0:
                    b = b + b.conj().T
                blocks[(i, j, r)] = b
    edges = np.array([[i, j, r, 0, 0] for (i, j, r) in blocks])
    return BlockOperator.from_blocks(numbers, CHAIN_BASIS, edges, blocks.values(), spinful)


def haldane_model(
    t1: float = 1.0, t2: float = 0.1, phi: float = math.pi / 2, mass: float = 0.0
) -> tuple[Atoms, TightBinding]:
    """Haldane's honeycomb model (one s orbital per site, orthogonal: S = 1).

    H = mass (n_A - n_B) + t1 sum_NN + t2 sum_NNN exp(i nu_ij phi), with Haldane's
    chirality nu_ij = sign(d1 x d2)_z of the two bonds a NNN hop bypasses (PRL 61, 2015
    (1988)). Gapped with |C| = 1 when |mass| < 3 sqrt(3) |t2 sin phi|, C = 0 beyond.
    """
    a = 1.0
    cell = np.array([[a, 0, 0], [0.5 * a, 0.5 * math.sqrt(3) * a, 0], [0, 0, 10.0]])
    frac = np.array([[1 / 3, 1 / 3, 0.5], [2 / 3, 2 / 3, 0.5]])
    atoms = Atoms("CN", scaled_positions=frac, cell=cell, pbc=True)  # A = C, B = N
    basis = Basis.from_dftio({"C": "1s", "N": "1s"})
    blocks: dict[tuple, complex] = {(0, 0, 0, 0, 0): mass, (1, 1, 0, 0, 0): -mass}
    pos = atoms.positions
    nn = {0: [], 1: []}
    for i in range(2):
        for r1 in (-1, 0, 1):
            for r2 in (-1, 0, 1):
                d = pos[1 - i] + r1 * cell[0] + r2 * cell[1] - pos[i]
                if np.isclose(np.linalg.norm(d), a / math.sqrt(3)):
                    nn[i].append(d)
    for i in range(2):
        for j in range(2):
            for r1 in (-1, 0, 1):
                for r2 in (-1, 0, 1):
                    d = pos[j] + r1 * cell[0] + r2 * cell[1] - pos[i]
                    dist = np.linalg.norm(d)
                    if np.isclose(dist, a / math.sqrt(3)):
                        blocks[(i, j, r1, r2, 0)] = t1
                    elif np.isclose(dist, a) and i == j:
                        nu = _nnn_chirality(d, np.array(nn[i]))
                        blocks[(i, j, r1, r2, 0)] = t2 * np.exp(1j * nu * phi)
    edges = np.array(list(blocks))
    values = [np.array([[v]], dtype=complex) for v in blocks.values()]
    h = BlockOperator.from_blocks(atoms.numbers, basis, edges, values, spinful=False)
    h.values = h.values.astype(complex)
    s_values = [np.eye(1) * (1.0 if (e[0] == e[1] and not any(e[2:])) else 0.0) for e in edges]
    s = BlockOperator.from_blocks(atoms.numbers, basis, edges, s_values)
    return atoms, TightBinding(h, s)


def rashba_exchange_model(
    t: float = 1.0, rashba: float = 0.3, exchange: float = 0.5
) -> tuple[Atoms, TightBinding]:
    """Spinful honeycomb model of the quantum anomalous Hall effect: NN hopping t, Rashba
    coupling i rashba (sigma x d_ij)_z and an exchange field exchange * sigma_z (Qiao et
    al., PRB 82, 161414 (2010)); C = +-2 for the two lowest bands when gapped. In our SOC
    layout (per atom: spin up, spin down)."""
    atoms, spinless = haldane_model(t1=t, t2=0.0)
    h0 = spinless.H
    sx = np.array([[0, 1], [1, 0]], dtype=complex)
    sy = np.array([[0, -1j], [1j, 0]])
    sz = np.diag([1.0, -1.0]).astype(complex)
    blocks = []
    for e, (i, j, *r) in enumerate(h0.edges):
        if i == j and not any(r):
            blocks.append(exchange * sz)
            continue
        d = atoms.positions[j] + np.array(r) @ np.asarray(atoms.cell) - atoms.positions[i]
        d = d / np.linalg.norm(d)
        blocks.append(h0.block(e)[0, 0] * np.eye(2) + 1j * rashba * (sx * d[1] - sy * d[0]))
    h = BlockOperator.from_blocks(atoms.numbers, h0.basis, h0.edges, blocks, spinful=True)
    return atoms, TightBinding(h, spinless.S)


def _nnn_chirality(d: np.ndarray, nn_vectors: np.ndarray) -> int:
    """Haldane's nu = sign(d1 x d2)_z for the two NN bonds d1, d2 (d1 + d2 = d) that the
    next-nearest-neighbour hop d bypasses; nn_vectors: the NN bonds out of the site."""
    for d1 in nn_vectors:
        d2 = d - d1
        if np.isclose(np.linalg.norm(d2), np.linalg.norm(d1)):
            return int(np.sign(np.cross(d1, d2)[2]))
    raise ValueError("not a next-nearest-neighbour vector")


def toy_h0(atoms: Atoms, seed: int = 0) -> BlockOperator:
    """A stand-in for a structure's H0 on its graph's edges: the exact overlap S (a
    two-centre integral: it rotates with the structure) times a few eV, with random
    symmetric on-site blocks (which :func:`rotated_operator` rotates along)."""
    from ase_moireh.model.graph import MOTE2_CUTOFF, graph_edges
    from ase_moireh.overlap import bundled_overlap

    edges = graph_edges(atoms, MOTE2_CUTOFF)
    s = bundled_overlap().operator(atoms, edges)
    rng = np.random.default_rng(seed)
    blocks = []
    for e, (i, j, *r) in enumerate(edges):
        block = -3.0 * s.block(e)
        if i == j and not any(r):
            noise = rng.normal(scale=0.5, size=block.shape)
            block = block + noise + noise.T
        blocks.append(block)
    meta = {"cell": np.asarray(atoms.cell), "positions": atoms.positions}
    return BlockOperator.from_blocks(atoms.numbers, s.basis, edges, blocks, False, **meta)


def rotated_operator(op: BlockOperator, moved: Atoms, rotation: np.ndarray) -> BlockOperator:
    """``op`` of the structure rotated by ``rotation`` (to ``moved``): every block
    M_i B M_j^T, M the shell-wise Wigner-D of each atom (spinless)."""
    from ase.data import chemical_symbols

    from ase_moireh.basis import atom_rotation

    rot = {
        z: atom_rotation(op.basis[chemical_symbols[z]], rotation, False) for z in set(op.numbers)
    }
    blocks = [
        rot[op.numbers[i]] @ op.block(e) @ rot[op.numbers[j]].T
        for e, (i, j, *_) in enumerate(op.edges)
    ]
    meta = {"cell": np.asarray(moved.cell), "positions": moved.positions}
    return BlockOperator.from_blocks(op.numbers, op.basis, op.edges, blocks, False, **meta)
