"""A fitted interlayer correction: pair terms between atoms of different layers, added to
a universal potential + D3 so that the stacking landscape matches OpenMX PBE-D3.

Why: a universal potential trained on PBE data (MPtrj) plus D3 gets the intralayer
bonds and the MX distance right but makes the MM/MX landscape of R-stacked MoTe2 2.4x too
flat (``benchmarks/results/relax.md``). Within a layer nothing needs correcting, and
between rigid layers the error is a smooth function of the interlayer geometry alone, so
it is fitted as such, on the reference stacking curves, with few parameters:

    E = sum over pairs (i in layer 0, j in layer 1) of
        A_ab exp(-(r_ij - R0) / lambda_ab) [exp(-rho_ij^2 / delta_ab^2)] f_c(r_ij)

with an amplitude A_ab (eV at ``R0``; > 0 repulsive) and decay length lambda_ab (A) per
species pair, optionally a registry factor in the in-plane part rho of the pair vector
(width delta_ab: atoms stacked on top of each other repel, as in Kolmogorov-Crespi
potentials), and a cosine cutoff f_c from ``R_ON`` to ``R_CUT``. Registry-dependent
interlayer terms beside an intralayer potential are how classical relaxations of twisted
TMDs are done; here the term is a residual over a machine-learned potential. Layers come
from ``atoms.arrays['layer']`` (set by the builders, kept by extxyz) or else from the bond
graph. Parameters live in a JSON file beside the fit's provenance
(``benchmarks/fit_interlayer.py``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.neighborlist import neighbor_list

#: amplitudes are given at this pair distance (A), which keeps them of order 0.01-1 eV
R0 = 4.0
#: the cosine cutoff starts here and ends at R_CUT (A): beyond the third interlayer shell
R_ON, R_CUT = 8.0, 10.0


@dataclass(frozen=True)
class PairTerm:
    """One species pair's exponential: amplitude (eV at :data:`R0`) and decay (A)."""

    species: tuple[str, str]
    amplitude: float
    decay: float
    #: Gaussian width (A) in the in-plane part rho of the pair vector, or None: with it
    #: the term acts on pairs stacked on top of each other (registry), as in
    #: Kolmogorov-Crespi potentials (layer normals taken along z: flat-ish layers)
    registry: float | None = None

    def key(self) -> frozenset[str]:
        return frozenset(self.species)


