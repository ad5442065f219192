"""Space-group operations (spglib) and how they act on BlockOperators.

An operation g: x -> W x + w (fractional) maps atom i to atom g(i) shifted by T_i, and
the block of (i, j, R) to the block of (g(i), g(j), T_j + W R - T_i) as

    O_{g(i) g(j)}(R') = M_i O_ij(R) M_j^dagger,

with M the shell-wise Wigner-D matrices of the Cartesian rotation Q (times the spin-1/2
rotation for SOC), see :func:`ase_moireh.basis.atom_rotation`. Comparing both sides on
DFT data tests the orbital convention; the topology code uses the same maps.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import spglib
from ase import Atoms
from ase.data import chemical_symbols

from ase_moireh.basis import atom_rotation
from ase_moireh.block_operator import BlockOperator


@dataclass(frozen=True)
class SpaceGroupOperation:
    """x -> W x + w in fractional coordinates; Q is the Cartesian rotation."""

    W: np.ndarray
    w: np.ndarray
    Q: np.ndarray


def spglib_cell(atoms: Atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.asarray(atoms.cell), atoms.get_scaled_positions(wrap=False), atoms.numbers)


def space_group_operations(atoms: Atoms, symprec: float = 1e-3) -> list[SpaceGroupOperation]:
    """Every operation spglib finds, with its Cartesian rotation Q = A^T W A^-T."""
    try:
        with warnings.catch_warnings():  # spglib 2.x deprecation noise about error modes
            warnings.simplefilter("ignore", DeprecationWarning)
            data = spglib.get_symmetry(spglib_cell(atoms), symprec=symprec)
    except Exception as err:  # spglib >= 2.7 raises SpglibCppError, older returns None
        raise ValueError(f"spglib found no symmetry: {err}") from None
    if data is None:
        raise ValueError("spglib found no symmetry")
    cell_t = np.asarray(atoms.cell).T
    inv = np.linalg.inv(cell_t)
    return [
        SpaceGroupOperation(W.astype(float), w, cell_t @ W @ inv)
        for W, w in zip(data["rotations"], data["translations"], strict=True)
    ]


def atom_images(
    atoms: Atoms, op: SpaceGroupOperation, tol: float = 1e-2
) -> tuple[np.ndarray, np.ndarray]:
    """g(i) and the integer shift T_i with g(x_i) = x_{g(i)} + T_i (fractional)."""
    frac = atoms.get_scaled_positions(wrap=False)
    moved = frac @ op.W.T + op.w
    diff = moved[:, None, :] - frac[None, :, :]
    shift = np.rint(diff)
    cart = (diff - shift) @ np.asarray(atoms.cell)
    dist = np.linalg.norm(cart, axis=-1)
    dist[atoms.numbers[:, None] != atoms.numbers[None, :]] = np.inf
    image = dist.argmin(axis=1)
    if np.any(dist[np.arange(len(atoms)), image] > tol) or len(set(image)) != len(atoms):
        raise ValueError("operation does not map the structure onto itself")
    return image, shift[np.arange(len(atoms)), image].astype(np.int64)


def image_edges(atoms: Atoms, edges: np.ndarray, op: SpaceGroupOperation) -> np.ndarray:
    """(g(i), g(j), T_j + W R - T_i) for every edge (i, j, R)."""
    image, shift = atom_images(atoms, op)
    i, j, r = edges[:, 0], edges[:, 1], edges[:, 2:]
    new_r = shift[j] + r @ np.rint(op.W).astype(np.int64).T - shift[i]
    return np.column_stack([image[i], image[j], new_r])


def symmetry_deviation(
    operator: BlockOperator, atoms: Atoms, op: SpaceGroupOperation
) -> tuple[float, float]:
    """(max, mean) |O(g-image block) - M_i O_ij M_j^dagger| over the blocks present in both."""
    rot = {sym: atom_rotation(spec, op.Q, operator.spinful) for sym, spec in operator.basis.items()}
    mats = [rot[chemical_symbols[z]] for z in operator.numbers]
    target = operator.find(image_edges(atoms, operator.edges, op))
    worst, total, count = 0.0, 0.0, 0
    for e, f in enumerate(target):
        if f < 0:
            continue
        i, j = operator.edges[e, :2]
        expected = mats[i] @ operator.block(e) @ mats[j].conj().T
        diff = np.abs(operator.block(int(f)) - expected)
        worst = max(worst, float(diff.max()))
        total += float(diff.sum())
        count += diff.size
    return worst, total / max(count, 1)


def proper_operations(atoms: Atoms, symprec: float = 1e-3) -> list[SpaceGroupOperation]:
    """The rotations (det +1) among the space-group operations of ``atoms``: those act
    on spinors by the spin-1/2 rotation alone (no choice of how inversion acts on spin)."""
    try:
        ops = space_group_operations(atoms, symprec)
    except ValueError:
        return []
    return [op for op in ops if np.linalg.det(op.W) > 0]


def symmetrized(
    operator: BlockOperator, atoms: Atoms, ops: list[SpaceGroupOperation]
) -> BlockOperator:
    """The group average (1/|G|) sum_g M_g O M_g^dagger of ``operator`` over ``ops`` (a
    group: the operations of a structure). Why: an operator integrated on a real-space
    grid (V_xc of H0) breaks the structure's symmetry by the grid's egg-box error; C3
    eigenvalues and Chern numbers need it exact. Every block's image must be a block.
    The blocks of one species pair are rotated together (one batched product per
    operation and pair)."""
    if len(ops) <= 1:
        return operator
    out = np.zeros_like(operator.values)
    symbols = np.array([chemical_symbols[z] for z in operator.numbers])
    pairs = symbols[operator.edges[:, 0]], symbols[operator.edges[:, 1]]
    for op in ops:
        rot = {s: atom_rotation(spec, op.Q, operator.spinful) for s, spec in operator.basis.items()}
        target = operator.find(image_edges(atoms, operator.edges, op))
        if (target < 0).any():
            raise ValueError("the operator's blocks are not closed under the structure's symmetry")
        for a, b in set(zip(*pairs, strict=True)):
            edges = np.flatnonzero((pairs[0] == a) & (pairs[1] == b))
            shape = operator.shapes[edges[0]]
            span = np.arange(shape[0] * shape[1])
            blocks = operator.values[operator.offsets[edges][:, None] + span].reshape(-1, *shape)
            turned = (rot[a] @ blocks @ rot[b].conj().T).reshape(len(edges), -1)
            # real orbitals: M is real for spinless operators
            out[operator.offsets[target[edges]][:, None] + span] += (
                turned if operator.spinful else turned.real
            )
    return BlockOperator(
        operator.numbers, operator.basis, operator.edges, out / len(ops), operator.spinful,
        cell=operator.cell, positions=operator.positions,
    )  # fmt: skip
