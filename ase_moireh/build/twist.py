"""Commensurate twisted homobilayers of 2H TMDs from the integer pair (n, m).

Convention (matches the shared OpenMX twisted cell): the bottom layer is unrotated with
primitive vectors a1 = (a, 0), a2 = (a/2, a sqrt3/2); the supercell is L1 = n a1 + m a2,
L2 = R(60 deg) L1 = -m a1 + (n + m) a2. The top layer is rotated about the z axis through
the metal atom at the origin so that L1 = m b1 + n b2 in its own vectors b_i; for n > m
that is a rotation by -theta with cos theta = (n^2 + 4nm + m^2) / (2 (n^2 + nm + m^2)).
When 3 divides n - m, that cell holds three primitive coincidence cells; the primitive
one (a third of the atoms) is built instead.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from ase_moireh.build.materials import Material, get_material

log = logging.getLogger(__name__)

SQRT3 = math.sqrt(3.0)
#: vacuum of the shared runs: cell height 25 A for MoTe2
DEFAULT_VACUUM = 14.4


def rotation_z(angle_rad: float) -> np.ndarray:
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[c, -s], [s, c]])


def primitive_vectors(a: float) -> np.ndarray:
    """Rows a1, a2 of the hexagonal monolayer (2-D)."""
    return np.array([[a, 0.0], [0.5 * a, 0.5 * SQRT3 * a]])


def _check_pair(n: int, m: int) -> tuple[int, int]:
    if int(n) != n or int(m) != m or n < 0 or m < 0:
        raise ValueError(f"(n, m) must be non-negative integers, got ({n}, {m})")
    if n == m:
        raise ValueError(f"(n, m) = ({n}, {m}) gives no twist (theta = 0)")
    if n == 0 or m == 0:
        raise ValueError(f"(n, m) = ({n}, {m}) gives theta = 60 deg, the untwisted lattice")
    g = math.gcd(n, m)
    if g > 1:
        log.info("(n, m) = (%d, %d) reduced to the coprime pair (%d, %d)", n, m, n // g, m // g)
    return n // g, m // g


def twist_angle(n: int, m: int) -> float:
    """Twist angle in degrees of the commensurate pair (n, m)."""
    n, m = _check_pair(n, m)
    cos = (n * n + 4 * n * m + m * m) / (2.0 * (n * n + n * m + m * m))
    return math.degrees(math.acos(min(1.0, cos)))


def cells_per_layer(n: int, m: int) -> int:
    """Primitive monolayer cells per layer in the primitive commensurate cell."""
    n, m = _check_pair(n, m)
    count = n * n + n * m + m * m
    return count // 3 if (n - m) % 3 == 0 else count


def natoms_twisted(n: int, m: int) -> int:
    """Atoms of the twisted MX2 bilayer: 6 (n^2 + nm + m^2), a third if 3 | n - m."""
    return 6 * cells_per_layer(n, m)


@dataclass(frozen=True)
class CommensurateCell:
    n: int
    m: int
    theta: float  # degrees
    natoms: int


def commensurate_cells(
    theta: float, tol: float = 0.05, max_atoms: int = 100_000
) -> list[CommensurateCell]:
    """Coprime (n, m), n > m, with |theta(n, m) - theta| <= tol degrees, nearest first."""
    if not 0 < theta <= 60:
        raise ValueError(f"theta must be in (0, 60] degrees, got {theta}")
    found = []
    n_max = int(math.isqrt(max_atoms // 2)) + 2
    for n in range(2, n_max):
        for m in range(1, n):
            if math.gcd(n, m) != 1:
                continue
            natoms = natoms_twisted(n, m)
            if natoms > max_atoms:
                continue
            angle = twist_angle(n, m)
            if abs(angle - theta) <= tol:
                found.append(CommensurateCell(n, m, angle, natoms))
    # the same cell appears for several (n, m) when 3 | n - m; keep the first per angle
    unique: dict[tuple[float, int], CommensurateCell] = {}
    for cell in sorted(found, key=lambda c: (abs(c.theta - theta), c.natoms, c.n)):
        unique.setdefault((round(cell.theta, 9), cell.natoms), cell)
    return list(unique.values())


def top_rotation(n: int, m: int) -> float:
    """Rotation (radians) of the top layer that makes n a1 + m a2 = m b1 + n b2."""
    u = np.array([n, m]) @ primitive_vectors(1.0)
    v = np.array([m, n]) @ primitive_vectors(1.0)
    return math.atan2(u[1], u[0]) - math.atan2(v[1], v[0])


def supercell_vectors(n: int, m: int, a: float) -> np.ndarray:
    """Rows L1, L2 (2-D) of the primitive commensurate cell, L2 = R(60) L1."""
    n, m = _check_pair(n, m)
    if (n - m) % 3 == 0:
        # shortest vector of the coincidence lattice: (n a1 + m a2 + R(60)(...))/3 pattern,
        # found by search among the lattice vectors no longer than n a1 + m a2
        l1 = _shortest_coincidence_vector(n, m) * a
    else:
        l1 = np.array([n, m]) @ primitive_vectors(a)
    return np.array([l1, rotation_z(math.pi / 3) @ l1])


def _shortest_coincidence_vector(n: int, m: int) -> np.ndarray:
    """Shortest nonzero bottom-lattice vector (a = 1) that is also a top-lattice vector."""
    prim = primitive_vectors(1.0)
    top = prim @ rotation_z(top_rotation(n, m)).T
    k = n + m + 1
    p, q = np.meshgrid(np.arange(-k, k + 1), np.arange(-k, k + 1), indexing="ij")
    pq = np.column_stack([p.ravel(), q.ravel()])
    pq = pq[np.any(pq != 0, axis=1)]
    vec = pq @ prim
    coords = vec @ np.linalg.inv(top)
    ok = np.all(np.abs(coords - np.rint(coords)) < 1e-8, axis=1)
    vec = vec[ok]
    length = np.round(np.linalg.norm(vec, axis=1), 9)
    angle = np.mod(np.arctan2(vec[:, 1], vec[:, 0]), 2 * math.pi)
    best = np.lexsort((angle, length))[0]
    return vec[best]


def lattice_points_in_cell(basis: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Integer combinations of the rows of ``basis`` (2-D) inside the cell parallelogram,
    as fractional coordinates of ``cell`` in [0, 1). Their number is |det| of the ratio."""
    ratio = cell @ np.linalg.inv(basis)  # rows: cell vectors in basis coordinates
    count = abs(np.linalg.det(ratio))
    if abs(count - round(count)) > 1e-6:
        raise ValueError("the cell is not a supercell of the layer lattice")
    corners = np.array([[0, 0], ratio[0], ratio[1], ratio[0] + ratio[1]])
    lo = np.floor(corners.min(axis=0)).astype(int) - 1
    hi = np.ceil(corners.max(axis=0)).astype(int) + 1
    p, q = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
    pts = np.column_stack([p.ravel(), q.ravel()]).astype(float)
    frac = pts @ np.linalg.inv(ratio)
    frac = np.where(np.abs(frac - np.rint(frac)) < 1e-9, np.rint(frac), frac)
    inside = np.all((frac >= 0) & (frac < 1), axis=1)
    frac = frac[inside]
    if len(frac) != round(count):
        raise RuntimeError(f"found {len(frac)} lattice points, expected {round(count)}")
    return frac


