"""The whole zeroth-step Hamiltonian H0 = T + V_NL + V_NA + V_xc, as OpenMX builds it.

H0 is what OpenMX's first SCF step diagonalises: the Hamiltonian of the superposed
free-atom densities (``Set_Hamiltonian.c``; the Hartree term of the density difference
is zero then). Nothing in it is self-consistent, so a model need not learn it
(:mod:`ase_moireh.model.residual`: dH = H - H0). Its four terms live in
:mod:`ase_moireh.h0.twocentre`, :mod:`~ase_moireh.h0.vna` and :mod:`~ase_moireh.h0.vxc`;
this module adds them up in the corpus's layout:

* collinear: real spinless blocks, V_NL with the j-averaged projectors;
* spin-orbit (``spinful``): spinor blocks [[uu, ud], [du, dd]] (:mod:`ase_moireh.basis`),
  T + V_NA + V_xc on both spin diagonals (the start is non-magnetic) and V_NL from the
  j-dependent projectors, where all of H's spin-orbit coupling lives.

Edges are by default those OpenMX keeps (``truncation.c``): every pair with
|r_j + R - r_i| <= r_c(i) + r_c(j), the PAO cutoffs, and the on-site blocks.

:func:`resolve_h0` is the H0 source for a basis, beside
:func:`~ase_moireh.overlap.resolve_overlap`: the bundled Mo/Te files (no OpenMX needed),
or an OpenMX DATA.PATH. Its builders are cached, so the per-species setup (radial
tables, neutral-atom projectors) is paid once per process.
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols, covalent_radii

from ase_moireh.basis import Basis, parse_openmx_basis
from ase_moireh.block_operator import BlockOperator
from ase_moireh.data import bundled_openmx_data_path
from ase_moireh.h0.twocentre import KineticEnergy, NonlocalPseudopotential
from ase_moireh.h0.vna import NeutralAtomPotential
from ase_moireh.h0.vxc import ENERGY_CUTOFF, ExchangeCorrelation
from ase_moireh.io.openmx_input import (
    DEFAULT_SPECIES,
    clean_lines,
    input_block,
    species_elements,
)
from ase_moireh.io.pao import find_pao, read_pao
from ase_moireh.io.vps import find_vps, read_valence_density, read_vps
from ase_moireh.neighbours import neighbour_pairs
from ase_moireh.overlap import TwoCentreOverlap
from ase_moireh.tightbinding import ElectronicStructure

#: what a residual model records as its H0 when trained against this one
SOURCE = "ase-moireh zeroth step (OpenMX's H0 rebuilt by ase_moireh.h0)"
#: two atoms closer than this fraction of the sum of their covalent radii overlap: no
#: bond is that short (Mo-Te 2.73 A vs 1.46 A here), but a duplicated atom is, and so
#: is a structure read in Bohr as Angstrom (x 0.53)
OVERLAP_FRACTION = 0.5
#: the four terms, in the order they are built
TERMS = ("T", "V_NL", "V_NA", "V_xc")


class H0Error(ValueError):
    """An H0 that cannot be built; the message names the file, element or atoms."""


# --------------------------------------------------------------------------- edges


def openmx_edges(atoms: Atoms, radii: np.ndarray) -> np.ndarray:
    """(E, 5) rows (i, j, Rx, Ry, Rz) OpenMX keeps for atoms of PAO cutoffs ``radii``
    (A, per atom): on-site blocks first, then every pair with d <= r_c(i) + r_c(j)
    (``truncation.c``: ``r <= rcutA + rcutB``), sorted as the model's graphs are."""
    radii = np.asarray(radii, dtype=float)
    n = len(atoms)
    own = np.column_stack([np.arange(n), np.arange(n), np.zeros((n, 3), dtype=np.int64)])
    if n == 0:
        return own.astype(np.int64).reshape(0, 5)
    # neighbour_pairs keeps d < cutoff: a hair beyond the largest sum, the rule is ours
    i, j, shift, d = neighbour_pairs(atoms, 2 * radii.max() * (1 + 1e-12) + 1e-9)
    keep = d <= radii[i] + radii[j]
    pairs = np.column_stack([i[keep], j[keep], shift[keep]]).astype(np.int64)
    order = np.lexsort((pairs[:, 4], pairs[:, 3], pairs[:, 2], pairs[:, 1], pairs[:, 0]))
    return np.vstack([own, pairs[order]]).astype(np.int64)


