"""Periodic neighbour pairs, found a chunk of atoms at a time.

Every neighbour search of the package (model graphs, the domain check, the builders'
overlap check) goes through :func:`neighbour_pairs`. ASE's ``neighbor_list`` holds all
candidate pairs of its bins at once: 1.5 GB and 10 s for the 25,314-atom 0.88 deg cell,
several GB for a 10^5-atom ribbon. Here a k-d tree over the periodic images is queried
for a chunk of centres at a time, so memory is the pairs themselves (0.24 GB, 1 s for
the same cell, the same pairs).
"""

from __future__ import annotations

import itertools

import numpy as np
from ase import Atoms
from scipy.spatial import cKDTree

#: centres queried at once (their candidate lists are Python objects while alive)
CHUNK = 4096
#: the tree is asked a little beyond the cutoff; the exact test is ours (see below)
_SLACK = 1e-8


def neighbour_pairs(
    atoms: Atoms, cutoff: float, chunk: int = CHUNK
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, S, d): every pair with d = |r_j + S . cell - r_i| < ``cutoff`` (A), the
    atom itself excluded (S = 0, i = j); ASE's ``neighbor_list("ijSd", atoms, cutoff)``
    up to the order of the rows. Positions need not be wrapped into the cell.

    d of (i, j, S) and of (j, i, -S) are the same float, to the bit (IEEE rounding is
    symmetric under negation and both are computed by the same elementwise steps, no
    BLAS), so the list is exactly symmetric even for pairs at the cutoff.
    """
    if cutoff <= 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    n = len(atoms)
    empty = np.zeros(0, dtype=np.int64)
    if n == 0:
        return empty, empty, np.zeros((0, 3), dtype=np.int64), np.zeros(0)
    cell = np.asarray(atoms.cell, dtype=float)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if np.any(pbc & (np.linalg.norm(cell, axis=1) == 0)):
        raise ValueError(f"periodic along a zero cell vector (pbc {pbc.tolist()}, cell {cell})")
    full = np.asarray(atoms.cell.complete(), dtype=float)  # non-periodic zero vectors filled
    offset = np.where(pbc, np.floor(atoms.positions @ np.linalg.inv(full)), 0.0).astype(np.int64)
    wrapped = atoms.positions - offset @ full
    shifts = _image_shifts(full, pbc, cutoff)
    tree = cKDTree((wrapped[None] + (shifts @ full)[:, None]).reshape(-1, 3))
    parts = [
        _chunk_pairs(tree, atoms.positions, wrapped, offset, shifts, cell, cutoff, start, chunk)
        for start in range(0, n, chunk)
    ]
    return tuple(np.concatenate(column) for column in zip(*parts, strict=True))  # type: ignore[return-value]


def _image_shifts(cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> np.ndarray:
    """Integer cell shifts that can hold a neighbour of an atom inside the cell: along a
    periodic vector ceil(cutoff / h) each way, h the distance between its lattice planes."""
    heights = 1.0 / np.linalg.norm(np.linalg.inv(cell).T, axis=1)
    reach = np.where(pbc, np.ceil(cutoff / heights), 0).astype(int)
    ranges = [range(-r, r + 1) for r in reach]
    return np.array(list(itertools.product(*ranges)), dtype=np.int64)


def _chunk_pairs(
    tree: cKDTree,
    positions: np.ndarray,
    wrapped: np.ndarray,
    offset: np.ndarray,
    shifts: np.ndarray,
    cell: np.ndarray,
    cutoff: float,
    start: int,
    chunk: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The pairs of centres start..start+chunk (i, j, S, d), tested on the given positions."""
    n = len(positions)
    found = tree.query_ball_point(
        wrapped[start : start + chunk], cutoff + _SLACK, return_sorted=False
    )
    counts = np.fromiter((len(f) for f in found), dtype=np.int64, count=len(found))
    flat = np.fromiter(itertools.chain.from_iterable(found), dtype=np.int64, count=counts.sum())
    i = np.repeat(np.arange(start, start + len(found)), counts)
    j = flat % n
    shift = shifts[flat // n] - offset[j] + offset[i]  # back to the positions as given
    translation = shift[:, :1] * cell[0] + shift[:, 1:2] * cell[1] + shift[:, 2:] * cell[2]
    d = np.linalg.norm((positions[j] - positions[i]) + translation, axis=1)
    keep = (d < cutoff) & ((i != j) | shift.any(axis=1))
    return i[keep], j[keep], shift[keep], d[keep]
