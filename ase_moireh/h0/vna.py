"""Neutral-atom potential blocks <i|V_NA|j> by OpenMX's route (``scf.ProExpn.VNA on``,
its default).

The neutral-atom potential of an atom is its local pseudopotential screened by the
Hartree potential of its own valence density, so that it vanishes beyond the atom
(``SetPara_DFT.c``, ``Read_VPS``):

    V_NA(r) = (V_loc(r) + s V_H(r)) / (1 + exp(20 (r - r_c) / Bohr)),

V_H from the ``.pao`` file's valence density (normalised to the valence charge) and s
the factor making V_loc + s V_H vanish at the grid point nearest r_c (the PAO cutoff).

OpenMX then takes two routes (``Set_ProExpn_VNA.c``):

* off-site blocks: a separable expansion of every V_NA,k over radial projectors chi_Lp
  (L <= max basis L + 6, 12 per L; PAOs then V-powers as seeds, Gram-Schmidt
  orthogonal under <f|V_NA|g>), a three-centre sum like the non-local term's

      <i|V_NA|j> = f(|d_ij|) sum_k sum_Lp E_Lp <phi_i|V chi_Lp,k><V chi_Lp,k|phi_j>,

  k running over the atoms within r_c(i) + r_c(k) of i and r_c(j) + r_c(k) of j
  (i and j themselves included) and f OpenMX's damping;
* on-site blocks: the exact two-centre integrals <phi_a phi_b|V_NA,h> of the orbital
  products of atom i with V_NA of every atom h within r_c(i) + r_c(h), i itself included
  (``Set_VNA2``), summed.

The numbers are OpenMX's to the quadrature node: Gauss-Legendre rules of 300 nodes in r
(``FT_ProExpn_VNA.c``, ``FT_ProductPAO.c``, ``Int_phi0_phi1``) and in k (``GL_NormK``),
1500 in ln r for V_H, OpenMX's own Gauss-Legendre weights (``Gauss_Legendre2``) and
interpolations (``PhiF``, ``VNAF``, ``KumoF``, ``RF_BesselF``), and V_NA's transform by
the trapezoidal rule in sqrt(r) (``FT_VNA.c``).

V_NA is spin-independent: with ``spinful`` the blocks are lifted to spinors,
uu = dd = V_NA, ud = du = 0, as OpenMX adds HVNA to both spin diagonals.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.units import Bohr, Hartree
from scipy.special import spherical_jn

from ase_moireh.basis import Basis, parse_openmx_basis
from ase_moireh.block_operator import BlockOperator, packed_offsets, spinor_lift
from ase_moireh.h0.twocentre import (
    GL_MESH,
    MIN_DISTANCE,
    NR,
    STEP,
    KineticEnergy,
    ProjectorSites,
    RadialSide,
    RadialTable,
    add_projector_products,
    at_nodes,
    damping_factors,
    openmx_gauss_legendre,
    openmx_gl_k_quadrature,
    projector_sites,
    shell_pairs,
)
from ase_moireh.io.pao import PAOFile, find_pao, interpolate_radial, read_pao
from ase_moireh.io.vps import (
    ValenceDensity,
    VPSFile,
    find_vps,
    interpolate_kumo,
    interpolate_phif,
    read_valence_density,
    read_vps,
)
from ase_moireh.overlap import SpeciesRadials, TwoCentreOverlap

#: OpenMX's scf.RadialF.VNA default: radial projectors per L
VNA_RADIAL = 12
#: OpenMX's scf.BufferL.VNA default: projector L beyond the largest basis L
VNA_BUFFER_L = 6
#: steepness of V_NA's Fermi damping at r_c (20 per Bohr), Angstrom^-1
FERMI_STEEPNESS = 20.0 / Bohr
#: e^2 / (4 pi eps0) in eV Angstrom: the Hartree potential of a density in Angstrom^-3
COULOMB = Hartree * Bohr
#: OpenMX's FineGL_Mesh: the Gauss-Legendre nodes of the atom's Hartree potential
FINE_GL_MESH = 1500
#: OpenMX's zero tests of <chi|V|chi> (1e-15 Hartree) and of norms (1e-15)
SMALL_ENERGY = 1e-15 * Hartree
SMALL = 1e-15


# --------------------------------------------------------------------------- the atom


def hartree_potential(density: ValenceDensity, charge: float, radii: np.ndarray) -> np.ndarray:
    """V_H (eV) of the atom's valence density scaled to ``charge`` electrons, at
    ``radii`` (A): inside and outside parts by Gauss-Legendre in ln r (``V_Hart_atom``),
    the density renormalised by the rectangle rule as ``Read_VPS`` does."""
    x, rho = density.x, density.scaled(charge)
    gx, gw = openmx_gauss_legendre(FINE_GL_MESH)

    def integral(lo: np.ndarray, hi: np.ndarray, power: int) -> np.ndarray:
        nodes = 0.5 * ((hi - lo)[:, None] * gx + (hi + lo)[:, None])
        r = np.exp(nodes)
        inner = interpolate_kumo(x, rho, nodes) * gw * r**power
        return 0.5 * (hi - lo) * inner.sum(axis=1)

    log_r = np.log(radii)
    inside = integral(np.full_like(log_r, x[0]), log_r, 3) / radii
    outside = integral(log_r, np.full_like(log_r, x[-1]), 2)
    return COULOMB * 4 * np.pi * (inside + outside)


def neutral_atom_potential(vps: VPSFile, density: ValenceDensity, cutoff: float) -> np.ndarray:
    """V_NA (eV) on the ``.vps`` grid: V_loc + s V_H, s making it vanish at the grid
    point nearest the PAO cutoff, Fermi-damped at the cutoff (``Read_VPS``)."""
    hartree = hartree_potential(density, vps.valence, vps.r)
    if vps.valence > 1e-15:
        nearest = int(np.argmin(np.abs(vps.r - cutoff)))
        hartree = hartree * (-vps.local[nearest] / hartree[nearest])
    return (vps.local + hartree) / (1.0 + np.exp(FERMI_STEEPNESS * (vps.r - cutoff)))


def gl_radial_rule(r0: float, r1: float) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, weights of r^2 dr) of OpenMX's 300-node Gauss-Legendre rule on [r0, r1]."""
    x, w = openmx_gauss_legendre(GL_MESH)
    nodes = 0.5 * ((r1 - r0) * x + (r1 + r0))
    return nodes, 0.5 * (r1 - r0) * w * nodes**2