def check_separation(atoms: Atoms) -> None:
    """Refuse atoms closer than :data:`OVERLAP_FRACTION` of their covalent radii' sum
    (periodic images included), naming the closest such pair."""
    if len(atoms) == 0:
        return
    radius = covalent_radii[atoms.numbers]
    limit = OVERLAP_FRACTION * 2 * radius.max()
    i, j, shift, d = neighbour_pairs(atoms, limit)
    bad = d < OVERLAP_FRACTION * (radius[i] + radius[j])
    if not bad.any():
        return
    k = np.flatnonzero(bad)[np.argmin(d[bad])]
    symbols = atoms.get_chemical_symbols()
    where = "" if not shift[k].any() else f" (image {shift[k].tolist()})"
    raise H0Error(
        f"overlapping atoms: {i[k]} ({symbols[i[k]]}) and {j[k]} ({symbols[j[k]]}){where} "
        f"are {d[k]:.3f} A apart, below {OVERLAP_FRACTION:g} x their covalent radii "
        f"({radius[i[k]] + radius[j[k]]:.2f} A)"
    )


def check_structure(atoms: Atoms, elements: Collection[str]) -> None:
    """Refuse what H0 cannot be built for, before any work: an element outside
    ``elements`` (no basis or pseudopotential for it), a cell without volume (V_xc's
    grid spans the cell, as OpenMX's), overlapping atoms (:func:`check_separation`), a
    spin-polarised start (V_xc of initial moments is not built)."""
    unknown = sorted(set(atoms.get_chemical_symbols()) - set(elements))
    if unknown:
        raise H0Error(
            f"no pseudopotential for element {', '.join(unknown)} (this H0 has "
            f"{', '.join(sorted(elements))}): name its basis and .vps and the folder holding them"
        )
    if abs(atoms.cell.volume) < 1e-6:
        raise H0Error(
            "the cell has no volume: H0 needs three lattice vectors (OpenMX's real-space "
            "grid spans the cell; give vacuum along non-periodic directions)"
        )
    check_separation(atoms)
    if np.any(atoms.get_initial_magnetic_moments() != 0):
        raise H0Error(
            "initial magnetic moments set: the H0 of a spin-polarised start is not built "
            "(the corpus starts non-magnetic, up = down on every atom)"
        )


# --------------------------------------------------------------------------- the builder


