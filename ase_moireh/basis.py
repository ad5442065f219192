"""Atomic-orbital basis sets and the project's orbital and spin conventions.

This module is the one place that states them; everything else imports from here.

Orbital order (files, :class:`~ase_moireh.block_operator.BlockOperator`, models):
    shells in the order the basis string lists them (all s, then p, then d, ...);
    inside a shell, real spherical harmonics with z as the polar axis, m = -l..l:

    * p: (y, z, x)
    * d: (xy, yz, z2, xz, x2-y2)

    This is the order dftio / DeePTB files use. OpenMX orders p as (x, y, z) and d as
    (z2, x2-y2, xy, xz, yz); :data:`OPENMX_TO_INTERNAL` permutes at the reader.
    e3nn 0.6 puts the polar axis on y: our real harmonics are e3nn's evaluated at the
    permuted vector (y, z, x), see :data:`E3NN_FRAME`.

Spin layout (SOC):
    a block of atoms (i, j) is complex of shape (2 n_i, 2 n_j): all spin-up orbitals of
    the atom, then all spin-down ones, i.e. [[uu, ud], [du, dd]]. The overlap stays
    spinless; :func:`spinor_matrix` lifts a spatial rotation to this layout.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

L_LETTERS = "spdfgh"
#: names of the real harmonics inside a shell, in the order above (m = -l..l)
M_NAMES: dict[int, tuple[str, ...]] = {
    0: ("",),
    1: ("y", "z", "x"),
    2: ("xy", "yz", "z2", "xz", "x2-y2"),
}

#: OpenMX -> internal order inside a shell: internal[m] = openmx[perm[m]].
#: OpenMX p: (x, y, z); d: (z2, x2-y2, xy, xz, yz). f and higher are not supported.
OPENMX_TO_INTERNAL: dict[int, tuple[int, ...]] = {0: (0,), 1: (1, 2, 0), 2: (2, 4, 0, 3, 1)}

#: semicore shells of the project's PAO bases (Mo7.0-s3p2d1, Te7.0-s3p2d2): the first
#: radial function of these l holds a shell the pseudopotential keeps in its valence but
#: far below the gap (Mo_PBE19, 14 electrons: 4s2 4p6 4d5 5s1; Te_PBE19, 16: 4d10 5s2 5p4).
#: DFT on-site energies: Mo s1 -65 eV, Mo p1 -40 eV, Te d1 -41 eV; their errors leave the
#: levels near the gap unchanged (benchmarks/results/error_anatomy.md)
SEMICORE_SHELLS: dict[str, tuple[str, ...]] = {"Mo": ("s1", "p1"), "Te": ("d1",)}

#: Cartesian frame change to e3nn 0.6: Y_ours(r) = Y_e3nn(E3NN_FRAME @ r).
E3NN_FRAME = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])


def spin_factor(spinful: bool) -> int:
    """Rows per spatial orbital: 2 in the SOC spinor layout, 1 without spin."""
    return 2 if spinful else 1


def filled_levels(electrons: float, spinful: bool) -> int:
    """Levels a neutral, gapped structure fills: one electron per SOC spinor level, two
    per spin-degenerate level without spin."""
    n = int(round(electrons))
    return n if spinful else n // 2


class BasisError(ValueError):
    """A basis string or orbital specification that cannot be understood."""


@dataclass(frozen=True)
class SpeciesBasis:
    """Shells of one species: angular momenta in orbital order (radial index implicit)."""

    symbol: str
    shells: tuple[int, ...]

    @property
    def norb(self) -> int:
        """Spatial orbitals (without spin)."""
        return sum(2 * l + 1 for l in self.shells)

    def shell_slices(self) -> list[slice]:
        """Slice of every shell inside the atom's spatial orbital range."""
        out, start = [], 0
        for l in self.shells:
            out.append(slice(start, start + 2 * l + 1))
            start += 2 * l + 1
        return out

    def orbital_shells(self) -> np.ndarray:
        """Per spatial orbital: the number of its shell (0, 1, ... in :attr:`shells`)."""
        return np.repeat(np.arange(len(self.shells)), [2 * l + 1 for l in self.shells])

    def shell_labels(self) -> list[str]:
        """One label per shell, numbered per l: 's1', 's2', 'p1', 'd1', ..."""
        labels, seen = [], {}
        for l in self.shells:
            seen[l] = seen.get(l, 0) + 1
            labels.append(f"{L_LETTERS[l]}{seen[l]}")
        return labels

    def semicore_orbitals(self) -> np.ndarray:
        """Per spatial orbital: does it belong to a :data:`SEMICORE_SHELLS` shell?"""
        semicore = SEMICORE_SHELLS.get(self.symbol, ())
        return np.concatenate(
            [
                np.full(sl.stop - sl.start, label in semicore)
                for label, sl in zip(self.shell_labels(), self.shell_slices(), strict=True)
            ]
        )

    def orbital_labels(self) -> list[str]:
        """One label per spatial orbital in our order, e.g. 's1', 'p1y', 'd1z2'."""
        return [
            f"{shell}{name}"
            for shell, l in zip(self.shell_labels(), self.shells, strict=True)
            for name in M_NAMES.get(l, tuple(str(m) for m in range(-l, l + 1)))
        ]

    def dftio_string(self) -> str:
        """dftio's compact form, e.g. ``'3s2p1d'``."""
        return "".join(f"{self.shells.count(l)}{L_LETTERS[l]}" for l in sorted(set(self.shells)))

    def openmx_permutation(self) -> np.ndarray:
        """Index array mapping OpenMX orbital order to ours: ours = openmx[perm]."""
        perm, start = [], 0
        for l in self.shells:
            if l not in OPENMX_TO_INTERNAL:
                raise BasisError(
                    f"{self.symbol}: l={l} shells are not supported by the OpenMX mapping"
                )
            perm.extend(start + p for p in OPENMX_TO_INTERNAL[l])
            start += 2 * l + 1
        return np.asarray(perm, dtype=np.int64)


