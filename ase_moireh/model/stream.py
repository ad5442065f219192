"""Predictions streamed to disk: H and S of cells too big to hold (10^5-atom ribbons).

A 127k-atom SOC ribbon has ~7 M blocks: H(R) in memory would take ~140 GB (complex128
spinors). Here every member of the ensemble walks the same chunks of blocks
(:meth:`HamiltonianModel.stream_blocks`) in lockstep; each chunk's ensemble mean, the
largest spread of each block and the exact S of the same blocks are appended to an HDF5
file and dropped. What stays in memory is the graph, the node features and one chunk;
for a residual (dH) model also its native H0, whole (about 1 MB per atom collinear,
2.5 MB with SOC: streaming such a model is bounded by that, near 10^4 atoms here).

The file's layout and its reader: :mod:`ase_moireh.io.streamed` (torch-free).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
from ase import Atoms
from tqdm import tqdm

from ase_moireh.basis import spin_factor
from ase_moireh.block_operator import BlockOperator
from ase_moireh.files import atomic_file
from ase_moireh.io.streamed import (
    STREAM_TAG,
    GroupWriter,
    append_rows,
    empty_operator,
    values_dataset,
)
from ase_moireh.memory import peak_rss
from ase_moireh.model.io import ModelBundle
from ase_moireh.model.predict import (
    check_domain,
    check_spread,
    edge_rows,
    member_chunks,
    members_on_graph,
    residual_h0,
)
from ase_moireh.model.residual import add_h0, level_shift, predicts_residual
from ase_moireh.model.soc import on_edges

log = logging.getLogger(__name__)

PRECISIONS = {"single": (np.float32, np.complex64), "double": (np.float64, np.complex128)}


@dataclass
class StreamReport:
    """What a streamed prediction wrote and what it cost."""

    path: str
    atoms: int
    orbitals: int  # rows of H(k), spin included
    blocks: int
    correction_blocks: int
    file_GB: float  # noqa: N815 (unit in the name)
    seconds: float
    atoms_per_second: float
    peak_rss_GB: float  # noqa: N815
    largest_spread_eV: float | None  # noqa: N815

    def to_dict(self) -> dict:
        return asdict(self)


def ensemble_chunks(models, data, edges: np.ndarray, partitioned: bool) -> Iterator[tuple]:
    """(edge rows, mean blocks, per-block largest spread or None) a chunk at a time, the
    members walking the same chunks in lockstep (they share one configuration)."""
    streams = [member_chunks(m, data) for m in models]
    spread = not partitioned and len(models) > 1
    for parts in zip(*streams, strict=True):
        numbers = parts[0][0]
        if any(not np.array_equal(numbers, p[0]) for p in parts[1:]):
            raise RuntimeError("ensemble members streamed different blocks")
        stack = np.stack([p[1] for p in parts])
        mean = stack.sum(axis=0) if partitioned else stack.mean(axis=0)
        largest = None
        if spread:
            std = stack.real.std(axis=0) + 1j * stack.imag.std(axis=0)
            largest = np.maximum(std.real, std.imag).max(axis=1)
        yield edges[numbers], mean, largest


def _stream_group(
    f: h5py.File,
    name: str,
    models,
    atoms: Atoms,
    device: str,
    dtypes,
    partitioned=False,
    h0: BlockOperator | None = None,
    shift: tuple | None = None,
):
    """Stream one ensemble's H into group ``name`` (with ``h0``: H0 + the ensemble's dH,
    on the blocks H0 has, with ``shift`` (:func:`_plus_h0`) dH + mu S); yields each
    chunk's edges (for S)."""
    config = models[0].config
    models, data = members_on_graph(models, atoms, device, h0)
    edges = edge_rows(data)
    spinful = config.spinful if h0 is None else h0.spinful
    header = empty_operator(atoms, config.basis_obj, spinful)
    spread = not partitioned and len(models) > 1
    writer = GroupWriter(f.create_group(name), header, dtypes[spinful], spread)
    bar = tqdm(total=len(edges), desc=f"{name} ({len(atoms)} atoms)", unit="block", disable=None)
    largest, written = 0.0, 0
    for rows, mean, block_spread in ensemble_chunks(models, data, edges, partitioned):
        if h0 is not None:
            rows, mean, block_spread = _plus_h0(h0, rows, mean, block_spread, header, shift)
        written += len(rows)
        writer.add(rows, mean, block_spread)
        if block_spread is not None and len(block_spread):
            largest = max(largest, float(block_spread.max()))
        bar.update(len(rows))
        yield rows
    bar.close()
    f[name].attrs["largest_spread"] = largest
    if h0 is not None and written != h0.nedges:
        log.warning("%d of H0's %d blocks had no dH (beyond the model's cutoff): left out",
                    h0.nedges - written, h0.nedges)  # fmt: skip