def cutoff(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine cutoff, 1 below :data:`R_ON`, 0 beyond :data:`R_CUT`, and its derivative."""
    t = np.clip((r - R_ON) / (R_CUT - R_ON), 0.0, 1.0)
    f = 0.5 * (1.0 + np.cos(np.pi * t))
    df = np.where((t > 0) & (t < 1), -0.5 * np.pi * np.sin(np.pi * t) / (R_CUT - R_ON), 0.0)
    return f, df


def pair_energy(term: PairTerm, vec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The term on pair vectors ``vec`` (A, shape (n, 3)) and its gradient d/d(vec)."""
    r = np.linalg.norm(vec, axis=1)
    radial = term.amplitude * np.exp(-(r - R0) / term.decay)
    f, df = cutoff(r)
    g = np.ones_like(r)
    grad = ((radial * (df - f / term.decay)) / np.maximum(r, 1e-12))[:, None] * vec
    if term.registry is not None:
        g = np.exp(-(vec[:, 0] ** 2 + vec[:, 1] ** 2) / term.registry**2)
        grad *= g[:, None]
        grad[:, :2] += (radial * f * g * (-2.0 / term.registry**2))[:, None] * vec[:, :2]
    return radial * f * g, grad


@dataclass(frozen=True)
class Pairs:
    """Directed pairs (i, j) within :data:`R_CUT` of atoms in different layers: distances,
    vectors r_j - r_i (periodic images included) and the two species; what the energy
    needs, kept so that a fit evaluates many parameter sets on one geometry."""

    i: np.ndarray
    j: np.ndarray
    d: np.ndarray
    vec: np.ndarray
    species_i: np.ndarray
    species_j: np.ndarray
    natoms: int
    volume: float | None

    def of(self, species: tuple[str, str]) -> np.ndarray:
        a, b = species
        si, sj = self.species_i, self.species_j
        return ((si == a) & (sj == b)) | ((si == b) & (sj == a))


def interlayer_pairs(atoms: Atoms) -> Pairs:
    """The :class:`Pairs` of ``atoms``; layers from ``atoms.arrays['layer']``, else the
    connected parts of the bond graph (:func:`ase_moireh.domain.layer_labels`)."""
    from ase_moireh.domain import layer_labels

    i, j, d, vec = neighbor_list("ijdD", atoms, R_CUT)
    layer = np.asarray(atoms.arrays["layer"]) if "layer" in atoms.arrays else layer_labels(atoms)
    keep = layer[i] != layer[j]
    symbols = np.array(atoms.get_chemical_symbols())
    i, j = i[keep], j[keep]
    volume = atoms.get_volume() if atoms.cell.rank == 3 else None
    return Pairs(i, j, d[keep], vec[keep], symbols[i], symbols[j], len(atoms), volume)


def evaluate(pairs: Pairs, terms: list[PairTerm]) -> tuple[float, np.ndarray, np.ndarray]:
    """Energy (eV), forces (eV/A) and stress (eV/A^3, Voigt; zero without a 3D cell)."""
    e = np.zeros(len(pairs.d))
    pull = np.zeros_like(pairs.vec)  # dE/d(r_j - r_i) of each directed pair
    for term in terms:
        mask = pairs.of(term.species)
        e[mask], pull[mask] = pair_energy(term, pairs.vec[mask])
    # every pair appears twice, (i, j) and (j, i): halves below
    energy = 0.5 * float(e.sum())
    forces = np.zeros((pairs.natoms, 3))
    np.add.at(forces, pairs.i, 0.5 * pull)
    np.add.at(forces, pairs.j, -0.5 * pull)
    stress = np.zeros(6)
    if pairs.volume is not None:
        virial = 0.5 * np.einsum("pa,pb->ab", pull, pairs.vec) / pairs.volume
        virial = 0.5 * (virial + virial.T)  # a symmetric strain's response (rho: not central)
        stress = virial[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    return energy, forces, stress


class InterlayerCorrection(Calculator):
    """ASE calculator of the interlayer pair terms (energy, forces, stress); sum it with
    the base potential (:class:`ase.calculators.mixing.SumCalculator`)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, terms: list[PairTerm], **kwargs) -> None:
        super().__init__(**kwargs)
        self.terms = {t.key(): t for t in terms}

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> InterlayerCorrection:
        """Parameters from the JSON written by ``benchmarks/fit_interlayer.py``."""
        try:
            data = json.loads(Path(path).read_text())
            terms = [
                PairTerm(tuple(t["species"]), t["amplitude"], t["decay"], t.get("registry"))
                for t in data["terms"]
            ]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not an interlayer-correction file ({err})") from None
        return cls(terms)

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """ASE's checks plus the layer labels, which the energy depends on too."""
        changes = super().check_state(atoms, tol)
        old = None if self.atoms is None else self.atoms.arrays.get("layer")
        if old is not None and not np.array_equal(old, atoms.arrays.get("layer")):
            changes.append("layer")
        return changes

    @property
    def elements(self) -> frozenset[str]:
        return frozenset(s for t in self.terms.values() for s in t.species)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        energy, forces, stress = evaluate(interlayer_pairs(self.atoms), list(self.terms.values()))
        self.results = {"energy": energy, "free_energy": energy, "forces": forces, "stress": stress}


def bundled_correction(name: str) -> InterlayerCorrection:
    """A correction shipped in ``ase_moireh/data/interlayer/<name>.json``."""
    with resources.as_file(resources.files("ase_moireh.data") / "interlayer" / f"{name}.json") as p:
        if not p.exists():
            raise ValueError(f"no bundled interlayer correction {name!r} ({p})")
        return InterlayerCorrection.from_file(p)
