"""The file of a streamed prediction (``moireh predict --stream``, ``moireh ribbon
--write``): its layout, a writer of its groups and its reader. Torch-free, so that every
MPI rank of a distributed solve reads its rows without loading the model code
(:mod:`ase_moireh.model.stream` writes the files).

The SOC Hamiltonian is stored as the model makes it: H_col (real, spinless) and, apart,
dH_SO (complex spinors, on its shorter-ranged edges), so the file is ~1/8 of the SOC
operator's size; :func:`read_streamed` adds them for a cell that fits in memory.

File layout (every group is a :class:`BlockOperator` group, readable with
``BlockOperator.load(path, group)``; edges in the order they were streamed):

* ``/hamiltonian``: H of the bundle's main members (collinear, or a direct SOC model),
  with ``block_spread`` (per block: the largest standard deviation over its numbers).
* ``/correction``: dH_SO, with its ``block_spread`` (bundles with a SOC correction).
* ``/overlap``: S on the edges of ``/hamiltonian`` (the same dataset, hard-linked).
"""

from __future__ import annotations

import os

import h5py
import numpy as np
from ase import Atoms

from ase_moireh.basis import Basis
from ase_moireh.block_operator import (
    BlockOperator,
    add_correction,
    chunk_slices,
    concatenated_ranges,
)

STREAM_TAG = "ase-moireh streamed prediction 1"
#: numbers per HDF5 storage chunk of the value arrays
STORAGE_CHUNK = 1 << 20


def empty_operator(atoms: Atoms, basis, spinful: bool = False) -> BlockOperator:
    """An operator without blocks: the species, basis and cell a group's header records."""
    meta = {"cell": np.asarray(atoms.cell), "positions": atoms.positions}
    return BlockOperator(atoms.numbers, basis, np.zeros((0, 5)), [], spinful, **meta)


def values_dataset(group: h5py.Group, dtype) -> h5py.Dataset:
    """The growing 1-d array of a group's packed block values."""
    return group.create_dataset(
        "values", (0,), dtype=dtype, maxshape=(None,), chunks=(STORAGE_CHUNK,)
    )


def append_rows(dataset: h5py.Dataset, rows: np.ndarray) -> None:
    """Grow a resizable dataset by ``rows`` along its first axis."""
    start = dataset.shape[0]
    dataset.resize(start + len(rows), axis=0)
    dataset[start:] = rows


class GroupWriter:
    """Appends chunks of edges, values and per-block spread to one BlockOperator group."""

    def __init__(self, group: h5py.Group, header: BlockOperator, dtype, spread: bool):
        header.write_header(group)
        self.edges = group.create_dataset(
            "edges", (0, 5), dtype=np.int64, maxshape=(None, 5), chunks=(1 << 14, 5)
        )
        self.values = values_dataset(group, dtype)
        self.spread = None
        if spread:
            self.spread = group.create_dataset(
                "block_spread", (0,), dtype=np.float32, maxshape=(None,), chunks=(1 << 16,)
            )

    def add(self, edges: np.ndarray, blocks: np.ndarray, spread: np.ndarray | None) -> None:
        append_rows(self.edges, edges)
        append_rows(self.values, blocks.ravel())
        if self.spread is not None:
            append_rows(self.spread, spread.astype(np.float32))


def read_streamed(
    path: str | os.PathLike, atoms: range | None = None
) -> tuple[BlockOperator, BlockOperator | None]:
    """(H, S) of a file of :func:`ase_moireh.model.stream.stream_prediction`, in double
    precision: H_col (x) 1_2 + dH_SO where the file holds a SOC correction. ``atoms``:
    only the blocks of rows of these atoms (edges (i, j, R) with i in the range: an MPI
    rank's share; the values are read a window at a time), else everything (for cells
    that fit)."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != STREAM_TAG:
                raise ValueError(f"{path}: not a streamed prediction (moireh ribbon --write)")
            h = _read_group(f["hamiltonian"], atoms)
            if "correction" in f:
                h = add_correction(h, _read_group(f["correction"], atoms))
            s = _read_group(f["overlap"], atoms) if "overlap" in f else None
    except OSError as err:
        raise ValueError(f"{path}: cannot read HDF5 ({err})") from None
    return h, s


def _read_group(group: h5py.Group, atoms: range | None) -> BlockOperator:
    """One BlockOperator group, whole or the blocks of rows of ``atoms``."""
    spinful = bool(group.attrs["spinful"])
    header = BlockOperator(
        group["numbers"][()],
        Basis.from_dftio(group.attrs["basis"]),
        np.zeros((0, 5)),
        [],
        spinful,
        cell=group["cell"][()] if "cell" in group else None,
        positions=group["positions"][()] if "positions" in group else None,
    )
    edges = group["edges"][()]
    if atoms is None:
        values = group["values"][()]
    else:
        keep = (edges[:, 0] >= atoms.start) & (edges[:, 0] < atoms.stop)
        sizes = header.norbs[edges[:, 0]] * header.norbs[edges[:, 1]]
        values, edges = _gather(group["values"], sizes, keep), edges[keep]
    values = values.astype(complex if spinful else float)
    return BlockOperator(
        header.numbers, header.basis, edges, values, spinful, header.cell, header.positions
    )


def _gather(values: h5py.Dataset, sizes: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The numbers of the kept blocks, read a window of about STORAGE_CHUNK numbers at a
    time (never the whole array)."""
    ends = np.cumsum(sizes)
    starts = ends - sizes
    parts = []
    for window in chunk_slices(sizes, STORAGE_CHUNK):
        chosen = np.flatnonzero(keep[window]) + window.start
        if len(chosen) == 0:
            continue
        first, last = int(starts[chosen[0]]), int(ends[chosen[-1]])
        numbers = values[first:last]
        parts.append(numbers[concatenated_ranges(starts[chosen] - first, sizes[chosen])])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=values.dtype)
