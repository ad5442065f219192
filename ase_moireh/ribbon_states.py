"""Edge states of nanoribbons: bands along the ribbon with each state's weight on the
edge atoms (Mulliken, with S) and its spin, for plots like the paper's Fig. 4c."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from tqdm import tqdm

from ase_moireh.plotting import new_figure, save_figure
from ase_moireh.tightbinding import TightBinding

log = logging.getLogger(__name__)


@dataclass
class RibbonBands:
    """Levels along the ribbon with their Mulliken weights (fractions of each state)."""

    k: np.ndarray  # (nk,) fractional coordinate along the periodic vector
    energies: np.ndarray  # (nk, nb) eV
    lower: np.ndarray  # (nk, nb) weight on the lower-edge atoms
    upper: np.ndarray  # (nk, nb) weight on the upper-edge atoms
    bulk: np.ndarray  # (nk, nb) weight on the other atoms
    norm: np.ndarray  # (nk, nb) c^dagger S c before normalising (1 for S-orthonormal c)
    spin: np.ndarray | None  # (nk, nb) <s_z> (SOC only)

    def to_dict(self) -> dict:
        """Plain lists (JSON)."""
        out = {
            name: getattr(self, name).tolist()
            for name in ("k", "energies", "lower", "upper", "bulk", "norm")
        }
        out["spin"] = None if self.spin is None else self.spin.tolist()
        return out


def ribbon_bands(
    tb: TightBinding, ribbon: Atoms, sigma: float, nbands: int = 20, nk: int = 30
) -> RibbonBands:
    """The ``nbands`` levels nearest ``sigma`` along the ribbon axis, with their weights
    on the lower edge, upper edge and bulk (``ribbon.arrays['edge_side']``: -1, 1, 0)."""
    axis = int(ribbon.info.get("ribbon_axis", 0))
    side = ribbon.arrays["edge_side"][np.repeat(np.arange(tb.natoms), tb.H.norbs)]
    groups = {"lower": side == -1, "upper": side == 1, "bulk": side == 0}
    sz = tb.spin_z() if tb.spinful else None
    if tb.dimension <= nbands + 2:
        raise ValueError(f"ribbon too small for {nbands} bands ({tb.dimension} orbitals)")
    ks = np.linspace(0.0, 1.0, nk)
    out = {name: np.zeros((nk, nbands)) for name in ("energies", "norm", "spin", *groups)}
    for n, t in enumerate(tqdm(ks, desc=f"ribbon ({len(ribbon)} atoms)", unit="k", disable=None)):
        k = np.zeros(3)
        k[axis] = t
        start = time.perf_counter()
        e, vec = tb.eigsh(k, sigma, nbands, vectors=True)
        log.info(
            "ribbon k %d/%d (%.3f): %d levels in %.1f s",
            n + 1,
            nk,
            t,
            nbands,
            time.perf_counter() - start,
        )
        weights = np.real(vec.conj() * (tb.Sk(k) @ vec))  # Mulliken populations per row
        norm = weights.sum(axis=0)
        out["energies"][n], out["norm"][n] = e, norm
        for name, rows in groups.items():
            out[name][n] = weights[rows].sum(axis=0) / norm
        if sz is not None:
            out["spin"][n] = (sz[:, None] * weights).sum(axis=0) / norm
    spin = out.pop("spin")
    return RibbonBands(ks, spin=spin if tb.spinful else None, **out)


def plot_ribbon(
    bands: RibbonBands,
    filename: str | Path,
    title: str = "",
    reference: float | None = None,
    reference_name: str = "E_midgap of the periodic cell",
) -> Path:
    """Bands coloured by edge (red: upper edge, blue: lower edge, grey: bulk); with SOC
    one panel per spin direction. Energies relative to ``reference`` (the bulk mid-gap,
    or what ``reference_name`` says it is) when given."""
    panels = [(None, "all states")] if bands.spin is None else [(1, "s_z > 0"), (-1, "s_z < 0")]
    fig, axes = new_figure(len(panels), 4.6, 4.2)
    energies = bands.energies - (reference or 0.0)
    ylabel = "E (eV)" if reference is None else f"E - {reference_name} (eV)"
    k = np.repeat(bands.k[:, None], bands.energies.shape[1], axis=1)
    colour = bands.upper - bands.lower
    size = 4 + 40 * (bands.upper + bands.lower)
    for ax, (sign, label) in zip(axes[0], panels, strict=True):
        keep = np.ones_like(k, dtype=bool) if sign is None else bands.spin * sign > 0
        sc = ax.scatter(
            k[keep],
            energies[keep],
            c=colour[keep],
            s=size[keep],
            cmap="coolwarm",
            vmin=-1,
            vmax=1,
        )
        ax.set_xlabel("k along the ribbon (units of b)")
        ax.set_title(label, fontsize=9)
        if ax is not axes[0, 0]:
            ax.sharey(axes[0, 0])
            ax.tick_params(labelleft=False)
    axes[0, 0].set_ylabel(ylabel)
    fig.suptitle(title, fontsize=10)
    fig.colorbar(sc, ax=axes[0].tolist(), label="upper - lower edge weight")
    return save_figure(fig, filename, dpi=140)