def _shells_from_counts(counts: Iterable[tuple[str, int]], text: str) -> tuple[int, ...]:
    shells: list[int] = []
    for letter, count in counts:
        if letter not in L_LETTERS:
            raise BasisError(f"unknown shell letter {letter!r} in basis {text!r}")
        shells.extend([L_LETTERS.index(letter)] * count)
    if sorted(shells) != shells:
        raise BasisError(f"shells must come in increasing l in basis {text!r}")
    if not shells:
        raise BasisError(f"no shells in basis {text!r}")
    return tuple(shells)


def parse_openmx_basis(text: str) -> tuple[str, tuple[int, ...]]:
    """``'Mo7.0-s3p2d1'`` -> (``'Mo7.0'``, (0, 0, 0, 1, 1, 2)): PAO name and shells."""
    match = re.fullmatch(r"\s*([A-Za-z]+[^-\s]*)-((?:[a-z]\d+)+)\s*", text)
    if match is None:
        raise BasisError(f"not an OpenMX basis specification: {text!r}")
    counts = [(m[0], int(m[1:])) for m in re.findall(r"[a-z]\d+", match.group(2))]
    return match.group(1), _shells_from_counts(counts, text)


def parse_dftio_basis(text: str) -> tuple[int, ...]:
    """``'3s2p1d'`` -> (0, 0, 0, 1, 1, 2)."""
    if re.fullmatch(r"(\d+[a-z])+", text.strip()) is None:
        raise BasisError(f"not a dftio basis string: {text!r}")
    counts = [(m[-1], int(m[:-1])) for m in re.findall(r"\d+[a-z]", text)]
    return _shells_from_counts(counts, text)


class Basis(Mapping[str, SpeciesBasis]):
    """Basis of every species present, keyed by chemical symbol."""

    def __init__(self, species: Iterable[SpeciesBasis]):
        self._species = {s.symbol: s for s in species}
        for symbol in self._species:
            if symbol not in atomic_numbers:
                raise BasisError(f"unknown chemical symbol {symbol!r} in basis")

    @classmethod
    def from_dftio(cls, spec: Mapping[str, str] | str) -> Basis:
        """From ``{'Si': '1s1p'}`` or its Python-literal text (dftio's ``basis.dat``)."""
        if isinstance(spec, str):
            try:
                spec = ast.literal_eval(spec.strip())
            except (ValueError, SyntaxError) as err:
                raise BasisError(f"basis text is not a Python dict literal: {err}") from None
            if not isinstance(spec, dict):
                raise BasisError("basis text must be a dict like {'Mo': '3s2p1d'}")
        return cls(SpeciesBasis(sym, parse_dftio_basis(str(s))) for sym, s in spec.items())

    @classmethod
    def from_openmx(cls, spec: Mapping[str, str]) -> Basis:
        """From ``{'Mo': 'Mo7.0-s3p2d1', ...}``."""
        return cls(SpeciesBasis(sym, parse_openmx_basis(s)[1]) for sym, s in spec.items())

    def to_dftio(self) -> dict[str, str]:
        return {sym: s.dftio_string() for sym, s in self._species.items()}

    def __getitem__(self, symbol: str) -> SpeciesBasis:
        try:
            return self._species[symbol]
        except KeyError:
            raise BasisError(f"no basis for species {symbol!r}") from None

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._species

    def __iter__(self):
        return iter(self._species)

    def __len__(self) -> int:
        return len(self._species)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Basis) and self._species == other._species

    def __repr__(self) -> str:
        return f"Basis({self.to_dftio()!r})"

    def norbs(self, numbers: Sequence[int] | np.ndarray) -> np.ndarray:
        """Spatial orbitals per atom for the given atomic numbers."""
        table = {chemical_symbols[z]: self[chemical_symbols[z]].norb for z in set(numbers)}
        return np.array([table[chemical_symbols[z]] for z in numbers], dtype=np.int64)


