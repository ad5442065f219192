"""Kinetic energy and non-local pseudopotential blocks, by OpenMX's numerical route.

Both are built from two-centre integrals of the overlap's form (:mod:`ase_moireh.overlap`)

    I_ab(d) = 8 c sum_{L,M} (-1)^((l_a - l_b - L)/2) G(a, b, LM) Y_LM(d_hat)
                 int k^(2+2p) F_a(k) F_b(k) j_L(k |d|) dk,

F being Fourier-Bessel transforms int r^2 j_l(kr) f(r) dr:

* kinetic energy <phi_a| -hbar^2/2m nabla^2 |phi_b>: p = 1, c = hbar^2/2m
  (``Set_OLP_Kin.c``: H0 = 4 CsumK, the k^4 integral);
* projector overlaps <phi_a|beta_p>: p = 0, c = 1, F_b the projector's transform
  (``Set_Nonlocal.c``, DS_NL; ``FT_NLP.c`` for the transform).

The non-local pseudopotential is then a three-centre sum of two-centre overlaps
(``Set_Nonlocal.c``, ``Multiply_DS_NL``), over every atom k within the PAO cutoffs
r_c(i) + r_c(k) of both atoms (OpenMX's neighbour rule, ``truncation.c``):

    V_ij = f(|d_ij|) sum_k sum_p E_p <phi_i|beta_kp> <beta_kp|phi_j>,

f being OpenMX's damping to zero over the last Bohr before r_c(i) + r_c(j)
(``dampingF.c``). Without spin-orbit coupling OpenMX averages j-dependent projectors
and energies over j separately (weights (l+1, l)/(2l+1), ``SetPara_DFT.c``). With it,
each projector pair (j = l +- 1/2) enters through the projector onto that j,

    P_+ = ((l+1) + L.sigma) / (2l+1),    P_- = (l - L.sigma) / (2l+1),

giving spinor blocks [[uu, ud], [du, dd]] in our layout (:mod:`ase_moireh.basis`).
OpenMX writes the same blocks as HNL[0..2] + i iHNL[0..2] (uu, dd, ud).

With spin-orbit, L = i Lambda with Lambda real between real harmonics, so every product
is real: D = B E a B^T and K = B E s Lambda B^T give uu = D + i Kz, ud = Ky + i Kx,
du = -Ky + i Kx, dd = D - i Kz.

The three-centre sums (this term's and V_NA's, :func:`add_projector_products`) are made a
projector atom at a time: the overlaps of all its sites stacked as X, the product
X M X^T made only between groups of sites close enough to hold a requested pair (sites
grouped by small cubes of space, :func:`grouped_product`; all spin-orbit components in
one GEMM), the blocks of the requested edges cut from it, upper edges only
(:class:`EdgeHalves`: the operator is Hermitian, the lower edges are adjoints), summed
per block shape in double precision (:class:`BlockSums`), damped and written once;
chunks of projector atoms, and the writes, run on worker threads (numpy and BLAS
release the GIL). Time and memory are linear in the number of atoms.

The numerics are OpenMX's to the quadrature node: transforms tabulated on k_n = n kmax/N
(n < N) and read at the nodes kmin + n (kmax - kmin)/N by OpenMX's Hermite interpolation
(``RF_BesselF``, ``NLRF_BesselF``), so a node just past the table counts as zero. The
overlap module's simpler k grid (nodes on the table) is 1e-7 off in S and 2e-6 eV off in
the 165-eV on-site kinetic blocks; this one is 1e-10 and 5e-9 eV off.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, lru_cache, partial
from typing import TypeVar

import numpy as np
from ase import Atoms
from ase.units import Bohr, Hartree
from numpy.lib.stride_tricks import sliding_window_view
from scipy.interpolate import CubicSpline
from scipy.sparse import csr_matrix
from scipy.special import sph_harm_y, spherical_jn
from threadpoolctl import threadpool_limits

from ase_moireh.basis import Basis
from ase_moireh.block_operator import (
    BlockOperator,
    _edge_key,
    concatenated_ranges,
    lookup_edges,
    packed_offsets,
    reversed_edges,
)
from ase_moireh.io.vps import VPSFile, find_vps, interpolate_openmx, projector_radial, read_vps
from ase_moireh.neighbours import neighbour_pairs
from ase_moireh.overlap import (
    KMAX,
    NK,
    NR,
    TwoCentreOverlap,
    coupling_harmonics,
    orbital_harmonics,
    real_gaunt,
)

#: OpenMX's Radial_kmin (openmx_common.h): the k quadrature starts here, not at 0
KMIN = 1e-6 / Bohr
#: hbar^2 / 2m in eV Angstrom^2 (1/2 in Hartree atomic units)
HBAR2_2M = 0.5 * Hartree * Bohr**2
#: width of OpenMX's dampingF (``buf``, 1 Bohr)
DAMPING_WIDTH = 1.0 * Bohr
#: distance step of the radial tables (Angstrom): see :class:`RadialTable`
STEP = 0.005
#: closer than this (Angstrom, d > 0) the tables sum the k quadrature directly
EXACT_BELOW = 1.0
#: OpenMX's shortest bond, 1e-10 Bohr: on-site integrals are taken there, along +x
#: (``Set_OLP_Kin.c``, ``Set_Nonlocal.c``, ``Set_ProExpn_VNA.c``; ``xyz2spherical.c``).
#: Used for V_NA's on-site sums (7e-9 eV); T and V_NL take d = 0 (5e-9 eV off OpenMX
#: in V_NL's on-site blocks, exactly rotation covariant)
MIN_DISTANCE = 1e-10 * Bohr
T = TypeVar("T")
U = TypeVar("U")

#: OpenMX's GL_Mesh: nodes of its Gauss-Legendre radial and k quadratures
GL_MESH = 300


# --------------------------------------------------------------------------- quadrature


def transform_grid() -> np.ndarray:
    """OpenMX's NormK table, n kmax / N for n < N (Angstrom^-1): where F is tabulated."""
    return np.arange(NK) * (KMAX / NK)


def openmx_k_quadrature() -> tuple[np.ndarray, np.ndarray]:
    """(nodes, trapezoid weights) of OpenMX's k integrals (``Set_OLP_Kin.c``,
    ``Set_Nonlocal.c``): N intervals on [kmin, kmax], Angstrom^-1."""
    h = (KMAX - KMIN) / NK
    nodes = KMIN + np.arange(NK + 1) * h
    weights = np.full(NK + 1, h)
    weights[[0, -1]] *= 0.5
    return nodes, weights


