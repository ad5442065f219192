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

The numerics are OpenMX's to the quadrature node: transforms tabulated on k_n = n kmax/N
(n < N) and read at the nodes kmin + n (kmax - kmin)/N by OpenMX's Hermite interpolation
(``RF_BesselF``, ``NLRF_BesselF``), so a node just past the table counts as zero. The
overlap module's simpler k grid (nodes on the table) is 1e-7 off in S and 2e-6 eV off in
the 165-eV on-site kinetic blocks; this one is 1e-10 and 5e-9 eV off.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache, partial

import numpy as np
from ase import Atoms
from ase.units import Bohr, Hartree
from scipy.interpolate import CubicSpline
from scipy.special import sph_harm_y, spherical_jn

from ase_moireh.basis import Basis
from ase_moireh.block_operator import (
    BlockOperator,
    lookup_edges,
    packed_offsets,
    sorted_edge_keys,
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


def at_nodes(table: np.ndarray, clamp: bool) -> np.ndarray:
    """Transforms tabulated on :func:`transform_grid` (last axis) read at the quadrature
    nodes as OpenMX reads them: ``RF_BesselF`` for PAOs (``clamp``), ``NLRF_BesselF``
    for projectors."""
    nodes, _ = openmx_k_quadrature()
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


@dataclass(frozen=True)
class RadialSide:
    """One side of a two-centre integral: radial functions in block order (each fills
    2l+1 rows, m = -l..l in our real-harmonic order) and their transforms at the nodes."""

    shells: tuple[int, ...]
    transforms: np.ndarray  # (nshell, NK + 1) at openmx_k_quadrature() nodes
    cutoff: float  # Angstrom: the integral is zero beyond the sum of both sides'

    @property
    def norb(self) -> int:
        return sum(2 * l + 1 for l in self.shells)


def _shell_starts(shells: tuple[int, ...]) -> list[int]:
    """First row of every shell in the block."""
    return np.cumsum([0] + [2 * l + 1 for l in shells])[:-1].tolist()


@lru_cache(maxsize=8)
def _bessel(L: int, step: float, count: int) -> np.ndarray:
    """j_L(k d) on (distance grid n step, quadrature nodes): shared by the tables
    (11 MB each at the default step)."""
    nodes, _ = openmx_k_quadrature()
    return spherical_jn(L, np.outer(np.arange(count) * step, nodes))


@dataclass(frozen=True)
class _Group:
    """The radial integrals of one (l_a, l_b, L): every radial pair of those l at once."""

    la: int
    lb: int
    L: int
    positions: np.ndarray  # (npairs, 2la+1, 2lb+1) flat places in the block
    weighted: np.ndarray  # (nk, npairs) 8 c sign w_k k^(2+2p) F_a F_b
    spline: CubicSpline

    def radial(self, dist: np.ndarray, exact_below: float) -> np.ndarray:
        """(E, npairs) at distances: the spline, or the quadrature itself below
        ``exact_below`` (except at d = 0, a node of the table)."""
        out = self.spline(dist)
        near = (dist > 0) & (dist < exact_below)
        if near.any():
            nodes, _ = openmx_k_quadrature()
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
    ``exact_below`` (d > 0) the quadrature is summed directly.
    """

    def __init__(
        self,
        a: RadialSide,
        b: RadialSide,
        power: int = 0,
        scale: float = 1.0,
        step: float = STEP,
        exact_below: float = EXACT_BELOW,
    ):
        self.shape = (a.norb, b.norb)
        self.rmax = a.cutoff + b.cutoff
        self.exact_below = exact_below
        nodes, weights = openmx_k_quadrature()
        distances = np.arange(int(np.ceil(self.rmax / step)) + 2) * step
        starts_a, starts_b = _shell_starts(a.shells), _shell_starts(b.shells)
        kernel = weights * nodes ** (2 + 2 * power)
        self.groups: list[_Group] = []
        for la in sorted(set(a.shells)):
            for lb in sorted(set(b.shells)):
                pairs = [
                    (p, q)
                    for p, lp in enumerate(a.shells)
                    for q, lq in enumerate(b.shells)
                    if (lp, lq) == (la, lb)
                ]
                product = np.array([a.transforms[p] * b.transforms[q] for p, q in pairs]).T
                rows = np.array([starts_a[p] for p, _ in pairs])[:, None, None]
                cols = np.array([starts_b[q] for _, q in pairs])[:, None, None]
                rows = rows + np.arange(2 * la + 1)[None, :, None]
                cols = cols + np.arange(2 * lb + 1)[None, None, :]
                positions = rows * b.norb + cols
                for L in range(abs(la - lb), la + lb + 1, 2):
                    sign = (-1) ** ((la - lb - L) // 2)
                    weighted = 8.0 * scale * sign * kernel[:, None] * product
                    values = _bessel(L, step, len(distances)) @ weighted  # (nd, npairs)
                    spline = CubicSpline(distances, values, axis=0)
                    self.groups.append(_Group(la, lb, L, positions, weighted, spline))

    def evaluate(self, vectors: np.ndarray) -> np.ndarray:
        """(E, n_a, n_b) blocks at bond vectors (Angstrom, from a to b); zero beyond
        the two cutoffs."""
        vectors = np.asarray(vectors, dtype=float).reshape(-1, 3)
        out = np.zeros((len(vectors), *self.shape))
        dist = np.linalg.norm(vectors, axis=1)
        inside = np.flatnonzero(dist <= self.rmax)
        unit = np.tile([0.0, 0.0, 1.0], (len(inside), 1))  # any axis at d = 0
        far = dist[inside] > 1e-10
        unit[far] = vectors[inside[far]] / dist[inside[far], None]
        flat = np.zeros((len(inside), self.shape[0] * self.shape[1]))
        harmonics: dict[int, np.ndarray] = {}
        for g in self.groups:
            if g.L not in harmonics:
                harmonics[g.L] = coupling_harmonics(g.L, unit)
            angular = np.einsum("em,abm->eab", harmonics[g.L], real_gaunt(g.la, g.lb, g.L))
            radial = g.radial(np.where(far, dist[inside], 0.0), self.exact_below)
            flat[:, g.positions] += radial[:, :, None, None] * angular[:, None]
        out[inside] = flat.reshape(-1, *self.shape)
        return out


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
    def operator(self, atoms: Atoms, edges: np.ndarray) -> BlockOperator:
        """V_NL on the edges (i, j, R) of ``atoms``, damped as OpenMX damps it."""
        edges = np.asarray(edges, dtype=np.int64).reshape(-1, 5)
        symbols = np.array(atoms.get_chemical_symbols())
        cutoff = np.array([self.overlap.species(s).cutoff for s in symbols])
        sites = _projector_sites(atoms, cutoff)
        norbs = self.basis.norbs(atoms.numbers) * (2 if self.spinful else 1)
        offsets = packed_offsets(norbs, edges)
        values = np.zeros(int(offsets[-1]), dtype=complex if self.spinful else float)
        table = sorted_edge_keys(edges, len(atoms))
        overlaps = [self._site_overlaps(atoms, symbols, sites, c) for c in range(self.channels)]
        for k in np.unique(sites.k):
            span = slice(*np.searchsorted(sites.k, [k, k + 1]))
            pairs = _site_pairs(sites, span, table)
            if pairs is None:
                continue
            product = sum(
                _sandwich(np.vstack(overlaps[c][span]), self.coupling(str(symbols[k]), c))
                for c in range(self.channels)
            )
            for edge, blocks in _cut_blocks(product, pairs, overlaps[0][span], span.start):
                _accumulate(values, offsets, edge, blocks)
        damping = openmx_damping(
            cutoff[edges[:, 0]] + cutoff[edges[:, 1]],
            np.linalg.norm(bond_vectors(atoms, edges), axis=1),
        )
        values *= np.repeat(damping, np.diff(offsets))
        meta = {"cell": np.asarray(atoms.cell), "positions": atoms.positions}
        return BlockOperator(atoms.numbers, self.basis, edges, values, self.spinful, **meta)

    def _site_overlaps(
        self, atoms: Atoms, symbols: np.ndarray, sites: ProjectorSites, channel: int
    ) -> list[np.ndarray]:
        """<phi_i|beta_k,S> (n_i, P_k) of every site, in site order."""
        vec = atoms.positions[sites.k] + sites.shift @ np.asarray(atoms.cell)
        vec -= atoms.positions[sites.i]
        out: list[np.ndarray] = [np.zeros(0)] * len(vec)
        for a, k, idx in _species_groups(symbols, sites.i, sites.k):
            blocks = self.projector_overlaps(a, k, vec[idx], channel)
            for n, s in enumerate(idx):
                out[s] = blocks[n]
        return out


@dataclass(frozen=True)
class ProjectorSites:
    """Every (atom i, projector atom k, cell S) whose <phi_i|beta_k,S> OpenMX computes,
    sorted by k (so the sites of one projector atom are contiguous)."""

    i: np.ndarray
    k: np.ndarray
    shift: np.ndarray  # (n, 3) cell of the projector atom, relative to atom i's
    natoms: int


def _projector_sites(atoms: Atoms, cutoff: np.ndarray) -> ProjectorSites:
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


def _site_pairs(
    sites: ProjectorSites, span: slice, table: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(p, q, edge) for the pairs of sites of one projector atom whose edge
    (i_p, i_q, S_p - S_q) is requested; None if there is none."""
    ids = np.arange(span.start, span.stop)
    p, q = np.repeat(ids, len(ids)), np.tile(ids, len(ids))
    query = np.column_stack([sites.i[p], sites.i[q], sites.shift[p] - sites.shift[q]])
    edge = lookup_edges(table, query, sites.natoms)
    keep = edge >= 0
    return (p[keep], q[keep], edge[keep]) if keep.any() else None


def _sandwich(stack: np.ndarray, coupling: np.ndarray) -> np.ndarray:
    """B M_c B^T for the stacked projector overlaps B (rows, P) of one projector atom and
    every component M_c (components, P, P): (components, rows, rows), real GEMMs."""
    ncomp, p, _ = coupling.shape
    mixed = stack @ coupling.transpose(1, 0, 2).reshape(p, ncomp * p)  # (rows, c n)
    mixed = mixed.reshape(len(stack) * ncomp, p) @ stack.T  # (rows c, rows)
    return mixed.reshape(len(stack), ncomp, len(stack)).transpose(1, 0, 2)


def _cut_blocks(product: np.ndarray, pairs, overlaps: list[np.ndarray], first_site: int):
    """(edge numbers, blocks) cut out of one projector atom's product, grouped by block
    shape; four components become spinor blocks
    [[D + i Kz, Ky + i Kx], [-Ky + i Kx, D - i Kz]] (L.sigma with L = i Lambda)."""
    p, q, edge = pairs
    rows = np.array([len(b) for b in overlaps])
    first = np.concatenate([[0], np.cumsum(rows)[:-1]])
    shape_p, shape_q = rows[p - first_site], rows[q - first_site]
    for na, nb in set(zip(shape_p.tolist(), shape_q.tolist(), strict=True)):
        sel = np.flatnonzero((shape_p == na) & (shape_q == nb))
        r = first[p[sel] - first_site][:, None] + np.arange(na)
        c = first[q[sel] - first_site][:, None] + np.arange(nb)
        parts = product[:, r[:, :, None], c[:, None, :]]  # (components, t, na, nb)
        if len(parts) == 1:
            yield edge[sel], parts[0]
            continue
        d, kx, ky, kz = parts
        blocks = np.empty((len(sel), 2 * na, 2 * nb), dtype=complex)
        blocks[:, :na, :nb] = d + 1j * kz
        blocks[:, :na, nb:] = ky + 1j * kx
        blocks[:, na:, :nb] = -ky + 1j * kx
        blocks[:, na:, nb:] = d - 1j * kz
        yield edge[sel], blocks


def _accumulate(values: np.ndarray, offsets: np.ndarray, edge: np.ndarray, blocks) -> None:
    """values[block of edge] += blocks, summing repeated edges first (in a small cell one
    projector atom reaches a pair through several of its images)."""
    order = np.argsort(edge, kind="stable")
    edge, blocks = edge[order], blocks[order]
    starts = np.flatnonzero(np.r_[True, edge[1:] != edge[:-1]])
    summed = np.add.reduceat(blocks, starts, axis=0) if len(starts) < len(edge) else blocks
    flat = summed.reshape(len(starts), -1)
    values[offsets[edge[starts]][:, None] + np.arange(flat.shape[1])] += flat
