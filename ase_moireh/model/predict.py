"""Inference: Atoms -> predicted H (and S) as BlockOperators, ensemble mean and spread.

:func:`check_domain` is the one domain check of every route to a prediction (the
calculator, ``moireh predict``, ``predict --stream``, ``moireh ribbon``, streamed
``write_operators``): :func:`predict_checked` and
:func:`ase_moireh.model.stream.stream_checked` wrap it around the predictions, so each
route refuses and warns alike. :func:`predict_operators` itself checks nothing (training,
tests and benchmarks predict structures on purpose that the check would refuse).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import numpy as np
from ase import Atoms
from tqdm import tqdm

from ase_moireh.basis import spin_factor
from ase_moireh.block_operator import BlockOperator, add_correction, packed_offsets
from ase_moireh.domain import ModelDomain, check, findings, spread_finding
from ase_moireh.memory import ensure_fits
from ase_moireh.model.graph import build_graph
from ase_moireh.model.io import ModelBundle
from ase_moireh.model.partition import Partition
from ase_moireh.model.residual import (
    MissingH0Error,
    add_h0,
    add_level_shift,
    level_shift,
    native_h0,
    predicts_residual,
)
from ase_moireh.model.soc import combine_spread

log = logging.getLogger(__name__)

#: numbers per slice of the running ensemble statistics (bounds their temporaries)
WELFORD_CHUNK = 1 << 21
#: peak memory of the native H0 per atom, collinear / SOC: 0.9 / 2.0 MB measured on
#: twisted cells up to 2,382 atoms (benchmarks/results/h0_timing.md), with 10 % margin
H0_BYTES_PER_ATOM = {False: 1_000_000, True: 2_200_000}


def member_chunks(model, data) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(edge numbers, blocks) of one model a chunk at a time
    (:meth:`HamiltonianModel.stream_blocks`), blocks as (edges, numbers) arrays. Only
    the model's partition share is kept (other elements zero), so shares of a
    partitioned bundle add up. SOC: the model's flat layout (real parts, then imaginary
    parts) becomes complex."""
    share = Partition.from_dict(model.config.extra.get("partition"))
    basis, spinful = model.config.basis_obj, model.config.spinful
    masks = {}
    for key, edges, pred in model.stream_blocks(data):
        if key not in masks:
            masks[key] = share.mask(key, basis, spinful)
        block = pred.cpu().double().numpy()  # the ensemble statistics in double
        block = block * masks[key] if masks[key] is not None else np.zeros_like(block)
        if spinful:
            width = block.shape[1] // 2
            block = block[:, :width] + 1j * block[:, width:]
        yield edges.cpu().numpy(), block


def member_values(model, data, offsets: np.ndarray) -> np.ndarray:
    """Packed BlockOperator values predicted by one model (:func:`member_chunks`): the
    values array is the only thing of the operator's size."""
    values = np.zeros(offsets[-1], dtype=complex if model.config.spinful else float)
    for edges, block in member_chunks(model, data):
        values[offsets[edges][:, None] + np.arange(block.shape[1])] = block
    return values


def predict_hamiltonian(
    models, atoms: Atoms, data, partitioned: bool = False
) -> tuple[BlockOperator, BlockOperator | None]:
    """(H, spread) from the members' predictions on one graph: the mean (the sum of the
    shares when partitioned) and, for a true ensemble, the per-element standard deviation
    (real and imaginary parts separately for SOC)."""
    config = models[0].config
    basis, spinful = config.basis_obj, config.spinful
    edges = edge_rows(data)
    offsets = packed_offsets(basis.norbs(atoms.numbers) * spin_factor(spinful), edges)
    members = tqdm(models, desc=f"predict H ({len(atoms)} atoms)", unit="model", disable=None)
    spread = not partitioned and len(models) > 1
    mean = squares = None
    for count, model in enumerate(members, start=1):
        values = member_values(model, data, offsets)
        if mean is None:
            mean, squares = values, (np.zeros_like(values) if spread else None)
        elif partitioned:
            mean += values
        else:  # Welford, real and imaginary parts apart: one member in memory at a time
            _welford(mean, squares, values, count)
        del values
    meta = {"cell": np.asarray(atoms.cell), "positions": atoms.positions}
    h = BlockOperator(atoms.numbers, basis, edges, mean, spinful, **meta)
    if not spread:
        return h, None
    std = np.sqrt(squares.real / len(models))
    if spinful:
        std = std + 1j * np.sqrt(squares.imag / len(models))
    return h, BlockOperator(atoms.numbers, basis, edges, std, spinful, **meta)


