"""Band topology: C3 eigenvalues at Gamma, K, K' and Chern numbers; Fukui-Hatsugai-Suzuki
lattice Chern numbers as the independent check.

C3 in our basis (lattice gauge, see :mod:`ase_moireh.block_operator`): the operation
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
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sl
import scipy.sparse as sp
from ase import Atoms

from ase_moireh.basis import Basis, atom_rotation, spin_factor
from ase_moireh.symmetry import SpaceGroupOperation, atom_images, space_group_operations
from ase_moireh.tightbinding import TightBinding

# --------------------------------------------------------------------------- FHS


def fukui_chern(tb: TightBinding, bands, nk: int = 24) -> float:
    """Lattice Chern number of the bands ``bands`` (indices in ascending energy) on an
    nk x nk grid of the first two reciprocal vectors (Fukui, Hatsugai, Suzuki 2005).

    The non-orthogonal basis is orthonormalised with S(k)^1/2 (Loewdin), which is periodic
    in the lattice gauge, so the link variables are those of a smooth periodic bundle.
    """
    bands = np.atleast_1d(bands)
    states = np.empty((nk, nk), dtype=object)
    for a in range(nk):
        for b in range(nk):
            k = (a / nk, b / nk, 0.0)
            _, vec = tb.eigh(k, vectors=True)
            states[a, b] = sl.sqrtm(tb.Sk(k).toarray()) @ vec[:, bands]
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


def c3_matrix(
    atoms: Atoms, basis: Basis, spinful: bool, op: SpaceGroupOperation, k, sparse: bool = False
):
    """U(k) of the module docstring (k must be C3-invariant): dense, or CSR with
    ``sparse`` (one block per atom, for cells too large for dense matrices)."""
    image, shift = atom_images(atoms, op)
    sym = atoms.get_chemical_symbols()
    m = spin_factor(spinful)
    norbs = np.array([basis[s].norb * m for s in sym])
    start = np.concatenate([[0], np.cumsum(norbs)])
    kp = np.linalg.inv(op.W).T @ np.asarray(k, dtype=float)
    rot = {s: atom_rotation(basis[s], op.Q, spinful) for s in set(sym)}
    rows, cols, values = [], [], []
    for i, s in enumerate(sym):
        j = image[i]
        block = rot[s] * np.exp(-2j * np.pi * kp @ shift[i])
        r, c = np.meshgrid(np.arange(start[j], start[j + 1]), np.arange(start[i], start[i + 1]))
        rows.append(r.T.ravel())
        cols.append(c.T.ravel())
        values.append(block.ravel())
    u = sp.csr_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
        shape=(start[-1], start[-1]),
    )
    return u if sparse else u.toarray()


@dataclass
class C3Point:
    """The eigenproblem at one C3-invariant k-point, with the C3 matrix there: all
    levels (small cells) or the window of levels ``first``, ``first + 1``, ... below
    the gap (large cells); band numbers are always those of the whole spectrum."""

    label: str
    energies: np.ndarray
    vectors: np.ndarray
    sk: np.ndarray | sp.spmatrix
    u: np.ndarray | sp.spmatrix
    first: int = 0

    def level(self, band: int) -> float:
        i = band - self.first
        if not 0 <= i < len(self.energies):
            raise ValueError(f"band {band} is outside the levels computed at {self.label}")
        return float(self.energies[i])

    def group(self, band: int, tol: float) -> np.ndarray:
        """The levels within ``tol`` (eV) of ``band``: its (near-)degenerate group."""
        return np.flatnonzero(np.abs(self.energies - self.level(band)) < tol) + self.first

    def rotate(self, group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """C3 eigenvalues of a group and their eigenvectors (columns) in it."""
        sub = self.vectors[:, group - self.first]
        return np.linalg.eig(sub.conj().T @ (self.sk @ (self.u @ sub)))


#: dense eigenvectors at Gamma, K, K' up to this dimension, a window below the gap above
C3_DENSE_LIMIT = 3000


def c3_points(
    tb: TightBinding,
    atoms: Atoms,
    op: SpaceGroupOperation | None = None,
    below: tuple[float, int, int] | None = None,
) -> Iterator[C3Point]:
    """Gamma, K, K': the levels and eigenvectors there, and U(k). ``below`` = (sigma,
    nocc, n): for matrices above :data:`C3_DENSE_LIMIT`, only the ``n`` levels just
    below sigma (an energy in the gap with ``nocc`` levels below it), by one-sided
    shift-invert; otherwise (or without it) every level, densely."""
    op = op or c3_operation(atoms)
    for label, k in c3_invariant_kpoints(op).items():
        if below is None or tb.dimension <= C3_DENSE_LIMIT:
            energies, vectors = tb.eigh(k, vectors=True)
            u = c3_matrix(atoms, tb.H.basis, tb.spinful, op, k)
            yield C3Point(label, energies, vectors, tb.Sk(k).toarray(), u)
            continue
        sigma, nocc, n = below
        energies, vectors = levels_below(tb, k, sigma, nocc, n)
        u = c3_matrix(atoms, tb.H.basis, tb.spinful, op, k, sparse=True)
        yield C3Point(label, energies, vectors, tb.Sk(k).tocsr(), u, first=nocc - n)


def levels_below(tb: TightBinding, k, sigma: float, nocc: int, n: int):
    """The ``n`` levels just below ``sigma`` at k with their eigenvectors, after an
    inertia count confirms they are levels nocc - n ... nocc - 1 (one factorisation)."""
    from ase_moireh.solvers.factorization import counting_factor
    from ase_moireh.solvers.solve import shift_invert_eigh

    hk, sk = tb.pair(k)
    count, solve = counting_factor(hk - sigma * sk)
    try:
        if count != nocc:
            raise ValueError(
                f"{count} levels lie below {sigma:.4f} eV at k = {tuple(k)}, not {nocc}: "
                "not inside the gap there"
            )
        return shift_invert_eigh(
            hk, sk, sigma, n, k=k, opinv=solve, which="SA", return_vectors=True
        )
    finally:
        solve.release()


def phases_deg(values: np.ndarray) -> list[float]:
    """Phases of C3 eigenvalues in degrees, in (-180, 180] to 0.1 deg (so one phase is
    never printed as -180 in one place and 180 in another)."""
    out = []
    for value in np.atleast_1d(values):
        angle = round(float(np.angle(value, deg=True)), 1)
        out.append(180.0 if angle <= -180.0 else angle + 0.0)  # + 0.0: no "-0.0"
    return out


@dataclass
class C3Result:
    eigenvalues: dict[str, np.ndarray]  # per k-point label, one per band
    chern_mod3: int
    product: complex


def _result(values: dict[str, np.ndarray], spin_half: bool, nbands: int) -> C3Result:
    """Chern number mod 3 from the C3 eigenvalues (module docstring; F = 1 for spin 1/2)."""
    product = complex(np.prod([np.prod(v) for v in values.values()]))
    if spin_half:
        product *= (-1) ** nbands
    chern = int(np.rint(-np.angle(product) * 3 / (2 * math.pi))) % 3
    return C3Result(values, chern, product)


def _cut_group_message(band: int, label: str, group, bands, tol: float) -> str:
    """Why a selection cuts a degenerate group, and what would not."""
    where = (
        f"band {band} is degenerate at {label} with bands outside the selection (levels "
        f"{group.min()}-{group.max()} lie within {tol * 1e3:g} meV)"
    )
    if group.max() > bands.max():
        return f"{where}: the top selected band touches the bands above it, so there is no gap"
    whole = int(bands.max()) + 1 - int(group.min())
    return (
        f"{where}: count whole degenerate groups, e.g. nbands={whole} (moireh chern "
        f"--nbands {whole}); without SOC, spinless bands at Gamma and K are often degenerate"
    )


def c3_eigenvalues(
    tb: TightBinding,
    atoms: Atoms,
    bands,
    op: SpaceGroupOperation | None = None,
    degeneracy_tol: float = 1e-6,
    points: list[C3Point] | None = None,
) -> C3Result:
    """C3 eigenvalues of ``bands`` at Gamma, K, K' and the Chern number modulo 3
    (``points``: from :func:`c3_points`, when already computed)."""
    bands = np.atleast_1d(bands)
    values = {}
    for point in points or c3_points(tb, atoms, op):
        out = np.empty(len(bands), dtype=complex)
        chosen, done = set(bands.tolist()), set()
        for n in bands:
            if n in done:
                continue
            group = point.group(n, degeneracy_tol)
            if not set(group.tolist()) <= chosen:
                raise ValueError(_cut_group_message(n, point.label, group, bands, degeneracy_tol))
            theta, _ = point.rotate(group)
            for g, t in zip(group, sorted(theta, key=np.angle), strict=True):
                out[np.flatnonzero(bands == g)[0]] = t
                done.add(g)
        values[point.label] = out
    return _result(values, tb.spinful, len(bands))


def c3_group_eigenvalues(
    tb: TightBinding, atoms: Atoms, band: int, tol: float = 5e-3
) -> dict[str, np.ndarray]:
    """C3 eigenvalues of the (near-)degenerate group of ``band`` at Gamma, K, K'; ``tol``
    in eV absorbs the symmetry breaking of DFT grids (a few meV in OpenMX at 200 Ry)."""
    return {p.label: p.rotate(p.group(band, tol))[0] for p in c3_points(tb, atoms)}


def sector_window(nbands: int) -> int:
    """Levels below the gap :func:`sector_c3_eigenvalues` may look at (4 per band and 2,
    both spins and a split pair), with 6 to spare so no group it uses is cut."""
    return 4 * nbands + 8


def sector_c3_eigenvalues(
    tb: TightBinding,
    atoms: Atoms,
    nbands: int,
    nocc: int,
    spin: int = 1,
    tol: float = 5e-3,
    points: list[C3Point] | None = None,
) -> C3Result:
    """C3 eigenvalues of the top ``nbands`` valence bands of one spin sector (SOC).

    At each of Gamma, K, K' the highest occupied states are split into C3 eigenstates
    within (near-)degenerate groups, each labelled by its <s_z> (valid where s_z is nearly
    conserved, as for the valence bands of tMoTe2); the ``nbands`` highest of sign
    ``spin`` are kept. Chern number mod 3 as in the module docstring, F = 1. ``points``:
    from :func:`c3_points` (reaching :func:`sector_window` levels below the gap).
    """
    if not tb.spinful:
        raise ValueError("spin sectors need a spinful (SOC) Hamiltonian")
    sz = tb.spin_z()
    values = {}
    for point in points or c3_points(tb, atoms):
        states = []  # (energy, s_z, theta)
        done: set[int] = set()
        for n in range(nocc - 1, max(0, nocc - 4 * nbands - 2) - 1, -1):
            if n in done:
                continue
            group = point.group(n, tol)
            done |= set(group.tolist())
            theta, w = point.rotate(group)
            for t, psi in zip(theta, (point.vectors[:, group - point.first] @ w).T, strict=True):
                norm = np.real(psi.conj() @ point.sk @ psi)
                spin_value = np.real(psi.conj() @ (point.sk @ (sz * psi))) / norm
                states.append((point.level(n), spin_value, t))
        chosen = [t for e, sv, t in sorted(states, key=lambda x: -x[0]) if sv * spin > 0]
        if len(chosen) < nbands:
            raise ValueError(
                f"found only {len(chosen)} valence states of spin {spin} at {point.label}"
            )
        values[point.label] = np.array(chosen[:nbands])
    return _result(values, True, nbands)