class _GLRadial:
    """:func:`gl_radial_rule` applied to functions tabulated on a grid (``PhiF``
    interpolation, a linear map, held as a matrix)."""

    def __init__(self, grid: np.ndarray, r0: float, r1: float):
        self.nodes, self.weights = gl_radial_rule(r0, r1)
        self.interpolation = interpolate_phif(grid, np.eye(len(grid)), self.nodes).T

    def at_nodes(self, values: np.ndarray) -> np.ndarray:
        return values @ self.interpolation.T

    def inner(self, f: np.ndarray, g: np.ndarray) -> float:
        """int r^2 f g dr (``Int_phi0_phi1``)."""
        return float(np.sum(self.at_nodes(f) * self.at_nodes(g) * self.weights))


def _seed_functions(
    pao: PAOFile, r: np.ndarray, potential: np.ndarray, L: int, count: int
) -> np.ndarray:
    """OpenMX's starting radial functions of the projectors of one L, on r: the file's
    PAOs of that L, then V-powers (0.1 V[Hartree] + 1e-13)^m times the first (or the last
    PAO of the largest L times r^(L - Lmax) and V-powers for L beyond the file's)."""
    lmax = max(pao.functions)
    mul = len(pao.functions[lmax])
    seed = 0.1 * potential / Hartree + 1e-13

    def radial(l: int, m: int) -> np.ndarray:
        return interpolate_radial(pao.r, pao.functions[l][m], l, r)

    out = np.zeros((count, len(r)))
    for m in range(count):
        if L <= lmax:
            out[m] = radial(L, m) if m < mul else seed**m * out[0]
        elif m < mul:
            out[m] = radial(lmax, m) * (r / Bohr) ** (L - lmax)
        else:
            out[m] = radial(lmax, mul - 1) * seed ** (m - mul + 1)
    return out


