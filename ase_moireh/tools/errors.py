"""Comparing two operators: MAE per element pair, per orbital element and per shell pair,
and the heat maps of the paper's Fig. 2e-h."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
        names_a = _shell_names(sa.shells)
        names_b = _shell_names(sb.shells)
        out[pair] = {
            f"{na}-{nb}": float(grid[ra, rb].mean())
            for na, ra in zip(names_a, sa.shell_slices(), strict=True)
            for nb, rb in zip(names_b, sb.shell_slices(), strict=True)
        }
    return out


def _shell_names(shells: tuple[int, ...]) -> list[str]:
    seen: dict[int, int] = {}
    names = []
    for l in shells:
        seen[l] = seen.get(l, 0) + 1
        names.append(f"{'spdfg'[l]}{seen[l]}")
    return names


def plot_error_maps(
    maps: dict[str, np.ndarray], filename: str | Path, unit_scale=1e3, unit="meV"
) -> Path:
    fig, axes = new_figure(len(maps), 3.6, 3.4)
    for ax, (pair, grid) in zip(axes[0], maps.items(), strict=True):
        im = ax.imshow(grid * unit_scale, cmap="viridis")
        ax.set_title(f"{pair}: MAE {grid.mean() * unit_scale:.3g} {unit}", fontsize=9)
        ax.set_xlabel("orbital of j")
        ax.set_ylabel("orbital of i")
        fig.colorbar(im, ax=ax, shrink=0.8, label=unit)
    return save_figure(fig, filename, dpi=130)