def _welford(mean: np.ndarray, squares: np.ndarray, values: np.ndarray, count: int) -> None:
    """Add member number ``count`` to the running mean and sum of squared deviations
    (in place, a slice at a time so temporaries stay small; complex arrays hold the
    real and imaginary parts' sums apart)."""
    for start in range(0, len(values), WELFORD_CHUNK):
        part = slice(start, start + WELFORD_CHUNK)
        x, m, q = values[part], mean[part], squares[part]
        before = x - m
        m += before / count
        after = x - m
        q += before.real * after.real
        if np.iscomplexobj(q):
            q += 1j * (before.imag * after.imag)


def edge_rows(data) -> np.ndarray:
    """(E, 5) rows (i, j, Rx, Ry, Rz) of a graph's edges, as BlockOperator edges."""
    shifts = data.edge_shift.cpu().numpy().round().astype(np.int64)
    return np.column_stack([data.edge_index.cpu().numpy().T, shifts])


def members_on_graph(models, atoms: Atoms, device: str, h0: BlockOperator | None = None):
    """(models on ``device``, the graph of ``atoms`` they share: one configuration);
    members that read H0 (``ModelConfig.h0_features``) get ``h0`` on the graph, and
    are refused without it."""
    config = models[0].config
    dtype = next(models[0].parameters()).dtype
    if not config.h0_features:
        h0 = None
    elif h0 is None:
        raise MissingH0Error(
            "the model reads H0 (h0_features): pass the structure's H0, the one it was trained with"
        )
    data = build_graph(atoms, config.species, config.cutoff, dtype=dtype, h0=h0).to(device)
    return [m.to(device) for m in models], data


def _predict_members(models, atoms: Atoms, device: str, partitioned: bool, h0=None):
    """(H, spread) of members that share one configuration, on their own graph (with
    ``h0`` when they read it)."""
    models, data = members_on_graph(models, atoms, device, h0)
    return predict_hamiltonian(models, atoms, data, partitioned)


def predict_operators(
    bundle: ModelBundle, atoms: Atoms, device: str = "cpu", h0: BlockOperator | None = None
) -> tuple[BlockOperator, BlockOperator | None, BlockOperator | None]:
    """(H, S, spread): H is the ensemble mean (or the sum of the shares of a partitioned
    bundle), spread the members' per-element standard deviation (None for a single or
    partitioned model); S from the two-centre overlap model. A bundle with a SOC
    correction gives H_col (x) 1_2 + dH_SO, each part from its own ensemble and graph.
    A residual (dH) bundle gives H0 + dH on H0's blocks: ``h0`` when given, else the
    H0 the model was trained against, rebuilt natively (:func:`residual_h0`); a SOC one
    H0_SOC + (dH + mu S) (x) 1_2 (:func:`ase_moireh.model.residual.soc_level_shift`).
    Members that read H0 (``h0_features``) get that H0 (its spin-independent part) on
    their graph."""
    start = time.perf_counter()
    if predicts_residual(bundle.info) and h0 is None:
        h0 = residual_h0(bundle, atoms)
    h, spread = _predict_members(bundle.models, atoms, device, bundle.partitioned, h0)
    s = None
    if predicts_residual(bundle.info):  # H0's blocks are H's: S on them serves both
        if bundle.overlap is not None:
            s = bundle.overlap.operator(atoms, h0.edges)
            add_level_shift(h, s, level_shift(bundle.info))
        h = add_h0(h, h0)
    if bundle.corrections:
        dh, dspread = _predict_members(bundle.corrections, atoms, device, False)
        h = add_correction(h, dh)  # one after the other: the old parts go at once
        del dh
        spread = combine_spread(spread, dspread)
        del dspread
    if s is None and bundle.overlap is not None:
        s = bundle.overlap.operator(atoms, h.edges)
    log.info(
        "predicted H%s of %d atoms (%d blocks, %d model(s)) in %.1f s",
        " and exact S" if s is not None else "",
        len(atoms),
        h.nedges,
        len(bundle.models) + len(bundle.corrections),
        time.perf_counter() - start,
    )
    return h, s, spread