def vna_projectors(
    pao: PAOFile, vps: VPSFile, potential: np.ndarray, L: int, count: int = VNA_RADIAL
) -> tuple[np.ndarray, np.ndarray]:
    """(V chi (count, n) in eV A^-3/2 on the ``.vps`` grid, energies E (count,) in 1/eV)
    of one L: seeds normalised, Gram-Schmidt orthogonal under <f|V|g>, so that
    sum_p E_p |V chi_p><V chi_p| is V on their span (``Read_VPS``)."""
    quad = _GLRadial(vps.r, vps.r[0], vps.r[-1])
    phi = _seed_functions(pao, vps.r, potential, L, count)
    for m in range(count):
        norm = quad.inner(phi[m], phi[m])
        phi[m] *= 1.0 / np.sqrt(norm) if norm > 1e-17 else 0.0
    chi = np.zeros_like(phi)
    inverse = np.zeros(count)
    for m in range(count):
        chi[m] = phi[m]
        if m:
            acc = np.zeros(len(vps.r))
            for n in range(m):
                acc += chi[n] * inverse[n] * quad.inner(chi[n], phi[m] * potential)
            chi[m] = phi[m] - acc
        vv = quad.inner(chi[m], chi[m] * potential)
        inverse[m] = 0.0 if abs(vv) < SMALL_ENERGY else 1.0 / vv
    energies = np.zeros(count)
    for m in range(count):
        norm = quad.inner(chi[m], chi[m])
        chi[m] *= norm
        energies[m] = 0.0 if abs(norm) < SMALL else inverse[m] / (norm * norm)
    return potential * chi, energies


@dataclass(frozen=True)
class NeutralAtomSpecies:
    """The neutral-atom data of one species: V_NA, its projectors and their transforms at
    OpenMX's Gauss-Legendre k nodes (:func:`~ase_moireh.h0.twocentre.openmx_gl_k_quadrature`)."""

    r: np.ndarray  # (n,) the .vps grid, A
    potential: np.ndarray  # (n,) V_NA, eV
    cutoff: float  # PAO cutoff r_c, A
    energies: np.ndarray  # (Lmax + 1, count) E_Lp, 1/eV
    projector_transforms: np.ndarray  # (Lmax + 1, count, nk) of V chi_Lp
    potential_transform: np.ndarray  # (nk,) int r^2 j_0(kr) V_NA dr

    @property
    def lmax(self) -> int:
        return len(self.energies) - 1

    @classmethod
    def build(
        cls,
        pao: PAOFile,
        density: ValenceDensity,
        vps: VPSFile,
        lmax: int,
        count: int = VNA_RADIAL,
    ) -> NeutralAtomSpecies:
        """From the species' full ``.pao`` file (every PAO, as OpenMX seeds with them),
        its valence density and ``.vps``, projectors for L = 0..``lmax``."""
        potential = neutral_atom_potential(vps, density, pao.cutoff)
        pairs = [vna_projectors(pao, vps, potential, L, count) for L in range(lmax + 1)]
        projectors = np.array([p for p, _ in pairs])
        energies = np.array([e for _, e in pairs])
        k, _ = openmx_gl_k_quadrature()
        quad = _GLRadial(vps.r, vps.r[0], pao.cutoff + 0.5 * Bohr)
        values = quad.at_nodes(projectors)  # (L, count, nr)
        transforms = np.stack(
            [
                (values[L] * quad.weights) @ spherical_jn(L, np.outer(k, quad.nodes)).T
                for L in range(lmax + 1)
            ]
        )
        return cls(
            vps.r,
            potential,
            pao.cutoff,
            energies,
            transforms,
            _potential_transform(vps.r, potential, pao.cutoff, pao.r[0], k),
        )


def _potential_transform(
    r: np.ndarray, potential: np.ndarray, cutoff: float, r0: float, k: np.ndarray
) -> np.ndarray:
    """int r^2 j_0(kr) V_NA(r) dr, trapezoidal with NR intervals in sqrt(r) on
    [r0, r_c + 0.5 Bohr] (``FT_VNA.c``), V_NA read as ``VNAF`` (zero beyond r_c)."""
    x = np.linspace(np.sqrt(r0), np.sqrt(cutoff + 0.5 * Bohr), NR + 1)
    radii = x * x
    values = np.where(radii > cutoff, 0.0, interpolate_phif(r, potential, radii))
    weights = np.full(NR + 1, 2.0 * (x[1] - x[0]))
    weights[[0, -1]] *= 0.5
    return spherical_jn(0, np.outer(k, radii)) @ (weights * radii**2 * x * values)


