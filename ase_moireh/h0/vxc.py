"""Exchange-correlation blocks <phi_i| V_xc[rho_0] |phi_j> of OpenMX's zeroth step.

At its first SCF step OpenMX builds the density from the free atoms (``Set_Aden_Grid.c``):
every atom adds its valence density (the ``.pao`` file's ``<valence.charge.density``,
rescaled to the pseudo-ion's charge, ``SetPara_DFT.c``) and its partial-core density
(the ``.vps`` file's ``<density.PCC``) on the grid points within its PAO cutoff, read
by OpenMX's ``KumoF`` interpolation in x = ln r (:class:`~ase_moireh.io.vps.LogRadialTable`).
Nothing here is self-consistent: the blocks are a fixed function of the structure. A
structure that starts without spin moments (up = down electrons on every atom, as the
corpus inputs) has an unpolarised V_xc, so with spin-orbit coupling uu = dd = V_xc and
ud = du = 0.

V_xc (GGA-PBE) is evaluated on OpenMX's own real-space grid, because its matrix
elements are grid sums and the grid is part of the number OpenMX writes:

* the grid (``truncation.c``, ``UCell_Box``): N_a = 2^p 3^q 5^r 7^s nearest (in ln) to
  sqrt(E_cut / A_a) along each axis, origin such that the mean atom position sits at
  grid index N_a/2 - (0.5 if N_a is even);
* the potential (``Set_XC_Grid.c``): V = df/dn - div(df/d grad n), both derivatives
  by central differences along the grid axes (periodic), zero wherever the valence
  density is below 1e-14 Bohr^-3 (OpenMX's ``den_min``); df/dn and df/d grad n come
  from libxc (through PySCF), OpenMX's own PBE being a port of SIESTA's;
* the blocks (``Set_Hamiltonian.c``, ``Calc_MatrixElements_dVH_Vxc_VNA``):
  dV sum_p phi_i(p) V(p) phi_j(p) over the grid points within both atoms' PAO
  cutoffs, orbitals as OpenMX evaluates them (``Set_Orbitals_Grid.c``: its Hermite
  interpolation of R(r), stored in single precision), no damping.

The sum runs over the grid a block of points at a time (:class:`_Batch`): the orbitals
of every atom image that reaches the block, weighted by sqrt|V|, side by side in one
single-precision matrix A (points x orbitals; OpenMX keeps its grid orbitals in single
precision too), A^T A a symmetric rank-k product per block (batched over blocks of
similar width), the blocks of the requested upper edges cut out and summed in double
precision (:class:`~ase_moireh.h0.twocentre.BlockSums`), the lower edges their
transposes. Batches run on worker threads. Time and memory are linear in the cell;
memory per batch is bounded, the full-grid arrays are the density and the potential.

Units: eV and Angstrom outside; Hartree and Bohr only where libxc is called and where
OpenMX's constants are stated in them.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from ase import Atoms
from ase.units import Bohr, Hartree
from numpy.lib.stride_tricks import sliding_window_view

from ase_moireh.basis import Basis, parse_openmx_basis
from ase_moireh.block_operator import BlockOperator, packed_offsets
from ase_moireh.h0.twocentre import (
    BlockSums,
    EdgeHalves,
    default_threads,
    run_threaded,
    scratch,
    upper_edges,
)
from ase_moireh.io.pao import find_pao
from ase_moireh.io.vps import (
    LogRadialTable,
    ValenceDensity,
    VPSFile,
    core_density_table,
    find_vps,
    interpolate_openmx,
    read_valence_density,
    read_vps,
)
from ase_moireh.overlap import TwoCentreOverlap, orbital_harmonics

#: OpenMX's ``den_min`` (Bohr^-3): below this valence density V_xc and its flux are 0
DENSITY_FLOOR = 1e-14
#: OpenMX's default ``scf.energycutoff`` (Rydberg), the corpus inputs' value
ENERGY_CUTOFF = 200.0
#: libxc's names of the functional OpenMX calls GGA-PBE
PBE = "GGA_X_PBE,GGA_C_PBE"
#: grid points per block edge in the matrix-element sums (:class:`_BlockPlan`): small
#: blocks spend less of the products on points outside an orbital's sphere (1.6x the
#: needed work at 4^3, 2.1x at 6^3, 2.6x at 8^3), large ones cut each edge's block from
#: fewer grid blocks and loop less in Python (measured: 6^3 the fastest)
BLOCK = (6, 6, 6)
#: planes of the grid whose potential is computed at once
SLAB = 16
#: radial step (Angstrom) of the orbitals' lookup tables (:attr:`_Species.table`)
RADIAL_STEP = 1e-4
#: (grid point, atom image) pairs of the blocks handled at once (memory ~ 200 B each)
BATCH = 200_000
#: atom images whose orbitals on a grid block are evaluated at once (stays in cache)
ORBITAL_CHUNK = 48
#: the grid sums' precision: the orbitals are single-precision numbers either way (as
#: OpenMX stores them); "single" sums each grid block's products in single precision
#: (the blocks in double): 1.5x faster, 1.9e-5 eV off OpenMX's blocks at most on the test
#: cell, against 9.3e-6 summed in double (the rest is libxc's PW92 constants)
PRECISIONS = {"single": np.float32, "double": np.float64}
#: the harmonics' normalisation sqrt((2l + 1) / 4 pi) (:func:`orbital_harmonics`)
_NORM = [np.sqrt((2 * l + 1) / (4 * np.pi)) for l in range(4)]


# --------------------------------------------------------------------------- the grid


def _smooth_size(target: float) -> int:
    """The 2^p 3^q 5^r 7^s nearest to ``target`` in ln (``UCell_Box``'s search order)."""
    logs = np.log([2.0, 3.0, 5.0, 7.0])
    goal = np.log(target)
    best, choice = np.inf, (0, 0, 0, 0)
    for p in range(int(np.ceil(goal / logs[0])) + 1):
        for q in range(int(np.ceil((goal - p * logs[0]) / logs[1])) + 1):
            rest = goal - p * logs[0] - q * logs[1]
            for r in range(int(np.ceil(rest / logs[2])) + 1):
                for s in range(int(np.ceil((rest - r * logs[2]) / logs[3])) + 1):
                    miss = abs(p * logs[0] + q * logs[1] + r * logs[2] + s * logs[3] - goal)
                    if miss < best:
                        best, choice = miss, (p, q, r, s)
    return int(np.prod(np.array([2, 3, 5, 7]) ** np.array(choice)))


@dataclass(frozen=True)
class OpenMXGrid:
    """OpenMX's uniform real-space grid of a cell: point n = origin + n . steps."""

    cell: np.ndarray  # (3, 3) lattice vectors as rows, Angstrom
    shape: tuple[int, int, int]
    origin: np.ndarray  # (3,) Angstrom

    @classmethod
    def for_structure(cls, atoms: Atoms, energy_cutoff: float = ENERGY_CUTOFF) -> OpenMXGrid:
        """The grid OpenMX lays for ``atoms`` at ``scf.energycutoff`` (Rydberg); the
        origin depends on the positions as given (OpenMX does not wrap them)."""
        cell = np.asarray(atoms.cell, dtype=float)
        bohr_cell = cell / Bohr
        volume = abs(np.linalg.det(bohr_cell))
        shape = []
        for a in range(3):
            normal = np.cross(bohr_cell[(a + 1) % 3], bohr_cell[(a + 2) % 3])
            shape.append(
                _smooth_size(np.sqrt(energy_cutoff / (np.pi**2 * normal @ normal / volume**2)))
            )
        n = np.array(shape)
        steps = cell / n[:, None]
        centre = (n // 2 - 0.5 * ((n + 1) % 2)) @ steps
        return cls(cell, (shape[0], shape[1], shape[2]), atoms.positions.mean(axis=0) - centre)

    @property
    def steps(self) -> np.ndarray:
        """(3, 3) grid vectors as rows (OpenMX's gtv), Angstrom."""
        return self.cell / np.array(self.shape)[:, None]

    @property
    def point_volume(self) -> float:
        """Volume per grid point (OpenMX's GridVol), Angstrom^3."""
        return float(abs(np.linalg.det(self.steps)))

    def positions(self, index: np.ndarray) -> np.ndarray:
        """Cartesian positions (Angstrom) of integer grid indices (..., 3), any image."""
        return self.origin + _cartesian(index, self.steps)

    def sphere_box(self, centre: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) integer grid indices (unwrapped) of a box holding every grid point
        within ``radius`` of ``centre`` (Angstrom)."""
        inverse = np.linalg.inv(self.steps)  # grid index u = (r - origin) @ inverse
        u = (centre - self.origin) @ inverse
        reach = radius * np.linalg.norm(inverse, axis=0)
        return np.floor(u - reach).astype(np.int64), np.ceil(u + reach).astype(np.int64)


# --------------------------------------------------------------------------- species data


@dataclass(frozen=True)
class _Species:
    """What one species brings to the grid: orbitals, densities, cutoff (Angstrom)."""

    shells: tuple[int, ...]
    r: np.ndarray  # PAO radial grid, Angstrom
    radial: np.ndarray  # (nshell, n) R(r), Angstrom^-3/2
    cutoff: float
    valence: LogRadialTable  # Bohr^-3
    core: LogRadialTable | None  # Bohr^-3

    @property
    def norb(self) -> int:
        return sum(2 * l + 1 for l in self.shells)

    @cached_property
    def density_table(self) -> np.ndarray:
        """(K, 4): valence and valence + core densities (Bohr^-3) on r = k
        :data:`RADIAL_STEP` past the cutoff, by ``KumoF`` (read back linearly, 1e-8 off),
        then their steps to the next node, one row a node (one gather a point)."""
        r = _radial_nodes(self.cutoff)
        valence = self.valence(r)
        total = valence + self.core(r) if self.core is not None else valence
        values = np.array([valence, total])
        return np.ascontiguousarray(np.vstack([values, np.diff(values, axis=1, append=0.0)]).T)

    def density(self, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(valence, valence + core) densities at ``radii`` (A, within the cutoff),
        Bohr^-3."""
        u = radii * (1.0 / RADIAL_STEP)
        node = np.minimum(u.astype(np.int64), len(self.density_table) - 2)
        rows = np.take(self.density_table, node, axis=0)
        frac = u - node
        return rows[:, 0] + frac * rows[:, 2], rows[:, 1] + frac * rows[:, 3]

    @cached_property
    def table(self) -> np.ndarray:
        """(K, 2 nshell) single precision: R on r = k :data:`RADIAL_STEP` past the cutoff
        (OpenMX's Hermite interpolation, ``Set_Orbitals_Grid.c``; below the file's grid
        the first cubic for s, 0 for l > 0) and the steps to the next node, one row a
        node, so that a point reads all its shells in one gather (read back linearly:
        3e-8 of max |R| off, the size of OpenMX's own single-precision rounding)."""
        r = _radial_nodes(self.cutoff)
        values = interpolate_openmx(self.r, self.radial, r, clamp=False)
        values[np.array(self.shells) > 0, :] *= r >= self.r[0]
        steps = np.diff(values, axis=1, append=values[:, -1:])
        return np.ascontiguousarray(np.vstack([values, steps]).T, dtype=np.float32)

    def orbitals(
        self,
        base: np.ndarray,
        offsets: np.ndarray,
        r2: np.ndarray,
        weight: np.ndarray,
        dtype: type = np.float32,
    ) -> np.ndarray:
        """(I, norb, P) orbitals times ``weight`` at the points ``base`` (I, 3) +
        ``offsets`` (P, 3) from the atom (A, squared lengths ``r2``): single-precision
        numbers as OpenMX keeps its grid orbitals (``Type_Orbs_Grid``), stored as ``dtype``
        (a thread's scratch array, valid until its next call); every point of a grid block
        at once, zero weight outside the sphere (dense, in long contiguous loops: cheaper
        than gathering the inside points); OpenMX's axis (theta = pi/2, phi = 0) at r = 0."""
        out = scratch(f"orbitals {id(self)}", (len(r2), self.norb, r2.shape[1]), dtype)
        for first in range(0, len(r2), ORBITAL_CHUNK):
            part = slice(first, first + ORBITAL_CHUNK)
            vectors = base[part].T[:, :, None] + offsets.T[:, None, :]  # (3, I, P)
            self._orbital_chunk(vectors, r2[part], weight[part], out[part])
        return out

    def _radial(self, r: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """(nshell, I, P) R(r) times ``weight`` from :attr:`table`: one flat row gather
        and one transposing copy (1.7x faster than indexing the table with the 2-D
        index), then the interpolation along long rows."""
        u = r * (1.0 / RADIAL_STEP)
        node = np.minimum(u.astype(np.int64), len(self.table) - 1)
        rows = np.take(self.table, node.ravel(), axis=0).T  # (2 nshell, I P)
        rows = np.ascontiguousarray(rows).reshape(-1, *r.shape)
        nshell = len(self.shells)
        radial = rows[nshell:]
        radial *= (u - node).astype(np.float32)
        radial += rows[:nshell]
        radial *= weight
        return radial

    def _orbital_chunk(
        self, vectors: np.ndarray, r2: np.ndarray, weight: np.ndarray, out: np.ndarray
    ) -> None:
        """:meth:`orbitals` of a few incidences, small enough to stay in cache."""
        r = np.sqrt(r2)
        radial = self._radial(r, weight)
        far = r > 0
        inverse = np.divide(1.0, r, out=np.zeros_like(r), where=far)
        unit = vectors * inverse
        unit[0][~far] = 1.0  # OpenMX's axis at r = 0 (y = z = 0 there already)
        # in double, then rounded: constants rounded to single precision would bias
        # every value of a harmonic alike (3e-8 of the on-site blocks, 4e-6 eV)
        harmonics = {l: _harmonics(l, unit, np.float32) for l in set(self.shells)}
        start = 0
        for s, l in enumerate(self.shells):
            target = out[:, start : start + 2 * l + 1]
            np.multiply(radial[s][:, None], harmonics[l].transpose(1, 0, 2), out=target)
            start += 2 * l + 1


def _harmonics(l: int, unit: np.ndarray, dtype: type | None = None) -> np.ndarray:
    """Our orbital harmonics (:func:`~ase_moireh.overlap.orbital_harmonics`: order, signs,
    normalisation) at unit vectors (3, ...), components first, computed in their
    precision and stored as ``dtype`` (default: theirs; written rounded, no second
    pass); l <= 2 as plain polynomials (a third of the cost of the general routine)."""
    dtype = dtype or unit.dtype
    if l > 2:
        values = orbital_harmonics(l, np.moveaxis(unit, 0, -1).astype(float))
        return np.moveaxis(values, -1, 0).astype(unit.dtype).astype(dtype)
    c = unit.dtype.type(_NORM[l])
    x, y, z = unit
    out = np.empty((2 * l + 1, *x.shape), dtype=dtype)
    if l == 0:
        out.fill(c)
    elif l == 1:
        np.multiply(y, c, out=out[0])
        np.multiply(z, c, out=out[1])
        np.multiply(x, c, out=out[2])
    else:
        s3 = unit.dtype.type(np.sqrt(3.0)) * c
        np.multiply(x * y, s3, out=out[0])
        np.multiply(y * z, s3, out=out[1])
        np.multiply(x * z, s3, out=out[3])
        xx, yy = x * x, y * y
        np.multiply(xx - yy, 0.5 * s3, out=out[4])
        zz = xx + yy
        zz *= -0.5
        zz += z * z
        np.multiply(zz, c, out=out[2])
    return out


def _radial_nodes(cutoff: float) -> np.ndarray:
    """r = k :data:`RADIAL_STEP` (A), k = 0 .. two nodes past ``cutoff``."""
    return np.arange(int(cutoff / RADIAL_STEP) + 3) * RADIAL_STEP


# --------------------------------------------------------------------------- potential


def xc_potential(
    grid: OpenMXGrid,
    valence: np.ndarray,
    total: np.ndarray,
    functional: str = PBE,
    threads: int = 1,
) -> np.ndarray:
    """V_xc (eV) on the grid from the valence and total (valence + core) densities
    (Bohr^-3, grid-shaped), as ``Set_XC_Grid.c`` builds it: central differences along
    the grid axes for grad n and for div(df/d grad n), periodic, V = 0 where the valence
    density is below :data:`DENSITY_FLOOR`. Slabs of :data:`SLAB` planes at a time, on
    ``threads`` workers (numpy and libxc, through ctypes, release the GIL)."""
    from pyscf.dft import libxc  # heavy import, only here

    inverse = np.linalg.inv(grid.steps / Bohr)  # OpenMX's igtv (columns: grid axes)
    n1 = grid.shape[0]
    out = np.zeros(grid.shape)

    def slab(start: int) -> None:
        stop = min(start + SLAB, n1)
        planes = np.arange(start - 2, stop + 2) % n1
        n = total[planes]
        live = valence[planes] > DENSITY_FLOOR
        grad = _gradient(n, inverse)[:, 1:-1]  # planes start-1 .. stop
        inner = live[1:-1]
        rho = np.concatenate([n[1:-1][inner][None], grad[:, inner]], axis=0)
        _, (vrho, vsigma, *_), *_ = libxc.eval_xc(functional, rho, spin=0, deriv=1)
        flux = np.zeros_like(grad)  # df/d grad n = 2 vsigma grad n
        flux[:, inner] = 2.0 * vsigma * grad[:, inner]
        local = np.zeros(inner.shape)
        local[inner] = vrho
        potential = local[1:-1] - _divergence(flux, inverse)[1:-1]
        out[start:stop] = np.where(live[2:-2], potential, 0.0) * Hartree

    run_threaded(slab, range(0, n1, SLAB), threads)
    return out


def _central(values: np.ndarray, axis: int) -> np.ndarray:
    """values[i+1] - values[i-1] along a grid axis: periodic on axes 1 and 2; on axis 0
    (the slab's planes, with halos) the first and last planes are left 0."""
    if axis > 0:
        return np.roll(values, -1, axis=axis) - np.roll(values, 1, axis=axis)
    out = np.zeros_like(values)
    out[1:-1] = values[2:] - values[:-2]
    return out


def _gradient(n: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """(3, ...) Cartesian gradient (Bohr^-4) from central differences along the grid
    axes: grad = igtv (n[+1] - n[-1]) / 2."""
    diffs = [_central(n, a) for a in range(3)]
    return np.stack([0.5 * sum(inverse[x, a] * diffs[a] for a in range(3)) for x in range(3)])


def _divergence(flux: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """div of a Cartesian vector field (3, ...) by the same central differences."""
    return 0.5 * sum(inverse[x, a] * _central(flux[x], a) for x in range(3) for a in range(3))


# --------------------------------------------------------------------------- operator


class ExchangeCorrelation:
    """V_xc blocks (eV) of OpenMX's zeroth step for a PAO basis: spinless, or with
    ``spinful`` the spinor blocks of a non-magnetic start (uu = dd, ud = du = 0).

    ``valence`` and ``vps`` map every chemical symbol to its atomic valence density
    (:func:`~ase_moireh.io.vps.read_valence_density`, rescaled here to the pseudo-ion's
    charge) and its :class:`~ase_moireh.io.vps.VPSFile` (for the charge and the
    partial-core density). ``threads`` workers share the grid sums (default: every CPU).
    """

    def __init__(
        self,
        overlap: TwoCentreOverlap,
        valence: Mapping[str, ValenceDensity],
        vps: Mapping[str, VPSFile],
        spinful: bool = False,
        energy_cutoff: float = ENERGY_CUTOFF,
        functional: str = PBE,  # a libxc GGA (df/dn and df/dsigma are used)
        block: tuple[int, int, int] = BLOCK,
        threads: int | None = None,
        precision: str = "single",
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        missing = [s for s in overlap.radials if s not in valence or s not in vps]
        if missing:
            raise ValueError(f"no atomic density or pseudopotential for {', '.join(missing)}")
        self.overlap = overlap
        self.basis: Basis = overlap.basis
        self.valence = dict(valence)
        self.vps = dict(vps)
        self.spinful = spinful
        self.energy_cutoff = energy_cutoff
        self.functional = functional
        self.block = block
        self.threads = threads or default_threads()
        self.precision = precision
        self.species: dict[str, _Species] = {}
        for symbol, radials in overlap.radials.items():
            funcs = radials.functions
            core = core_density_table(vps[symbol])
            self.species[symbol] = _Species(
                tuple(f.l for f in funcs),
                funcs[0].r,
                np.array([f.values for f in funcs]),
                radials.cutoff,
                _per_bohr3(valence[symbol].table(vps[symbol].valence)),
                _per_bohr3(core) if core is not None else None,
            )

    @classmethod
    def from_folder(
        cls,
        folder: str | os.PathLike,
        basis: Mapping[str, str],
        pseudopotentials: Mapping[str, str],
        spinful: bool = False,
        energy_cutoff: float = ENERGY_CUTOFF,
        precision: str = "single",
    ) -> ExchangeCorrelation:
        """From OpenMX's DATA.PATH (``PAO/``, ``VPS/``), basis strings
        (``{'Mo': 'Mo7.0-s3p2d1'}``) and pseudopotential names (``{'Mo': 'Mo_PBE19'}``)."""
        overlap = TwoCentreOverlap.from_pao_folder(folder, basis)
        vps = {s: read_vps(find_vps(folder, name)) for s, name in pseudopotentials.items()}
        valence = {
            s: read_valence_density(find_pao(folder, parse_openmx_basis(text)[0]))
            for s, text in basis.items()
        }
        return cls(overlap, valence, vps, spinful, energy_cutoff, precision=precision)

    # ------------------------------------------------------------------ grid quantities
    def grid(self, atoms: Atoms) -> OpenMXGrid:
        """OpenMX's grid for ``atoms``; a spin-polarised start is refused (its V_xc has
        uu != dd and ud != 0, which this term does not build)."""
        if np.any(atoms.get_initial_magnetic_moments() != 0):
            raise ValueError(
                "V_xc of a spin-polarised start (initial magnetic moments) is not supported"
            )
        return OpenMXGrid.for_structure(atoms, self.energy_cutoff)

    def density(self, atoms: Atoms, grid: OpenMXGrid) -> tuple[np.ndarray, np.ndarray]:
        """(valence, valence + core) superposed atomic densities on the grid (Bohr^-3),
        each atom on its grid points within its PAO cutoff (``Set_Aden_Grid.c``)."""
        valence, total = np.zeros(grid.shape), np.zeros(grid.shape)
        self._tables()
        images = _AtomImages.build(atoms, grid, self.species)
        plan = _BlockPlan.build(grid, images, self.block)

        def work(part: tuple[np.ndarray, slice]) -> None:
            batch = _Batch.build(grid, plan, images, *part)
            if batch is not None:  # batches hold distinct grid points: no lock needed
                batch.add_density(images, self.species, valence, total)

        run_threaded(work, plan.batches(BATCH), self.threads)
        return valence, total

    def _tables(self) -> None:
        """Every species' lookup tables, built here, not twice by racing workers."""
        for spec in self.species.values():
            _ = spec.table, spec.density_table

    def potential(self, atoms: Atoms, grid: OpenMXGrid | None = None) -> np.ndarray:
        """V_xc (eV) of the superposed atomic densities on OpenMX's grid."""
        grid = grid or self.grid(atoms)
        valence, total = self.density(atoms, grid)
        return xc_potential(grid, valence, total, self.functional, self.threads)

    # ------------------------------------------------------------------ operator
    def operator(self, atoms: Atoms, edges: np.ndarray) -> BlockOperator:
        """V_xc on the edges (i, j, R) of ``atoms``: grid sums over both atoms' spheres."""
        edges = np.asarray(edges, dtype=np.int64).reshape(-1, 5)
        grid = self.grid(atoms)
        values = self.spinless_values(atoms, edges, grid, self.potential(atoms, grid))
        if self.spinful:
            values = _spinor_values(values, self.basis.norbs(atoms.numbers), edges)
        meta = {"cell": np.asarray(atoms.cell), "positions": atoms.positions}
        return BlockOperator(atoms.numbers, self.basis, edges, values, self.spinful, **meta)

    def spinless_values(
        self, atoms: Atoms, edges: np.ndarray, grid: OpenMXGrid, potential: np.ndarray
    ) -> np.ndarray:
        """Packed spinless blocks dV sum_p phi_i(p) V(p) phi_j(p) of a grid potential (eV)
        on the edges, a batch of grid blocks at a time on the worker threads; upper
        edges only, the others their transposes (V is real: the blocks are symmetric
        under i <-> j)."""
        norbs = self.basis.norbs(atoms.numbers)
        offsets = packed_offsets(norbs, edges)
        halves = EdgeHalves.build(edges, len(atoms))
        sums = BlockSums(halves, norbs, 1)
        self._tables()
        images = _AtomImages.build(atoms, grid, self.species)
        plan = _BlockPlan.build(grid, images, self.block)
        scale = np.sqrt(np.abs(potential)).astype(np.float32)  # the weights are single
        positive = potential > 0

        def work(part: tuple[np.ndarray, slice]) -> None:
            batch = _Batch.build(grid, plan, images, *part)
            if batch is None:
                return
            dtype = PRECISIONS[self.precision]
            products = _Products(batch, images, self.species, scale, positive, dtype)
            for edge, blocks, reverse in products.cut(halves, images, -grid.point_volume):
                sums.add(edge, blocks[:, None], reverse)

        run_threaded(work, plan.batches(BATCH), self.threads)
        values = np.zeros(int(offsets[-1]))
        sums.write(values, offsets, threads=self.threads)
        return values


def _per_bohr3(table: LogRadialTable) -> LogRadialTable:
    """A density table in Angstrom^-3 converted to Bohr^-3 (what libxc is given)."""
    return LogRadialTable(table.x, table.values * Bohr**3)


@dataclass(frozen=True)
class _AtomImages:
    """Every periodic image (atom, L) of an atom whose sphere reaches the home grid."""

    atom: np.ndarray  # (m,) atom index
    shift: np.ndarray  # (m, 3) lattice shift L
    centres: np.ndarray  # (m, 3) r_atom + L . cell, Angstrom
    lo: np.ndarray  # (m, 3) grid-index box of the sphere (unwrapped, image's own)
    hi: np.ndarray
    kind: np.ndarray  # (m,) species number, into ``kinds``
    kinds: list[str]
    cutoff: np.ndarray  # (m,) Angstrom
    norb: np.ndarray  # (m,)

    @classmethod
    def build(cls, atoms: Atoms, grid: OpenMXGrid, species: Mapping[str, _Species]) -> _AtomImages:
        n = np.array(grid.shape)
        symbols = atoms.get_chemical_symbols()
        kinds = sorted(set(symbols))
        atom, shift, lo_all, hi_all = [], [], [], []
        for a, symbol in enumerate(symbols):
            lo, hi = grid.sphere_box(atoms.positions[a], species[symbol].cutoff)
            ranges = [
                range(-(h // m), (m - 1 - l) // m + 1) for l, h, m in zip(lo, hi, n, strict=True)
            ]
            for s in itertools.product(*ranges):
                atom.append(a)
                shift.append(s)
                lo_all.append(lo + np.array(s) * n)
                hi_all.append(hi + np.array(s) * n)
        atom_arr, shift_arr = np.array(atom), np.array(shift, dtype=np.int64)
        kind = np.array([kinds.index(symbols[a]) for a in atom])
        return cls(
            atom_arr,
            shift_arr,
            atoms.positions[atom_arr] + _cartesian(shift_arr, np.asarray(atoms.cell)),
            np.array(lo_all),
            np.array(hi_all),
            kind,
            kinds,
            np.array([species[k].cutoff for k in kinds])[kind],
            np.array([species[k].norb for k in kinds])[kind],
        )


def _cartesian(coefficients: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """coefficients (..., 3) @ vectors (3, 3) without BLAS (a multithreaded GEMM of this
    shape is slow on a busy machine)."""
    c = np.asarray(coefficients, dtype=float)
    return c[..., 0:1] * vectors[0] + c[..., 1:2] * vectors[1] + c[..., 2:3] * vectors[2]


@dataclass(frozen=True)
class _BlockPlan:
    """The home grid cut into blocks of ``block`` points and, per block, the atom images
    whose sphere may reach it (sphere box meets the block, and the sphere meets the
    block's bounding sphere), sorted by block."""

    block: np.ndarray  # (3,) points per block edge
    count: np.ndarray  # (3,) blocks per axis
    keys: np.ndarray  # (B,) flat block numbers that some sphere reaches
    starts: np.ndarray  # (B + 1,) their incidences: image[starts[b]:starts[b + 1]]
    image: np.ndarray  # (I,) atom image of every incidence

    @classmethod
    def build(cls, grid: OpenMXGrid, images: _AtomImages, block: tuple[int, int, int]):
        n, b = np.array(grid.shape), np.array(block)
        count = -(-n // b)
        first = np.clip(images.lo, 0, n - 1) // b
        spans = np.clip(images.hi, 0, n - 1) // b - first + 1
        per_image = np.prod(spans, axis=1)
        owner = np.repeat(np.arange(len(spans)), per_image)
        rank = np.arange(len(owner)) - np.repeat(np.cumsum(per_image) - per_image, per_image)
        corner = first[owner] + np.column_stack(
            [
                rank // (spans[owner, 2] * spans[owner, 1]),
                (rank // spans[owner, 2]) % spans[owner, 1],
                rank % spans[owner, 2],
            ]
        )
        # the block's bounding sphere against the atom's sphere
        centre = grid.positions(corner * b + 0.5 * (np.minimum(corner * b + b, n) - 1 - corner * b))
        half = 0.5 * np.linalg.norm((b - 1) @ np.abs(grid.steps)) + 1e-9
        near = np.linalg.norm(centre - images.centres[owner], axis=1) <= images.cutoff[owner] + half
        key = ((corner[:, 0] * count[1] + corner[:, 1]) * count[2] + corner[:, 2])[near]
        owner = owner[near]
        order = np.lexsort((owner, key))
        key, owner = key[order], owner[order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1], True])
        return cls(b, count, key[starts[:-1]], starts, owner)

    def corners(self, keys: np.ndarray) -> np.ndarray:
        """(B, 3) first grid index of blocks."""
        c1, c2 = self.count[1], self.count[2]
        return np.column_stack([keys // (c1 * c2), (keys // c2) % c1, keys % c2]) * self.block

    def batches(self, size: int) -> Iterator[tuple[np.ndarray, slice]]:
        """(block numbers, slice of incidences) of consecutive blocks with about ``size``
        (point, atom image) pairs in all."""
        points = int(np.prod(self.block))
        total = np.cumsum(np.diff(self.starts)) * points
        cuts = np.searchsorted(total, np.arange(size, total[-1] + size, size), side="right")
        first = 0
        for last in np.unique(np.clip(np.maximum(cuts, 1), 1, len(self.keys))):
            if last > first:
                yield np.arange(first, last), slice(self.starts[first], self.starts[last])
                first = last


@dataclass
class _Batch:
    """A batch of grid blocks: every (block, atom image) incidence whose sphere holds
    some of the block's points."""

    points: np.ndarray  # (B, P, 3) grid indices
    valid: np.ndarray  # (B, P) inside the home grid
    owner: np.ndarray  # (I,) block (0..B-1) of every incidence, ascending
    image: np.ndarray  # (I,) its atom image
    base: np.ndarray  # (I, 3) from the image to its block's first point, Angstrom
    offsets: np.ndarray  # (P, 3) from a block's first point to each of its points
    r2: np.ndarray  # (I, P) squared distances from the image to the block's points
    inside: np.ndarray  # (I, P) points within the image's cutoff

    @classmethod
    def build(
        cls,
        grid: OpenMXGrid,
        plan: _BlockPlan,
        images: _AtomImages,
        blocks: np.ndarray,
        incidences: slice,
    ) -> _Batch | None:
        """The geometry of consecutive blocks; None if no sphere holds a point of them.
        Distances as |b|^2 + 2 b.t + |t|^2 (no (I, P, 3) array: the density pass needs
        none, and the orbitals take their vectors in their own layout)."""
        n = np.array(grid.shape)
        template = np.stack(
            np.meshgrid(*[np.arange(k) for k in plan.block], indexing="ij"), axis=-1
        ).reshape(-1, 3)
        corners = plan.corners(plan.keys[blocks])
        points = corners[:, None] + template[None]
        valid = np.all(points < n, axis=2)
        owner = np.repeat(np.arange(len(blocks)), np.diff(plan.starts[blocks[0] : blocks[-1] + 2]))
        image = plan.image[incidences]
        base = grid.positions(corners)[owner] - images.centres[image]
        offsets = _cartesian(template, grid.steps)
        r2 = base @ (2.0 * offsets.T)
        r2 += np.einsum("ix,ix->i", base, base)[:, None]
        r2 += np.einsum("px,px->p", offsets, offsets)
        inside = (r2 <= images.cutoff[image, None] ** 2) & valid[owner]
        keep = inside.any(axis=1)
        if not keep.any():
            return None
        return cls(
            points, valid, owner[keep], image[keep], base[keep], offsets, r2[keep], inside[keep]
        )

    def add_density(
        self,
        images: _AtomImages,
        species: Mapping[str, _Species],
        valence: np.ndarray,
        total: np.ndarray,
    ) -> None:
        """Writes the blocks' superposed densities (every incidence of a block is in its
        batch) into the grids: every (incidence, point) looked up, zero outside the
        sphere, and summed over a block's incidences (rows in block order) by one
        reduceat (cheaper than gathering the inside points and scattering them)."""
        nblock, npoint = self.valid.shape
        kind = images.kind[self.image]
        dense = np.empty((2, *self.r2.shape))
        for number in np.unique(kind):
            sel = np.flatnonzero(kind == number)
            radii = np.sqrt(self.r2[sel]).ravel()
            v, t = species[images.kinds[number]].density(radii)
            dense[0, sel] = v.reshape(len(sel), npoint)
            dense[1, sel] = t.reshape(len(sel), npoint)
        dense *= self.inside
        present, first = np.unique(self.owner, return_index=True)
        sums = np.zeros((2, nblock, npoint))
        sums[:, present] = np.add.reduceat(dense, first, axis=1)
        b, p = np.nonzero(self.valid)
        index = self.points[b, p]
        at = (index[:, 0], index[:, 1], index[:, 2])
        valence[at] = sums[0, b, p]
        total[at] = sums[1, b, p]


class _Products:
    """The grid sums of one batch: per block the orbitals of its atom images times
    sqrt|V| at its points, A (images' orbitals side by side x points), and A A^T signed
    by V (eV, no dV yet).

    The orbitals are evaluated species by species straight into one array per species
    (rows: incidences in block order, each its orbitals), so a block's A is a row range
    of each; A A^T is then two SYRKs and a GEMM per block on those ranges, written into
    one padded (B, K, K) array from which the edge blocks are cut."""

    def __init__(
        self,
        batch: _Batch,
        images: _AtomImages,
        species: Mapping[str, _Species],
        scale: np.ndarray,
        positive: np.ndarray,
        dtype: type = np.float32,
    ):
        self.batch = batch
        self.dtype = dtype
        nblock = len(batch.valid)
        kind = images.kind[batch.image]
        self.norb = images.norb[batch.image]
        self.kinds = [int(k) for k in np.unique(kind)]
        self.part = np.searchsorted(self.kinds, kind)  # species rank of every incidence
        # columns of a block: its images of the first species, then of the next, ...
        order = np.lexsort((kind, batch.owner))
        norb_sorted = self.norb[order]
        running = np.cumsum(norb_sorted) - norb_sorted
        first = np.searchsorted(batch.owner[order], np.arange(nblock))
        self.column = np.empty(len(order), dtype=np.int64)
        self.column[order] = (
            running - running[np.minimum(first, len(order) - 1)][batch.owner[order]]
        )
        self.width = np.bincount(batch.owner, weights=self.norb, minlength=nblock).astype(int)
        index = np.minimum(batch.points, np.array(scale.shape) - 1)
        at = (index[..., 0], index[..., 1], index[..., 2])
        weight = np.where(batch.valid, scale[at], 0.0)
        self.positive = positive[at] & batch.valid
        # per species: its incidences (block order), their orbitals (rows) and row starts
        self.rows: list[tuple[np.ndarray, np.ndarray]] = []
        for number in self.kinds:
            sel = np.flatnonzero(kind == number)
            spec = species[images.kinds[number]]
            w = (weight[batch.owner[sel]] * batch.inside[sel]).astype(np.float32)
            values = spec.orbitals(batch.base[sel], batch.offsets, batch.r2[sel], w, dtype)
            bounds = np.searchsorted(batch.owner[sel], np.arange(nblock + 1)) * spec.norb
            self.rows.append((values.reshape(-1, values.shape[2]), bounds))

    def matrices(self) -> np.ndarray:
        """(B, K, K) sum over each block's points of -phi^T V phi = A A^T - 2 A+ A+^T
        (A+: the points where V > 0; V < 0 nearly everywhere, so the sign is left to
        the caller), K the widest block. Filled: every species' diagonal part (a SYRK)
        and the parts above it (a GEMM); the rest is undefined."""
        nblock = len(self.width)
        size = int(self.width.max())
        out = scratch("matrices", (nblock, size, size), self.dtype)
        rows = [rows for rows, _ in self.rows]
        bounds = [bounds.tolist() for _, bounds in self.rows]  # Python ints: a lean loop
        signed = np.flatnonzero(self.positive.any(axis=1)).tolist()
        for b in range(nblock):
            parts = [x[r[b] : r[b + 1]] for x, r in zip(rows, bounds, strict=True)]
            starts = list(itertools.accumulate((len(p) for p in parts), initial=0))
            for n, x in enumerate(parts):
                sn = slice(starts[n], starts[n + 1])
                np.matmul(x, x.T, out=out[b, sn, sn])  # a SYRK
                for m in range(n + 1, len(parts)):
                    np.matmul(x, parts[m].T, out=out[b, sn, starts[m] : starts[m + 1]])
        for b in signed:
            parts = [x[r[b] : r[b + 1]] for x, r in zip(rows, bounds, strict=True)]
            a = np.vstack(parts)[:, self.positive[b]]
            out[b, : len(a), : len(a)] -= 2.0 * (a @ a.T)
        return out

    def cut(
        self, halves: EdgeHalves, images: _AtomImages, scale: float
    ) -> Iterator[tuple[np.ndarray, np.ndarray, bool]]:
        """(computed edges, blocks, reversed) of -phi^T V phi times ``scale``: every
        pair of images of a block that share points and whose upper edge is requested,
        by block shape; a pair whose first image's species comes later is read from the
        filled part as its reverse edge's blocks (t, n_j, n_i), left untransposed. An
        edge is always one or the other (species order), so each comes in one part."""
        k, l, edge = self._pairs(halves, images)
        mats = self.matrices()
        block = self.batch.owner[k]
        n_k, n_l = self.norb[k], self.norb[l]
        flip = self.part[k] > self.part[l]
        for na, nb in set(zip(n_k.tolist(), n_l.tolist(), strict=True)):
            shape = (n_k == na) & (n_l == nb)
            for reverse in (False, True):
                sel = np.flatnonzero(shape & (flip == reverse))
                if len(sel) == 0:
                    continue
                first, second = (l[sel], k[sel]) if reverse else (k[sel], l[sel])
                size = (nb, na) if reverse else (na, nb)
                window = sliding_window_view(mats, size, axis=(1, 2))
                blocks = window[block[sel], self.column[first], self.column[second]]
                blocks *= blocks.dtype.type(scale)  # a fresh copy: scaled in place
                yield edge[sel], blocks, reverse

    def _pairs(
        self, halves: EdgeHalves, images: _AtomImages
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(k, l, computed edge): incidence pairs of one block sharing a point, upper
        edge requested."""
        owner = self.batch.owner
        per_block = np.bincount(owner, minlength=len(self.batch.valid))
        first = np.cumsum(per_block) - per_block
        pairs = per_block**2
        block = np.repeat(np.arange(len(per_block)), pairs)
        rank = np.arange(block.size) - np.repeat(np.cumsum(pairs) - pairs, pairs)
        k = first[block] + rank // per_block[block]
        l = first[block] + rank % per_block[block]
        a, b = self.batch.image[k], self.batch.image[l]
        query = np.column_stack([images.atom[a], images.atom[b], images.shift[b] - images.shift[a]])
        keep = upper_edges(query)
        k, l, query = k[keep], l[keep], query[keep]
        bits = _packed_rows(self.batch.inside)  # 64 points a word: 30x fewer ANDs
        common = (bits[k] & bits[l]).any(axis=1)
        k, l, query = k[common], l[common], query[common]
        edge = halves.find(query[:, 0], query[:, 1], query[:, 2:])
        found = edge >= 0
        return k[found], l[found], edge[found]


def _packed_rows(mask: np.ndarray) -> np.ndarray:
    """(I, W) uint64 words of the rows of a boolean (I, P) mask, P padded to 64 W bits
    (two rows share a point iff their words share a bit)."""
    bits = np.packbits(mask, axis=1)
    pad = -bits.shape[1] % 8
    if pad:
        bits = np.pad(bits, ((0, 0), (0, pad)))
    return np.ascontiguousarray(bits).view(np.uint64)


def _spinor_values(values: np.ndarray, norbs: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Spinless blocks V lifted to the spinor blocks [[V, 0], [0, V]], packed."""
    rows, cols = norbs[edges[:, 0]], norbs[edges[:, 1]]
    source = packed_offsets(norbs, edges)
    target = packed_offsets(2 * norbs, edges)
    out = np.zeros(int(target[-1]), dtype=complex)
    for nr, nc in set(zip(rows.tolist(), cols.tolist(), strict=True)):
        sel = np.flatnonzero((rows == nr) & (cols == nc))
        blocks = values[source[sel][:, None] + np.arange(nr * nc)].reshape(-1, nr, nc)
        lifted = np.zeros((len(sel), 2 * nr, 2 * nc))
        lifted[:, :nr, :nc] = blocks
        lifted[:, nr:, nc:] = blocks
        out[target[sel][:, None] + np.arange(4 * nr * nc)] = lifted.reshape(len(sel), -1)
    return out
