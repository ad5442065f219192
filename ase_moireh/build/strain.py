"""Homogeneous strain and layer-resolved (hetero) strain of twisted bilayers.

Units: Angstrom for lengths, degrees for angles, strains dimensionless (0.01 = 1 %).

Heterostrain convention: the relative uniaxial strain ``epsilon`` between the layers is
split symmetrically, the bottom layer takes -epsilon/2 and the top layer +epsilon/2, both
along ``angle_deg`` (from the x axis, i.e. the bottom a1) with Poisson ratio ``poisson``.
The relative strain, which shapes the moire pattern, is then epsilon while the mean
(homo)strain is zero. The top layer is rotated by -theta about z before it is strained,
the sign convention of :func:`~ase_moireh.build.twist.twisted_bilayer` for n > m.

A periodic cell must be a supercell of both strained layers. In general no exact common
cell exists, so :func:`heterostrain_cells` searches cells in which each layer needs only a
small extra deformation (``residual``), and refuses (:class:`HeterostrainError`) rather
than distort a layer by more than ``tol``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
from ase import Atoms

from ase_moireh.build.materials import Material, get_material
from ase_moireh.build.twist import DEFAULT_VACUUM, assemble_bilayer, primitive_vectors, rotation_z

#: a pair of cell vectors must enclose an angle in [30, 150] degrees (sin >= 1/2)
MIN_SIN_ANGLE = 0.5
#: pairs scored per vectorised batch (memory ~ 1 kB per pair)
PAIR_BATCH = 200_000


class HeterostrainError(ValueError):
    """No periodic cell realises the requested heterostrain within the tolerance."""


# --------------------------------------------------------------------------- homostrain


def _deformation_gradient(strain: np.ndarray) -> np.ndarray:
    """3x3 F = I + strain from a symmetric 2x2 (in-plane, z untouched) or 3x3 tensor."""
    strain = np.asarray(strain, dtype=float)
    if strain.shape not in ((2, 2), (3, 3)):
        raise ValueError(f"strain must be a 2x2 or 3x3 tensor, got shape {strain.shape}")
    if not np.all(np.isfinite(strain)):
        raise ValueError("strain must be finite")
    if not np.allclose(strain, strain.T, rtol=0.0, atol=1e-12):
        raise ValueError("strain must be symmetric (an antisymmetric part is a rotation)")
    full = np.zeros((3, 3))
    full[: len(strain), : len(strain)] = strain
    f = np.eye(3) + full
    if np.linalg.det(f) <= 0:
        raise ValueError("strain inverts the cell (det(I + strain) <= 0)")
    return f


def homostrain(atoms: Atoms, strain: np.ndarray) -> Atoms:
    """Copy of ``atoms`` with cell and positions deformed by F = I + strain (Cartesian).

    Both layers take the same strain, so any commensurate cell stays commensurate.
    Arrays (e.g. 'layer') and info are kept; info['homostrain'] holds F_total - I, the
    accumulated deformation (the strain itself after one call).
    """
    f = _deformation_gradient(strain)
    out = atoms.copy()
    out.set_cell(np.asarray(atoms.cell) @ f.T, scale_atoms=False)
    out.positions = atoms.positions @ f.T
    previous = np.asarray(atoms.info.get("homostrain", np.zeros((3, 3))), dtype=float)
    out.info["homostrain"] = f @ (np.eye(3) + previous) - np.eye(3)
    return out


def uniaxial_strain_tensor(epsilon: float, angle_deg: float, poisson: float) -> np.ndarray:
    """2x2 uniaxial strain R(phi) diag(eps, -poisson eps) R(phi)^T along angle phi (deg)."""
    rot = rotation_z(math.radians(angle_deg))
    return rot @ np.diag([epsilon, -poisson * epsilon]) @ rot.T


# ---------------------------------------------------------------- coincidence search


@dataclass(frozen=True, eq=False)
class HeterostrainCell:
    """A periodic cell shared by the heterostrained bottom and twisted, strained top layer.

    ``bottom``/``top``: 2x2 integer matrices, rows = the cell vectors in the layer's own
    (unstrained-labelled) primitive coordinates; ``cell``: rows L1, L2 in Angstrom, the
    mean of the two layers' strained supercells; ``natoms`` = 3 |det bottom| + 3 |det top|;
    ``residual``: max over layers of the largest principal strain each layer takes on top of
    its requested strain to fit ``cell``; ``twist_error``: realised minus requested twist
    (deg). The remaining fields record the request (``a`` in Angstrom).
    """

    bottom: np.ndarray
    top: np.ndarray
    cell: np.ndarray
    natoms: int
    residual: float
    twist_error: float
    theta: float
    epsilon: float
    angle: float
    poisson: float
    a: float

    @property
    def theta_realised(self) -> float:
        """Twist angle (deg) of the built structure."""
        return self.theta + self.twist_error


def layer_primitive_vectors(
    a: float, theta: float, epsilon: float, angle_deg: float, poisson: float
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the requested strained bottom and twisted + strained top primitive cells."""
    prim = primitive_vectors(a)
    f_bottom = np.eye(2) + uniaxial_strain_tensor(-0.5 * epsilon, angle_deg, poisson)
    f_top = np.eye(2) + uniaxial_strain_tensor(0.5 * epsilon, angle_deg, poisson)
    twist = rotation_z(-math.radians(theta))
    return prim @ f_bottom.T, prim @ twist.T @ f_top.T


