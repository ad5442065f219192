"""Models of the self-consistent response only: H = H0 + dH.

H0, the zeroth-step Hamiltonian (the H of superposed free-atom densities, spin-orbit
included), is a fixed function of the geometry that carries nearly all of H's steep
dependence on it (``../shared/DESIGN.md``, "What the model learns"). A residual model
learns dH = H - H0, spin-independent: in a non-magnetic structure the spin-dependent
parts of H equal H0's, so a SOC Hamiltonian is H0_SOC + dH (x) 1_2.

A model file says what it predicts in ``info["target"]``: absent (or ``{"kind": "H"}``)
for whole Hamiltonians, ``{"kind": "dH", "h0": <which H0>, ...}`` for residual models;
such a model never gives a Hamiltonian without an H0 (:func:`require_h0`). A model
trained against the native H0 (:mod:`ase_moireh.h0`) also records the H0's settings
(basis strings, pseudopotentials, grid cutoff, digests of the files: :func:`h0_settings`)
and whether its Hamiltonians carry spin-orbit coupling, so that every prediction route
rebuilds the same H0 itself (:func:`native_h0`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
from pathlib import Path

import numpy as np
from ase import Atoms

from ase_moireh.basis import Basis, parse_openmx_basis
from ase_moireh.block_operator import BlockOperator, matched_numbers, spinor_lift
from ase_moireh.model.soc import check_same_structure, on_edges, target_structure
from ase_moireh.tightbinding import ElectronicStructure

#: ``info`` key of a model file naming what its members predict
TARGET = "target"
#: ``info[TARGET]["kind"]`` of a residual model
RESIDUAL = "dH"
#: H0 computed by OpenMX's first SCF step (``moireh dataset h0``)
H0_OPENMX = "openmx zeroth step (scf.maxIter 1)"
#: ``ElectronicStructure.extra`` key of a dH target's H0 settings (:func:`h0_settings`)
H0_SETTINGS = "h0_settings"
#: ``info[TARGET]`` key of a SOC residual model's level shift mu (eV): (dH + mu S) (x) 1_2
LEVEL_SHIFT = "level_shift"


class MissingH0Error(ValueError):
    """A residual (dH) model was asked for a Hamiltonian without an H0."""


def residual_target(
    h0_source: str = H0_OPENMX, settings: dict | None = None, spinful: bool = False
) -> dict:
    """The ``info[TARGET]`` record of a residual model trained against ``h0_source``
    (with ``settings``, :func:`h0_settings`, an H0 any route can rebuild); ``spinful``:
    its Hamiltonians are H0_SOC + dH (x) 1_2."""
    record = {"kind": RESIDUAL, "h0": h0_source, "spinful": bool(spinful)}
    return record | ({"settings": dict(settings)} if settings else {})


def predicts_residual(info: dict) -> bool:
    return (info.get(TARGET) or {}).get("kind") == RESIDUAL


def residual_spinful(info: dict) -> bool:
    """Whether a residual model's Hamiltonians carry spin-orbit coupling (from H0)."""
    return predicts_residual(info) and bool(info[TARGET].get("spinful"))


def with_spin(info: dict, spinful: bool, level_shift: float = 0.0) -> dict:
    """``info`` of the same residual model predicting SOC (H0_SOC + (dH + mu S) (x) 1_2,
    mu = ``level_shift`` in eV: :func:`soc_level_shift`) or collinear Hamiltonians: the
    members are the same, only the H0 (and mu) differ."""
    if not predicts_residual(info):
        raise ValueError("only a dH model takes its spin from H0")
    shift = {LEVEL_SHIFT: float(level_shift)} if spinful and level_shift else {}
    target = {k: v for k, v in info[TARGET].items() if k != LEVEL_SHIFT}
    return {**info, TARGET: {**target, "spinful": bool(spinful), **shift}}


def level_shift(info: dict) -> float:
    """mu (eV) a residual model adds as mu S to its dH (0: none)."""
    return float((info.get(TARGET) or {}).get(LEVEL_SHIFT, 0.0)) if predicts_residual(info) else 0.0


def soc_level_shift(
    twins: list[tuple[BlockOperator, BlockOperator, BlockOperator]],
) -> tuple[float, list[float]]:
    """(mu, mu of each twin): the least-squares mu in scalar(dH_SOC) ~ dH_col + mu S over
    (dH_col, dH_SOC, S) of SOC/collinear twins (same geometry). Why: a SOC run's
    self-consistent potential sits a near-constant few meV above its collinear twin's
    (8.1-8.7 meV over the corpus's 19 twins), a uniform level shift that a collinear dH
    on H0_SOC would miss."""
    nums, dens = [], []
    for col, soc, s in twins:
        d = scalar_part(soc) if soc.spinful else soc
        where, ws = col.find(d.edges), s.find(d.edges)
        num = den = 0.0
        for e in np.flatnonzero((where >= 0) & (ws >= 0)):
            sv = s.block(int(ws[e]))
            num += float(((d.block(e) - col.block(int(where[e]))) * sv).sum())
            den += float((sv * sv).sum())
        nums.append(num)
        dens.append(den)
    return sum(nums) / sum(dens), [n / d for n, d in zip(nums, dens, strict=True)]


