"""The pencil (H(k) - sigma S(k), S(k)) of a streamed prediction, read a window of atoms
at a time: an MPI rank's rows (:func:`local_rows`), or for one process the upper
triangles of both in single precision (:func:`upper_pencil`), all a factorisation and a
product with S need, at a fraction of the memory of double-precision CSR of the whole
matrices (the 0.88 deg cell: 439k rows, ~4e8 numbers each). Torch-free: MPI ranks
import it without the model code."""

from __future__ import annotations

import os
from collections.abc import Sequence

import h5py
import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from ase_moireh.basis import Basis, spin_factor
from ase_moireh.io.streamed import read_streamed
from ase_moireh.tightbinding import TightBinding


def rows_per_atom(path: str | os.PathLike) -> np.ndarray:
    """Rows of H(k) per atom of a streamed file (spin included), read from its header."""
    with h5py.File(path, "r") as f:
        group = f["hamiltonian"]
        norbs = Basis.from_dftio(group.attrs["basis"]).norbs(group["numbers"][()])
        return norbs * spin_factor(bool(f.attrs["soc"]))


def local_rows(path, atoms: range, k: Sequence[float], sigma: float):
    """Rows of H(k) - sigma S(k) and S(k) (H's layout) of ``atoms`` as CSR with global
    columns, and the first global row: only the blocks of rows of ``atoms`` are read."""
    h, s = read_streamed(path, atoms)
    if s is None:
        raise ValueError(f"{path}: the file holds no overlap S (needed for the solve)")
    tb = TightBinding(h, s)
    first = int(h.norbs[: atoms.start].sum())
    last = first + int(h.norbs[atoms.start : atoms.stop].sum())
    return tb.shifted(k, sigma)[first:last], tb.Sk(k)[first:last], first


def upper_pencil(
    path: str | os.PathLike,
    k: Sequence[float],
    sigma: float,
    chunk: int = 500,
    progress: bool = False,
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Upper triangles (diagonal included) of H(k) - sigma S(k) and S(k), in float32
    where H(k) is real (collinear at Gamma) and complex64 otherwise, assembled ``chunk``
    atoms at a time. Single precision suits a single-precision factorisation and
    KPM; it is not for refined eigenvalues."""
    rows = rows_per_atom(path)
    parts: dict[str, list] = {"a": [], "s": []}
    dtype = None
    for start in tqdm(range(0, len(rows), chunk), desc="pencil", disable=not progress):
        a, s, first = local_rows(path, range(start, min(start + chunk, len(rows))), k, sigma)
        if dtype is None:
            dtype = np.complex64 if np.any(a.data.imag) else np.float32
        elif dtype == np.float32 and np.any(a.data.imag):
            raise ValueError(f"{path}: H(k) is complex past atom {start}, real before it")
        for key, block in (("a", a), ("s", s)):
            parts[key].append(_upper_rows(block, first, dtype))
        del a, s
    return tuple(sp.vstack(parts[key], format="csr") for key in ("a", "s"))  # type: ignore[return-value]


def _upper_rows(block: sp.csr_matrix, first: int, dtype) -> sp.csr_matrix:
    """The entries of rows ``first``.. of a matrix on or right of its diagonal."""
    coo = block.tocoo()
    keep = coo.col >= coo.row + first
    data = coo.data[keep] if dtype == np.complex64 else coo.data[keep].real
    upper = sp.csr_matrix((data.astype(dtype), (coo.row[keep], coo.col[keep])), shape=block.shape)
    upper.sort_indices()
    return upper