def _half_plane_lattice(basis: np.ndarray, radius: float) -> np.ndarray:
    """Integer (p, q) != 0 with |p b1 + q b2| <= radius, one of each pair +-(p, q)."""
    k = math.ceil(radius * np.linalg.norm(np.linalg.inv(basis), 2)) + 1
    p, q = np.meshgrid(np.arange(-k, k + 1), np.arange(0, k + 1), indexing="ij")
    pq = np.column_stack([p.ravel(), q.ravel()])
    pq = pq[(pq[:, 1] > 0) | (pq[:, 0] > 0)]
    return pq[np.linalg.norm(pq @ basis, axis=1) <= radius]


@dataclass(frozen=True)
class _Candidates:
    """Bottom vectors (integer coords pq, top coords rs) that nearly are top vectors."""

    pq: np.ndarray
    rs: np.ndarray
    length: np.ndarray
    best_mismatch: float  # smallest relative mismatch among all enumerated vectors


def _coincident_vectors(
    bottom: np.ndarray, top: np.ndarray, radius: float, tol: float
) -> _Candidates:
    """Bottom lattice vectors v with |v - w| < tol |v|, w the nearest top vector; by length."""
    pq = _half_plane_lattice(bottom, radius)
    v = pq @ bottom
    rs = np.rint(v @ np.linalg.inv(top)).astype(np.int64)
    length = np.linalg.norm(v, axis=1)
    mismatch = np.linalg.norm(v - rs @ top, axis=1) / length
    keep = np.flatnonzero(mismatch < tol)
    keep = keep[np.argsort(length[keep], kind="stable")]
    best = float(mismatch.min()) if len(mismatch) else math.inf
    return _Candidates(pq[keep], rs[keep], length[keep], best)


