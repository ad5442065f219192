"""Nanoribbons cut from a periodic (moiré) cell, for edge states.

The ribbon stays periodic along one in-plane lattice vector and is ``repeats`` cells
wide across it; the other in-plane vector is replaced by the in-plane normal with
vacuum on both sides. Atoms are kept as they lie in the repeated parallelogram, so both
edges run parallel to the periodic vector.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms


def nanoribbon(
    atoms: Atoms,
    repeats: int,
    axis: int = 0,
    vacuum: float = 15.0,
    edge_width: float = 5.0,
) -> Atoms:
    """Ribbon periodic along cell vector ``axis`` (0 or 1), ``repeats`` cells wide.

    Arrays added: ``edge_distance`` (A to the nearer edge), ``edge_side`` (-1 lower edge,
    +1 upper edge, 0 interior: within ``edge_width`` of an edge counts as edge).
    """
    if axis not in (0, 1):
        raise ValueError(f"axis must be 0 or 1 (an in-plane cell vector), got {axis}")
    if int(repeats) != repeats or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats}")
    if vacuum <= 0 or edge_width < 0:
        raise ValueError("vacuum must be positive and edge_width non-negative")
    cell = np.asarray(atoms.cell)
    if np.abs(cell[:2, 2]).max() > 1e-8 or np.abs(cell[2, :2]).max() > 1e-8:
        raise ValueError("expected a layered cell: in-plane vectors 0, 1 and z along vector 2")
    other = 1 - axis
    reps = [1, 1, 1]
    reps[other] = int(repeats)
    ribbon = atoms.repeat(reps)
    ribbon.wrap()
    along = cell[axis] / np.linalg.norm(cell[axis])
    normal = np.cross([0.0, 0.0, 1.0], along)
    proj = ribbon.positions @ normal
    width = proj.max() - proj.min()
    ribbon.positions += normal * (0.5 * vacuum - proj.min())
    new_cell = np.array(ribbon.cell)
    new_cell[other] = normal * (width + vacuum)
    ribbon.set_cell(new_cell, scale_atoms=False)
    pbc = [False, False, False]
    pbc[axis] = True
    ribbon.pbc = pbc
    proj = ribbon.positions @ normal - 0.5 * vacuum
    lower, upper = proj, width - proj
    ribbon.arrays["edge_distance"] = np.minimum(lower, upper)
    side = np.zeros(len(ribbon), dtype=np.int8)
    side[lower <= edge_width] = -1
    side[(upper <= edge_width) & (upper < lower)] = 1
    ribbon.arrays["edge_side"] = side
    ribbon.info.update(ribbon_axis=axis, ribbon_repeats=int(repeats), ribbon_width=width)
    return ribbon
