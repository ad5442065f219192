"""SOC as a correction on a collinear Hamiltonian: H_SOC = H_col (x) 1_2 + dH_SO.

Why: collinear DFT runs are ~4x cheaper than SOC runs, so a corpus holds many more of
them. The collinear model learns from all of them; a second, spinful model learns only
dH_SO from SOC/collinear twins of one geometry. dH_SO holds the spin-orbit coupling
(short-ranged, nearly on-site) and the small change of the self-consistent potential
that SOC brings. The spinor layout is the project's (:func:`ase_moireh.basis.spinor_matrix`):
a collinear block B lifts to [[B, 0], [0, B]].
"""

from __future__ import annotations

import numpy as np

from ase_moireh.block_operator import (
    BlockOperator,
    concatenated_ranges,
    matched_numbers,
    packed_offsets,
    spinor_lift,
)
from ase_moireh.tightbinding import ElectronicStructure

#: ``ModelConfig.extra["role"]`` of the members of a bundle that predict dH_SO
SOC_CORRECTION = "soc_correction"
#: positions of twins may differ by the precision of the files they came from (A)
SAME_POSITIONS = 1e-4


def _with_values(op: BlockOperator, edges: np.ndarray, values: np.ndarray, spinful: bool):
    return BlockOperator(
        op.numbers, op.basis, edges, values, spinful, cell=op.cell, positions=op.positions
    )


def on_edges(op: BlockOperator, edges: np.ndarray) -> tuple[BlockOperator, np.ndarray]:
    """``op`` on the given (i, j, R) rows, zero blocks where it has none; also the mask
    of the rows it had."""
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 5)
    found = op.find(edges)
    have = found >= 0
    target = packed_offsets(op.norbs, edges)
    sizes = np.diff(target)[have]
    values = np.zeros(int(target[-1]), dtype=op.values.dtype)
    values[concatenated_ranges(target[:-1][have], sizes)] = op.values[
        concatenated_ranges(op.offsets[found[have]], sizes)
    ]
    return _with_values(op, edges, values, op.spinful), have


def check_same_structure(a: BlockOperator, b: BlockOperator, where: str) -> None:
    """Two operators of one structure: same atoms and basis, positions within
    :data:`SAME_POSITIONS` (twins, or H and its H0)."""
    if not np.array_equal(a.numbers, b.numbers) or a.basis != b.basis:
        raise ValueError(f"{where}: the operators differ in atoms or basis")
    if a.positions is not None and b.positions is not None:
        moved = float(np.abs(a.positions - b.positions).max())
        if moved > SAME_POSITIONS:
            raise ValueError(f"{where}: the positions differ by up to {moved:.2g} A")


def target_structure(
    run: ElectronicStructure, op: BlockOperator, where: str, **extra
) -> ElectronicStructure:
    """A training target: ``run``'s structure with ``op`` as its Hamiltonian (S,
    valence and basis records kept; no Fermi level: a difference has no bands)."""
    return ElectronicStructure(
        run.atoms, op, run.overlap, None, source=where, extra={**run.extra, **extra}
    )


def _check_twins(soc: BlockOperator, col: BlockOperator, where: str) -> None:
    if not soc.spinful or col.spinful:
        raise ValueError(f"{where}: need a SOC (spinful) and a collinear (spinless) Hamiltonian")
    check_same_structure(soc, col, where)


def soc_correction(soc: BlockOperator, col: BlockOperator, where: str = "twins") -> BlockOperator:
    """dH_SO = H_SOC - H_col (x) 1_2 on the SOC run's blocks (same structure required;
    every SOC block must have its collinear partner)."""
    _check_twins(soc, col, where)
    lifted, have = on_edges(spinor_lift(col), soc.edges)
    if not have.all():
        raise ValueError(
            f"{where}: {int((~have).sum())} blocks of the SOC run have no collinear partner"
        )
    return _with_values(soc, soc.edges, soc.values - lifted.values, True)


def combine_spread(
    col: BlockOperator | None, correction: BlockOperator | None
) -> BlockOperator | None:
    """Spread of H_col (x) 1_2 + dH_SO from the two ensembles' spreads, taken as
    independent: real parts add in quadrature, the imaginary part is dH_SO's alone.

    Without a collinear spread (one collinear member) the result is None, unknown:
    dH_SO's spread alone covers only its shorter-ranged blocks and the smaller part of
    the error, so it would understate the spread where the error is. A correction
    without spread (one dH_SO member) leaves the collinear spread lifted to spinors."""
    if col is None:
        return None
    out = spinor_lift(col)
    if correction is None:
        return out
    for target, source in matched_numbers(out, correction):
        delta = correction.values[source]
        out.values[target] = np.hypot(out.values[target].real, delta.real) + 1j * delta.imag
    return out


def correction_structure(soc: ElectronicStructure, col: ElectronicStructure) -> ElectronicStructure:
    """The training target of a correction model: the SOC run's structure with dH_SO as
    its Hamiltonian (S, valence and basis records kept)."""
    where = f"{soc.source or 'SOC run'} / {col.source or 'collinear run'}"
    delta = soc_correction(soc.hamiltonian, col.hamiltonian, where)
    return target_structure(soc, delta, where, target=SOC_CORRECTION)
