"""Corrections fitted to OpenMX PBE-D3, added to a universal potential + D3 for MoTe2.

Measured against OpenMX PBE + D3(BJ) (``benchmarks/results/relax.md``), SevenNet's 7net-0
+ D3 gets the MX interlayer distance right but (1) makes the MM/MX stacking landscape 2.4x
too flat and (2) is about 2.2x too soft within a layer (its in-plane forces on perturbed
cells are 0.45x OpenMX's; its E' phonon at Gamma is 158 cm^-1). Two small, physical terms
repair that, each fitted on its own data (``benchmarks/fit_corrections.py``):

* **between layers** (:class:`PairTerm`), fitted to the rigid stacking curves:

      E = sum over pairs (i, j in different layers) of
          A_ab exp(-(r_ij - R0) / lambda_ab) [exp(-rho_ij^2 / delta_ab^2)] f_c(r_ij)

  with an amplitude A_ab (eV at ``R0``; > 0 repulsive) and decay lambda_ab (A) per
  species pair, optionally a registry factor in the in-plane part rho of the pair vector
  (width delta_ab: atoms stacked on top of each other repel, as in Kolmogorov-Crespi
  potentials; layer normals along z) and a cosine cutoff f_c from ``R_ON`` to ``R_CUT``;
* **within layers** (:class:`Spring`), fitted to the forces of perturbed cells: harmonic
  springs 1/2 k (r - r0)^2 on the nearest intralayer bonds (Mo-Te, Mo-Mo, Te-Te in one
  chalcogen plane and across the metal plane) with r0 the material's geometry, so the
  layers keep the geometry the Hamiltonian models were trained on.

Layers come from ``atoms.arrays['layer']`` (set by the builders, kept by extxyz) or else
from the bond graph (:func:`ase_moireh.domain.layer_labels`).
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

#: interlayer amplitudes are given at this pair distance (A): keeps them of order 0.01-1 eV
R0 = 4.0
#: the interlayer cosine cutoff starts here and ends at R_CUT (A)
R_ON, R_CUT = 8.0, 10.0
#: intralayer springs act within this distance (A): the nearest Mo-Te (2.7 A), Mo-Mo and
#: same-plane Te-Te (a = 3.5 A) and the Te-Te pair across the metal plane (3.6 A); the
#: next shells start at 4.5 A
SPRING_CUT = 4.2
#: chalcogens further apart than this along z are in opposite planes of their layer (A)
PLANE_SPLIT = 1.8


@dataclass(frozen=True)
class PairTerm:
    """One interlayer species pair's exponential: amplitude (eV at :data:`R0`), decay (A)."""

    species: tuple[str, str]
    amplitude: float
    decay: float
    #: Gaussian width (A) in the in-plane part rho of the pair vector, or None
    registry: float | None = None


@dataclass(frozen=True)
class Spring:
    """One intralayer bond kind: species, chalcogen planes ("same", "opposite" or "any"),
    rest length r0 (A) and stiffness k (eV/A^2)."""

    species: tuple[str, str]
    planes: str
    length: float
    stiffness: float


@dataclass(frozen=True)
class Pairs:
    """Directed pairs (i, j) of atoms in different layers (``across``) or the same one,
    with vectors r_j - r_i (periodic images included) and species; kept so that a fit
    evaluates many parameter sets on one geometry."""

    i: np.ndarray
    j: np.ndarray
    vec: np.ndarray
    species_i: np.ndarray
    species_j: np.ndarray
    natoms: int
    volume: float | None

    @property
    def d(self) -> np.ndarray:
        return np.linalg.norm(self.vec, axis=1)

    def of(self, species: tuple[str, str]) -> np.ndarray:
        a, b = species
        si, sj = self.species_i, self.species_j
        return ((si == a) & (sj == b)) | ((si == b) & (sj == a))


def layer_pairs(atoms: Atoms, cutoff: float, across: bool) -> Pairs:
    """The :class:`Pairs` within ``cutoff`` between layers (``across``) or within them."""
    from ase_moireh.domain import layer_labels

    i, j, vec = neighbor_list("ijD", atoms, cutoff)
    layer = np.asarray(atoms.arrays["layer"]) if "layer" in atoms.arrays else layer_labels(atoms)
    keep = (layer[i] != layer[j]) if across else (layer[i] == layer[j])
    symbols = np.array(atoms.get_chemical_symbols())
    i, j = i[keep], j[keep]
    volume = atoms.get_volume() if atoms.cell.rank == 3 else None
    return Pairs(i, j, vec[keep], symbols[i], symbols[j], len(atoms), volume)


