"""Figures without touching matplotlib's global state: a Figure with its own Agg canvas
(no pyplot, no backend switch in a library), written atomically."""

from __future__ import annotations

import os
from pathlib import Path

from ase_moireh.files import atomic_file


def new_figure(ncols: int = 1, width: float = 5.0, height: float = 4.0, nrows: int = 1):
    """(Figure, axes array of shape (nrows, ncols))."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def save_figure(fig, filename: str | os.PathLike, dpi: int = 150) -> Path:
    """PNG written atomically (temporary file, then rename); the layout is matplotlib's
    constrained one, which also makes room for colour bars."""
    filename = Path(filename)
    filename.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(filename) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return filename


def kpath_axis(ax, path, ylim: float | None = None, ylabel: str = "") -> None:
    """Special-point ticks (Gamma as Γ) and grid lines of a BandPath on ``ax``."""
    x, xticks, labels = path.get_linear_kpoint_axis()
    ax.set_xticks(xticks, [r"$\Gamma$" if t == "G" else t for t in labels])
    ax.set_xlim(x[0], x[-1])
    if ylim is not None:
        ax.set_ylim(-ylim, ylim)
    for t in xticks:
        ax.axvline(t, color="grey", lw=0.5)
    ax.axhline(0, color="grey", ls=":", lw=0.5)
    if ylabel:
        ax.set_ylabel(ylabel)