# --------------------------------------------------------------------------- rotations


def real_spherical_harmonics(l: int, vectors: np.ndarray) -> np.ndarray:
    """Real harmonics (z polar, m = -l..l) at ``vectors`` (..., 3), l <= 3.

    Homogeneous polynomials with one common factor missing per l (so the set is
    orthonormal up to that factor, which rotation matrices do not see).
    """
    x, y, z = np.moveaxis(np.asarray(vectors, dtype=float), -1, 0)
    if l == 0:
        comps = [np.ones_like(x)]
    elif l == 1:
        comps = [y, z, x]
    elif l == 2:
        s3 = np.sqrt(3.0)
        comps = [
            s3 * x * y,
            s3 * y * z,
            z * z - 0.5 * (x * x + y * y),
            s3 * x * z,
            0.5 * s3 * (x * x - y * y),
        ]
    elif l == 3:
        r2 = x * x + y * y + z * z
        comps = [
            np.sqrt(5 / 8) * y * (3 * x * x - y * y),
            np.sqrt(15) * x * y * z,
            np.sqrt(3 / 8) * y * (5 * z * z - r2),
            0.5 * z * (5 * z * z - 3 * r2),
            np.sqrt(3 / 8) * x * (5 * z * z - r2),
            0.5 * np.sqrt(15) * z * (x * x - y * y),
            np.sqrt(5 / 8) * x * (x * x - 3 * y * y),
        ]
    else:
        raise BasisError(f"real harmonics implemented for l <= 3, got l={l}")
    return np.stack(comps, axis=-1)


@lru_cache(maxsize=8)
def _sample_points(l: int) -> np.ndarray:
    rng = np.random.default_rng(1234 + l)
    return rng.normal(size=(4 * (2 * l + 1), 3))


def wigner_d_real(l: int, rotation: np.ndarray) -> np.ndarray:
    """D^l(Q) in our real basis, defined by Y_l(Q r) = D^l(Q) Y_l(r); orthogonal.

    Works for improper Q too (orbitals have parity (-1)^l). Solved by least squares on
    fixed sample points: exact, since Y_l(Q r) lies in the span of the Y_l.
    """
    q = np.asarray(rotation, dtype=float)
    if l == 0:
        return np.ones((1, 1))
    pts = _sample_points(l)
    y0 = real_spherical_harmonics(l, pts)
    y1 = real_spherical_harmonics(l, pts @ q.T)
    d, *_ = np.linalg.lstsq(y0, y1, rcond=None)
    return d.T


def spin_rotation(rotation: np.ndarray) -> np.ndarray:
    """SU(2) matrix U for a Cartesian rotation or improper rotation (spin is axial).

    U = exp(-i theta/2 n.sigma) for the proper part det(Q) Q; defined up to the sign
    every double-group representation carries.
    """
    q = np.asarray(rotation, dtype=float)
    q = q * np.sign(np.linalg.det(q))
    # axis-angle from the quaternion of q (robust for all angles)
    w = 0.5 * np.sqrt(max(1.0 + np.trace(q), 0.0))
    if w > 1e-6:
        v = np.array([q[2, 1] - q[1, 2], q[0, 2] - q[2, 0], q[1, 0] - q[0, 1]]) / (4 * w)
    else:  # rotation by pi: axis from the largest diagonal element
        k = int(np.argmax(np.diag(q)))
        v = np.zeros(3)
        v[k] = 0.5 * np.sqrt(max(1.0 + 2 * q[k, k] - np.trace(q), 0.0))
        for j in range(3):
            if j != k:
                v[j] = (q[j, k] + q[k, j]) / (4 * v[k])
    sx = np.array([[0, 1], [1, 0]], dtype=complex)
    sy = np.array([[0, -1j], [1j, 0]], dtype=complex)
    sz = np.array([[1, 0], [0, -1]], dtype=complex)
    return w * np.eye(2) - 1j * (v[0] * sx + v[1] * sy + v[2] * sz)


def orbital_rotation(species: SpeciesBasis, rotation: np.ndarray) -> np.ndarray:
    """Block-diagonal D (n x n) rotating all shells of one atom: phi -> D phi."""
    blocks = [wigner_d_real(l, rotation) for l in species.shells]
    n = species.norb
    out = np.zeros((n, n))
    for sl, d in zip(species.shell_slices(), blocks, strict=True):
        out[sl, sl] = d
    return out


def spinor_matrix(spatial: np.ndarray, spin: np.ndarray) -> np.ndarray:
    """Lift an (n x n) spatial matrix and a 2x2 spin matrix to our SOC layout (2n x 2n)."""
    return np.kron(spin, spatial)


def atom_rotation(species: SpeciesBasis, rotation: np.ndarray, spinful: bool) -> np.ndarray:
    """The matrix M with block_{g(i) g(j)} = M_i block_ij M_j^dagger under rotation Q."""
    d = orbital_rotation(species, rotation)
    return spinor_matrix(d, spin_rotation(rotation)) if spinful else d