class ZerothStepHamiltonian:
    """H0 of any structure of the given species, from an OpenMX DATA.PATH.

    ``basis`` maps each element to its OpenMX basis string (``{'Mo': 'Mo7.0-s3p2d1'}``),
    ``pseudopotentials`` to its ``.vps`` name (``{'Mo': 'Mo_PBE19'}``): together the
    species of the calculation (the neutral-atom projectors' L range depends on all of
    them, as in OpenMX). ``energy_cutoff`` (Rydberg) sets V_xc's grid, as
    ``scf.energycutoff`` does. Every file is read here, so a missing or broken one is
    named before any work; the terms keep their radial tables between structures.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        basis: Mapping[str, str],
        pseudopotentials: Mapping[str, str],
        energy_cutoff: float = ENERGY_CUTOFF,
    ):
        if not basis:
            raise H0Error("no species given")
        missing = [s for s in basis if s not in pseudopotentials]
        if missing:
            raise H0Error(
                f"no pseudopotential named for element {', '.join(missing)} (basis {dict(basis)})"
            )
        self.folder = Path(folder)
        self.openmx_basis = dict(basis)
        self.pseudopotentials = {s: pseudopotentials[s] for s in basis}
        self.energy_cutoff = float(energy_cutoff)
        self.valence = _check_files(self.folder, self.openmx_basis, self.pseudopotentials)
        args = (self.folder, self.openmx_basis, self.pseudopotentials)
        overlap = TwoCentreOverlap.from_pao_folder(self.folder, self.openmx_basis)
        self.overlap = overlap
        self.basis: Basis = overlap.basis
        self.cutoffs = {s: overlap.species(s).cutoff for s in basis}
        self.kinetic = KineticEnergy(overlap)
        self.neutral_atom = NeutralAtomPotential.from_folder(*args)
        self.exchange_correlation = ExchangeCorrelation.from_folder(
            *args, energy_cutoff=self.energy_cutoff
        )
        self._nonlocal: dict[bool, NonlocalPseudopotential] = {}
        #: seconds per term of the last :meth:`operator` / :meth:`terms` call
        self.timings: dict[str, float] = {}

    def nonlocal_term(self, spinful: bool) -> NonlocalPseudopotential:
        """V_NL, j-averaged (collinear) or with the j-dependent projectors (spinful)."""
        if spinful not in self._nonlocal:
            self._nonlocal[spinful] = NonlocalPseudopotential.from_folder(
                self.folder, self.openmx_basis, self.pseudopotentials, spinful=spinful
            )
        return self._nonlocal[spinful]

    # ------------------------------------------------------------------ structures
    def check(self, atoms: Atoms) -> None:
        """:func:`check_structure` against this H0's species."""
        check_structure(atoms, self.openmx_basis)

    def edges(self, atoms: Atoms) -> np.ndarray:
        """The blocks OpenMX keeps for ``atoms`` (:func:`openmx_edges`)."""
        self.check(atoms)
        radii = np.array([self.cutoffs[s] for s in atoms.get_chemical_symbols()])
        return openmx_edges(atoms, radii)

    def _prepared(self, atoms: Atoms, edges: np.ndarray | None) -> np.ndarray:
        if edges is None:
            return self.edges(atoms)
        self.check(atoms)
        return np.asarray(edges, dtype=np.int64).reshape(-1, 5)

    # ------------------------------------------------------------------ operators
    def terms(
        self, atoms: Atoms, edges: np.ndarray | None = None, spinful: bool = False
    ) -> dict[str, BlockOperator]:
        """The four terms on the same edges, each as its module builds it: T, V_NA and
        V_xc spinless, V_NL spinless or spinor (``spinful``). For term-by-term checks;
        :meth:`operator` adds them with less memory."""
        edges = self._prepared(atoms, edges)
        out = {}
        for name in TERMS:
            start = time.perf_counter()
            out[name] = self._term(name, atoms, edges, spinful)
            self.timings[name] = time.perf_counter() - start
        return out

    def _term(self, name: str, atoms: Atoms, edges: np.ndarray, spinful: bool) -> BlockOperator:
        if name == "V_NL":
            return self.nonlocal_term(spinful).operator(atoms, edges)
        term = {
            "T": self.kinetic,
            "V_NA": self.neutral_atom,
            "V_xc": self.exchange_correlation,
        }[name]
        return term.operator(atoms, edges)

    def operator(
        self, atoms: Atoms, edges: np.ndarray | None = None, spinful: bool = False
    ) -> BlockOperator:
        """H0 (eV) of ``atoms`` on ``edges`` (default: OpenMX's, :meth:`edges`), spinless
        or in the spinor layout with spin-orbit coupling (``spinful``). A structure with
        initial magnetic moments is refused (V_xc of a polarised start is not built)."""
        edges = self._prepared(atoms, edges)
        values = np.zeros(0)
        for name in ("T", "V_NA", "V_xc"):  # spin-independent: summed before any lift
            start = time.perf_counter()
            part = self._term(name, atoms, edges, False).values
            values = part if name == "T" else np.add(values, part, out=values)
            self.timings[name] = time.perf_counter() - start
        start = time.perf_counter()
        # V_NL's blocks are written with the spinless sum on their spin diagonals: no
        # spinor lift and no second operator of the spinor size (0.7 GB at 762 atoms)
        h0 = self.nonlocal_term(spinful).operator(atoms, edges, spinless=values)
        self.timings["V_NL"] = time.perf_counter() - start
        return h0

    def structure(
        self, atoms: Atoms, edges: np.ndarray | None = None, spinful: bool = False
    ) -> ElectronicStructure:
        """H0 and the exact S on the same edges, with the records a dataset keeps
        (OpenMX basis strings, valence per element, electron count)."""
        edges = self._prepared(atoms, edges)
        h0 = self.operator(atoms, edges, spinful)
        s = self.overlap.operator(atoms, edges)
        symbols = atoms.get_chemical_symbols()
        present = sorted(set(symbols), key=chemical_symbols.index)
        extra = {
            "openmx_basis": {e: self.openmx_basis[e] for e in present},
            "valence": {e: self.valence[e] for e in present},
            "n_electrons": float(sum(self.valence[e] for e in symbols)),
        }
        return ElectronicStructure(atoms, h0, s, None, SOURCE, extra)