@cache
def openmx_gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre (abscissae, weights) on [-1, 1], ascending, as OpenMX's
    ``Gauss_Legendre2`` makes them: Newton steps on P_n until a step is below 1e-13, the
    weight from the derivative before the last step (1e-12-relative off the exact rule,
    so the same numbers, not numpy's, reproduce OpenMX's integrals)."""
    i = np.arange(1, (n + 1) // 2 + 1)
    z = np.cos(np.pi * (i - 0.25) / (n + 0.5))
    pp = np.zeros_like(z)
    todo = np.ones(len(z), dtype=bool)
    while todo.any():
        zt = z[todo]
        p1, p2 = np.ones_like(zt), np.zeros_like(zt)
        for j in range(1, n + 1):
            p1, p2 = ((2.0 * j - 1.0) * zt * p1 - (j - 1.0) * p2) / j, p1
        slope = n * (zt * p1 - p2) / (zt * zt - 1.0)
        znew = zt - p1 / slope
        z[todo], pp[todo] = znew, slope
        todo[np.flatnonzero(todo)[np.abs(znew - zt) <= 1e-13]] = False
    w = 2.0 / ((1.0 - z * z) * pp * pp)
    x = np.concatenate([-z, z[::-1][n % 2 :]])
    return x, np.concatenate([w, w[::-1][n % 2 :]])


@cache
def openmx_gl_k_quadrature() -> tuple[np.ndarray, np.ndarray]:
    """(nodes, weights) of OpenMX's Gauss-Legendre k integrals on [kmin, kmax] (GL_Mesh =
    300 nodes, ``GL_NormK``; the neutral-atom terms, ``Set_ProExpn_VNA.c``), Angstrom^-1."""
    x, w = openmx_gauss_legendre(GL_MESH)
    half = 0.5 * (KMAX - KMIN)
    return half * x + 0.5 * (KMAX + KMIN), half * w


#: the k quadratures of OpenMX's two-centre integrals, by name
K_QUADRATURES: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
    "trapezoid": openmx_k_quadrature,
    "gauss": openmx_gl_k_quadrature,
}


def at_nodes(table: np.ndarray, clamp: bool, quadrature: str = "trapezoid") -> np.ndarray:
    """Transforms tabulated on :func:`transform_grid` (last axis) read at the quadrature
    nodes as OpenMX reads them: ``RF_BesselF`` for PAOs (``clamp``), ``NLRF_BesselF``
    for projectors."""
    nodes, _ = K_QUADRATURES[quadrature]()
    return interpolate_openmx(transform_grid(), table[..., :NK], nodes, clamp=clamp)


def fourier_bessel(
    functions: Callable[[np.ndarray], np.ndarray], l: int, r0: float, r1: float, k: np.ndarray
) -> np.ndarray:
    """F(k) = int r^2 j_l(kr) f(r) dr of radial functions sharing l (``functions`` maps
    radii (n,) to values (count, n)), trapezoidal with NR intervals on [r0, r1] (the rule
    of ``FT_PAO.c`` and ``FT_NLP.c``): (count, len(k))."""
    r = np.linspace(r0, r1, NR + 1)
    weights = np.full(NR + 1, r[1] - r[0])
    weights[[0, -1]] *= 0.5
    return (functions(r) * r**2 * weights) @ spherical_jn(l, np.outer(k, r)).T


def openmx_damping(rcut: np.ndarray | float, r: np.ndarray) -> np.ndarray:
    """OpenMX's ``dampingF``: 1 up to rcut - 1 Bohr, 0 beyond rcut, between them the
    quintic with zero first and second derivatives at both ends."""
    x = (np.asarray(r, dtype=float) - rcut) / DAMPING_WIDTH
    ramp = -(x**3) * (10.0 + 15.0 * x + 6.0 * x * x)
    return np.where(x > 0, 0.0, np.where(x < -1, 1.0, ramp))


# --------------------------------------------------------------------------- tables


@cache
def any_basis_gaunt(la: int, lb: int, L: int) -> np.ndarray:
    """G[a, b, M] = int Y_a Y'_b Y_LM dOmega with Y_a our orbital harmonics and Y'_b those
    of :func:`~ase_moireh.overlap.coupling_harmonics` (any l, beyond our l <= 3), exact
    as in :func:`~ase_moireh.overlap.real_gaunt`."""
    n = (la + lb + L) // 2 + 2
    x, w = np.polynomial.legendre.leggauss(n)
    phi = 2 * np.pi * np.arange(2 * n + 1) / (2 * n + 1)
    st = np.sqrt(1 - x**2)[:, None]
    z = np.broadcast_to(x[:, None], (n, len(phi)))
    unit = np.stack([st * np.cos(phi), st * np.sin(phi), z], -1).reshape(-1, 3)
    weight = np.repeat(w, len(phi)) * (2 * np.pi / len(phi))
    g = np.einsum(
        "p,pa,pb,pm->abm",
        weight,
        orbital_harmonics(la, unit),
        coupling_harmonics(lb, unit),
        coupling_harmonics(L, unit),
    )
    g[np.abs(g) < 1e-14] = 0.0
    return g


@dataclass(frozen=True)
class RadialSide:
    """One side of a two-centre integral: radial functions in block order (each fills
    2l+1 rows, m = -l..l in our real-harmonic order) and their transforms at the nodes."""

    shells: tuple[int, ...]
    transforms: np.ndarray  # (nshell, NK + 1) at openmx_k_quadrature() nodes
    cutoff: float  # Angstrom: the integral is zero beyond the sum of both sides'
    #: rows in our orbital harmonics (basis.py); False: any orthonormal real basis of each
    #: shell (:func:`~ase_moireh.overlap.coupling_harmonics`), for projectors of any l
    #: whose m are summed over
    orbital: bool = True

    @property
    def norb(self) -> int:
        return sum(2 * l + 1 for l in self.shells)


def shell_starts(shells: tuple[int, ...]) -> np.ndarray:
    """First row of every shell in the block."""
    return np.cumsum([0] + [2 * l + 1 for l in shells])[:-1]


def shell_pairs(
    a: tuple[int, ...], b: tuple[int, ...]
) -> Iterator[tuple[int, int, list[tuple[int, int]], np.ndarray]]:
    """(l_a, l_b, the shell pairs (p, q) of those l, p-major, their flat places in the
    block (npairs, 2l_a+1, 2l_b+1)) for every pair of l of two sides."""
    starts_a, starts_b = shell_starts(a), shell_starts(b)
    ncol = int(sum(2 * l + 1 for l in b))
    for la in sorted(set(a)):
        for lb in sorted(set(b)):
            pairs = [
                (p, q) for p, lp in enumerate(a) for q, lq in enumerate(b) if (lp, lq) == (la, lb)
            ]
            rows = starts_a[[p for p, _ in pairs]][:, None, None] + np.arange(2 * la + 1)[:, None]
            cols = starts_b[[q for _, q in pairs]][:, None, None] + np.arange(2 * lb + 1)
            yield la, lb, pairs, rows * ncol + cols


@lru_cache(maxsize=16)
def _bessel(L: int, step: float, count: int, quadrature: str) -> np.ndarray:
    """j_L(k d) on (distance grid n step, quadrature nodes): shared by the tables
    (11 MB each at the default step)."""
    nodes, _ = K_QUADRATURES[quadrature]()
    return spherical_jn(L, np.outer(np.arange(count) * step, nodes))


@dataclass(frozen=True)
class _Group:
    """The block places of one (l_a, l_b): every radial pair of those l and every L
    coupling them, summed in one contraction (:meth:`RadialTable.evaluate`)."""

    la: int
    lb: int
    #: (L, columns of the pairs' radial integrals in the table of that L)
    terms: tuple[tuple[int, slice], ...]
    positions: np.ndarray  # (npairs, 2la+1, 2lb+1) flat places in the block
    #: (rows, columns, np, nq) when the pairs fill a rectangle of the block, p-major
    #: (shells of one l consecutive, as in OpenMX's order): written without a scatter
    rect: tuple[slice, slice, int, int] | None


def _rectangle(positions: np.ndarray, ncol: int) -> tuple[slice, slice, int, int] | None:
    """The rectangle (rows, columns, np, nq) that ``positions`` fill as np x nq shell
    pairs, p-major, or None."""
    npairs, ma, mb = positions.shape
    rows, cols = np.unique(positions // ncol), np.unique(positions % ncol)
    n_p, n_q = len(rows) // ma, len(cols) // mb
    if n_p * n_q != npairs or np.ptp(rows) + 1 != len(rows) or np.ptp(cols) + 1 != len(cols):
        return None
    expected = (rows[:, None] * ncol + cols).reshape(n_p, ma, n_q, mb).transpose(0, 2, 1, 3)
    if not np.array_equal(expected.reshape(positions.shape), positions):
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1), n_p, n_q


@dataclass(frozen=True)
class _Radial:
    """The radial integrals of one L, all groups' pairs side by side."""

    L: int
    weighted: np.ndarray  # (nk, ncol) 8 c sign w_k k^(2+2p) F_a F_b
    spline: CubicSpline
    quadrature: str

    def __call__(self, dist: np.ndarray, exact_below: float) -> np.ndarray:
        """(E, ncol) at distances: the spline, or the quadrature itself below
        ``exact_below``."""
        out = self.spline(dist)
        near = (dist > 0) & (dist < exact_below)
        if near.any():
            nodes, _ = K_QUADRATURES[self.quadrature]()
            out[near] = spherical_jn(self.L, np.outer(dist[near], nodes)) @ self.weighted
        return out


