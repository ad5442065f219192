"""Comparing two operators: MAE per element pair, per orbital element and per shell pair,
and the heat maps of the paper's Fig. 2e-h."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ase_moireh.basis import Basis
from ase_moireh.block_operator import BlockOperator
from ase_moireh.plotting import new_figure, save_figure


def error_maps(pred: BlockOperator, ref: BlockOperator) -> dict[str, np.ndarray]:
    """Per element pair: mean |pred - ref| of every block element over the common edges
    (for SOC the four spin blocks are averaged, giving an n_i x n_j map)."""
    idx = ref.find(pred.edges)
    labels = pred.pair_labels()
    sums: dict[str, list] = {}
    for e, f in enumerate(idx):
        if f < 0:
            continue
        diff = np.abs(pred.block(e) - ref.block(int(f)))
        if pred.spinful:
            ni, nj = diff.shape[0] // 2, diff.shape[1] // 2
            diff = diff.reshape(2, ni, 2, nj).mean(axis=(0, 2))
        acc = sums.setdefault(labels[e], [np.zeros_like(diff), 0])
        acc[0] += diff
        acc[1] += 1
    if not sums:
        raise ValueError("the two operators share no blocks")
    return {k: s / n for k, (s, n) in sorted(sums.items())}


def shell_pair_mae(maps: dict[str, np.ndarray], pred: BlockOperator) -> dict[str, dict]:
    """Per element pair, MAE of every shell pair (e.g. 'd1-p2'), in the map's units."""
    out = {}
    for pair, grid in maps.items():
        a, b = pair.split("-")
        sa, sb = pred.basis[a], pred.basis[b]
        names_a = sa.shell_labels()
        names_b = sb.shell_labels()
        out[pair] = {
            f"{na}-{nb}": float(grid[ra, rb].mean())
            for na, ra in zip(names_a, sa.shell_slices(), strict=True)
            for nb, rb in zip(names_b, sb.shell_slices(), strict=True)
        }
    return out


def plot_error_maps(
    maps: dict[str, np.ndarray],
    filename: str | Path,
    basis: Basis | None = None,
    unit_scale=1e3,
    unit="meV",
) -> Path:
    """One heat map per element pair; axes labelled with orbital names (``basis``)."""
    fig, axes = new_figure(len(maps), 4.0, 3.8)
    for ax, (pair, grid) in zip(axes[0], maps.items(), strict=True):
        im = ax.imshow(grid * unit_scale, cmap="viridis")
        ax.set_title(f"{pair}: MAE {grid.mean() * unit_scale:.3g} {unit}", fontsize=9)
        first, second = pair.split("-")
        _orbital_ticks(ax.set_yticks, basis, first, grid.shape[0])
        _orbital_ticks(ax.set_xticks, basis, second, grid.shape[1])
        ax.set_ylabel(f"orbital of i ({first})")
        ax.set_xlabel(f"orbital of j ({second})")
        ax.tick_params(axis="x", labelrotation=90)
        fig.colorbar(im, ax=ax, shrink=0.8, label=unit)
    return save_figure(fig, filename, dpi=130)


def _orbital_ticks(set_ticks, basis: Basis | None, symbol: str, n: int) -> None:
    """Integer ticks, named by orbital when the basis knows the element."""
    if basis is not None and symbol in basis and basis[symbol].norb == n:
        set_ticks(range(n), basis[symbol].orbital_labels(), fontsize=6)
    else:
        set_ticks(range(n))


def band_errors_near_gap(
    reference: np.ndarray, predicted: np.ndarray, nocc: int, window: float = 0.3
) -> dict[str, float]:
    """Band errors where they matter: levels (k, band) of ``reference`` within
    ``window`` eV below its valence-band maximum or above its conduction-band minimum
    (same k-points and band indices in ``predicted``), and the gap error, in meV.

    Per-element MAE understates these: S has eigenvalues near 0.01, so small H errors
    are amplified in the bands. ``shift_meV`` is the one constant (the mean signed error
    of those levels, a gauge H - mu S) and ``max_after_shift_meV`` what is left after it:
    how much of the error a single energy zero explains."""
    vbm, cbm = reference[:, nocc - 1].max(), reference[:, nocc].min()
    near = (reference > vbm - window) & (reference < cbm + window)
    signed = (predicted - reference)[near]
    diff = np.abs(signed)
    gap_ref = cbm - vbm
    gap_pred = predicted[:, nocc].min() - predicted[:, nocc - 1].max()
    return {
        "max_meV": float(diff.max() * 1e3),
        "mean_meV": float(diff.mean() * 1e3),
        "levels": int(near.sum()),
        "gap_reference_meV": float(gap_ref * 1e3),
        "gap_predicted_meV": float(gap_pred * 1e3),
        "gap_error_meV": float((gap_pred - gap_ref) * 1e3),
        "shift_meV": float(signed.mean() * 1e3),
        "max_after_shift_meV": float(np.abs(signed - signed.mean()).max() * 1e3),
    }
