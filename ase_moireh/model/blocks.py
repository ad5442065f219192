"""Orbital blocks <-> irreducible representations (Wigner-Eckart), spinless and SOC.

A block between shells l1 (atom i) and l2 (atom j) is a linear image of irreps:

* spinless: L = |l1-l2| .. l1+l2 with parity (-1)^(l1+l2);
* SOC, H = kron(1, H0) + sum_a kron(sigma_a, H_a) (our spin layout): H0 as above, the
  spin vector part (l1 x l2 -> L) x 1e -> L', each with real and imaginary halves.

:func:`block_basis` returns the irreps and the constant matrix M with
``flat_block = M @ x`` for an irreps vector x (e3nn layout). Columns are orthonormal,
so MSE in either space is the same up to a constant. Features live in e3nn 0.6's
y-polar frame: the network sees edge vectors as ``E3NN_FRAME @ r``, and then M maps
onto our z-polar orbital order exactly (see :mod:`ase_moireh.basis`).

Flat block layout: spinless (n_i * n_j) row-major; SOC the real part of the complex
(2 n_i, 2 n_j) block, then its imaginary part.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from e3nn import o3

from ase_moireh.basis import SpeciesBasis

PAULI = np.array([[[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]], dtype=complex)
#: e3nn l=1 component c is our Cartesian axis E3NN_SPIN_AXIS[c] (frame (y, z, x))
E3NN_SPIN_AXIS = (1, 2, 0)


@lru_cache(maxsize=256)
def _w3j(l1: int, l2: int, l3: int) -> np.ndarray:
    """e3nn's Wigner 3j in float64, scaled so each l3 component has unit norm."""
    w = o3.wigner_3j(l1, l2, l3, dtype=torch.float64).numpy()
    return w * np.sqrt(2 * l3 + 1)


def _spinless_parts(l1: int, l2: int) -> list[tuple[int, np.ndarray]]:
    """(L, T[m1, m2, M]) for every L of l1 x l2."""
    return [(L, _w3j(l1, l2, L)) for L in range(abs(l1 - l2), l1 + l2 + 1)]


def _vector_parts(l1: int, l2: int) -> list[tuple[int, np.ndarray]]:
    """(L', T[m1, m2, c, M']) of (l1 x l2 -> L) x 1 -> L', c the e3nn vector index."""
    out = []
    for L, w in _spinless_parts(l1, l2):
        for Lp in range(abs(L - 1), L + 2):
            out.append((Lp, np.einsum("abM,McN->abcN", w, _w3j(L, 1, Lp))))
    return out


def _embed(shape: tuple[int, int], rows: slice, cols: slice, block: np.ndarray) -> np.ndarray:
    out = np.zeros(shape, dtype=block.dtype)
    out[rows, cols] = block
    return out


def block_basis(
    left: SpeciesBasis, right: SpeciesBasis, spinful: bool
) -> tuple[o3.Irreps, np.ndarray]:
    """Irreps of the block (left atom rows, right atom columns) and M (flat, dim)."""
    ni, nj = left.norb, right.norb
    groups: list[tuple[int, int, np.ndarray]] = []  # (L, parity, columns (D, 2L+1))
    for sa, l1 in zip(left.shell_slices(), left.shells, strict=True):
        for sb, l2 in zip(right.shell_slices(), right.shells, strict=True):
            parity = (-1) ** (l1 + l2)
            for L, w in _spinless_parts(l1, l2):
                mats = [_embed((ni, nj), sa, sb, w[:, :, M]) for M in range(2 * L + 1)]
                if not spinful:
                    groups.append((L, parity, np.stack([m.ravel() for m in mats], axis=1)))
                    continue
                for phase in (1.0, 1j):
                    cols = [_spinor_flat(np.kron(np.eye(2), m) * phase) for m in mats]
                    groups.append((L, parity, np.stack(cols, axis=1) / np.sqrt(2)))
            if spinful:
                for Lp, t in _vector_parts(l1, l2):
                    for phase in (1.0, 1j):
                        cols = []
                        for M in range(2 * Lp + 1):
                            spinor = sum(
                                np.kron(
                                    PAULI[E3NN_SPIN_AXIS[c]],
                                    _embed((ni, nj), sa, sb, t[:, :, c, M]),
                                )
                                for c in range(3)
                            )
                            cols.append(_spinor_flat(spinor * phase))
                        groups.append((Lp, parity, np.stack(cols, axis=1) / np.sqrt(2)))
    groups.sort(key=lambda g: (g[0], -g[1]))  # e3nn order: by L, even before odd
    irreps = o3.Irreps([(1, (L, p)) for L, p, _ in groups]).simplify()
    matrix = np.concatenate([cols for _, _, cols in groups], axis=1)
    return irreps, matrix


def _spinor_flat(block: np.ndarray) -> np.ndarray:
    return np.concatenate([block.real.ravel(), block.imag.ravel()])


def block_to_flat(block: np.ndarray, spinful: bool) -> np.ndarray:
    return _spinor_flat(block) if spinful else block.ravel()