def add_level_shift(dh: BlockOperator, s: BlockOperator, mu: float) -> None:
    """dH += mu S in place on dH's blocks (collinear dH; S on the same blocks)."""
    if mu:
        for target, source in matched_numbers(dh, s):
            dh.values[target] += mu * s.values[source]


# --------------------------------------------------------------------------- native H0


def h0_settings(builder) -> dict:
    """What a model trained against ``builder``'s H0 (a
    :class:`~ase_moireh.h0.hamiltonian.ZerothStepHamiltonian`) records to rebuild it:
    basis strings, pseudopotential names, grid cutoff (Ry) and the SHA-256 of each file's
    content (compressed or not), so that other files under the same names are noticed."""
    return {
        "basis": dict(builder.openmx_basis),
        "pseudopotentials": dict(builder.pseudopotentials),
        "energy_cutoff": float(builder.energy_cutoff),
        "digests": _digests(builder.folder, builder.openmx_basis, builder.pseudopotentials),
    }


def _digests(folder, basis: dict[str, str], pseudopotentials: dict[str, str]) -> dict[str, str]:
    from ase_moireh.io.pao import find_pao
    from ase_moireh.io.vps import find_vps

    paths = [find_pao(folder, parse_openmx_basis(b)[0]) for b in basis.values()]
    paths += [find_vps(folder, name) for name in pseudopotentials.values()]
    return {_plain_name(p): hashlib.sha256(_content(p)).hexdigest() for p in sorted(set(paths))}


def _plain_name(path: Path) -> str:
    return path.name.removesuffix(".xz").removesuffix(".gz")


def _content(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(raw)
    return gzip.decompress(raw) if path.suffix == ".gz" else raw


def native_h0(
    info: dict, atoms: Atoms, basis: Basis, data_path=None, where: str = "the model"
) -> BlockOperator:
    """The H0 a residual model was trained against, rebuilt natively for ``atoms`` on
    OpenMX's blocks, in the model's spin layout. Refused, naming what is missing, when
    the model's H0 is not the native one (OpenMX's zeroth step: pass ``h0``) or when the
    files found differ from those it was trained with. Averaged over the structure's
    rotations (:func:`~ase_moireh.symmetry.symmetrized`): V_xc's grid breaks them by up
    to ~20 meV, and a symmetric structure's H must keep them exactly (C3 eigenvalues).
    A structure without symmetry gets OpenMX's H0 as it is."""
    from ase_moireh.h0.hamiltonian import SOURCE, resolve_h0
    from ase_moireh.symmetry import proper_operations, symmetrized

    target = info.get(TARGET) or {}
    settings = target.get("settings")
    if target.get("h0") != SOURCE or not settings:
        raise MissingH0Error(
            f"{where} predicts dH = H - H0 ({target.get('h0', 'unknown H0')}), an H0 that "
            "ase-moireh does not rebuild: pass that H0 for the same structure"
        )
    builder = resolve_h0(
        basis,
        settings["basis"],
        data_path,
        settings["pseudopotentials"],
        settings["energy_cutoff"],
    )
    found = h0_settings(builder)["digests"]
    changed = sorted(k for k, v in settings.get("digests", {}).items() if found.get(k) != v)
    if changed:
        raise MissingH0Error(
            f"{where} was trained with other {', '.join(changed)} than those in "
            f"{builder.folder}: its H0 cannot be rebuilt from them"
        )
    h0 = builder.operator(atoms, None, residual_spinful(info))
    return symmetrized(h0, atoms, proper_operations(atoms))


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
    run: ElectronicStructure,
    h0: ElectronicStructure,
    h0_source: str = H0_OPENMX,
    settings: dict | None = None,
) -> ElectronicStructure:
    """The training target of a residual model: the run's structure with dH as its
    Hamiltonian (S, valence and basis records kept; no Fermi level: dH has no bands),
    recording which H0 it is relative to (and its ``settings``, :func:`h0_settings`)."""
    where = f"{run.source or 'run'} / {h0.source or 'H0'}"
    dh = residual(run.hamiltonian, h0.hamiltonian, where)
    extra = {TARGET: RESIDUAL, "h0": h0_source} | ({H0_SETTINGS: settings} if settings else {})
    return target_structure(run, dh, where, **extra)


def training_target(extras: list[dict]) -> dict | None:
    """What a model trained on datasets with these records predicts: ``info[TARGET]``
    of a residual model when every dataset holds dH against one H0 (of one set of
    settings), None for whole Hamiltonians; a mix is refused (the members would learn
    two different things). Residual models start collinear (:func:`with_spin`)."""
    kinds = {(e.get(TARGET) == RESIDUAL, e.get("h0"), _key(e.get(H0_SETTINGS))) for e in extras}
    if len(kinds) > 1 and any(residual for residual, *_ in kinds):
        raise ValueError(
            "the datasets mix dH = H - H0 targets (of one H0) with other targets: "
            f"{sorted(map(str, kinds))}"
        )
    (residual, h0_source, _), *_ = kinds or {(False, None, None)}
    if not residual:
        return None
    settings = next((e.get(H0_SETTINGS) for e in extras if e.get(H0_SETTINGS)), None)
    return residual_target(h0_source or H0_OPENMX, settings)


def _key(settings: dict | None) -> str | None:
    """A hashable form of H0 settings (datasets agree when their settings do)."""
    return None if not settings else json.dumps(settings, sort_keys=True)