class RadialTable:
    """Splines in |d| of the radial integrals of two :class:`RadialSide`, grouped by
    (l_a, l_b, L) as in the overlap (the same construction with a k^(2p) weight and a
    scale): the generalisation of ``overlap._PairTable`` to any radial pair.

    The integrands reach k = 60 Bohr^-1, so the integrals oscillate on 0.05 A: with the
    default step (0.005 A) the cubic splines are within 1e-7 eV of the quadrature for
    kinetic integrals and 1e-8 for projector overlaps beyond 1 A (4e-8 and 2e-9 beyond
    1.5 A; 16x worse at 0.01 A, the overlap's step, 7e-4 eV near d = 0); closer than
    ``exact_below`` the quadrature is summed directly. ``quadrature`` names the k rule
    (:data:`K_QUADRATURES`); the sides' transforms must be at its nodes. With
    ``min_distance`` (OpenMX's :data:`MIN_DISTANCE`) every shorter distance counts as
    that one, along +x at d = 0, as OpenMX takes on-site integrals: 5e-9 eV in on-site
    blocks, at the price of rotation covariance at that level.
    """

    def __init__(
        self,
        a: RadialSide,
        b: RadialSide,
        power: int = 0,
        scale: float = 1.0,
        step: float = STEP,
        exact_below: float = EXACT_BELOW,
        quadrature: str = "trapezoid",
        min_distance: float = 0.0,
    ):
        nodes, weights = K_QUADRATURES[quadrature]()
        kernel = weights * nodes ** (2 + 2 * power)
        parts = []
        for la, lb, pairs, positions in shell_pairs(a.shells, b.shells):
            product = np.array([a.transforms[p] * b.transforms[q] for p, q in pairs]).T
            for L in range(abs(la - lb), la + lb + 1, 2):
                sign = (-1) ** ((la - lb - L) // 2)
                weighted = 8.0 * scale * sign * kernel[:, None] * product
                parts.append((la, lb, L, positions, weighted))
        self._build((a.norb, b.norb), a.cutoff + b.cutoff, parts, step, exact_below, quadrature)
        self.gaunt = real_gaunt if b.orbital else any_basis_gaunt
        self.min_distance = min_distance

    @classmethod
    def from_parts(
        cls,
        shape: tuple[int, int],
        rmax: float,
        parts: list[tuple[int, int, int, np.ndarray, np.ndarray]],
        step: float = STEP,
        exact_below: float = EXACT_BELOW,
        quadrature: str = "trapezoid",
        min_distance: float = 0.0,
    ) -> RadialTable:
        """A table of radial integrals that are no product of two sides' transforms:
        ``parts`` are (l_a, l_b, L, positions (npairs, 2l_a+1, 2l_b+1) flat in the
        block, weighted (nk, npairs)), each block element summing
        j_L(k d) weighted over k times the real Gaunt coefficients with Y_LM(d_hat)."""
        table = cls.__new__(cls)
        table._build(shape, rmax, parts, step, exact_below, quadrature)
        table.min_distance = min_distance
        return table

    def _build(self, shape, rmax, parts, step, exact_below, quadrature) -> None:
        self.gaunt = real_gaunt
        self.shape = shape
        self.rmax = rmax
        self.exact_below = exact_below
        count = int(np.ceil(rmax / step)) + 2
        distances = np.arange(count) * step
        self.radials: dict[int, _Radial] = {}
        terms: dict[tuple[int, int], list[tuple[int, slice]]] = {}
        places: dict[tuple[int, int], np.ndarray] = {}
        for L in sorted({part[2] for part in parts}):
            mine = [part for part in parts if part[2] == L]
            weighted = np.hstack([part[4] for part in mine])
            values = _bessel(L, step, count, quadrature) @ weighted  # (nd, ncol)
            spline = CubicSpline(distances, values, axis=0)
            self.radials[L] = _Radial(L, weighted, spline, quadrature)
            first = 0
            for la, lb, _, positions, w in mine:
                terms.setdefault((la, lb), []).append((L, slice(first, first + w.shape[1])))
                places[la, lb] = positions
                first += w.shape[1]
        self.groups: list[_Group] = [
            _Group(la, lb, tuple(t), places[la, lb], _rectangle(places[la, lb], shape[1]))
            for (la, lb), t in terms.items()
        ]

    def _directions(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows within rmax, their distances, their unit vectors; OpenMX's +x at d = 0,
        distances raised to ``min_distance``)."""
        dist = np.linalg.norm(vectors, axis=1)
        inside = np.flatnonzero(dist <= self.rmax)
        unit = np.tile([1.0, 0.0, 0.0], (len(inside), 1))  # OpenMX's axis at d = 0
        far = dist[inside] >= 1e-14 * Bohr
        unit[far] = vectors[inside[far]] / dist[inside[far], None]
        dist = np.where(far, dist[inside], 0.0)
        if self.min_distance:
            dist = np.maximum(dist, self.min_distance)
        return inside, dist, unit

    def evaluate(self, vectors: np.ndarray) -> np.ndarray:
        """(E, n_a, n_b) blocks at bond vectors (Angstrom, from a to b); zero beyond
        the two cutoffs.

        Every (l_a, l_b) group is one batched product over its L, radial (p, q) by
        angular (m_a, m_b), written straight into its rectangle of the blocks: a V_NA
        projector block (19 x 972 numbers) costs a few ns a number, not the ~20 of
        adding the L terms one by one."""
        vectors = np.asarray(vectors, dtype=float).reshape(-1, 3)
        out = np.zeros((len(vectors), *self.shape))
        inside, dist, unit = self._directions(vectors)
        if not len(inside):
            return out
        blocks = out if len(inside) == len(out) else np.zeros((len(inside), *self.shape))
        radial = {L: table(dist, self.exact_below) for L, table in self.radials.items()}
        harmonics = {L: coupling_harmonics(L, unit) for L in self.radials}
        for g in self.groups:
            ma, mb = 2 * g.la + 1, 2 * g.lb + 1
            rad = np.stack([radial[L][:, cols] for L, cols in g.terms], axis=-1)  # (E, t, L)
            ang = np.stack(
                [
                    harmonics[L] @ self.gaunt(g.la, g.lb, L).reshape(ma * mb, 2 * L + 1).T
                    for L, _ in g.terms
                ],
                axis=1,
            ).reshape(len(inside), len(g.terms), ma, mb)
            if g.rect is None:
                part = np.einsum("etl,elab->etab", rad, ang, optimize=True)
                blocks.reshape(len(inside), -1)[:, g.positions.ravel()] = part.reshape(
                    len(inside), -1
                )
                continue
            _write_group(blocks, g.rect, rad, ang)
        if blocks is not out:
            out[inside] = blocks
        return out


def _write_group(
    blocks: np.ndarray, rect: tuple[slice, slice, int, int], rad: np.ndarray, ang: np.ndarray
) -> None:
    """blocks[e, (p, a), (q, b)] = sum_L rad[e, (p, q), L] ang[e, L, a, b] in the group's
    rectangle, written in place: with one L a plain product (numpy's einsum loop), with
    more a (q x L) by (L x b) matrix product for every (e, p, a) (the rectangle's rows
    hold (q, b) contiguously); measured the faster of the two in each case."""
    rows, cols, n_p, n_q = rect
    count, nterms, ma, mb = ang.shape
    target = blocks[:, rows, cols].reshape(count, n_p, ma, n_q, mb)
    if nterms == 1:
        np.einsum("epql,elab->epaqb", rad.reshape(count, n_p, n_q, 1), ang, out=target)
        return
    left = rad.reshape(count, n_p, 1, n_q, nterms)
    np.matmul(left, ang.transpose(0, 2, 1, 3)[:, None], out=target)


# --------------------------------------------------------------------------- spin-orbit


@cache
def angular_momentum(l: int) -> np.ndarray:
    """(Lx, Ly, Lz) in units of hbar as (3, 2l+1, 2l+1) complex matrices between our real
    harmonics (order and signs of ``basis.py``): <Y_a|L|Y_b>, from the complex harmonics
    (Condon-Shortley phase) fitted to ours on random points."""
    size = 2 * l + 1
    pts = np.random.default_rng(7 + l).normal(size=(8 * size, 3))
    pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    theta, phi = np.arccos(pts[:, 2]), np.arctan2(pts[:, 1], pts[:, 0])
    m = np.arange(-l, l + 1)
    complex_y = np.stack([sph_harm_y(l, mm, theta, phi) for mm in m], axis=1)
    u, *_ = np.linalg.lstsq(complex_y, orbital_harmonics(l, pts).astype(complex), rcond=None)
    lz = np.diag(m).astype(complex)
    lp = np.diag(np.sqrt((l - m[:-1]) * (l + m[:-1] + 1.0)), -1).astype(complex)  # L+ |m>
    lx, ly = 0.5 * (lp + lp.T), -0.5j * (lp - lp.T)
    return np.array([u.conj().T @ op @ u for op in (lx, ly, lz)])


@cache
def angular_momentum_real(l: int) -> np.ndarray:
    """Lambda = -i L (3, 2l+1, 2l+1): real, as L is imaginary between real harmonics
    (so spin-orbit blocks need real matrix products only)."""
    return (-1j * angular_momentum(l)).real


@cache
def j_projections(l: int) -> tuple[np.ndarray, np.ndarray]:
    """Projectors onto j = l + 1/2 and j = l - 1/2 inside (spin x Y_lm), each shaped
    (2, 2l+1, 2, 2l+1) = [spin, m, spin', m'] (spin up first)."""
    pauli = np.array([[[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]])
    l_sigma = np.einsum("ast,amn->smtn", pauli, angular_momentum(l))
    unit = np.einsum("st,mn->smtn", np.eye(2), np.eye(2 * l + 1))
    return ((l + 1) * unit + l_sigma) / (2 * l + 1), (l * unit - l_sigma) / (2 * l + 1)


# --------------------------------------------------------------------------- operators


def bond_vectors(atoms: Atoms, edges: np.ndarray) -> np.ndarray:
    """r_j + R . cell - r_i of every edge (i, j, R), Angstrom."""
    vec = atoms.positions[edges[:, 1]] + edges[:, 2:] @ np.asarray(atoms.cell)
    return vec - atoms.positions[edges[:, 0]]


def _species_groups(symbols: np.ndarray, first: np.ndarray, second: np.ndarray):
    """(a, b, indices) of the rows whose (symbols[first], symbols[second]) is (a, b)."""
    pair = np.char.add(np.char.add(symbols[first], "-"), symbols[second])
    for key in np.unique(pair):
        a, b = str(key).split("-")
        yield a, b, np.flatnonzero(pair == key)


class KineticEnergy:
    """Kinetic-energy blocks <i,0| -hbar^2/2m nabla^2 |j,R> (eV) of a PAO basis, from the
    radial functions of a :class:`~ase_moireh.overlap.TwoCentreOverlap`."""

    def __init__(self, overlap: TwoCentreOverlap, step: float = STEP):
        self.overlap = overlap
        self.basis = overlap.basis
        self.step = step
        self._tables: dict[tuple[str, str], RadialTable] = {}
        self._sides: dict[str, RadialSide] = {}

    def side(self, symbol: str) -> RadialSide:
        """The PAO side of species ``symbol``: shells and transforms at the nodes."""
        if symbol not in self._sides:
            radials = self.overlap.species(symbol)
            table = at_nodes(self.overlap.transforms(symbol), clamp=True)
            self._sides[symbol] = RadialSide(radials.species_basis.shells, table, radials.cutoff)
        return self._sides[symbol]

    def blocks(self, a: str, b: str, vectors: np.ndarray) -> np.ndarray:
        """(E, n_a, n_b) blocks of species a at 0 and species b at ``vectors`` (A)."""
        if (a, b) not in self._tables:
            self._tables[a, b] = RadialTable(
                self.side(a), self.side(b), power=1, scale=HBAR2_2M, step=self.step
            )
        return self._tables[a, b].evaluate(vectors)

    def operator(self, atoms: Atoms, edges: np.ndarray) -> BlockOperator:
        """T as a spinless :class:`BlockOperator` on the edges (i, j, R) of ``atoms``
        (no damping: OpenMX adds T as it comes, ``Set_Hamiltonian.c``)."""
        edges = np.asarray(edges, dtype=np.int64).reshape(-1, 5)
        symbols = np.array(atoms.get_chemical_symbols())
        vec = bond_vectors(atoms, edges)
        norbs = self.basis.norbs(atoms.numbers)
        offsets = packed_offsets(norbs, edges)
        values = np.zeros(int(offsets[-1]))
        for a, b, idx in _species_groups(symbols, edges[:, 0], edges[:, 1]):
            flat = self.blocks(a, b, vec[idx]).reshape(len(idx), -1)
            values[offsets[idx][:, None] + np.arange(flat.shape[1])] = flat
        meta = {"cell": np.asarray(atoms.cell), "positions": atoms.positions}
        return BlockOperator(atoms.numbers, self.basis, edges, values, **meta)


class NonlocalPseudopotential:
    """Non-local pseudopotential blocks (eV) of a PAO basis: collinear (j-averaged, real,
    spinless) or, with ``spinful``, the spin-orbit spinor blocks.

    ``vps`` maps each chemical symbol to its :class:`~ase_moireh.io.vps.VPSFile`.
    """

    def __init__(
        self,
        overlap: TwoCentreOverlap,
        vps: Mapping[str, VPSFile],
        spinful: bool = False,
        step: float = STEP,
    ):
        missing = [s for s in overlap.radials if s not in vps]
        if missing:
            raise ValueError(f"no pseudopotential for species {', '.join(missing)}")
        self.overlap = overlap
        self.basis: Basis = overlap.basis
        self.vps = dict(vps)
        self.spinful = spinful
        self.step = step
        self._pao = KineticEnergy(overlap, step)  # its PAO sides, shared
        self._tables: dict[tuple[str, str, int], RadialTable] = {}
        self._sides: dict[tuple[str, int], RadialSide] = {}

    @classmethod
    def from_folder(
        cls,
        folder: str | os.PathLike,
        basis: Mapping[str, str],
        pseudopotentials: Mapping[str, str],
        spinful: bool = False,
    ) -> NonlocalPseudopotential:
        """From OpenMX's DATA.PATH (``PAO/``, ``VPS/``), basis strings
        (``{'Mo': 'Mo7.0-s3p2d1'}``) and pseudopotential names (``{'Mo': 'Mo_PBE19'}``)."""
        overlap = TwoCentreOverlap.from_pao_folder(folder, basis)
        vps = {s: read_vps(find_vps(folder, name)) for s, name in pseudopotentials.items()}
        return cls(overlap, vps, spinful)

    # ------------------------------------------------------------------ projectors
    @property
    def channels(self) -> int:
        """Projector sets per species: j = l +- 1/2 with spin-orbit, one j-average without."""
        return 2 if self.spinful else 1

    def projectors(self, symbol: str) -> tuple[np.ndarray, np.ndarray]:
        """(energies (channels, P) eV, projector radial values (channels, P, n))."""
        vps = self.vps[symbol]
        if self.spinful:
            return vps.energies.T.copy(), vps.projectors.transpose(1, 0, 2).copy()
        energies, values = vps.scalar()
        return energies[None], values[None]

    def projector_side(self, symbol: str, channel: int) -> RadialSide:
        """Projector transforms of one species and channel, on r in [r_0, r_c + 0.5 Bohr]
        with r_c the species' PAO cutoff (``FT_NLP.c``), read as ``NLRF_BesselF`` does."""
        if (symbol, channel) not in self._sides:
            vps = self.vps[symbol]
            rc = self.overlap.species(symbol).cutoff
            _, values = self.projectors(symbol)
            table = np.zeros((len(vps.l), NK))
            for l in np.unique(vps.l):
                which = np.flatnonzero(vps.l == l)
                radial = partial(projector_radial, vps, values[channel][which], int(l))
                table[which] = fourier_bessel(
                    radial, int(l), vps.r[0], rc + 0.5 * Bohr, transform_grid()
                )
            shells = tuple(int(l) for l in vps.l)
            self._sides[symbol, channel] = RadialSide(shells, at_nodes(table, clamp=False), rc)
        return self._sides[symbol, channel]

    def projector_overlaps(
        self, a: str, k: str, vectors: np.ndarray, channel: int = 0
    ) -> np.ndarray:
        """<phi_a|beta_k> blocks (E, n_a, n_proj_k) of orbitals of species a at 0 and the
        projectors (one channel) of species k at ``vectors`` (A)."""
        if (a, k, channel) not in self._tables:
            self._tables[a, k, channel] = RadialTable(
                self._pao.side(a), self.projector_side(k, channel), step=self.step
            )
        return self._tables[a, k, channel].evaluate(vectors)

    def coupling(self, symbol: str, channel: int) -> np.ndarray:
        """The projector-space matrices of one channel, real, (components, P, P):
        collinear, E_p on the diagonal; with spin-orbit, E_p P_j = E_p (a_j + s_j L.sigma)
        split as [E a, E s Lambda_x, E s Lambda_y, E s Lambda_z] with L = i Lambda
        (a = (l+1, l)/(2l+1), s = (1, -1)/(2l+1) for j = l +- 1/2)."""
        energies, _ = self.projectors(symbol)
        ls = self.vps[symbol].l
        size = int(np.sum(2 * ls + 1))
        out = np.zeros((4 if self.spinful else 1, size, size))
        start = 0
        for l, e in zip(ls.tolist(), energies[channel], strict=True):
            block = slice(start, start + 2 * l + 1)
            start += 2 * l + 1
            if not self.spinful:
                out[0, block, block] = e * np.eye(2 * l + 1)
                continue
            a, s = (
                ((l + 1) / (2 * l + 1), 1 / (2 * l + 1))
                if channel == 0
                else (l / (2 * l + 1), -1 / (2 * l + 1))
            )
            out[0, block, block] = e * a * np.eye(2 * l + 1)
            out[1:, block, block] = e * s * angular_momentum_real(l)
        return out

    # ------------------------------------------------------------------ operator
    def operator(
        self, atoms: Atoms, edges: np.ndarray, spinless: np.ndarray | None = None
    ) -> BlockOperator:
        """V_NL on the edges (i, j, R) of ``atoms``, damped as OpenMX damps it; plus
        ``spinless``, packed spinless blocks on the same edges (H0's T + V_NA + V_xc),
        on both spin diagonals if given: H0 without a spinor lift and a sum of its own."""
        edges = np.asarray(edges, dtype=np.int64).reshape(-1, 5)
        symbols = np.array(atoms.get_chemical_symbols())
        cutoff = np.array([self.overlap.species(s).cutoff for s in symbols])
        norbs = self.basis.norbs(atoms.numbers)
        offsets = packed_offsets(norbs * (2 if self.spinful else 1), edges)
        values = np.zeros(int(offsets[-1]), dtype=complex if self.spinful else float)
        if spinless is not None:
            spinless = (np.asarray(spinless), packed_offsets(norbs, edges))
        add_projector_products(
            values,
            offsets,
            atoms,
            edges,
            projector_sites(atoms, cutoff),
            self.projector_overlaps,
            self.coupling,
            self.channels,
            damping=damping_factors(atoms, edges, cutoff),
            spinless=spinless,
        )
        meta = {"cell": np.asarray(atoms.cell), "positions": atoms.positions}
        return BlockOperator(atoms.numbers, self.basis, edges, values, self.spinful, **meta)


# --------------------------------------------------------------------------- Hermitian halves


def upper_edges(edges: np.ndarray) -> np.ndarray:
    """Is (i, j, R) the computed one of its Hermitian pair: i < j, or i = j and R >= 0
    lexicographically (the on-site block is its own partner)."""
    i, j, r = edges[:, 0], edges[:, 1], edges[:, 2:]
    positive = (r[:, 0] > 0) | (
        (r[:, 0] == 0) & ((r[:, 1] > 0) | ((r[:, 1] == 0) & (r[:, 2] >= 0)))
    )
    return (i < j) | ((i == j) & positive)


@dataclass(frozen=True)
class EdgeHalves:
    """Requested edges folded onto one edge of every Hermitian pair (:func:`upper_edges`).

    H and its terms are Hermitian, <j,-R|O|i,0> = <i,0|O|j,R>^dagger, so the sums are
    built on the upper edges alone (half the products, gathers and scatters) and every
    requested lower edge is the (conjugate) transpose of its partner."""

    edges: np.ndarray  # (C, 5) the upper edges that are computed
    index: np.ndarray  # (E,) computed edge of every requested edge
    flipped: np.ndarray  # (E,) the requested edge is the reverse of its computed one
    natoms: int
    table: tuple[np.ndarray, np.ndarray]  # sorted keys of ``edges``

    @classmethod
    def build(cls, edges: np.ndarray, natoms: int) -> EdgeHalves:
        edges = np.asarray(edges, dtype=np.int64).reshape(-1, 5)
        flipped = ~upper_edges(edges)
        folded = np.where(flipped[:, None], reversed_edges(edges), edges)
        keys = _edge_key(folded, natoms)
        unique, first, index = np.unique(keys, return_index=True, return_inverse=True)
        upper = folded[first]
        return cls(upper, index, flipped, natoms, (unique, np.arange(len(unique))))

    def find(self, i: np.ndarray, j: np.ndarray, shift: np.ndarray) -> np.ndarray:
        """Computed edge of every (i, j, shift) row already in upper orientation, -1 if
        it is not requested."""
        return lookup_edges(self.table, np.column_stack([i, j, shift]), self.natoms)


#: numbers written into the packed values at once by :meth:`BlockSums.write`
WRITE_CHUNK = 4_000_000


class BlockSums:
    """Per block shape, dense sums (edges of that shape, components, n_i, n_j) of the
    computed (upper) edges; blocks are added a batch at a time from any thread and
    written into the packed values of the requested edges once, at the end. Blocks that
    come as the reverse edge's (n_j, n_i) are summed apart, untransposed, and turned
    once, when written (:data:`ADJOINT_SIGNS`).

    Components: one (a real block) or four, [D, Kx, Ky, Kz], the spinor block
    [[D + i Kz, Ky + i Kx], [-Ky + i Kx, D - i Kz]] (L.sigma with L = i Lambda)."""

    def __init__(self, halves: EdgeHalves, norb: np.ndarray, components: int):
        self.halves = halves
        self.components = components
        self.rows = norb[halves.edges[:, 0]]
        self.cols = norb[halves.edges[:, 1]]
        self.local = np.zeros(len(halves.edges), dtype=np.int64)
        self.sums: dict[tuple[int, int], np.ndarray] = {}
        for nr, nc in set(zip(self.rows.tolist(), self.cols.tolist(), strict=True)):
            mine = np.flatnonzero((self.rows == nr) & (self.cols == nc))
            self.local[mine] = np.arange(len(mine))
            self.sums[nr, nc] = np.zeros((len(mine), components, nr, nc))
        #: sums of reversed blocks (edges, components, n_j, n_i), made when first needed
        self.reversed: dict[tuple[int, int], np.ndarray] = {}
        self._lock = threading.Lock()

    def add(self, edge: np.ndarray, blocks: np.ndarray, reverse: bool = False) -> None:
        """sums[edge] += blocks (t, components, n_i, n_j), or with ``reverse`` the blocks
        (t, components, n_j, n_i) of the reverse edges (j, i, -R), repeated edges summed
        first (one projector atom's images, or the grid blocks of one batch, reach the
        same edge many times): a sparse product, 1.5x faster than a bincount, 3x than sorting."""
        unique, inverse = np.unique(edge, return_inverse=True)
        if len(unique) == len(edge):
            unique = edge  # no repeats: blocks stay in their order
        else:  # a 0/1 matrix times the blocks: summed in order, in double
            count = len(edge)
            ones = csr_matrix(
                (np.ones(count), (inverse, np.arange(count))), shape=(len(unique), count)
            )
            flat = blocks.reshape(count, -1).astype(np.float64, copy=False)
            blocks = (ones @ flat).reshape(len(unique), *blocks.shape[1:])
        shape = blocks.shape[2:] if not reverse else blocks.shape[:1:-1]
        with self._lock:
            if not reverse:
                target = self.sums[shape]
            elif shape in self.reversed:
                target = self.reversed[shape]
            else:
                target = np.zeros(self.sums[shape].shape[:2] + blocks.shape[2:])
                self.reversed[shape] = target
            target[self.local[unique]] += blocks

    def write(
        self,
        values: np.ndarray,
        offsets: np.ndarray,
        damping: np.ndarray | None = None,
        spinless: tuple[np.ndarray, np.ndarray] | None = None,
        threads: int | None = None,
    ) -> None:
        """Sets the blocks of every requested edge (lower edges: their partner's conjugate
        transpose), times ``damping`` (per requested edge) if given, plus the packed
        spinless blocks ``spinless`` (values, offsets, same edges) on both spin
        diagonals if given (H0's spin-independent terms, without a spinor lift of
        their own); about :data:`WRITE_CHUNK` numbers at a time (the spinor blocks of a
        762-atom cell are 0.7 GB: their temporaries are not made whole), the chunks on
        ``threads`` workers (default: every CPU; they write disjoint numbers)."""
        index, flipped = self.halves.index, self.halves.flipped
        rows, cols = self.rows[index], self.cols[index]
        chunks = []
        for nr, nc in self.sums:
            step = max(1, WRITE_CHUNK // (nr * nc * (4 if self.components == 4 else 1)))
            for flip in (False, True):
                mine = np.flatnonzero((rows == nr) & (cols == nc) & (flipped == flip))
                chunks += [(nr, nc, flip, mine[s : s + step]) for s in range(0, len(mine), step)]

        def work(chunk: tuple[int, int, bool, np.ndarray]) -> None:
            nr, nc, flip, sel = chunk
            parts = self._parts(nr, nc, self.local[index[sel]])
            if flip:  # the adjoint: blocks transposed, L.sigma parts negated
                parts = parts.transpose(0, 1, 3, 2) * ADJOINT_SIGNS[self.components]
            if damping is not None:
                parts = parts * damping[sel, None, None, None]
            extra = None if spinless is None else _gathered(*spinless, sel, parts.shape)
            flat = self._blocks(parts, extra).reshape(len(sel), -1)
            values[offsets[sel][:, None] + np.arange(flat.shape[1])] = flat

        run_threaded(work, chunks, threads or default_threads())

    def _parts(self, nr: int, nc: int, local: np.ndarray) -> np.ndarray:
        """Summed components (t, components, n_i, n_j) of computed edges of one shape:
        their sums plus the adjoints of their reverse blocks' sums."""
        parts = self.sums[nr, nc][local]
        if (nr, nc) in self.reversed:
            turned = self.reversed[nr, nc][local].transpose(0, 1, 3, 2)
            parts += turned * ADJOINT_SIGNS[self.components]
        return parts

    def _blocks(self, parts: np.ndarray, spinless: np.ndarray | None) -> np.ndarray:
        """The blocks (t, rows, cols) of summed components (t, components, n_i, n_j),
        ``spinless`` (t, n_i, n_j) added to both spin diagonals; spinor blocks written
        as real and imaginary parts (no complex temporaries)."""
        if self.components == 1:
            return parts[:, 0] if spinless is None else spinless + parts[:, 0]
        d, kx, ky, kz = (parts[:, c] for c in range(4))
        if spinless is not None:
            d = spinless + d
        t, na, nb = d.shape
        out = np.empty((t, 2 * na, 2 * nb), dtype=complex)
        re, im = out.real, out.imag
        re[:, :na, :nb] = d
        re[:, na:, nb:] = d
        im[:, :na, :nb] = kz
        np.negative(kz, out=im[:, na:, nb:])
        re[:, :na, nb:] = ky
        np.negative(ky, out=re[:, na:, :nb])
        im[:, :na, nb:] = kx
        im[:, na:, :nb] = kx
        return out


#: per component count, the signs that make a block's adjoint from its transposed parts
#: (the block of (j, i, -R) from that of (i, j, R): D^T and -K^T, as H is Hermitian)
ADJOINT_SIGNS = {1: np.ones((1, 1, 1)), 4: np.array([1.0, -1.0, -1.0, -1.0])[:, None, None]}


def _gathered(
    values: np.ndarray, offsets: np.ndarray, edges: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """The packed blocks (t, n_i, n_j) of ``edges`` (``shape``: (t, C, n_i, n_j))."""
    t, _, na, nb = shape
    return values[offsets[edges][:, None] + np.arange(na * nb)].reshape(t, na, nb)


# --------------------------------------------------------------------------- threads


def default_threads() -> int:
    """Worker threads of the three-centre and grid sums: the CPUs this process may use
    (numpy and BLAS release the GIL; each worker's BLAS runs single-threaded)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def bounded_map(
    pool: ThreadPoolExecutor, fn: Callable[[T], U], items: Iterable[T], ahead: int
) -> Iterator[U]:
    """``pool.map`` in order with at most ``ahead`` items in flight (memory stays bounded;
    ``Executor.map`` submits everything at once)."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def run_threaded(fn: Callable[[T], object], items: Iterable[T], threads: int) -> None:
    """fn(item) for every item on ``threads`` workers, BLAS single-threaded inside (two
    BLAS threads per GEMM on a shared two-core machine only spin)."""
    with threadpool_limits(1):
        if threads <= 1:
            for item in items:
                fn(item)
            return
        with ThreadPoolExecutor(threads) as pool:
            for _ in bounded_map(pool, fn, items, 2 * threads):
                pass


# --------------------------------------------------------------------------- three centres

#: sites whose projector overlaps are held at once (a chunk of whole projector atoms;
#: ~75 MB of V_NA's 972 projectors per atom)
SITE_CHUNK = 512
#: edge (A) of the cubes of space that group a projector atom's sites (:func:`cell_keys`):
#: smaller cubes skip more of the unneeded products, at more and smaller GEMMs (2.5 A:
#: ~40% of the full product made, 25% needed; measured the fastest)
GROUP_WIDTH = 2.5
#: per-thread scratch arrays (:func:`scratch`)
_SCRATCH = threading.local()


def damping_factors(atoms: Atoms, edges: np.ndarray, cutoff: np.ndarray) -> np.ndarray:
    """OpenMX's dampingF(r_c(i) + r_c(j), |d_ij|) of every edge (per-atom PAO cutoffs)."""
    return openmx_damping(
        cutoff[edges[:, 0]] + cutoff[edges[:, 1]],
        np.linalg.norm(bond_vectors(atoms, edges), axis=1),
    )


@dataclass(frozen=True)
class ProjectorSites:
    """Every (atom i, projector atom k, cell S) whose <phi_i|beta_k,S> OpenMX computes,
    sorted by k (so the sites of one projector atom are contiguous)."""

    i: np.ndarray
    k: np.ndarray
    shift: np.ndarray  # (n, 3) cell of the projector atom, relative to atom i's
    natoms: int


def projector_sites(atoms: Atoms, cutoff: np.ndarray) -> ProjectorSites:
    """Sites with |r_k + S - r_i| <= r_c(i) + r_c(k), PAO cutoffs (OpenMX's neighbour rule,
    ``truncation.c``; Mo's d projectors reach that far through OpenMX's transforms), the
    atom's own projectors included."""
    i, k, shift, d = neighbour_pairs(atoms, 2 * cutoff.max() + 1e-9)
    keep = d <= cutoff[i] + cutoff[k]
    n = np.arange(len(atoms))
    i = np.concatenate([n, i[keep]])
    k = np.concatenate([n, k[keep]])
    shift = np.concatenate([np.zeros((len(n), 3), dtype=np.int64), shift[keep]])
    order = np.lexsort((i, k))
    return ProjectorSites(i[order], k[order], shift[order], len(atoms))


def _site_chunks(k: np.ndarray, chunk: int) -> list[slice]:
    """Slices of the (sorted) site list holding whole projector atoms, about ``chunk``
    sites each (one atom's sites if it has more)."""
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]]).tolist() + [len(k)]
    out, first = [], 0
    for start, stop in zip(starts[:-1], starts[1:], strict=True):
        if stop - first > chunk and start > first:
            out.append(slice(first, start))
            first = start
    return out + [slice(first, len(k))] if len(k) else out


@dataclass(frozen=True)
class _Coupling:
    """M_k of one projector species, channels side by side: every component's diagonal
    (C, P), or all components side by side as one (P, C P) matrix; and each component's
    symmetry, +1 (M_c symmetric) or -1 (antisymmetric, the spin-orbit parts), which
    X M_c X^T shares: a pair's block is then its partner's transposed, times the sign."""

    diagonal: np.ndarray | None
    dense: np.ndarray | None
    signs: np.ndarray  # (C,)

    @classmethod
    def build(cls, matrices: list[np.ndarray]) -> _Coupling:
        """From ``coupling(k, c)`` of every channel: (components, P, P) or a diagonal (P,)."""
        if matrices[0].ndim == 1:
            return cls(np.concatenate(matrices)[None], None, np.ones(1))
        full = [_block_diagonal([m[c] for m in matrices]) for c in range(matrices[0].shape[0])]
        signs = np.array([_symmetry(f) for f in full])
        if all(np.count_nonzero(f - np.diag(np.diag(f))) == 0 for f in full):
            return cls(np.array([np.diag(f) for f in full]), None, signs)
        return cls(None, np.hstack(full), signs)

    @property
    def components(self) -> int:
        return len(self.signs)

    def weighted(self, x: np.ndarray) -> np.ndarray:
        """X M_c of every component, (R, C, P): a site's rows and components together,
        so that one GEMM of a group's rows makes all components."""
        if self.diagonal is not None:
            return x[:, None, :] * self.diagonal
        return (x @ self.dense).reshape(len(x), self.components, -1)


def _symmetry(matrix: np.ndarray) -> float:
    """+1 for a symmetric matrix, -1 for an antisymmetric one (to rounding)."""
    tol = 1e-13 * max(float(np.abs(matrix).max()), 1e-300)
    if np.abs(matrix - matrix.T).max() <= tol:
        return 1.0
    if np.abs(matrix + matrix.T).max() <= tol:
        return -1.0
    raise ValueError("a projector coupling is neither symmetric nor antisymmetric")


def _block_diagonal(parts: list[np.ndarray]) -> np.ndarray:
    size = sum(len(p) for p in parts)
    out = np.zeros((size, size))
    start = 0
    for p in parts:
        out[start : start + len(p), start : start + len(p)] = p
        start += len(p)
    return out


def scratch(name: str, shape: tuple[int, ...], dtype: type = np.float64) -> np.ndarray:
    """An uninitialised array reused by this thread: a fresh array of tens of MB costs a
    page fault per 4 kB (half the time of the products it holds, measured)."""
    size = int(np.prod(shape))
    buffer = getattr(_SCRATCH, name, None)
    if buffer is None or buffer.size < size or buffer.dtype != dtype:
        buffer = np.empty(size, dtype=dtype)
        setattr(_SCRATCH, name, buffer)
    return buffer[:size].reshape(shape)


def cell_keys(vectors: np.ndarray, width: float = GROUP_WIDTH) -> np.ndarray:
    """One int64 per vector: its cube of edge ``width`` (A), numbered z fastest (cubes
    adjacent in z get consecutive numbers, so needed group pairs come in runs)."""
    cube = np.floor(vectors / width).astype(np.int64) + (1 << 20)
    return (cube[:, 0] << 42) | (cube[:, 1] << 21) | cube[:, 2]


def group_runs(gp: np.ndarray, gq: np.ndarray) -> list[tuple[int, int, int]]:
    """(g, first h, last h) of the group pairs g <= h holding a site pair (p, q) in either
    orientation, consecutive h merged: one GEMM each."""
    if not len(gp):
        return []
    lo, hi = np.minimum(gp, gq), np.maximum(gp, gq)
    size = int(hi.max()) + 1
    key = np.unique(lo * size + hi)
    lo, hi = key // size, key % size
    start = np.flatnonzero(np.r_[True, (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1] + 1)])
    stop = np.r_[start[1:], len(key)] - 1
    return list(zip(lo[start].tolist(), hi[start].tolist(), hi[stop].tolist(), strict=True))