def monolayer_motif(
    material: Material, flipped: bool = False
) -> list[tuple[str, float, float, float]]:
    """(symbol, frac1, frac2, z) of the primitive cell; ``flipped`` rotates it by 180 deg."""
    c = -1.0 / 3.0 if flipped else 1.0 / 3.0
    return [
        (material.metal, 0.0, 0.0, 0.0),
        (material.chalcogen, c, c, material.d),
        (material.chalcogen, c, c, -material.d),
    ]


def layer_atoms(
    material: Material,
    prim: np.ndarray,
    cell2d: np.ndarray,
    z0: float,
    flipped: bool = False,
) -> tuple[list[str], np.ndarray]:
    """Symbols and Cartesian positions of one layer filling the 2-D cell exactly."""
    frac_cells = lattice_points_in_cell(prim, cell2d)
    symbols, positions = [], []
    for sym, f1, f2, z in monolayer_motif(material, flipped):
        xy = (frac_cells @ cell2d) + np.array([f1, f2]) @ prim
        xy_frac = np.mod(xy @ np.linalg.inv(cell2d), 1.0)
        xy_frac = np.where(np.abs(xy_frac - 1.0) < 1e-9, 0.0, xy_frac)
        positions.append(np.column_stack([xy_frac @ cell2d, np.full(len(xy), z0 + z)]))
        symbols += [sym] * len(xy)
    return symbols, np.vstack(positions)