def residual_h0(bundle: ModelBundle, atoms: Atoms) -> BlockOperator:
    """The native H0 of ``atoms`` that a residual bundle adds its dH to (in the
    bundle's spin layout); a bundle trained against another H0 is refused, naming it
    (:func:`ase_moireh.model.residual.native_h0`)."""
    need = len(atoms) * H0_BYTES_PER_ATOM[bundle.spinful]
    hint = "a dH model holds its native H0 whole, streamed predictions too"
    ensure_fits(need, f"the native H0 of {describe(atoms)}", hint)
    start = time.perf_counter()
    h0 = native_h0(bundle.info, atoms, bundle.config.basis_obj, where="this model")
    log.info("native H0 of %d atoms in %.1f s", len(atoms), time.perf_counter() - start)
    return h0


# ---------------------------------------------------------------------------- domain


def describe(atoms: Atoms) -> str:
    """How warnings and refusals name a structure."""
    return f"{atoms.get_chemical_formula()} ({len(atoms)} atoms)"


def model_domain(bundle: ModelBundle) -> ModelDomain | None:
    """What the model was trained on (None: its file records nothing)."""
    data = bundle.info.get("domain")
    return None if data is None else ModelDomain.from_dict(data)


def domain_findings(bundle: ModelBundle, atoms: Atoms) -> tuple[list[str], list[str]]:
    """(severe, mild) reasons why ``atoms`` lies outside the model's training domain."""
    domain = model_domain(bundle)
    if domain is None:
        return [], []
    return findings(atoms, domain, bundle.config.cutoff)


def check_domain(bundle: ModelBundle, atoms: Atoms, strict: bool = True) -> None:
    """The domain check of every prediction route: raise
    :class:`~ase_moireh.domain.OutOfDomainError` on severe findings (``strict``), warn
    (:class:`~ase_moireh.domain.OutOfDomainWarning`) on the others."""
    if model_domain(bundle) is None:
        log.warning("the model file records no training domain: structures go unchecked")
        return
    severe, mild = domain_findings(bundle, atoms)
    check(severe, mild, strict=strict, where=describe(atoms))


def check_spread(bundle: ModelBundle, atoms: Atoms, largest: float | None) -> None:
    """Warn when the ensemble disagreed (``largest`` spread of H, eV) more than on
    validation; None (a single model) says nothing."""
    domain = model_domain(bundle)
    if domain is not None:
        check([], spread_finding(largest, domain), where=describe(atoms))


def largest_spread(spread: BlockOperator | None) -> float | None:
    """The largest element of an ensemble's spread of H (None: no spread)."""
    if spread is None:
        return None
    return float(np.abs(spread.values).max()) if spread.nedges else 0.0


def predict_checked(
    bundle: ModelBundle, atoms: Atoms, device: str = "cpu", strict: bool = True
) -> tuple[BlockOperator, BlockOperator | None, BlockOperator | None]:
    """:func:`predict_operators` behind the domain check, followed by the spread check:
    how every in-memory route predicts."""
    check_domain(bundle, atoms, strict)
    h, s, spread = predict_operators(bundle, atoms, device)
    check_spread(bundle, atoms, largest_spread(spread))
    return h, s, spread