def _check_files(
    folder: Path, basis: Mapping[str, str], pseudopotentials: Mapping[str, str]
) -> dict[str, float]:
    """Read every file once with the readers that name file and problem (a missing,
    unreadable or malformed file fails here, before any work); the valence charge of
    every element, the pseudo-ion's (what OpenMX counts electrons with)."""
    valence = {}
    for symbol, text in basis.items():
        try:
            name, _ = parse_openmx_basis(text)
        except ValueError as err:
            raise H0Error(f"basis {text!r} of {symbol}: {err}") from None
        path = find_pao(folder, name)
        pao = read_pao(path)
        pao.shells(text)  # the basis's functions are in the file
        read_valence_density(path)
        vps = read_vps(find_vps(folder, pseudopotentials[symbol]))
        if vps.atomic_number != chemical_symbols.index(symbol):
            raise H0Error(
                f"{vps.path}: a pseudopotential of Z = {vps.atomic_number}, named for {symbol}"
            )
        valence[symbol] = vps.valence
    return valence


# --------------------------------------------------------------------------- sources


@functools.lru_cache(maxsize=8)
def _cached(
    folder: str,
    basis: tuple[tuple[str, str], ...],
    pseudo: tuple[tuple[str, str], ...],
    energy_cutoff: float,
) -> ZerothStepHamiltonian:
    return ZerothStepHamiltonian(folder, dict(basis), dict(pseudo), energy_cutoff)


def h0_builder(
    folder: str | os.PathLike,
    basis: Mapping[str, str],
    pseudopotentials: Mapping[str, str],
    energy_cutoff: float = ENERGY_CUTOFF,
) -> ZerothStepHamiltonian:
    """A :class:`ZerothStepHamiltonian`, shared by every caller asking for the same
    species, files and cutoff (its setup and radial tables are then built once)."""
    key_basis = tuple(sorted(basis.items()))
    key_pseudo = tuple(sorted((s, pseudopotentials[s]) for s in basis if s in pseudopotentials))
    if len(key_pseudo) < len(key_basis):
        missing = [s for s in basis if s not in pseudopotentials]
        raise H0Error(f"no pseudopotential named for element {', '.join(missing)}")
    folder = str(Path(folder).resolve())
    return _cached(folder, key_basis, key_pseudo, float(energy_cutoff))


def bundled_species(elements: Iterable[str]) -> tuple[dict[str, str], dict[str, str]]:
    """(basis strings, pseudopotential names) of the bundled files for ``elements``;
    an element they lack is named."""
    elements = list(elements)
    missing = [e for e in elements if e not in DEFAULT_SPECIES]
    if missing:
        raise H0Error(
            f"no pseudopotential for element {', '.join(missing)} among the bundled ones "
            f"({', '.join(DEFAULT_SPECIES)}): name its basis and .vps and a DATA.PATH holding them"
        )
    basis = {e: DEFAULT_SPECIES[e][0] for e in elements}
    return basis, {e: DEFAULT_SPECIES[e][1] for e in elements}


