"""The main job on the embedded default: convert the bundled OpenMX run and verify it.

Until the bundled model lands, the main job shows the foundation end to end: the
bundled SOC bilayer-MoTe2 run (``ase_moireh/data``) is converted to a dftio dataset,
loaded back, checked (Hermiticity, eigenvalues against those OpenMX printed) and its
bands along Gamma-M-K-Gamma are plotted.
"""

from __future__ import annotations

import logging
from importlib.resources import files
from pathlib import Path

import numpy as np

from .dataset import read_dftio, write_dftio
from .solve import dense_eigenvalues

log = logging.getLogger(__name__)

BUNDLED_RUN = "bl1x1_soc_s00.scfout.xz"


def bundled_run() -> Path:
    """Path of the OpenMX run shipped with the package (6-atom R-stacked MoTe2, SOC)."""
    return Path(str(files("ase_moireh") / "data" / BUNDLED_RUN))


def run_demo(outdir: str | Path, npoints: int = 60) -> dict:
    """Convert, reload, verify and plot; returns the numbers it reports."""
    from ase_moireh_converters.openmx import read_scfout

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    log.info("reading %s", bundled_run())
    converted = read_scfout(bundled_run())
    folder = write_dftio(converted, outdir / "dataset" / "bl1x1_soc_s00")
    log.info("wrote dataset %s", folder)
    loaded = read_dftio(folder)
    h, s = loaded.hamiltonian, loaded.overlap
    kpts = [k for k, _ in converted.reference_eigenvalues]
    ref = np.array([e for _, e in converted.reference_eigenvalues])
    ours = dense_eigenvalues(h, s, kpts)
    result = {
        "atoms": len(loaded.atoms),
        "spinful": loaded.spinful,
        "blocks": h.nedges,
        "hermiticity_H_eV": h.hermiticity_error(),
        "hermiticity_S": s.hermiticity_error(),
        "kpoints_compared": len(kpts),
        "max_eig_diff_meV": float(np.abs(ours - ref).max() * 1e3),
        "fermi_level_eV": loaded.fermi_level,
    }
    path = loaded.atoms.cell.bandpath("GMKG", npoints=npoints)
    bands = dense_eigenvalues(h, s, path.kpts)
    x = path.get_linear_kpoint_axis()[0]
    on_path = [
        (xk, e)
        for k, e in converted.reference_eigenvalues
        for xk in _positions_on_path(path.kpts, x, k)
    ]
    _plot_bands(path, bands, on_path, loaded.fermi_level, outdir / "bands.png")
    lines = [f"{key:22s} {value}" for key, value in result.items()]
    (outdir / "summary.txt").write_text("\n".join(lines) + "\n")
    return result


def _positions_on_path(kpts: np.ndarray, x: np.ndarray, k: np.ndarray) -> list[float]:
    """Linear-axis positions where k or its time-reversed -k lies on the path's segments,
    so OpenMX's own grid eigenvalues can be drawn over our bands."""
    found = []
    for q in (k, -k):
        for a in range(len(kpts) - 1):
            d = kpts[a + 1] - kpts[a]
            t = float(np.clip(np.dot(q - kpts[a], d) / max(np.dot(d, d), 1e-30), 0, 1))
            if np.linalg.norm(kpts[a] + t * d - q) < 2e-5:
                found.append(float(x[a] + t * (x[a + 1] - x[a])))
                break
    return sorted(set(np.round(found, 8)))


def _plot_bands(path, bands: np.ndarray, reference: list, fermi: float, filename: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, xticks, labels = path.get_linear_kpoint_axis()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(x, bands - fermi, color="k", lw=0.8)
    for n, (xk, energies) in enumerate(reference):
        ax.plot(
            np.full(len(energies), xk),
            energies - fermi,
            "o",
            ms=3,
            mfc="none",
            color="tab:red",
            label="OpenMX printed" if n == 0 else None,
        )
    if reference:
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xticks(xticks, [r"$\Gamma$" if t == "G" else t for t in labels])
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(-2.5, 2.5)
    ax.axhline(0, color="grey", ls="--", lw=0.5)
    for t in xticks:
        ax.axvline(t, color="grey", lw=0.5)
    ax.set_ylabel(r"$E - \mu$ (eV)")
    ax.set_title("bilayer MoTe$_2$ with SOC: converted H, S (lines)", fontsize=10)
    fig.tight_layout()
    fig.savefig(filename, dpi=150)
    plt.close(fig)
