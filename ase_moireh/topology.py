"""Band topology: C3 eigenvalues at Gamma, K, K' and Chern numbers; Fukui-Hatsugai-Suzuki
lattice Chern numbers as the independent check.

C3 in our basis (lattice gauge, see :mod:`ase_moireh.operator`): the operation
g: x -> W x + w (fractional) sends orbital (i, a, R) to sum_b D_ba (g(i), b, W R + T_i),
so on Bloch sums at k it acts as U(k)[(g(i), b), (i, a)] = D_ba exp(-2 pi i k'.T_i),
k' = W^-T k. At a C3-invariant k (k' = k + G) this is a matrix on the basis at k; band
eigenvalues are theta_n = c_n^dagger S(k) U(k) c_n (degenerate bands: eigenvalues of the
block). The Chern number of a set of bands follows modulo 3 from the product of its
C3 eigenvalues (Fang, Gilbert, Bernevig, PRB 86, 115112 (2012); F = 1 for spin-1/2):

    exp(-2 pi i C / 3) = prod_n (-1)^F theta_n(Gamma) theta_n(K) theta_n(K'),

with theta the eigenvalues of the counter-clockwise rotation and C in the sign
convention of the Fukui-Hatsugai-Suzuki lattice Chern number (TKNN's: sigma_xy =
C e^2/h). That sign is not chosen by hand: the tests fix it by agreement with
:func:`fukui_chern` on the Haldane model (both signs of C) and a spinful model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sl
from ase import Atoms
from ase.data import chemical_symbols

from .basis import Basis, atom_rotation
from .operator import BlockOperator
from .solve import generalized_eigh
from .symmetry import SpaceGroupOperation, atom_images, space_group_operations


def dense_pair(h: BlockOperator, s: BlockOperator, k) -> tuple[np.ndarray, np.ndarray]:
    """Dense H(k), S(k) in the same layout (S lifted to spinors for SOC)."""
    if h.spinful and not s.spinful:
        s = s.to_spinor()
    return h.bloch(k).toarray(), s.bloch(k).toarray()


# --------------------------------------------------------------------------- FHS


def fukui_chern(h: BlockOperator, s: BlockOperator, bands, nk: int = 24) -> float:
    """Lattice Chern number of the bands ``bands`` (indices in ascending energy) on an
    nk x nk grid of the first two reciprocal vectors (Fukui, Hatsugai, Suzuki 2005).

    The non-orthogonal basis is orthonormalised with S(k)^1/2 (Loewdin), which is periodic
    in the lattice gauge, so the link variables are those of a smooth periodic bundle.
    """
    if h.spinful and not s.spinful:
        s = s.to_spinor()
    bands = np.atleast_1d(bands)
    states = np.empty((nk, nk), dtype=object)
    for a in range(nk):
        for b in range(nk):
            k = (a / nk, b / nk, 0.0)
            hk, sk = h.bloch(k).toarray(), s.bloch(k).toarray()
            _, vec = generalized_eigh(hk, sk, k, vectors=True)
            half = sl.sqrtm(sk)
            states[a, b] = half @ vec[:, bands]
    flux = 0.0
    for a in range(nk):
        for b in range(nk):
            u0 = states[a, b]
            u1 = states[(a + 1) % nk, b]
            u2 = states[(a + 1) % nk, (b + 1) % nk]
            u3 = states[a, (b + 1) % nk]
            loop = (
                np.linalg.det(u0.conj().T @ u1)
                * np.linalg.det(u1.conj().T @ u2)
                * np.linalg.det(u2.conj().T @ u3)
                * np.linalg.det(u3.conj().T @ u0)
            )
            flux += np.angle(loop)
    return flux / (2 * math.pi)


# --------------------------------------------------------------------------- C3


def c3_operation(atoms: Atoms, symprec: float = 1e-3) -> SpaceGroupOperation:
    """The counter-clockwise rotation by 120 deg about z that spglib finds."""
    for op in space_group_operations(atoms, symprec):
        q = op.Q
        if (
            np.isclose(q[2, 2], 1.0)
            and np.isclose(np.trace(q), 0.0)
            and np.linalg.det(q) > 0
            and q[1, 0] > 0
        ):
            return op
    raise ValueError("the structure has no threefold rotation about z (within symprec)")


def c3_invariant_kpoints(op: SpaceGroupOperation) -> dict[str, np.ndarray]:
    """Gamma, K and K' (fractional) as the C3-invariant points of the 3 x 3 grid."""
    winv_t = np.linalg.inv(op.W).T
    found = []
    for i in range(3):
        for j in range(3):
            k = np.array([i / 3, j / 3, 0.0])
            d = winv_t @ k - k
            if np.allclose(d, np.rint(d), atol=1e-9):
                found.append(k)
    if len(found) != 3:
        raise ValueError(f"expected 3 C3-invariant k-points, found {len(found)}")
    gamma, k1, k2 = sorted(found, key=lambda v: (np.linalg.norm(v), tuple(v)))
    return {"Gamma": gamma, "K": k1, "K'": k2}