def resolve_h0(
    basis: Basis,
    openmx_basis: Mapping[str, str] | None = None,
    data_path: str | os.PathLike | None = None,
    pseudopotentials: Mapping[str, str] | None = None,
    energy_cutoff: float = ENERGY_CUTOFF,
) -> ZerothStepHamiltonian:
    """The H0 source for a basis (every species of ``basis`` is the calculation's):
    the files in ``data_path`` (OpenMX's DATA.PATH layout) when given, else the bundled
    Mo/Te set (:func:`~ase_moireh.data.bundled_openmx_data_path`). Basis strings and
    pseudopotential names default to the bundled ones (the corpus's); the shells of
    ``basis`` must be those of the basis strings. Cached (:func:`h0_builder`)."""
    elements = list(basis)
    default_basis, default_pseudo = (
        bundled_species([e for e in elements if e in DEFAULT_SPECIES])
        if data_path is not None
        else bundled_species(elements)
    )
    named = {**default_basis, **(openmx_basis or {})}
    pseudo = {**default_pseudo, **(pseudopotentials or {})}
    lacking = [e for e in elements if e not in named or e not in pseudo]
    if lacking:
        raise H0Error(
            f"no basis string or pseudopotential for element {', '.join(lacking)}: "
            "name both (openmx_basis, pseudopotentials)"
        )
    if data_path is None:
        other = {e: b for e, b in named.items() if e in elements and default_basis[e] != b}
        other.update({e: p for e, p in pseudo.items() if e in elements and default_pseudo[e] != p})
        if other:
            raise H0Error(
                f"{other} is not among the bundled files ({default_basis}, {default_pseudo}): "
                "name a DATA.PATH holding them"
            )
    wrong = [e for e in elements if parse_openmx_basis(named[e])[1] != basis[e].shells]
    if wrong:
        given = {e: named[e] for e in wrong}
        shells = {e: basis[e].dftio_string() for e in wrong}
        raise H0Error(f"basis strings {given} do not give the shells {shells}")
    folder = bundled_openmx_data_path() if data_path is None else data_path
    chosen = {e: named[e] for e in elements}
    return h0_builder(folder, chosen, {e: pseudo[e] for e in elements}, energy_cutoff)


def h0_of(
    structure: ElectronicStructure,
    data_path: str | os.PathLike | None = None,
    pseudopotentials: Mapping[str, str] | None = None,
) -> BlockOperator:
    """H0 of a structure that has H (a corpus entry, a converted run, a prediction) on
    H's blocks and in H's spin layout: what dH = H - H0 needs (the counterpart of
    :func:`~ase_moireh.overlap.with_overlap`). The positions are taken as given: for
    OpenMX's own grid, OpenMX's positions (a converted run's or a corpus entry's)."""
    h = structure.hamiltonian
    source = resolve_h0(h.basis, structure.extra.get("openmx_basis"), data_path, pseudopotentials)
    return source.operator(structure.atoms, h.edges, h.spinful)


# --------------------------------------------------------------------------- inputs

_ENERGY_CUTOFF = re.compile(r"^scf\.energycutoff\s+(\S+)", re.I | re.M)


def input_species(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, str], float]:
    """(basis strings, pseudopotential names, scf.energycutoff in Ry) per element of an
    OpenMX input (a corpus entry's ``openmx_in.dat``): what its H0 is made of."""
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        raise H0Error(f"{path}: cannot read ({err.strerror or err})") from None
    lines = clean_lines(text.splitlines())
    elements = species_elements(lines, path)
    basis, pseudo = {}, {}
    for row in input_block(lines, "Definition.of.Atomic.Species", path):
        basis[elements[row[0]]], pseudo[elements[row[0]]] = row[1], row[2]
    match = _ENERGY_CUTOFF.search("\n".join(lines))
    return basis, pseudo, float(match.group(1)) if match else ENERGY_CUTOFF


__all__ = [
    "H0Error",
    "SOURCE",
    "ZerothStepHamiltonian",
    "bundled_species",
    "check_separation",
    "check_structure",
    "h0_builder",
    "h0_of",
    "input_species",
    "openmx_edges",
    "resolve_h0",
]
