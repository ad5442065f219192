"""Edge states of nanoribbons: bands along the ribbon with each state's weight on the
edge atoms (Mulliken, with S) and its spin, for plots like the paper's Fig. 4c."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from .files import atomic_file
from .operator import BlockOperator
from .solve import bloch_pair, shift_invert_eigh
from .topology import spin_z


@dataclass
class RibbonBands:
    k: np.ndarray  # (nk,) fractional coordinate along the periodic vector
    energies: np.ndarray  # (nk, nb) eV
    lower: np.ndarray  # (nk, nb) weight on the lower-edge atoms
    upper: np.ndarray  # (nk, nb) weight on the upper-edge atoms
    spin: np.ndarray | None  # (nk, nb) <s_z> (SOC only)


def _atom_rows(h: BlockOperator) -> np.ndarray:
    return np.repeat(np.arange(h.natoms), h.norbs)


def ribbon_bands(
    h: BlockOperator, s: BlockOperator, ribbon: Atoms, sigma: float, nbands: int = 20, nk: int = 30
) -> RibbonBands:
    """The ``nbands`` levels nearest ``sigma`` along the ribbon axis, with edge weights."""
    axis = int(ribbon.info.get("ribbon_axis", 0))
    side = ribbon.arrays["edge_side"]
    rows = _atom_rows(h)
    on_lower, on_upper = side[rows] == -1, side[rows] == 1
    sz = spin_z(h) if h.spinful else None
    ks = np.linspace(0.0, 1.0, nk)
    out = {name: np.zeros((nk, nbands)) for name in ("e", "lo", "up", "sz")}
    for n, t in enumerate(ks):
        k = np.zeros(3)
        k[axis] = t
        hk, sk = bloch_pair(h, s, k)
        if h.dimension <= nbands + 2:
            raise ValueError("ribbon too small for that many bands")
        e, vec = shift_invert_eigh(hk, sk, sigma, nbands, return_vectors=True, k=k)
        svec = sk @ vec
        weights = np.real(vec.conj() * svec)  # Mulliken populations per row
        norm = weights.sum(axis=0)
        out["e"][n] = e
        out["lo"][n] = weights[on_lower].sum(axis=0) / norm
        out["up"][n] = weights[on_upper].sum(axis=0) / norm
        if sz is not None:
            out["sz"][n] = (sz[:, None] * weights).sum(axis=0) / norm
    return RibbonBands(ks, out["e"], out["lo"], out["up"], out["sz"] if h.spinful else None)


def plot_ribbon(bands: RibbonBands, filename: str | Path, title: str = "") -> Path:
    """Bands coloured by edge (red: upper edge, blue: lower edge, grey: bulk); with SOC
    one panel per spin direction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(None, "all states")] if bands.spin is None else [(1, "s_z > 0"), (-1, "s_z < 0")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), squeeze=False)
    k = np.repeat(bands.k[:, None], bands.energies.shape[1], axis=1)
    colour = bands.upper - bands.lower
    size = 4 + 40 * (bands.upper + bands.lower)
    for ax, (sign, label) in zip(axes[0], panels, strict=True):
        keep = np.ones_like(k, dtype=bool) if sign is None else bands.spin * sign > 0
        sc = ax.scatter(
            k[keep],
            bands.energies[keep],
            c=colour[keep],
            s=size[keep],
            cmap="coolwarm",
            vmin=-1,
            vmax=1,
        )
        ax.set_xlabel("k along the ribbon (units of b)")
        ax.set_ylabel("E (eV)")
        ax.set_title(f"{title} {label}".strip(), fontsize=9)
    fig.colorbar(sc, ax=axes[0].tolist(), label="upper - lower edge weight")
    with atomic_file(filename) as tmp:
        fig.savefig(tmp, dpi=140, format="png")
    plt.close(fig)
    return Path(filename)