def c3_matrix(atoms: Atoms, basis: Basis, spinful: bool, op: SpaceGroupOperation, k) -> np.ndarray:
    """U(k) of the module docstring (k must be C3-invariant)."""
    image, shift = atom_images(atoms, op)
    sym = atoms.get_chemical_symbols()
    m = 2 if spinful else 1
    norbs = np.array([basis[s].norb * m for s in sym])
    start = np.concatenate([[0], np.cumsum(norbs)])
    kp = np.linalg.inv(op.W).T @ np.asarray(k, dtype=float)
    u = np.zeros((start[-1], start[-1]), dtype=complex)
    rot = {s: atom_rotation(basis[s], op.Q, spinful) for s in set(sym)}
    for i, s in enumerate(sym):
        j = image[i]
        phase = np.exp(-2j * np.pi * kp @ shift[i])
        u[start[j] : start[j + 1], start[i] : start[i + 1]] = rot[s] * phase
    return u


@dataclass
class C3Result:
    eigenvalues: dict[str, np.ndarray]  # per k-point label, one per band
    chern_mod3: int
    product: complex


def c3_eigenvalues(
    h: BlockOperator,
    s: BlockOperator,
    atoms: Atoms,
    bands,
    op: SpaceGroupOperation | None = None,
    degeneracy_tol: float = 1e-6,
) -> C3Result:
    """C3 eigenvalues of ``bands`` at Gamma, K, K' and the Chern number modulo 3."""
    op = op or c3_operation(atoms)
    bands = np.atleast_1d(bands)
    values = {}
    for label, k in c3_invariant_kpoints(op).items():
        hk, sk = dense_pair(h, s, k)
        energies, vec = generalized_eigh(hk, sk, k, vectors=True)
        u = c3_matrix(atoms, h.basis, h.spinful, op, k)
        values[label] = _band_eigenvalues(energies, vec, sk, u, bands, degeneracy_tol)
    product = complex(np.prod([np.prod(v) for v in values.values()]))
    if h.spinful:
        product *= (-1) ** len(bands)
    chern = int(np.rint(-np.angle(product) * 3 / (2 * math.pi))) % 3
    return C3Result(values, chern, product)


def c3_group_eigenvalues(
    h: BlockOperator, s: BlockOperator, atoms: Atoms, band: int, tol: float = 5e-3
) -> dict[str, np.ndarray]:
    """C3 eigenvalues of the (near-)degenerate group of ``band`` at Gamma, K, K'; ``tol``
    in eV absorbs the symmetry breaking of DFT grids (a few meV in OpenMX at 200 Ry)."""
    op = c3_operation(atoms)
    out = {}
    for label, k in c3_invariant_kpoints(op).items():
        hk, sk = dense_pair(h, s, k)
        energies, vec = generalized_eigh(hk, sk, k, vectors=True)
        group = np.flatnonzero(np.abs(energies - energies[band]) < tol)
        u = c3_matrix(atoms, h.basis, h.spinful, op, k)
        out[label] = np.linalg.eigvals(vec[:, group].conj().T @ sk @ u @ vec[:, group])
    return out