def product_transforms(
    radials: SpeciesRadials, r0: float
) -> dict[tuple[int, int, int], np.ndarray]:
    """{(p, q, L): int r^2 j_L(kr) R_p R_q dr at the Gauss-Legendre k nodes} of the basis
    shells p <= q of one species, L of the same parity as l_p + l_q (``FT_ProductPAO.c``:
    Gauss-Legendre on [r0, r_c + 0.5 Bohr], r0 the first ``.vps`` radius)."""
    k, _ = openmx_gl_k_quadrature()
    nodes, weights = gl_radial_rule(r0, radials.cutoff + 0.5 * Bohr)
    values = np.array([f(nodes) for f in radials.functions])
    shells = [f.l for f in radials.functions]
    bessel = {L: spherical_jn(L, np.outer(k, nodes)) * weights for L in range(2 * max(shells) + 1)}
    out = {}
    for p, lp in enumerate(shells):
        for q in range(p, len(shells)):
            lq = shells[q]
            for L in range(abs(lp - lq), lp + lq + 1, 2):
                out[p, q, L] = bessel[L] @ (values[p] * values[q])
    return out


# --------------------------------------------------------------------------- the operator


class NeutralAtomPotential:
    """Neutral-atom potential blocks (eV) of a PAO basis, as OpenMX builds them.

    ``species`` maps each chemical symbol to its :class:`NeutralAtomSpecies` (all with
    the same projector lmax: OpenMX takes the largest basis L of the calculation + 6).
    """

    def __init__(
        self,
        overlap: TwoCentreOverlap,
        species: Mapping[str, NeutralAtomSpecies],
        spinful: bool = False,
        step: float = STEP,
    ):
        missing = [s for s in overlap.radials if s not in species]
        if missing:
            raise ValueError(f"no neutral-atom potential for species {', '.join(missing)}")
        self.overlap = overlap
        self.basis: Basis = overlap.basis
        self.species = dict(species)
        self.spinful = spinful
        self.step = step
        self._pao = KineticEnergy(overlap, step)
        self._sides: dict[str, RadialSide] = {}
        self._tables: dict[tuple[str, str, str], RadialTable] = {}

    @classmethod
    def from_folder(
        cls,
        folder: str | os.PathLike,
        basis: Mapping[str, str],
        pseudopotentials: Mapping[str, str],
        spinful: bool = False,
    ) -> NeutralAtomPotential:
        """From OpenMX's DATA.PATH (``PAO/``, ``VPS/``), basis strings
        (``{'Mo': 'Mo7.0-s3p2d1'}``) and pseudopotential names (``{'Mo': 'Mo_PBE19'}``);
        the species given are the calculation's (they set the projectors' lmax)."""
        overlap = TwoCentreOverlap.from_pao_folder(folder, basis)
        lmax = max(max(overlap.species(s).species_basis.shells) for s in basis) + VNA_BUFFER_L
        species = {}
        for symbol, text in basis.items():
            path = find_pao(folder, parse_openmx_basis(text)[0])
            vps = read_vps(find_vps(folder, pseudopotentials[symbol]))
            species[symbol] = NeutralAtomSpecies.build(
                read_pao(path), read_valence_density(path), vps, lmax
            )
        return cls(overlap, species, spinful)

    # ------------------------------------------------------------------ tables
    def pao_side(self, symbol: str) -> RadialSide:
        """The basis transforms of one species at the Gauss-Legendre k nodes."""
        if symbol not in self._sides:
            side = self._pao.side(symbol)
            table = at_nodes(self.overlap.transforms(symbol), clamp=True, quadrature="gauss")
            self._sides[symbol] = RadialSide(side.shells, table, side.cutoff)
        return self._sides[symbol]

    def projector_side(self, symbol: str) -> RadialSide:
        """The V chi_Lp transforms of one species, L-major as OpenMX orders them."""
        key = f"projectors {symbol}"
        if key not in self._sides:
            spec = self.species[symbol]
            count = spec.energies.shape[1]
            shells = tuple(L for L in range(spec.lmax + 1) for _ in range(count))
            table = spec.projector_transforms.reshape(len(shells), -1)
            self._sides[key] = RadialSide(shells, table, spec.cutoff, orbital=False)
        return self._sides[key]

    def coupling(self, symbol: str, channel: int = 0) -> np.ndarray:
        """The diagonal E_Lp of one species' projector space (one entry per m)."""
        shells = np.array(self.projector_side(symbol).shells)
        return np.repeat(self.species[symbol].energies.ravel(), 2 * shells + 1)

    def projector_overlaps(self, a: str, k: str, vectors: np.ndarray, channel: int = 0):
        """<phi_a|V chi_k> blocks (E, n_a, n_proj_k) of orbitals of species a at 0 and the
        V_NA projectors of species k at ``vectors`` (A)."""
        if ("projectors", a, k) not in self._tables:
            self._tables["projectors", a, k] = RadialTable(
                self.pao_side(a), self.projector_side(k), step=self.step, quadrature="gauss"
            )
        return self._tables["projectors", a, k].evaluate(vectors)

    def product_table(self, a: str, h: str) -> RadialTable:
        """<phi_a phi_b|V_NA,h>: the orbital products of species a at 0 with V_NA of
        species h at d, 8 sum_LM G(a, b, LM) Y_LM(d_hat) int k^2 P_abL(k) V_h(k) j_L(kd) dk
        (``Set_VNA2``)."""
        if ("products", a, h) not in self._tables:
            radials = self.overlap.species(a)
            side = self.pao_side(a)
            k, weights = openmx_gl_k_quadrature()
            kernel = 8.0 * weights * k**2 * self.species[h].potential_transform
            products = product_transforms(radials, self.species[a].r[0])
            parts = []
            for la, lb, pairs, positions in shell_pairs(side.shells, side.shells):
                for L in range(abs(la - lb), la + lb + 1, 2):
                    weighted = np.array([products[min(p, q), max(p, q), L] for p, q in pairs]).T
                    parts.append((la, lb, L, positions, kernel[:, None] * weighted))
            self._tables["products", a, h] = RadialTable.from_parts(
                (side.norb, side.norb),
                side.cutoff + self.species[h].cutoff,
                parts,
                step=self.step,
                quadrature="gauss",
                min_distance=MIN_DISTANCE,
            )
        return self._tables["products", a, h]

    # ------------------------------------------------------------------ operator
    def operator(self, atoms: Atoms, edges: np.ndarray) -> BlockOperator:
        """V_NA on the edges (i, j, R) of ``atoms``: the damped projector expansion off
        site, the summed two-centre integrals on site; spinors if ``spinful``."""
        edges = np.asarray(edges, dtype=np.int64).reshape(-1, 5)
        symbols = np.array(atoms.get_chemical_symbols())
        cutoff = np.array([self.overlap.species(s).cutoff for s in symbols])
        offsets = packed_offsets(self.basis.norbs(atoms.numbers), edges)
        values = np.zeros(int(offsets[-1]))
        sites = projector_sites(atoms, cutoff)
        add_projector_products(
            values,
            offsets,
            atoms,
            edges,
            sites,
            self.projector_overlaps,
            self.coupling,
            damping=damping_factors(atoms, edges, cutoff),
        )
        self._set_on_site(values, offsets, atoms, edges, sites)
        meta = {"cell": np.asarray(atoms.cell), "positions": atoms.positions}
        op = BlockOperator(atoms.numbers, self.basis, edges, values, **meta)
        return spinor_lift(op) if self.spinful else op

    def _set_on_site(
        self,
        values: np.ndarray,
        offsets: np.ndarray,
        atoms: Atoms,
        edges: np.ndarray,
        sites: ProjectorSites,
    ) -> None:
        """Replace the on-site blocks by sum_h <phi_a phi_b|V_NA,h> over the sites (i, h)."""
        on = np.flatnonzero((edges[:, 0] == edges[:, 1]) & ~edges[:, 2:].any(axis=1))
        if not len(on):
            return
        symbols = np.array(atoms.get_chemical_symbols())
        vec = atoms.positions[sites.k] + sites.shift @ np.asarray(atoms.cell)
        vec -= atoms.positions[sites.i]
        for a in np.unique(symbols[edges[on, 0]]):
            mine = on[symbols[edges[on, 0]] == a]
            atom_index = np.full(len(atoms), -1)
            atom_index[edges[mine, 0]] = np.arange(len(mine))
            n = self.basis[str(a)].norb
            total = np.zeros((len(mine), n, n))
            for h in np.unique(symbols[sites.k]):
                pick = np.flatnonzero(
                    (symbols[sites.i] == a) & (symbols[sites.k] == h) & (atom_index[sites.i] >= 0)
                )
                if len(pick):
                    blocks = self.product_table(str(a), str(h)).evaluate(vec[pick])
                    np.add.at(total, atom_index[sites.i[pick]], blocks)
            values[offsets[mine][:, None] + np.arange(n * n)] = total.reshape(len(mine), -1)