def _plus_h0(h0: BlockOperator, rows, mean, spread, header: BlockOperator, shift=None):
    """(rows, H0 + dH blocks, spread) of a chunk's rows that H0 has (the others lie
    beyond both orbitals' reach, where H is zero); a collinear dH lifts onto a SOC H0.
    ``shift``: (mu, exact overlap, atoms) of a SOC model's level shift, dH + mu S."""
    base, have = on_edges(h0, rows)
    dh = BlockOperator(header.numbers, header.basis, rows, mean.ravel(), False)
    if shift is not None:
        mu, overlap, atoms = shift
        dh.values += mu * overlap.packed_values(atoms, rows)
    values = add_h0(dh, base).values.reshape(len(rows), -1)  # one block shape per chunk
    return rows[have], values[have], None if spread is None else spread[have]


def stream_prediction(
    bundle: ModelBundle,
    atoms: Atoms,
    path: str | os.PathLike,
    device: str = "cpu",
    precision: str = "single",
) -> StreamReport:
    """Predict H (and the exact S) of ``atoms`` straight into the HDF5 file ``path``
    (written to a temporary name, renamed when complete). ``precision``: the stored
    numbers, "single" (float32, halves the file; 1e-7 relative, far below the model's
    error) or "double"."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    dtypes = dict(zip((False, True), PRECISIONS[precision], strict=True))
    start = time.perf_counter()
    h0 = residual_h0(bundle, atoms) if predicts_residual(bundle.info) else None
    with atomic_file(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = STREAM_TAG
            f.attrs["soc"] = bundle.spinful
            s_values = _overlap_writer(f, bundle, atoms, dtypes[False])
            mu = level_shift(bundle.info)
            shift = (mu, bundle.overlap, atoms) if mu else None
            for rows in _stream_group(
                f, "hamiltonian", bundle.models, atoms, device, dtypes, bundle.partitioned, h0,
                shift,
            ):  # fmt: skip
                if s_values is not None:
                    s_values(rows)
            if s_values is not None:
                f["overlap/edges"] = f["hamiltonian/edges"]  # hard link: the same rows
            if bundle.corrections:
                for _ in _stream_group(f, "correction", bundle.corrections, atoms, device, dtypes):
                    pass
            report = _report(f, str(path), atoms, bundle, time.perf_counter() - start)
    report.file_GB = round(Path(path).stat().st_size / 2**30, 2)
    log.info(
        "streamed %d atoms (%d blocks) to %s in %.0f s",
        len(atoms),
        report.blocks,
        path,
        report.seconds,
    )
    return report


def stream_checked(
    bundle: ModelBundle,
    atoms: Atoms,
    path: str | os.PathLike,
    device: str = "cpu",
    precision: str = "single",
    strict: bool = True,
) -> StreamReport:
    """:func:`stream_prediction` behind the domain check every prediction route passes
    (:func:`ase_moireh.model.predict.check_domain`: nothing is written for a refused
    structure), followed by the spread check."""
    check_domain(bundle, atoms, strict)
    report = stream_prediction(bundle, atoms, path, device, precision)
    check_spread(bundle, atoms, report.largest_spread_eV)
    return report


def _overlap_writer(f: h5py.File, bundle: ModelBundle, atoms: Atoms, dtype):
    """A function appending the exact S of a chunk of edges to ``/overlap`` (None: the
    bundle's basis has no radial functions)."""
    if bundle.overlap is None:
        return None
    group = f.create_group("overlap")
    empty_operator(atoms, bundle.overlap.basis).write_header(group)
    values = values_dataset(group, dtype)

    def append(rows: np.ndarray) -> None:
        append_rows(values, bundle.overlap.packed_values(atoms, rows))

    return append


def _report(f: h5py.File, path: str, atoms: Atoms, bundle: ModelBundle, seconds: float):
    norbs = bundle.config.basis_obj.norbs(atoms.numbers)
    spinful = bool(f.attrs["soc"])
    spread = None  # unknown with one collinear member, as combine_spread has it
    if "block_spread" in f["hamiltonian"]:
        groups = [g for g in ("hamiltonian", "correction") if g in f]
        spread = max(float(f[g].attrs["largest_spread"]) for g in groups)
    return StreamReport(
        path=path,
        atoms=len(atoms),
        orbitals=int(norbs.sum()) * spin_factor(spinful),
        blocks=int(f["hamiltonian/edges"].shape[0]),
        correction_blocks=int(f["correction/edges"].shape[0]) if "correction" in f else 0,
        file_GB=0.0,
        seconds=round(seconds, 1),
        atoms_per_second=round(len(atoms) / seconds, 1),
        peak_rss_GB=round(peak_rss() / 2**30, 2),
        largest_spread_eV=spread,
    )