def spin_z(h: BlockOperator) -> np.ndarray:
    """Diagonal of s_z (+1 up, -1 down) in our SOC layout (per atom: up, then down)."""
    parts = []
    for n in h.norbs // 2:
        parts += [np.ones(n), -np.ones(n)]
    return np.concatenate(parts)


def sector_c3_eigenvalues(
    h: BlockOperator,
    s: BlockOperator,
    atoms: Atoms,
    nbands: int,
    nocc: int,
    spin: int = 1,
    tol: float = 5e-3,
) -> C3Result:
    """C3 eigenvalues of the top ``nbands`` valence bands of one spin sector (SOC).

    At each of Gamma, K, K' the highest occupied states are split into C3 eigenstates
    within (near-)degenerate groups, each labelled by its <s_z> (valid where s_z is nearly
    conserved, as for the valence bands of tMoTe2); the ``nbands`` highest of sign
    ``spin`` are kept. Chern number mod 3 as in the module docstring, F = 1.
    """
    if not h.spinful:
        raise ValueError("spin sectors need a spinful (SOC) Hamiltonian")
    op = c3_operation(atoms)
    sz = spin_z(h)
    values = {}
    for label, k in c3_invariant_kpoints(op).items():
        hk, sk = dense_pair(h, s, k)
        energies, vec = generalized_eigh(hk, sk, k, vectors=True)
        u = c3_matrix(atoms, h.basis, True, op, k)
        window = np.arange(max(0, nocc - 4 * nbands - 2), nocc)
        states = []  # (energy, s_z, theta)
        done: set[int] = set()
        for n in window[::-1]:
            if n in done:
                continue
            group = np.flatnonzero(np.abs(energies - energies[n]) < tol)
            done |= set(group.tolist())
            sub = vec[:, group]
            theta, w = np.linalg.eig(sub.conj().T @ sk @ u @ sub)
            for t, col in zip(theta, w.T, strict=True):
                psi = sub @ col
                norm = np.real(psi.conj() @ sk @ psi)
                spin_value = np.real(psi.conj() @ (sk @ (sz * psi))) / norm
                states.append((energies[n], spin_value, t))
        chosen = [t for e, sv, t in sorted(states, key=lambda x: -x[0]) if sv * spin > 0]
        if len(chosen) < nbands:
            raise ValueError(f"found only {len(chosen)} valence states of spin {spin} at {label}")
        values[label] = np.array(chosen[:nbands])
    product = complex(np.prod([np.prod(v) for v in values.values()])) * (-1) ** nbands
    chern = int(np.rint(-np.angle(product) * 3 / (2 * math.pi))) % 3
    return C3Result(values, chern, product)


def _band_eigenvalues(energies, vec, sk, u, bands, tol) -> np.ndarray:
    """Eigenvalues of the C3 matrix in each degenerate group containing the chosen bands."""
    out = np.empty(len(bands), dtype=complex)
    chosen = set(bands.tolist())
    done = set()
    for n in bands:
        if n in done:
            continue
        group = np.flatnonzero(np.abs(energies - energies[n]) < tol)
        if not set(group.tolist()) <= chosen:
            raise ValueError(f"band {n} is degenerate with bands outside the selection")
        block = vec[:, group].conj().T @ sk @ u @ vec[:, group]
        eig = np.linalg.eigvals(block)
        for g, e in zip(group, sorted(eig, key=np.angle), strict=True):
            out[np.flatnonzero(bands == g)[0]] = e
            done.add(g)
    return out


# --------------------------------------------------------------------------- toy models