def assemble_bilayer(
    material: Material,
    cell2d: np.ndarray,
    layers: list[tuple[np.ndarray, bool]],
    interlayer: float,
    vacuum: float,
) -> Atoms:
    """Two layers (primitive vectors, flipped) in one cell, bottom metal plane at
    vacuum/2 + d, top at interlayer above; sorted by layer, then z, then y, then x."""
    height = interlayer + 2 * material.d + vacuum
    z_bottom = 0.5 * vacuum + material.d
    all_symbols, all_pos, layer_index = [], [], []
    for index, (prim, flipped) in enumerate(layers):
        symbols, pos = layer_atoms(material, prim, cell2d, z_bottom + index * interlayer, flipped)
        all_symbols += symbols
        all_pos.append(pos)
        layer_index += [index] * len(symbols)
    pos = np.vstack(all_pos)
    layer_arr = np.array(layer_index)
    order = np.lexsort(
        (np.round(pos[:, 0], 6), np.round(pos[:, 1], 6), np.round(pos[:, 2], 6), layer_arr)
    )
    cell = np.zeros((3, 3))
    cell[:2, :2] = cell2d
    cell[2, 2] = height
    atoms = Atoms(
        symbols=[all_symbols[i] for i in order],
        positions=pos[order],
        cell=cell,
        pbc=[True, True, True],
    )
    atoms.arrays["layer"] = layer_arr[order]
    return atoms


def twisted_bilayer(
    n: int,
    m: int,
    material: str | Material = "MoTe2",
    stacking: str = "R",
    interlayer: float | None = None,
    vacuum: float = DEFAULT_VACUUM,
) -> Atoms:
    """Commensurate twisted homobilayer (n, m) of a 2H TMD (module docstring: convention).

    ``stacking`` "R": both layers alike before the twist (parallel); "H": the top layer
    is additionally rotated by 180 deg (antiparallel, the 2H bulk stacking).
    ``atoms.arrays['layer']`` is 0 (bottom) or 1 (top); ``atoms.info`` records the twist.
    """
    mat = get_material(material)
    if stacking not in ("R", "H"):
        raise ValueError(f"stacking must be 'R' or 'H', got {stacking!r}")
    n, m = _check_pair(n, m)
    interlayer = mat.interlayer if interlayer is None else float(interlayer)
    if interlayer < 2 * mat.d + 1.5:
        raise ValueError(f"interlayer distance {interlayer} A makes the layers overlap")
    if vacuum <= 0:
        raise ValueError(f"vacuum must be positive, got {vacuum}")
    prim = primitive_vectors(mat.a)
    cell2d = supercell_vectors(n, m, mat.a)
    top = prim @ rotation_z(top_rotation(n, m)).T
    atoms = assemble_bilayer(
        mat, cell2d, [(prim, False), (top, stacking == "H")], interlayer, vacuum
    )
    atoms.info.update(
        material=mat.name,
        stacking=stacking,
        twist_nm=(n, m),
        theta_deg=twist_angle(n, m),
        interlayer=interlayer,
    )
    expected = natoms_twisted(n, m)
    if len(atoms) != expected:
        raise RuntimeError(f"built {len(atoms)} atoms for ({n}, {m}), expected {expected}")
    return atoms
