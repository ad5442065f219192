"""Exact overlap S of a pseudo-atomic-orbital basis from its radial functions.

The overlap of two atom-centred orbitals R_a(r) Y_a(r_hat) and R_b(r) Y_b(r_hat) at bond
vector d (from atom i to atom j + R) is a fixed function of d: no SCF, nothing to learn.
With the Fourier-Bessel transforms F(k) = int r^2 j_l(kr) R(r) dr,

    S_ab(d) = 8 sum_{L,M} (-1)^((l_a - l_b - L)/2) G(a, b, LM) Y_LM(d_hat)
                            int k^2 F_a(k) F_b(k) j_L(k |d|) dk,

G being the real Gaunt coefficient int Y_a Y_b Y_LM (L + l_a + l_b even). The radial
integrals are tabulated once per species pair on a distance grid and interpolated by
cubic splines, vectorised over edges, in float64. At d = 0 only L = 0 survives and the
same quadrature gives the on-site block int R_a R_b r^2 dr.

The numerical route is OpenMX's own (``Set_OLP_Kin``): R(r) interpolated as OpenMX
does, trapezoidal transforms on [r_0, r_c + 0.5 Bohr] and k in [0, sqrt(3600) Bohr^-1]
with 900 intervals each, so S is the overlap OpenMX writes (measured: 1e-7).

Where the radial functions come from (:func:`resolve_overlap`): the bundled MoTe2
set (``data/pao/``, from the PAO files of the shared runs), a model bundle, or a folder
of ``.pao`` files the user names.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

import numpy as np
from ase import Atoms
from ase.units import Bohr
from scipy.interpolate import CubicSpline
from scipy.special import sph_harm_y, spherical_jn

from ase_moireh.basis import Basis, SpeciesBasis, parse_openmx_basis, real_spherical_harmonics
from ase_moireh.block_operator import BlockOperator, packed_offsets
from ase_moireh.data import bundled_radials_path
from ase_moireh.files import atomic_file
from ase_moireh.io.pao import RadialFunction, find_pao, read_pao
from ase_moireh.tightbinding import ElectronicStructure

#: OpenMX's default 1DFFT.EnergyCutoff (3600 Ry): k up to 60 Bohr^-1
KMAX = 60.0 / Bohr
#: intervals of the k and r quadratures (OpenMX's 1DFFT.NumGridK / NumGridR defaults)
NK = 900
NR = 900
#: spacing of the distance tables (Angstrom); spline error below 1e-8
TABLE_STEP = 0.01


class OverlapError(ValueError):
    """An overlap that cannot be computed; the message names the species or file."""


# --------------------------------------------------------------------------- angular part


def orbital_harmonics(l: int, unit: np.ndarray) -> np.ndarray:
    """Our real harmonics (order and signs of ``basis.py``), orthonormal on the sphere."""
    return np.sqrt((2 * l + 1) / (4 * np.pi)) * real_spherical_harmonics(l, unit)


def coupling_harmonics(L: int, unit: np.ndarray) -> np.ndarray:
    """An orthonormal real basis of degree-L harmonics (any one serves: it is summed)."""
    x, y, z = np.moveaxis(unit, -1, 0)
    theta, phi = np.arccos(np.clip(z, -1.0, 1.0)), np.arctan2(y, x)
    out = [sph_harm_y(L, 0, theta, phi).real]
    for m in range(1, L + 1):
        c = sph_harm_y(L, m, theta, phi)
        out += [np.sqrt(2) * c.real, np.sqrt(2) * c.imag]
    return np.stack(out, axis=-1)


@cache
def real_gaunt(la: int, lb: int, L: int) -> np.ndarray:
    """G[a, b, M] = int Y_a Y_b Y_LM dOmega, exact: Gauss-Legendre in cos(theta) times a
    uniform phi grid integrate these polynomials of degree la + lb + L without error."""
    n = (la + lb + L) // 2 + 2
    x, w = np.polynomial.legendre.leggauss(n)
    phi = 2 * np.pi * np.arange(2 * n + 1) / (2 * n + 1)
    st = np.sqrt(1 - x**2)[:, None]
    unit = np.stack(
        [st * np.cos(phi), st * np.sin(phi), np.broadcast_to(x[:, None], (n, len(phi)))], -1
    ).reshape(-1, 3)
    weight = np.repeat(w, len(phi)) * (2 * np.pi / len(phi))
    g = np.einsum(
        "p,pa,pb,pm->abm",
        weight,
        orbital_harmonics(la, unit),
        orbital_harmonics(lb, unit),
        coupling_harmonics(L, unit),
    )
    g[np.abs(g) < 1e-14] = 0.0
    return g


# --------------------------------------------------------------------------- radial part


def bessel_transform(radial: RadialFunction, k: np.ndarray, nr: int = NR) -> np.ndarray:
    """F(k) = int r^2 j_l(kr) R(r) dr, trapezoidal on [r_0, r_c + 0.5 Bohr] (OpenMX's)."""
    r = np.linspace(radial.r[0], radial.cutoff + 0.5 * Bohr, nr + 1)
    weights = np.full(nr + 1, r[1] - r[0])
    weights[[0, -1]] *= 0.5
    return spherical_jn(radial.l, np.outer(k, r)) @ (radial(r) * r**2 * weights)


@dataclass(frozen=True)
class SpeciesRadials:
    """The radial functions of one species' basis, in our shell order."""

    symbol: str
    basis: str  # OpenMX basis string, e.g. 'Mo7.0-s3p2d1'
    functions: tuple[RadialFunction, ...]

    @property
    def species_basis(self) -> SpeciesBasis:
        return SpeciesBasis(self.symbol, tuple(f.l for f in self.functions))

    @property
    def cutoff(self) -> float:
        return max(f.cutoff for f in self.functions)

    def arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays (one radial grid per species, as in a .pao file)."""
        return {
            "r": self.functions[0].r,
            "values": np.array([f.values for f in self.functions]),
            "l": np.array([f.l for f in self.functions]),
            "cutoff": np.array([f.cutoff for f in self.functions]),
        }

    @classmethod
    def from_arrays(cls, symbol: str, basis: str, arrays: Mapping[str, np.ndarray]):
        r = np.asarray(arrays["r"], dtype=float)
        functions = tuple(
            RadialFunction(int(l), r, np.asarray(v, dtype=float), float(c))
            for l, v, c in zip(arrays["l"], arrays["values"], arrays["cutoff"], strict=True)
        )
        return cls(symbol, basis, functions)


# --------------------------------------------------------------------------- the overlap


class TwoCentreOverlap:
    """Exact overlap blocks S_ij(R) of a PAO basis for any structure.

    ``radials`` maps each chemical symbol to its :class:`SpeciesRadials`. Tables are
    built lazily per species pair (about a second in all for MoTe2) and kept.
    """

    def __init__(self, radials: Mapping[str, SpeciesRadials]):
        if not radials:
            raise OverlapError("no species given")
        self.radials = dict(radials)
        self.basis = Basis(r.species_basis for r in self.radials.values())
        self.k = np.linspace(0.0, KMAX, NK + 1)
        self._kweight = np.full(NK + 1, self.k[1] - self.k[0])
        self._kweight[0] *= 0.5
        self._kweight[-1] = 0.0  # OpenMX tabulates F(k) below kmax only: F(kmax) counts as 0
        rmax = 2 * max(r.cutoff for r in self.radials.values())
        self._distances = np.arange(0.0, rmax + 2 * TABLE_STEP, TABLE_STEP)
        self._bessel: dict[int, np.ndarray] = {}
        self._transforms: dict[str, np.ndarray] = {}
        self._tables: dict[tuple[str, str], _PairTable] = {}

    @property
    def openmx_basis(self) -> dict[str, str]:
        """OpenMX basis string of every species, e.g. {'Mo': 'Mo7.0-s3p2d1'}."""
        return {sym: r.basis for sym, r in self.radials.items()}

    def covers(self, basis: Basis) -> bool:
        """True if every species of ``basis`` is here with the same shells."""
        return all(sym in self.basis and self.basis[sym] == basis[sym] for sym in basis)

    def species(self, symbol: str) -> SpeciesRadials:
        if symbol not in self.radials:
            raise OverlapError(
                f"no radial functions for species {str(symbol)!r} (have "
                f"{', '.join(self.radials)}): name a folder of .pao files for it "
                "(pao_dir / --pao-dir)"
            )
        return self.radials[symbol]

    # ------------------------------------------------------------------ tables
    def bessel_table(self, L: int) -> np.ndarray:
        """j_L(k d) k^2 w_k on (distance grid, k grid): shared by every shell pair."""
        if L not in self._bessel:
            jl = spherical_jn(L, np.outer(self._distances, self.k))
            self._bessel[L] = jl * (self._kweight * self.k**2)
        return self._bessel[L]

    def transforms(self, symbol: str) -> np.ndarray:
        """F(k) of every shell of one species, (nshell, nk)."""
        if symbol not in self._transforms:
            funcs = self.species(symbol).functions
            self._transforms[symbol] = np.array([bessel_transform(f, self.k) for f in funcs])
        return self._transforms[symbol]

    def _table(self, a: str, b: str) -> _PairTable:
        if (a, b) not in self._tables:
            self._tables[a, b] = _PairTable.build(self, a, b, self._distances)
        return self._tables[a, b]

    # ------------------------------------------------------------------ blocks
    def blocks(self, a: str, b: str, vectors: np.ndarray) -> np.ndarray:
        """(E, n_a, n_b) blocks of species a at 0 and species b at ``vectors`` (A)."""
        return self._table(a, b).evaluate(np.asarray(vectors, dtype=float).reshape(-1, 3))

    def operator(self, atoms: Atoms, edges: np.ndarray) -> BlockOperator:
        """S as a spinless :class:`BlockOperator` on the edges (i, j, R) of ``atoms``
        (typically those of H: edges beyond the basis cutoff get zero blocks)."""
        edges = np.asarray(edges, dtype=np.int64).reshape(-1, 5)
        meta = {"cell": np.asarray(atoms.cell), "positions": atoms.positions}
        values = self.packed_values(atoms, edges)
        return BlockOperator(atoms.numbers, self.basis, edges, values, **meta)

    def packed_values(self, atoms: Atoms, edges: np.ndarray) -> np.ndarray:
        """The flat block values of S on ``edges``, packed in edge order (the values of
        :meth:`operator`; a streamed prediction asks for them a chunk of edges at a time)."""
        symbols = np.array(atoms.get_chemical_symbols())
        for sym in sorted(set(symbols.tolist())):
            self.species(sym)
        vec = atoms.positions[edges[:, 1]] + edges[:, 2:] @ np.asarray(atoms.cell)
        vec -= atoms.positions[edges[:, 0]]
        offsets = packed_offsets(self.basis.norbs(atoms.numbers), edges)
        values = np.zeros(int(offsets[-1]))
        pair = np.char.add(np.char.add(symbols[edges[:, 0]], "-"), symbols[edges[:, 1]])
        for key in np.unique(pair):
            idx = np.flatnonzero(pair == key)
            a, b = str(key).split("-")
            flat = self.blocks(a, b, vec[idx]).reshape(len(idx), -1)
            values[offsets[idx][:, None] + np.arange(flat.shape[1])] = flat
        return values

    # ------------------------------------------------------------------ state
    @classmethod
    def from_pao_folder(
        cls, folder: str | os.PathLike, basis: Mapping[str, str]
    ) -> TwoCentreOverlap:
        """From OpenMX basis strings (``{'Mo': 'Mo7.0-s3p2d1'}``) and a folder of ``.pao``
        files (or an OpenMX DATA.PATH holding ``PAO/``)."""
        radials = {}
        for symbol, text in basis.items():
            name, _ = parse_openmx_basis(text)
            pao = read_pao(find_pao(folder, name))
            radials[symbol] = SpeciesRadials(symbol, text, tuple(pao.shells(text)))
        return cls(radials)

    def state(self) -> tuple[dict[str, str], dict[str, np.ndarray]]:
        """(basis strings, arrays named '<symbol>.<field>'): all that defines S."""
        arrays = {
            f"{sym}.{name}": value
            for sym, r in self.radials.items()
            for name, value in r.arrays().items()
        }
        return self.openmx_basis, arrays

    @classmethod
    def from_state(
        cls, basis: Mapping[str, str], arrays: Mapping[str, np.ndarray]
    ) -> TwoCentreOverlap:
        fields = ("r", "values", "l", "cutoff")
        radials = {}
        for sym, text in basis.items():
            missing = [f for f in fields if f"{sym}.{f}" not in arrays]
            if missing:
                raise OverlapError(f"radial functions of {sym!r} lack {', '.join(missing)}")
            own = {f: np.asarray(arrays[f"{sym}.{f}"]) for f in fields}
            radials[sym] = SpeciesRadials.from_arrays(sym, text, own)
        return cls(radials)

    def save(self, path: str | os.PathLike) -> None:
        """The radial functions as an ``.npz`` (no pickles), written atomically."""
        basis, arrays = self.state()
        with atomic_file(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, basis=np.array(json.dumps(basis)), **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TwoCentreOverlap:
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
            basis = json.loads(str(arrays.pop("basis")))
        except (OSError, ValueError, KeyError) as err:
            raise OverlapError(f"{path}: not a radial-function file ({err})") from None
        return cls.from_state(basis, arrays)


@dataclass
class _PairTable:
    """Splines of the radial integrals of one species pair, grouped by (l_a, l_b, L)."""

    shape: tuple[int, int]
    groups: list[tuple[int, int, int, np.ndarray, CubicSpline]]  # la, lb, L, positions
    rmax: float

    @classmethod
    def build(cls, owner: TwoCentreOverlap, a: str, b: str, d: np.ndarray) -> _PairTable:
        ba, bb = owner.species(a).species_basis, owner.species(b).species_basis
        fa, fb = owner.transforms(a), owner.transforms(b)
        starts_a = [s.start for s in ba.shell_slices()]
        starts_b = [s.start for s in bb.shell_slices()]
        groups = []
        for la in sorted(set(ba.shells)):
            for lb in sorted(set(bb.shells)):
                pairs = [
                    (p, q)
                    for p, lp in enumerate(ba.shells)
                    for q, lq in enumerate(bb.shells)
                    if (lp, lq) == (la, lb)
                ]
                product = np.array([fa[p] * fb[q] for p, q in pairs])  # (npairs, nk)
                # flat position in the (n_a, n_b) block of every (pair, m_a, m_b)
                rows = np.array([starts_a[p] for p, _ in pairs])[:, None, None]
                cols = np.array([starts_b[q] for _, q in pairs])[:, None, None]
                rows = rows + np.arange(2 * la + 1)[None, :, None]
                cols = cols + np.arange(2 * lb + 1)[None, None, :]
                positions = rows * bb.norb + cols
                for L in range(abs(la - lb), la + lb + 1, 2):
                    sign = (-1) ** ((la - lb - L) // 2)
                    values = 8.0 * sign * (owner.bessel_table(L) @ product.T)  # (nd, npairs)
                    groups.append((la, lb, L, positions, CubicSpline(d, values, axis=0)))
        rmax = owner.species(a).cutoff + owner.species(b).cutoff
        return cls((ba.norb, bb.norb), groups, rmax)

    def evaluate(self, vectors: np.ndarray) -> np.ndarray:
        """(E, n_a, n_b) blocks at bond vectors (A); zero beyond the two cutoffs."""
        out = np.zeros((len(vectors), *self.shape))
        dist = np.linalg.norm(vectors, axis=1)
        inside = np.flatnonzero(dist < self.rmax)
        unit = np.tile([0.0, 0.0, 1.0], (len(inside), 1))  # any axis at d = 0
        far = dist[inside] > 1e-10
        unit[far] = vectors[inside[far]] / dist[inside[far], None]
        flat = np.zeros((len(inside), self.shape[0] * self.shape[1]))
        harmonics: dict[int, np.ndarray] = {}
        for la, lb, L, positions, spline in self.groups:
            if L not in harmonics:
                harmonics[L] = coupling_harmonics(L, unit)
            angular = np.einsum("em,abm->eab", harmonics[L], real_gaunt(la, lb, L))
            radial = spline(dist[inside])  # (E, npairs)
            flat[:, positions] += radial[:, :, None, None] * angular[:, None]
        out[inside] = flat.reshape(-1, *self.shape)
        return out


# --------------------------------------------------------------------------- sources


@cache
def bundled_overlap() -> TwoCentreOverlap:
    """The MoTe2 basis of the shared runs and the bundled models (Mo7.0-s3p2d1,
    Te7.0-s3p2d2, DFT_DATA19): no OpenMX files needed."""
    return TwoCentreOverlap.load(bundled_radials_path())


def with_overlap(
    structure: ElectronicStructure, pao_dir: str | os.PathLike | None = None
) -> ElectronicStructure:
    """``structure`` with S: its own, else the exact S on its H's edges from the basis's
    radial functions (bundled, or ``pao_dir``), e.g. for a corpus entry (H only)."""
    if structure.overlap is not None:
        return structure
    h = structure.hamiltonian
    try:
        source = resolve_overlap(h.basis, structure.extra.get("openmx_basis"), pao_dir)
    except OverlapError as err:
        raise OverlapError(f"{structure.source}: no S ({err})") from None
    return dataclasses.replace(structure, overlap=source.operator(structure.atoms, h.edges))


def resolve_overlap(
    basis: Basis,
    openmx_basis: Mapping[str, str] | None = None,
    pao_dir: str | os.PathLike | None = None,
) -> TwoCentreOverlap:
    """The overlap source for a basis: the PAO files in ``pao_dir`` when given (OpenMX
    basis strings needed, e.g. from a dataset converted from OpenMX), else the bundled
    MoTe2 set if it holds every species with the same shells (and the same OpenMX basis
    strings when those are known)."""
    if pao_dir is not None:
        if not openmx_basis:
            raise OverlapError(
                f"pao_dir {pao_dir} given but no OpenMX basis strings (e.g. "
                "{'Mo': 'Mo7.0-s3p2d1'}) to pick its radial functions"
            )
        source = TwoCentreOverlap.from_pao_folder(pao_dir, openmx_basis)
    else:
        source = bundled_overlap()
        known = source.openmx_basis
        other = {s: b for s, b in (openmx_basis or {}).items() if known.get(s) != b}
        if other:
            raise OverlapError(
                f"basis {other} is not the bundled one ({known}): name a folder of its "
                ".pao files (pao_dir / --pao-dir)"
            )
    missing = [s for s in basis if s not in source.basis or source.basis[s] != basis[s]]
    if missing:
        raise OverlapError(
            f"no radial functions for species {', '.join(missing)} with shells "
            f"{ {s: basis[s].dftio_string() for s in missing} }: name a folder of .pao "
            "files (pao_dir / --pao-dir)"
        )
    return source