def _pairs_up_to(
    length: np.ndarray, start: int, max_product: float, budget: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Pairs (i < j), j from ``start`` on, with |v_i| |v_j| <= max_product; about
    ``budget`` of them (whole j only). Returns i, j and the next j to continue from."""
    js = np.arange(start, len(length))
    limit = np.searchsorted(length, max_product / np.maximum(length[js], 1e-300), side="right")
    counts = np.minimum(js, limit)
    total = np.cumsum(counts)
    stop = start + max(1, int(np.searchsorted(total, budget, side="right")))
    counts = counts[: stop - start]
    second = np.repeat(js[: stop - start], counts)
    first = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return first, second, stop


def _rotation_angle(f: np.ndarray) -> np.ndarray:
    """Angle (rad) of the rotation in the polar decomposition F = R U of 2x2 matrices."""
    return np.arctan2(f[..., 1, 0] - f[..., 0, 1], f[..., 0, 0] + f[..., 1, 1])


def _principal_strain(f: np.ndarray) -> np.ndarray:
    """Largest |eigenvalue| of U - I, F = R U (polar decomposition) of 2x2 matrices."""
    w = _rotation_angle(f)
    c, s = np.cos(w), np.sin(w)
    u00 = c * f[..., 0, 0] + s * f[..., 1, 0]
    u11 = -s * f[..., 0, 1] + c * f[..., 1, 1]
    u01 = 0.5 * (c * f[..., 0, 1] + s * f[..., 1, 1] - s * f[..., 0, 0] + c * f[..., 1, 0])
    mean = 0.5 * (u00 + u11) - 1.0
    return np.abs(mean) + np.hypot(0.5 * (u00 - u11), u01)


def _fit_to_cell(supercell: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """F with cell rows = F applied to supercell rows (cell = supercell F^T), batched."""
    return np.swapaxes(np.linalg.solve(supercell, cell), -1, -2)


@dataclass(frozen=True)
class _Scored:
    bottom: np.ndarray  # (K, 2, 2) int
    top: np.ndarray
    cell: np.ndarray  # (K, 2, 2)
    natoms: np.ndarray
    residual: np.ndarray
    twist_error: np.ndarray  # rad


def _score_pairs(
    cand: _Candidates,
    i: np.ndarray,
    j: np.ndarray,
    bases: tuple[np.ndarray, np.ndarray],
    strains: tuple[np.ndarray, np.ndarray],
    max_atoms: int,
) -> _Scored:
    """Exact natoms, residual and twist error of the non-collinear pairs (i, j)."""
    m_b = np.stack([cand.pq[i], cand.pq[j]], axis=1)
    m_t = np.stack([cand.rs[i], cand.rs[j]], axis=1)
    det_b = m_b[:, 0, 0] * m_b[:, 1, 1] - m_b[:, 0, 1] * m_b[:, 1, 0]
    det_t = m_t[:, 0, 0] * m_t[:, 1, 1] - m_t[:, 0, 1] * m_t[:, 1, 0]
    natoms = 3 * (np.abs(det_b) + np.abs(det_t))
    s_b = m_b @ bases[0]
    s_t = m_t @ bases[1]
    cross = np.abs(s_b[:, 0, 0] * s_b[:, 1, 1] - s_b[:, 0, 1] * s_b[:, 1, 0])
    ok = (det_b * det_t > 0) & (natoms <= max_atoms)
    ok &= cross >= MIN_SIN_ANGLE * cand.length[i] * cand.length[j]
    m_b, m_t, s_b, s_t, natoms = m_b[ok], m_t[ok], s_b[ok], s_t[ok], natoms[ok]
    cell = 0.5 * (s_b + s_t)
    f_b = _fit_to_cell(s_b, cell)
    f_t = _fit_to_cell(s_t, cell)
    residual = np.maximum(_principal_strain(f_b), _principal_strain(f_t))
    # twist = rotation of bottom minus top (polar parts of the total deformations); the
    # requested strains are symmetric and the requested -theta of the top cancels out
    twist = _rotation_angle(f_b @ strains[0]) - _rotation_angle(f_t @ strains[1])
    twist = (twist + math.pi) % (2 * math.pi) - math.pi
    return _Scored(m_b, m_t, cell, natoms, residual, twist)


def _concat(parts: list[_Scored]) -> _Scored:
    return _Scored(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(_Scored)))


def _take(scored: _Scored, index: np.ndarray) -> _Scored:
    return _Scored(*(getattr(scored, f.name)[index] for f in fields(_Scored)))


def _closest(best: _Scored | None, scored: _Scored) -> _Scored | None:
    """The pair nearest to acceptance so far (for the error message)."""
    pool = scored if best is None else _concat([best, scored])
    if len(pool.natoms) == 0:
        return best
    badness = np.maximum(pool.residual, np.abs(pool.twist_error))
    return _take(pool, np.array([np.argmin(badness)]))


def _hnf_key(m: np.ndarray) -> tuple[int, int, int]:
    """Hermite normal form (g, h, n) of the integer row lattice of 2x2 m: it names the lattice."""
    (a, b), (c, d) = (int(x) for x in m[0]), (int(x) for x in m[1])
    g, x, y = _ext_gcd(a, c)
    n = abs(a * d - b * c) // g
    return g, (x * b + y * d) % n, n


def _ext_gcd(a: int, b: int) -> tuple[int, int, int]:
    """(g, x, y) with x a + y b = g = gcd(a, b) >= 0."""
    x0, y0, x1, y1 = 1, 0, 0, 1
    while b:
        q, a, b = a // b, b, a % b
        x0, x1 = x1, x0 - q * x1
        y0, y1 = y1, y0 - q * y1
    return (a, x0, y0) if a >= 0 else (-a, -x0, -y0)


def _reduce(cell: np.ndarray) -> np.ndarray:
    """Integer U, |det U| = 1, making the rows of U cell a Lagrange-reduced, right-handed
    basis 60-90 deg apart with L1 nearest the +x axis (like the twisted cells' 60 deg)."""
    u = np.eye(2, dtype=np.int64)
    if np.linalg.det(cell) < 0:
        u[1] *= -1
    for _ in range(1000):
        rows = u @ cell
        if rows[0] @ rows[0] > rows[1] @ rows[1]:
            u = np.array([[0, 1], [-1, 0]]) @ u
            continue
        k = round(float(rows[0] @ rows[1]) / float(rows[0] @ rows[0]))
        if k == 0:
            break
        u = np.array([[1, 0], [-k, 1]]) @ u
    turns = [np.linalg.matrix_power(np.array([[0, 1], [-1, 0]]), n) @ u for n in range(4)]
    acute = [t for t in turns if (t @ cell)[0] @ (t @ cell)[1] >= 0]
    return max(acute, key=lambda t: (t @ cell)[0, 0] / np.linalg.norm((t @ cell)[0]))


def _best_cells(scored: _Scored, tol: float, count: int, request: dict) -> list[HeterostrainCell]:
    """Cells within tol, one per distinct lattice pair, reduced, by (natoms, residual)."""
    good = np.flatnonzero((scored.residual < tol) & (np.abs(scored.twist_error) < tol))
    good = good[np.lexsort((scored.residual[good], scored.natoms[good]))]
    cells: list[HeterostrainCell] = []
    seen: set[tuple] = set()
    for k in good:
        key = (_hnf_key(scored.bottom[k]), _hnf_key(scored.top[k]))
        if key in seen:
            continue
        seen.add(key)
        u = _reduce(scored.cell[k])
        arrays = [u @ scored.bottom[k], u @ scored.top[k], u @ scored.cell[k]]
        for arr in arrays:
            arr.setflags(write=False)
        cells.append(
            HeterostrainCell(
                *arrays,
                natoms=int(scored.natoms[k]),
                residual=float(scored.residual[k]),
                twist_error=math.degrees(scored.twist_error[k]),
                **request,
            )
        )
        if len(cells) == count:
            break
    return cells


def _no_cell_message(closest: _Scored | None, cand: _Candidates, tol: float, max_atoms: int) -> str:
    head = (
        f"no periodic cell of at most {max_atoms} atoms realises this heterostrain "
        f"within tol={tol:g}"
    )
    if closest is None:
        return (
            f"{head}: no two lattice vectors that coincide within tol span such a cell "
            f"({len(cand.length)} coincident vectors; smallest relative mismatch of any "
            f"vector {cand.best_mismatch:.3g}); raise max_atoms or tol"
        )
    return (
        f"{head}: the best cell found has residual strain {closest.residual[0]:.3g} and "
        f"twist error {math.degrees(closest.twist_error[0]):.3g} deg with "
        f"{closest.natoms[0]} atoms; raise max_atoms or tol"
    )


def _check_request(
    theta: float, epsilon: float, angle: float, nu: float, max_atoms: int, tol: float, count: int
) -> None:
    for name, value in (("theta", theta), ("epsilon", epsilon), ("angle_deg", angle)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
    if abs(epsilon) >= 0.2:
        raise ValueError(f"epsilon={epsilon}: small strains only (|epsilon| < 0.2)")
    if not -1 < nu < 1:
        raise ValueError(f"poisson={nu}: a stable 2-D isotropic layer has -1 < nu < 1")
    if not 0 < tol < 0.1:
        raise ValueError(f"tol must be in (0, 0.1), got {tol}")
    if max_atoms < 6 or count < 1:
        raise ValueError(f"max_atoms must be >= 6 and count >= 1, got {max_atoms}, {count}")


def heterostrain_cells(
    theta: float,
    epsilon: float,
    angle_deg: float = 0.0,
    material: str | Material = "MoTe2",
    poisson: float | None = None,
    max_atoms: int = 20_000,
    tol: float = 1e-3,
    count: int = 5,
) -> list[HeterostrainCell]:
    """Smallest periodic cells of the twisted (theta, deg) bilayer with heterostrain epsilon.

    Bottom vectors v up to a sqrt(max_atoms) long are paired with their nearest top vectors
    w; those with |v - w| < tol |v| are candidate cell vectors and non-collinear pairs of
    them (30-150 deg apart) candidate cells. A cell is kept when the extra principal
    strain of each layer (``residual``) and the twist error (in radians) are below ``tol``:
    each layer then deviates from its requested lattice by less than ``tol``.
    Returns up to ``count`` distinct cells sorted by (natoms, residual); raises
    :class:`HeterostrainError` when none fits, never returns a worse cell.
    """
    mat = get_material(material)
    nu = mat.poisson if poisson is None else float(poisson)
    _check_request(theta, epsilon, angle_deg, nu, max_atoms, tol, count)
    bottom, top = layer_primitive_vectors(mat.a, theta, epsilon, angle_deg, nu)
    cand = _coincident_vectors(bottom, top, mat.a * math.sqrt(max_atoms), tol)
    strains = (
        np.eye(2) + uniaxial_strain_tensor(-0.5 * epsilon, angle_deg, nu),
        np.eye(2) + uniaxial_strain_tensor(0.5 * epsilon, angle_deg, nu),
    )
    request = dict(
        theta=float(theta), epsilon=float(epsilon), angle=float(angle_deg), poisson=nu, a=mat.a
    )
    # a cell of N atoms spans ~N/6 primitive cells and, its vectors being 30-150 deg apart,
    # |v_i| |v_j| <= 2 area: pairs are scored by increasing longer vector, and the bound
    # shrinks to the count-th best cell found so far
    prim_area = max(abs(np.linalg.det(bottom)), abs(np.linalg.det(top))) * (1 + 4 * tol)
    good: list[_Scored] = []
    closest: _Scored | None = None
    cells: list[HeterostrainCell] = []
    bound, start = max_atoms, 1
    while start < len(cand.length):
        max_product = bound / 6.0 * prim_area / MIN_SIN_ANGLE
        if cand.length[0] * cand.length[start] > max_product:
            break
        first, second, start = _pairs_up_to(cand.length, start, max_product, PAIR_BATCH)
        scored = _score_pairs(cand, first, second, (bottom, top), strains, bound)
        ok = (scored.residual < tol) & (np.abs(scored.twist_error) < tol)
        good.append(_take(scored, np.flatnonzero(ok)))
        closest = _closest(closest, scored)
        if ok.any():
            cells = _best_cells(_concat(good), tol, count, request)
            if len(cells) == count:
                bound = cells[-1].natoms
    if not cells:
        raise HeterostrainError(_no_cell_message(closest, cand, tol, max_atoms))
    return cells


# ----------------------------------------------------------------------------- builder


def heterostrained_bilayer(
    cell: HeterostrainCell,
    material: str | Material = "MoTe2",
    stacking: str = "R",
    interlayer: float | None = None,
    vacuum: float = DEFAULT_VACUUM,
) -> Atoms:
    """The twisted, heterostrained bilayer in ``cell`` (from :func:`heterostrain_cells`).

    Each layer fills the common cell exactly through its integer matrix, i.e. takes the
    small residual deformation on top of its requested strain. ``stacking`` as in
    :func:`~ase_moireh.build.twist.twisted_bilayer`; info records the request and residual.
    """
    mat = get_material(material)
    if not math.isclose(mat.a, cell.a, rel_tol=0.0, abs_tol=1e-9):
        raise ValueError(
            f"the cell was searched for a = {cell.a} A, {mat.name} has a = {mat.a} A; "
            "search again with this material"
        )
    if stacking not in ("R", "H"):
        raise ValueError(f"stacking must be 'R' or 'H', got {stacking!r}")
    interlayer = mat.interlayer if interlayer is None else float(interlayer)
    if interlayer < 2 * mat.d + 1.5:
        raise ValueError(f"interlayer distance {interlayer} A makes the layers overlap")
    if vacuum <= 0:
        raise ValueError(f"vacuum must be positive, got {vacuum}")
    cell2d = np.asarray(cell.cell, dtype=float)
    prim_bottom = np.linalg.solve(cell.bottom.astype(float), cell2d)
    prim_top = np.linalg.solve(cell.top.astype(float), cell2d)
    atoms = assemble_bilayer(
        mat, cell2d, [(prim_bottom, False), (prim_top, stacking == "H")], interlayer, vacuum
    )
    if len(atoms) != cell.natoms:
        raise RuntimeError(f"built {len(atoms)} atoms, the cell promises {cell.natoms}")
    atoms.info.update(
        material=mat.name,
        stacking=stacking,
        theta_deg=cell.theta,
        theta_realised_deg=cell.theta_realised,
        heterostrain_epsilon=cell.epsilon,
        heterostrain_angle_deg=cell.angle,
        poisson=cell.poisson,
        heterostrain_residual=cell.residual,
        interlayer=interlayer,
        supercell_bottom=np.array(cell.bottom),
        supercell_top=np.array(cell.top),
    )
    return atoms