def cutoff(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine cutoff, 1 below :data:`R_ON`, 0 beyond :data:`R_CUT`, and its derivative."""
    t = np.clip((r - R_ON) / (R_CUT - R_ON), 0.0, 1.0)
    f = 0.5 * (1.0 + np.cos(np.pi * t))
    df = np.where((t > 0) & (t < 1), -0.5 * np.pi * np.sin(np.pi * t) / (R_CUT - R_ON), 0.0)
    return f, df


def pair_energy(term: PairTerm, vec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An interlayer term on pair vectors ``vec`` (A, (n, 3)) and its gradient d/d(vec)."""
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


def spring_mask(pairs: Pairs, spring: Spring) -> np.ndarray:
    """The pairs a spring acts on: its species, and for chalcogen pairs its planes."""
    mask = pairs.of(spring.species)
    if spring.planes != "any":
        opposite = np.abs(pairs.vec[:, 2]) > PLANE_SPLIT
        mask &= opposite if spring.planes == "opposite" else ~opposite
    return mask


def spring_energy(spring: Spring, vec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1/2 k (r - r0)^2 on pair vectors ``vec`` and its gradient d/d(vec)."""
    r = np.linalg.norm(vec, axis=1)
    stretch = r - spring.length
    grad = (spring.stiffness * stretch / np.maximum(r, 1e-12))[:, None] * vec
    return 0.5 * spring.stiffness * stretch**2, grad


def _sum_pairs(pairs: Pairs, e: np.ndarray, pull: np.ndarray):
    """Energy, forces and stress of per-pair energies ``e`` with gradients ``pull`` =
    dE/d(r_j - r_i); every pair is listed twice, (i, j) and (j, i), hence the halves."""
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


def evaluate(pairs: Pairs, terms: list[PairTerm]) -> tuple[float, np.ndarray, np.ndarray]:
    """Interlayer energy (eV), forces (eV/A), stress (eV/A^3, Voigt; zero without a cell)."""
    e = np.zeros(len(pairs.i))
    pull = np.zeros_like(pairs.vec)
    for term in terms:
        mask = pairs.of(term.species)
        e[mask], pull[mask] = pair_energy(term, pairs.vec[mask])
    return _sum_pairs(pairs, e, pull)


def evaluate_springs(pairs: Pairs, springs: list[Spring]) -> tuple[float, np.ndarray, np.ndarray]:
    """Intralayer spring energy, forces and stress, as :func:`evaluate`."""
    e = np.zeros(len(pairs.i))
    pull = np.zeros_like(pairs.vec)
    for spring in springs:
        mask = spring_mask(pairs, spring)
        e[mask], pull[mask] = spring_energy(spring, pairs.vec[mask])
    return _sum_pairs(pairs, e, pull)


class Corrections(Calculator):
    """ASE calculator of both corrections (energy, forces, stress); sum it with the base
    potential (:class:`ase.calculators.mixing.SumCalculator`)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, terms: list[PairTerm], springs: list[Spring] = (), **kwargs) -> None:
        super().__init__(**kwargs)
        self.terms, self.springs = list(terms), list(springs)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Corrections:
        """Parameters from the JSON written by ``benchmarks/fit_corrections.py``."""
        try:
            data = json.loads(Path(path).read_text())
            terms = [
                PairTerm(tuple(t["species"]), t["amplitude"], t["decay"], t.get("registry"))
                for t in data["interlayer"]["terms"]
            ]
            springs = [
                Spring(tuple(s["species"]), s["planes"], s["length"], s["stiffness"])
                for s in data.get("intralayer", {}).get("springs", [])
            ]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a corrections file ({err})") from None
        return cls(terms, springs)

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """ASE's checks plus the layer labels, which the energy depends on too."""
        changes = super().check_state(atoms, tol)
        old = None if self.atoms is None else self.atoms.arrays.get("layer")
        if old is not None and not np.array_equal(old, atoms.arrays.get("layer")):
            changes.append("layer")
        return changes

    @property
    def elements(self) -> frozenset[str]:
        parts = [*self.terms, *self.springs]
        return frozenset(s for p in parts for s in p.species)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        energy, forces, stress = evaluate(layer_pairs(self.atoms, R_CUT, True), self.terms)
        if self.springs:
            same = layer_pairs(self.atoms, SPRING_CUT, False)
            e2, f2, s2 = evaluate_springs(same, self.springs)
            energy, forces, stress = energy + e2, forces + f2, stress + s2
        self.results = {"energy": energy, "free_energy": energy, "forces": forces, "stress": stress}


def bundled_correction(name: str) -> Corrections:
    """Corrections shipped in ``ase_moireh/data/corrections/<name>.json``."""
    with resources.as_file(
        resources.files("ase_moireh.data") / "corrections" / f"{name}.json"
    ) as p:
        if not p.exists():
            raise ValueError(f"no bundled corrections {name!r} ({p})")
        return Corrections.from_file(p)
