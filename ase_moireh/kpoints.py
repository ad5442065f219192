"""The k-points where band edges of a (near-)hexagonal cell sit, taken from its cell.

Band extrema of TMD bilayers and their moiré cells lie at Gamma, the three M and the
two K points. Fractional K depends on the cell's setting: with gamma = 120 deg between
a1 and a2 it is (1/3, 1/3) and (2/3, 2/3); with gamma = 60 deg (every cell this project
builds, and OpenMX's runs of them) it is (1/3, 2/3) and (2/3, 1/3), and (1/3, 1/3) is
a point two thirds of the way along Gamma-M. So K is never hard-coded: it is the pair
of points of the 3 x 3 grid farthest from every reciprocal lattice vector, i.e. the
Brillouin-zone corners.
"""

from __future__ import annotations

import itertools

import numpy as np
from ase.cell import Cell

#: Gamma and the three M points: midpoints of b1, b2 and of b1 + b2 (b1 - b2 is the
#: same point modulo a reciprocal vector when gamma = 120 deg), in any hexagonal setting.
GAMMA_AND_M = np.array([(0, 0, 0), (0.5, 0, 0), (0, 0.5, 0), (0.5, 0.5, 0)], dtype=float)


def distance_to_lattice(cell, k: np.ndarray) -> float:
    """Distance (1/Angstrom, without 2 pi) of fractional in-plane ``k`` from the nearest
    reciprocal lattice vector."""
    b = np.asarray(Cell(cell).reciprocal())[:2]
    images = np.array(list(itertools.product((-1, 0, 1), repeat=2)), dtype=float)
    return float(np.linalg.norm((np.asarray(k)[:2] + images) @ b, axis=1).min())


def zone_corners(cell) -> np.ndarray:
    """K and K' (fractional, rows): the points of the 3 x 3 grid farthest from the
    reciprocal lattice. A hexagonal cell gives exactly two; a strained one gives the
    grid points nearest its corners (all that tie, e.g. four for a square cell)."""
    grid = np.array([(i / 3, j / 3, 0.0) for i in range(3) for j in range(3) if i or j])
    far = np.array([distance_to_lattice(cell, k) for k in grid])
    return grid[far > far.max() * (1 - 1e-6)]


def extrema_kpoints(cell) -> np.ndarray:
    """Gamma, M1, M2, M3, K, K' of ``cell`` (fractional, rows): where band edges sit."""
    return np.vstack([GAMMA_AND_M, zone_corners(cell)])