def grouped_product(
    x: np.ndarray,
    weighted: np.ndarray,
    runs: list[tuple[int, int, int]],
    first: np.ndarray,
    last: np.ndarray,
) -> np.ndarray:
    """(R, C, R) with X M_c X^T on the rows of group g and columns of groups h0..h1 of
    every run (g, h0, h1), one GEMM a run, all C components at once (``weighted``:
    X M_c, (R, C, P)); ``first`` and ``last`` are the groups' row ranges. Elsewhere
    undefined: only blocks of the needed group pairs are read (a thread's scratch array,
    valid until its next call)."""
    rows, comps = weighted.shape[:2]
    out = scratch("products", (rows * comps, rows))
    flat = weighted.reshape(rows * comps, -1)
    for g, h0, h1 in runs:
        r = slice(first[g] * comps, last[g] * comps)
        c = slice(first[h0], last[h1])
        np.matmul(flat[r], x[c].T, out=out[r, c])
    return out.reshape(rows, comps, rows)


def add_projector_products(
    values: np.ndarray,
    offsets: np.ndarray,
    atoms: Atoms,
    edges: np.ndarray,
    sites: ProjectorSites,
    overlaps: Callable[[str, str, np.ndarray, int], np.ndarray],
    coupling: Callable[[str, int], np.ndarray],
    channels: int = 1,
    chunk: int = SITE_CHUNK,
    threads: int | None = None,
    damping: np.ndarray | None = None,
    spinless: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Sets values to sum_k sum_c B_ik,c M_k,c B_jk,c^T on the requested edges (the
    three-centre sum of ``Set_Nonlocal.c`` and ``Set_ProExpn_VNA.c``), times ``damping``
    (per edge) if given, plus the packed spinless blocks ``spinless`` (values, offsets)
    on both spin diagonals if given.

    ``overlaps(a, k, vectors, c)`` gives <phi_a|beta_k,c> (E, n_a, P_k) for projectors of
    species k at ``vectors`` from orbitals of species a; ``coupling(k, c)`` gives M_k,c,
    (components, P, P) (four: the spin-orbit spinor parts, see :class:`BlockSums`) or its
    diagonal (P,). The overlaps are made a chunk of whole projector atoms at a time, so
    memory does not grow with N. A projector atom's sites are grouped by small cubes of
    space (:func:`cell_keys`) and only the products B M B^T of group pairs holding a
    requested pair are made (:func:`grouped_product`: ~40% of the full product, 25% is
    needed); the blocks of its site pairs whose edge is requested, upper half only
    (:class:`EdgeHalves`), are cut from them. Chunks run on ``threads`` workers
    (default: every CPU)."""
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 5)
    symbols = np.array(atoms.get_chemical_symbols())
    kinds = sorted(set(symbols.tolist()))
    empty = np.zeros((0, 3))
    projector_kinds = sorted(set(symbols[sites.k].tolist()))
    for a in kinds:  # every radial table built here, not twice by racing workers
        for b in projector_kinds:
            for c in range(channels):
                overlaps(a, b, empty, c)
    norb_of = {a: overlaps(a, kinds[0], empty, 0).shape[1] for a in kinds}
    couplings = {
        b: _Coupling.build([coupling(b, c) for c in range(channels)]) for b in projector_kinds
    }
    components = {c.components for c in couplings.values()}
    if len(components) > 1:
        raise ValueError("projector species disagree on the coupling's components")
    for c in couplings.values():  # reversed pairs are the adjoints (BlockSums)
        if not np.array_equal(c.signs, ADJOINT_SIGNS[c.components].ravel()):
            raise ValueError("a projector coupling whose products are not Hermitian")
    norb = np.array([norb_of[s] for s in symbols.tolist()])
    halves = EdgeHalves.build(edges, len(atoms))
    sums = BlockSums(halves, norb, components.pop() if components else 1)
    context = _ChunkContext(
        atoms, symbols, norb, sites, halves, sums, overlaps, couplings, channels
    )
    run_threaded(context.run, _site_chunks(sites.k, chunk), threads or default_threads())
    sums.write(values, offsets, damping, spinless, threads)


@dataclass(frozen=True)
class _ChunkContext:
    """What every chunk of projector sites needs (:meth:`run` is a thread's work)."""

    atoms: Atoms
    symbols: np.ndarray
    norb: np.ndarray  # per atom
    sites: ProjectorSites
    halves: EdgeHalves
    sums: BlockSums
    overlaps: Callable[[str, str, np.ndarray, int], np.ndarray]
    couplings: dict[str, _Coupling]
    channels: int

    def run(self, part: slice) -> None:
        """Overlaps of the chunk's sites, then every projector atom's products and cuts."""
        ids = np.arange(part.start, part.stop)
        sites = self.sites
        vec = self._vectors(ids)
        kind = self.symbols[sites.i[ids]]
        # within each projector atom: its sites by cube of space, then species, then order
        order = np.lexsort((ids, kind, cell_keys(vec), sites.k[ids]))
        ids, kind, vec = ids[order], kind[order], vec[order]
        k = sites.k[ids]
        cube = cell_keys(vec)
        size = self.norb[sites.i[ids]]
        start = np.r_[True, k[1:] != k[:-1]]
        row = np.cumsum(size) - size
        row -= np.maximum.accumulate(np.where(start, row, 0))  # first row within its atom
        new_group = start | np.r_[True, cube[1:] != cube[:-1]]
        group = np.cumsum(new_group) - 1
        heads = np.flatnonzero(new_group)
        tails = np.r_[heads[1:], len(ids)] - 1
        first, last = row[heads], row[tails] + size[tails]  # row range of every group
        stacks = self._overlaps(ids, kind, vec)
        p_all, q_all, e_all = self._pairs(ids, k)
        bounds = np.flatnonzero(np.r_[start, True])
        pair_bounds = np.searchsorted(p_all, bounds)
        for n in range(len(bounds) - 1):
            span = slice(bounds[n], bounds[n + 1])
            cut = slice(pair_bounds[n], pair_bounds[n + 1])
            if cut.start == cut.stop:
                continue
            b = str(self.symbols[k[span.start]])
            x = self._stacked(stacks, span, kind, row, size, b)
            p, q, edge = p_all[cut], q_all[cut], e_all[cut]
            runs = group_runs(group[p], group[q])
            coupling = self.couplings[b]
            product = grouped_product(x, coupling.weighted(x), runs, first, last)
            for edge_part, blocks, reverse in _cut(product, row, size, group, p, q, edge):
                self.sums.add(edge_part, blocks, reverse)

    def _vectors(self, ids: np.ndarray) -> np.ndarray:
        """Vectors from the orbital atom to the projector atom of the sites, A."""
        sites = self.sites
        k = sites.k[ids]
        vec = self.atoms.positions[k] + sites.shift[ids] @ np.asarray(self.atoms.cell)
        return vec - self.atoms.positions[sites.i[ids]]

    def _overlaps(self, ids: np.ndarray, kind: np.ndarray, vec: np.ndarray) -> dict:
        """{(a, b): (place of every chunk site in the overlaps, overlaps per channel
        (E, n_a, P_b))} of the chunk's sites by orbital species a and projector species b."""
        kinds_k = self.symbols[self.sites.k[ids]]
        out = {}
        for a in np.unique(kind):
            for b in np.unique(kinds_k[kind == a]):
                sel = np.flatnonzero((kind == a) & (kinds_k == b))
                blocks = [self.overlaps(str(a), str(b), vec[sel], c) for c in range(self.channels)]
                place = np.full(len(ids), -1)
                place[sel] = np.arange(len(sel))
                out[str(a), str(b)] = (place, blocks)
        return out

    def _stacked(
        self, stacks: dict, span: slice, kind: np.ndarray, row: np.ndarray, size: np.ndarray, b: str
    ) -> np.ndarray:
        """X (R, channels P): the overlaps of one projector atom's sites (``span`` of the
        chunk order) in their row order, the channels' projectors side by side."""
        kind, row, size = kind[span], row[span], size[span]
        rows = int(row[-1] + size[-1])
        out = None
        for a in np.unique(kind):
            place, blocks = stacks[str(a), b]
            sel = np.flatnonzero(kind == a)
            where = place[span][sel]
            width = blocks[0].shape[2]
            if out is None:
                out = np.empty((rows, len(blocks) * width))
            target = concatenated_ranges(row[sel], size[sel])
            for c, blk in enumerate(blocks):
                out[target, c * width : (c + 1) * width] = blk[where].reshape(-1, width)
        return out

    def _pairs(self, ids: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(p, q, computed edge) of every site pair of one projector atom whose edge
        (i_p, i_q, S_p - S_q) is computed, p and q local to the chunk order, sorted by p."""
        counts = np.diff(np.flatnonzero(np.r_[True, k[1:] != k[:-1], True]))
        first = np.repeat(np.cumsum(counts) - counts, counts)
        per_site = np.repeat(counts, counts)  # partners of every site
        p = np.repeat(np.arange(len(k)), per_site)
        q = np.repeat(first, per_site) + concatenated_ranges(np.zeros(len(k), np.int64), per_site)
        sites = self.sites
        i_p, i_q = sites.i[ids[p]], sites.i[ids[q]]
        shift = sites.shift[ids[p]] - sites.shift[ids[q]]
        upper = upper_edges(np.column_stack([i_p, i_q, shift]))
        p, q, i_p, i_q, shift = p[upper], q[upper], i_p[upper], i_q[upper], shift[upper]
        edge = self.halves.find(i_p, i_q, shift)
        keep = edge >= 0
        return p[keep], q[keep], edge[keep]


def _cut(
    product: np.ndarray,
    row: np.ndarray,
    size: np.ndarray,
    group: np.ndarray,
    p: np.ndarray,
    q: np.ndarray,
    edge: np.ndarray,
) -> Iterator[tuple[np.ndarray, np.ndarray, bool]]:
    """(edges, blocks, reversed) cut out of one projector atom's product (R, C, R) by
    shape, each block gathered whole through a sliding-window view: (t, C, n_p, n_q) from
    the rows of p if p's group comes first (:func:`grouped_product` made that part), else
    the reverse pair's (t, C, n_q, n_p) from the rows of q (reversed: their adjoints are
    taken once, by :class:`BlockSums`)."""
    rows, cols = size[p], size[q]
    flip = group[p] > group[q]
    for na, nb in set(zip(rows.tolist(), cols.tolist(), strict=True)):
        shape = (rows == na) & (cols == nb)
        sel = np.flatnonzero(shape & ~flip)
        if len(sel):
            window = sliding_window_view(product, (na, nb), axis=(0, 2))
            yield edge[sel], window[row[p[sel]], :, row[q[sel]]], False
        sel = np.flatnonzero(shape & flip)
        if len(sel):
            window = sliding_window_view(product, (nb, na), axis=(0, 2))
            yield edge[sel], window[row[q[sel]], :, row[p[sel]]], True
