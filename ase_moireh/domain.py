"""A model's domain, and whether a structure lies inside it.

A model learned H from a handful of structure kinds (MoTe2 bilayers with ~20 A of
vacuum, bonds within a few hundredths of an Angstrom of equilibrium). Outside them it
still returns numbers, and they can be wrong without any sign: a monolayer, a bulk-like
stack whose periodic images sit inside the model's cutoff, a squeezed lattice. The
training code records a :class:`ModelDomain` of its structures in the model file; the
calculator checks every structure against it before predicting.

Findings come in two grades:

* **severe** (raise :class:`OutOfDomainError` unless the user opts out): an element the
  model does not know, atoms that overlap (closer than half of the closest pair in
  training), periodic images inside the cutoff where training had none (a bulk-like
  stack);
* **mild** (:class:`OutOfDomainWarning`): another number of layers than in training, a
  nearest-neighbour distance or closest pair outside the training range by more than
  ``BOND_TOLERANCE``, an ensemble spread above what validation saw.

Layers are the connected parts of the bond graph (bonds: ASE's covalent radii x
``BOND_SCALE``, which in MX2 layers links each metal to its chalcogens and nothing across
the van der Waals gap). Vacuum is the widest empty slab along the normal of the a-b
plane, periodic images included.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from itertools import combinations_with_replacement

import numpy as np
import scipy.sparse as sp
from ase import Atoms
from ase.data import covalent_radii
from scipy.sparse.csgraph import connected_components

from ase_moireh.neighbours import neighbour_pairs

#: covalent radii x this make a bond (Mo-Te 2.73 A bonds: 3.2 A; Te-Te across the gap: no)
BOND_SCALE = 1.1
#: distances may leave the training range by this much (A) before a warning
BOND_TOLERANCE = 0.08
#: atoms closer than this fraction of the closest pair in training overlap (severe)
OVERLAP_FRACTION = 0.5
#: an ensemble spread above this multiple of validation's is flagged
SPREAD_FACTOR = 2.0


#: how the calculator opts out of refusals (the CLI's commands: ``--no-domain-check``)
OPT_OUT = "domain_check=False"


class OutOfDomainError(ValueError):
    """The structure is outside anything the model was trained on: its H is not to be
    trusted at all. The message names how to compute it anyway: ``domain_check=False``
    for the calculator; :meth:`explained` words it for another interface."""

    def __init__(self, where: str, reasons: list[str], opt_out: str = OPT_OUT):
        self.where, self.reasons = where, list(reasons)
        super().__init__(self.explained(opt_out))

    def explained(self, opt_out: str) -> str:
        """The refusal, naming ``opt_out`` as the way to compute anyway."""
        return (
            f"{self.where} is outside the model's domain: " + "; ".join(self.reasons) + ". "
            f"Its H would be meaningless; pass {opt_out} to compute it anyway"
        )

    def __reduce__(self):  # pickled across processes with its reasons, not its message
        return type(self), (self.where, self.reasons)


class OutOfDomainWarning(UserWarning):
    """The structure differs from the training structures: expect larger errors."""


@dataclass
class ModelDomain:
    """What the training structures spanned (distances in Angstrom)."""

    species: list[str]
    layers: list[int]
    #: smallest empty slab between periodic images along the cell normal (inf: none)
    vacuum_min: float
    #: per element: [min, max] of each atom's nearest-neighbour distance
    nearest: dict[str, list[float]]
    #: per element pair "A-B" (sorted): closest distance
    closest: dict[str, float]
    #: largest ensemble spread (eV) seen on validation, when known
    spread_max: float | None = None
    structures: list[str] = field(default_factory=list)
    #: [min, max] of the local metal-metal interlayer distance over the bilayers
    #: (:func:`local_interlayer_range`; relaxed moire cells span MM to MX), None: unknown
    interlayer: list[float] | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["vacuum_min"] = None if np.isinf(self.vacuum_min) else self.vacuum_min
        return out

    @classmethod
    def from_dict(cls, data: dict) -> ModelDomain:
        data = dict(data)
        data["vacuum_min"] = np.inf if data.get("vacuum_min") is None else data["vacuum_min"]
        return cls(**data)


@dataclass
class Geometry:
    """The domain-relevant measures of one structure."""

    species: list[str]
    layers: int
    vacuum: float
    nearest: dict[str, list[float]]
    closest: dict[str, float]
    interlayer: list[float] | None = None


def pair_key(a: str, b: str) -> str:
    return "-".join(sorted((a, b)))


def measure(atoms: Atoms, reach: float = 8.0) -> Geometry:
    """Layers, vacuum, nearest-neighbour ranges and closest pairs within ``reach`` A."""
    symbols = np.array(atoms.get_chemical_symbols(), dtype=object)
    i, j, _, d = neighbour_pairs(atoms, reach)
    elements, kind = np.unique(symbols, return_inverse=True)  # sorted element names
    per_atom = np.full(len(atoms), np.inf)
    np.minimum.at(per_atom, i, d)
    nearest = {
        str(e): [float(per_atom[kind == k].min()), float(per_atom[kind == k].max())]
        for k, e in enumerate(elements)
    }
    low, high = np.minimum(kind[i], kind[j]), np.maximum(kind[i], kind[j])
    code = low * len(elements) + high  # integer pair codes: no string per pair
    shortest = np.full(len(elements) ** 2, np.inf)
    np.minimum.at(shortest, code, d)
    closest = dict(
        sorted(
            (pair_key(*elements[[c // len(elements), c % len(elements)]]), float(shortest[c]))
            for c in np.flatnonzero(np.isfinite(shortest))
        )
    )
    layers = layer_labels(atoms) if len(atoms) else np.zeros(0, dtype=int)
    return Geometry(
        species=sorted(set(atoms.get_chemical_symbols())),
        layers=int(layers.max()) + 1 if len(atoms) else 0,
        vacuum=vacuum_width(atoms),
        nearest=nearest,
        closest=closest,
        interlayer=local_interlayer_range(atoms, layers),
    )


def local_interlayer_range(atoms: Atoms, layers: np.ndarray | None = None) -> list[float] | None:
    """[min, max] (A) of the local metal-metal interlayer distance of a bilayer of an MX2
    material (the metal: its rarer element), None for anything else."""
    from ase_moireh.build.relax import local_interlayer_distance

    layers = layer_labels(atoms) if layers is None else layers
    symbols, counts = np.unique(atoms.get_chemical_symbols(), return_counts=True)
    if (
        len(atoms) == 0
        or layers.max() != 1
        or len(symbols) != 2
        or counts.max() != 2 * counts.min()
    ):
        return None
    labelled = atoms.copy()
    labelled.arrays["layer"] = layers
    labelled.info["material"] = None  # the metal by count
    local = local_interlayer_distance(labelled)
    return [float(local.min()), float(local.max())]


def count_layers(atoms: Atoms) -> int:
    """Connected parts of the bond graph (periodic images joined)."""
    return 0 if len(atoms) == 0 else int(layer_labels(atoms).max()) + 1


def layer_labels(atoms: Atoms) -> np.ndarray:
    """Per atom, its connected part of the bond graph (periodic images joined), numbered
    0, 1, ... by increasing mean z: the builders' ``layer`` array for a structure that
    comes without one."""
    radii = covalent_radii[atoms.numbers] * BOND_SCALE
    i, j, _, d = neighbour_pairs(atoms, 2 * radii.max())
    bonded = d < radii[i] + radii[j]  # ASE's per-atom cutoffs: a bond below r_i + r_j
    i, j = i[bonded], j[bonded]
    graph = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(len(atoms), len(atoms)))
    count, labels = connected_components(graph, directed=False)
    heights = [atoms.positions[labels == c, 2].mean() for c in range(count)]
    order = np.empty(count, dtype=int)
    order[np.argsort(heights)] = np.arange(count)
    return order[labels]


def vacuum_width(atoms: Atoms) -> float:
    """Widest atom-free slab along the a-b plane's normal, periodic images included
    (inf when the third direction is not periodic)."""
    if not atoms.pbc[2]:
        return np.inf
    cell = np.asarray(atoms.cell)
    normal = np.cross(cell[0], cell[1])
    normal /= np.linalg.norm(normal)
    height = abs(float(cell[2] @ normal))
    heights = np.sort(np.mod(atoms.positions @ normal, height))
    gaps = np.diff(np.concatenate([heights, [heights[0] + height]]))
    return float(gaps.max())


def domain_of(structures: list[Atoms], names: list[str] | None = None) -> ModelDomain:
    """The domain spanned by training structures."""
    return _span([measure(a) for a in structures], list(names or []))


def union(a: ModelDomain, b: ModelDomain) -> ModelDomain:
    """The domain of a model trained on both (pretraining, then fine-tuning)."""
    as_geometry = [
        Geometry(d.species, layer, d.vacuum_min, d.nearest, d.closest, d.interlayer)
        for d in (a, b)
        for layer in d.layers
    ]
    spread = [d.spread_max for d in (a, b) if d.spread_max is not None]
    domain = _span(as_geometry, a.structures + b.structures)
    domain.spread_max = max(spread) if spread else None
    return domain


def _span(measures: list[Geometry], names: list[str]) -> ModelDomain:
    nearest: dict[str, list[float]] = {}
    closest: dict[str, float] = {}
    spans = [m.interlayer for m in measures if m.interlayer is not None]
    for m in measures:
        for element, (lo, hi) in m.nearest.items():
            old = nearest.get(element, [np.inf, -np.inf])
            nearest[element] = [min(old[0], lo), max(old[1], hi)]
        for key, value in m.closest.items():
            closest[key] = min(closest.get(key, np.inf), value)
    return ModelDomain(
        species=sorted({s for m in measures for s in m.species}),
        layers=sorted({m.layers for m in measures}),
        vacuum_min=min(m.vacuum for m in measures),
        nearest=nearest,
        closest=closest,
        structures=names,
        interlayer=[min(lo for lo, _ in spans), max(hi for _, hi in spans)] if spans else None,
    )


def findings(atoms: Atoms, domain: ModelDomain, cutoff: float) -> tuple[list[str], list[str]]:
    """(severe, mild) reasons why ``atoms`` lies outside ``domain``; both empty if inside."""
    unknown = sorted(set(atoms.get_chemical_symbols()) - set(domain.species))
    if unknown:
        return [
            f"element(s) {', '.join(unknown)} unknown to the model (it knows "
            f"{', '.join(domain.species)})"
        ], []
    geometry = measure(atoms)
    severe, mild = _distance_findings(geometry, domain)
    if geometry.vacuum < min(cutoff, domain.vacuum_min):
        severe.append(
            f"only {geometry.vacuum:.2f} A of vacuum between periodic images along c, inside "
            f"the model's {cutoff:.2f} A cutoff: it would see a bulk-like stack, while its "
            f"training structures had at least {domain.vacuum_min:.1f} A"
        )
    mild += _interlayer_finding(geometry, domain)
    if geometry.layers not in domain.layers:
        mild.append(
            f"{geometry.layers} layer(s), while the model was trained on "
            f"{' or '.join(map(str, domain.layers))}-layer structures"
        )
    return severe, mild


def _distance_findings(geometry: Geometry, domain: ModelDomain) -> tuple[list[str], list[str]]:
    severe, mild = [], []
    for key, value in sorted(geometry.closest.items()):
        seen = domain.closest.get(key)
        if seen is None:
            continue
        if value < OVERLAP_FRACTION * seen:
            severe.append(f"{key} atoms {value:.2f} A apart overlap (training: >= {seen:.2f} A)")
        elif value < seen - BOND_TOLERANCE:
            mild.append(f"{key} atoms {value:.2f} A apart, closer than in training ({seen:.2f} A)")
    for element, (lo, hi) in sorted(geometry.nearest.items()):
        seen_lo, seen_hi = domain.nearest.get(element, (lo, hi))
        if lo < seen_lo - BOND_TOLERANCE or hi > seen_hi + BOND_TOLERANCE:
            mild.append(
                f"{element} nearest-neighbour distances {lo:.2f}-{hi:.2f} A, outside the "
                f"training range {seen_lo:.2f}-{seen_hi:.2f} A (strained or squeezed?)"
            )
    return severe, mild


def _interlayer_finding(geometry: Geometry, domain: ModelDomain) -> list[str]:
    if geometry.interlayer is None or domain.interlayer is None:
        return []
    (lo, hi), (seen_lo, seen_hi) = geometry.interlayer, domain.interlayer
    if lo >= seen_lo - BOND_TOLERANCE and hi <= seen_hi + BOND_TOLERANCE:
        return []
    return [
        f"local interlayer (metal-metal) distances {lo:.2f}-{hi:.2f} A, outside the "
        f"training range {seen_lo:.2f}-{seen_hi:.2f} A (a relaxed moire cell's MM regions?)"
    ]


def spread_finding(spread_max: float | None, domain: ModelDomain) -> list[str]:
    """A mild finding when the ensemble disagrees more than on validation (None: no
    spread known, nothing to say)."""
    if spread_max is None or domain.spread_max is None:
        return []
    if spread_max <= SPREAD_FACTOR * domain.spread_max:
        return []
    return [
        f"ensemble spread of H up to {spread_max * 1e3:.1f} meV, above {SPREAD_FACTOR:g} x "
        f"the {domain.spread_max * 1e3:.1f} meV seen on validation"
    ]


def check(
    severe: list[str], mild: list[str], strict: bool = True, where: str = "structure"
) -> None:
    """Raise on severe findings (``strict``) and warn on the others."""
    if severe and strict:
        raise OutOfDomainError(where, severe)
    for reason in severe + mild:
        warnings.warn(f"{where}: {reason}", OutOfDomainWarning, stacklevel=3)


def pairs(species: list[str]) -> list[str]:
    """Every element pair key of ``species``."""
    return [pair_key(a, b) for a, b in combinations_with_replacement(sorted(species), 2)]
