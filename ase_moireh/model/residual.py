"""Models of the self-consistent response only: H = H0 + dH.

H0, the zeroth-step Hamiltonian (the H of superposed free-atom densities, spin-orbit
included), is a fixed function of the geometry that carries nearly all of H's steep
dependence on it (``../shared/DESIGN.md``, "What the model learns"). A residual model
learns dH = H - H0, spin-independent: in a non-magnetic structure the spin-dependent
parts of H equal H0's, so a SOC Hamiltonian is H0_SOC + dH (x) 1_2.

A model file says what it predicts in ``info["target"]``: absent (or ``{"kind": "H"}``)
for whole Hamiltonians, ``{"kind": "dH", "h0": <which H0>}`` for residual models; such
a model never gives a Hamiltonian without an H0 (:func:`require_h0`).
"""

from __future__ import annotations

from ase_moireh.block_operator import BlockOperator, matched_numbers, spinor_lift
from ase_moireh.model.soc import check_same_structure, on_edges, target_structure
from ase_moireh.tightbinding import ElectronicStructure

#: ``info`` key of a model file naming what its members predict
TARGET = "target"
#: ``info[TARGET]["kind"]`` of a residual model
RESIDUAL = "dH"
#: H0 computed by OpenMX's first SCF step (``moireh dataset h0``)
H0_OPENMX = "openmx zeroth step (scf.maxIter 1)"


class MissingH0Error(ValueError):
    """A residual (dH) model was asked for a Hamiltonian without an H0."""


def residual_target(h0_source: str = H0_OPENMX) -> dict:
    """The ``info[TARGET]`` record of a residual model trained against ``h0_source``."""
    return {"kind": RESIDUAL, "h0": h0_source}


def predicts_residual(info: dict) -> bool:
    return (info.get(TARGET) or {}).get("kind") == RESIDUAL


def require_h0(info: dict, h0: BlockOperator | None, where: str = "the model") -> None:
    """A residual model's prediction is only half a Hamiltonian: refuse it without H0."""
    if predicts_residual(info) and h0 is None:
        raise MissingH0Error(
            f"{where} predicts dH = H - H0 ({info[TARGET].get('h0', 'unknown H0')}) and "
            "needs H0 for the same structure; none was given"
        )


def residual(h: BlockOperator, h0: BlockOperator, where: str = "H, H0") -> BlockOperator:
    """dH = H - H0 on H's blocks (H0 must hold each of them), spin-independent: for SOC
    operators the real scalar part (up-up + down-down) / 2 of the spinor difference."""
    check_same_structure(h, h0, where)
    if h.spinful != h0.spinful:
        raise ValueError(f"{where}: H and H0 differ in spin (SOC and collinear)")
    base, have = on_edges(h0, h.edges)
    if not have.all():
        raise ValueError(f"{where}: {int((~have).sum())} blocks of H have no H0 partner")
    diff = BlockOperator(
        h.numbers, h.basis, h.edges, h.values - base.values, h.spinful,
        cell=h.cell, positions=h.positions,
    )  # fmt: skip
    return scalar_part(diff) if h.spinful else diff


def scalar_part(op: BlockOperator) -> BlockOperator:
    """The spin-independent real part of a spinor operator: Re (O_uu + O_dd) / 2."""
    blocks = []
    for e in range(op.nedges):
        b = op.block(e)
        n, m = b.shape[0] // 2, b.shape[1] // 2
        blocks.append(0.5 * (b[:n, :m] + b[n:, m:]).real)  # layout: basis.spinor_matrix
    return BlockOperator.from_blocks(
        op.numbers, op.basis, op.edges, blocks, False, cell=op.cell, positions=op.positions
    )


def add_h0(dh: BlockOperator, h0: BlockOperator) -> BlockOperator:
    """H = H0 + dH on H0's blocks (H0 fixes the sparsity: two orbitals that do not
    overlap have no block); a collinear dH on a SOC H0 adds as dH (x) 1_2."""
    check_same_structure(dh, h0, "dH, H0")
    if dh.spinful and not h0.spinful:
        raise ValueError("a SOC dH needs a SOC H0")
    lifted = spinor_lift(dh) if h0.spinful and not dh.spinful else dh
    out = BlockOperator(
        h0.numbers, h0.basis, h0.edges, h0.values.copy(), h0.spinful,
        cell=h0.cell, positions=h0.positions,
    )  # fmt: skip
    for target, source in matched_numbers(out, lifted):
        out.values[target] += lifted.values[source]
    return out


def residual_structure(
    run: ElectronicStructure, h0: ElectronicStructure, h0_source: str = H0_OPENMX
) -> ElectronicStructure:
    """The training target of a residual model: the run's structure with dH as its
    Hamiltonian (S, valence and basis records kept; no Fermi level: dH has no bands),
    recording which H0 it is relative to."""
    where = f"{run.source or 'run'} / {h0.source or 'H0'}"
    dh = residual(run.hamiltonian, h0.hamiltonian, where)
    return target_structure(run, dh, where, **{TARGET: RESIDUAL, "h0": h0_source})


def training_target(extras: list[dict]) -> dict | None:
    """What a model trained on datasets with these records predicts: ``info[TARGET]``
    of a residual model when every dataset holds dH against one H0, None for whole
    Hamiltonians; a mix is refused (the members would learn two different things)."""
    kinds = {(e.get(TARGET) == RESIDUAL, e.get("h0")) for e in extras}
    if len(kinds) > 1 and any(residual for residual, _ in kinds):
        raise ValueError(
            "the datasets mix dH = H - H0 targets (of one H0) with other targets: "
            f"{sorted(map(str, kinds))}"
        )
    (residual, h0_source), *_ = kinds or {(False, None)}
    return residual_target(h0_source or H0_OPENMX) if residual else None