def haldane_model(
    t1: float = 1.0, t2: float = 0.1, phi: float = math.pi / 2, mass: float = 0.0
) -> tuple[Atoms, BlockOperator, BlockOperator]:
    """Haldane's honeycomb model (one s orbital per site, orthogonal: S = 1).

    H = mass (n_A - n_B) + t1 sum_NN + t2 sum_NNN exp(i nu_ij phi), with Haldane's
    chirality nu_ij = sign(d1 x d2)_z of the two bonds a NNN hop bypasses (PRL 61, 2015
    (1988)). Gapped with |C| = 1 when |mass| < 3 sqrt(3) |t2 sin phi|, C = 0 beyond.
    """
    a = 1.0
    cell = np.array([[a, 0, 0], [0.5 * a, 0.5 * math.sqrt(3) * a, 0], [0, 0, 10.0]])
    frac = np.array([[1 / 3, 1 / 3, 0.5], [2 / 3, 2 / 3, 0.5]])
    atoms = Atoms("CN", scaled_positions=frac, cell=cell, pbc=True)  # A = C, B = N
    basis = Basis.from_dftio({"C": "1s", "N": "1s"})
    blocks: dict[tuple, complex] = {(0, 0, 0, 0, 0): mass, (1, 1, 0, 0, 0): -mass}
    pos = atoms.positions
    nn = {0: [], 1: []}
    for i in range(2):
        for r1 in (-1, 0, 1):
            for r2 in (-1, 0, 1):
                d = pos[1 - i] + r1 * cell[0] + r2 * cell[1] - pos[i]
                if np.isclose(np.linalg.norm(d), a / math.sqrt(3)):
                    nn[i].append(d)
    for i in range(2):
        for j in range(2):
            for r1 in (-1, 0, 1):
                for r2 in (-1, 0, 1):
                    d = pos[j] + r1 * cell[0] + r2 * cell[1] - pos[i]
                    dist = np.linalg.norm(d)
                    if np.isclose(dist, a / math.sqrt(3)):
                        blocks[(i, j, r1, r2, 0)] = t1
                    elif np.isclose(dist, a) and i == j:
                        nu = _nnn_chirality(d, np.array(nn[i]))
                        blocks[(i, j, r1, r2, 0)] = t2 * np.exp(1j * nu * phi)
    edges = np.array(list(blocks))
    values = [np.array([[v]], dtype=complex) for v in blocks.values()]
    h = BlockOperator.from_blocks(atoms.numbers, basis, edges, values, spinful=False)
    h.values = h.values.astype(complex)
    s_values = [np.eye(1) * (1.0 if (e[0] == e[1] and not any(e[2:])) else 0.0) for e in edges]
    s = BlockOperator.from_blocks(atoms.numbers, basis, edges, s_values)
    return atoms, h, s


def rashba_exchange_model(
    t: float = 1.0, rashba: float = 0.3, exchange: float = 0.5
) -> tuple[Atoms, BlockOperator, BlockOperator]:
    """Spinful honeycomb model of the quantum anomalous Hall effect: NN hopping t, Rashba
    coupling i rashba (sigma x d_ij)_z and an exchange field exchange * sigma_z (Qiao et
    al., PRB 82, 161414 (2010)); C = +-2 for the two lowest bands when gapped. In our SOC
    layout (per atom: spin up, spin down)."""
    atoms, h0, s0 = haldane_model(t1=t, t2=0.0)
    sx = np.array([[0, 1], [1, 0]], dtype=complex)
    sy = np.array([[0, -1j], [1j, 0]])
    sz = np.diag([1.0, -1.0]).astype(complex)
    blocks = []
    for e, (i, j, *r) in enumerate(h0.edges):
        if i == j and not any(r):
            blocks.append(exchange * sz)
            continue
        d = atoms.positions[j] + np.array(r) @ np.asarray(atoms.cell) - atoms.positions[i]
        d = d / np.linalg.norm(d)
        blocks.append(h0.block(e)[0, 0] * np.eye(2) + 1j * rashba * (sx * d[1] - sy * d[0]))
    h = BlockOperator.from_blocks(atoms.numbers, h0.basis, h0.edges, blocks, spinful=True)
    return atoms, h, s0


def _nnn_chirality(d: np.ndarray, nn_vectors: np.ndarray) -> int:
    """Haldane's nu = sign(d1 x d2)_z for the two NN bonds d1, d2 (d1 + d2 = d) that the
    next-nearest-neighbour hop d bypasses; nn_vectors: the NN bonds out of the site."""
    for d1 in nn_vectors:
        d2 = d - d1
        if np.isclose(np.linalg.norm(d2), np.linalg.norm(d1)):
            return int(np.sign(np.cross(d1, d2)[2]))
    raise ValueError("not a next-nearest-neighbour vector")


def species_symbols(op: BlockOperator) -> list[str]:
    return [chemical_symbols[z] for z in op.numbers]
