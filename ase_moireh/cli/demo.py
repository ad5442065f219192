"""The main job on the embedded default (bundled OpenMX run, bundled models).

1. The bundled SOC bilayer-MoTe2 run (``ase_moireh/data``) is converted to a dftio
   dataset, loaded back and checked (Hermiticity, eigenvalues against those OpenMX
   printed); its bands along Gamma-M-K-Gamma are plotted with OpenMX's own points.
2. The bundled SOC model predicts H and S of the same cell (held out from its training:
   it is the validation structure of examples/train_bundled.py); DFT and model bands
   are overlaid.
3. Through ``MoireHCalculator`` (bundled SOC model) the 21.79 deg twisted bilayer
   (42 atoms; no SOC DFT run exists for it): bands near the gap
   (``twisted_bands.png``) and the C3 eigenvalues / Chern numbers mod 3 of the top
   spin-up valence bands (``chern.txt``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ase_moireh.data import demo_scfout_path
from ase_moireh.io.dataset import read_dftio, write_dftio
from ase_moireh.plotting import kpath_axis, new_figure, save_figure
from ase_moireh.tightbinding import TightBinding

log = logging.getLogger(__name__)


def run_demo(outdir: str | Path, npoints: int = 60, with_model: bool = True) -> dict:
    """Convert, reload, verify, predict and plot; returns the numbers it reports."""
    from ase_moireh.io.openmx import read_scfout

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    log.info("reading %s", demo_scfout_path())
    converted = read_scfout(demo_scfout_path())
    folder = write_dftio(converted, outdir / "dataset" / "bl1x1_soc_s00")
    log.info("wrote dataset %s", folder)
    loaded = read_dftio(folder)
    h, s = loaded.hamiltonian, loaded.overlap
    tb = loaded.tight_binding
    kpts = [k for k, _ in converted.reference_eigenvalues]
    ref = np.array([e for _, e in converted.reference_eigenvalues])
    ours = tb.eigenvalues(kpts)
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
    bands = tb.eigenvalues(path.kpts)
    x = path.get_linear_kpoint_axis()[0]
    on_path = [
        (xk, e)
        for k, e in converted.reference_eigenvalues
        for xk in _positions_on_path(path.kpts, x, k)
    ]
    _plot_bands(path, bands, on_path, loaded.fermi_level, outdir / "bands.png")
    if with_model:
        result.update(_model_part(loaded, path, bands, outdir, npoints))
    lines = [f"{key:22s} {value}" for key, value in result.items()]
    (outdir / "summary.txt").write_text("\n".join(lines) + "\n")
    return result


def _model_part(dft, path, dft_bands: np.ndarray, outdir: Path, npoints: int) -> dict:
    """Steps 2 and 3 of the module docstring."""
    from ase_moireh.data import bundled_model_path
    from ase_moireh.model.io import load_bundle
    from ase_moireh.model.predict import predict_operators

    bundle = load_bundle(bundled_model_path(soc=True))
    h, s, _ = predict_operators(bundle, dft.atoms)
    model_bands = TightBinding(h, s).eigenvalues(path.kpts)
    window = np.abs(dft_bands - dft.fermi_level) < 2.0  # bands within 2 eV of mu
    out = {
        "model_H_mae_meV": {k: v * 1e3 for k, v in h.mae_by_pair(dft.hamiltonian).items()},
        "model_band_mae_meV_within_2eV": float(
            np.abs(model_bands - dft_bands)[window].mean() * 1e3
        ),
    }
    _plot_overlay(path, dft_bands, model_bands, dft.fermi_level, outdir / "bands_model_vs_dft.png")
    out.update(twisted_part(bundle, outdir, npoints))
    return out


def twisted_part(bundle, outdir: Path, npoints: int, n: int = 2, m: int = 1) -> dict:
    """Step 3: a twisted cell through the calculator: bands near the gap, C3 Chern table."""
    from ase_moireh.build import twist_angle, twisted_bilayer
    from ase_moireh.calculator import MoireHCalculator

    twisted = twisted_bilayer(n, m)
    twisted.calc = MoireHCalculator(model=bundle, nbands=16)
    bs = twisted.calc.band_structure("GMKG", npoints=max(10, npoints // 3))
    tpath = bs.path
    _plot_bands(
        tpath,
        bs.energies[0],
        [],
        bs.reference,
        outdir / "twisted_bands.png",
        title=f"{twist_angle(n, m):.2f}° twisted MoTe$_2$ ({len(twisted)} atoms): "
        "model H, S with SOC",
        ylim=0.6,
    )
    lines = [
        "# C3 eigenvalue phases (deg) of the top valence bands, spin-up sector",
        "# nbands  Gamma  K  K'  Chern_mod3",
    ]
    table = {}
    for nb in (1, 2):
        r = twisted.calc.chern_numbers(nbands=nb, spin=1)
        phases = {
            k: [round(float(np.angle(v, deg=True)), 1) for v in vals]
            for k, vals in r.eigenvalues.items()
        }
        table[nb] = r.chern_mod3
        row = "  ".join(str(phases[label]) for label in ("Gamma", "K", "K'"))
        lines.append(f"{nb}  {row}  {r.chern_mod3}")
    (outdir / "chern.txt").write_text("\n".join(lines) + "\n")
    vbm, cbm = twisted.calc.band_edges()
    return {
        "twisted_nm": (n, m),
        "twisted_atoms": len(twisted),
        # over Gamma, the three M and both K: negative means the model makes it a metal
        "twisted_gap_meV": float((cbm - vbm) * 1e3),
        "twisted_chern_mod3_top1_top2": (table[1], table[2]),
    }


def _plot_overlay(path, dft: np.ndarray, model: np.ndarray, fermi: float, filename: Path) -> None:
    fig, axes = new_figure(1, 5.0, 4.0)
    ax = axes[0, 0]
    x = path.get_linear_kpoint_axis()[0]
    ax.plot(x, dft - fermi, color="k", lw=1.2)
    ax.plot(x, model - fermi, color="tab:red", lw=0.8, ls="--")
    ax.plot([], [], color="k", label="DFT (OpenMX)")
    ax.plot([], [], color="tab:red", ls="--", label="model (bundled, SOC)")
    ax.legend(loc="upper right", fontsize=8)
    kpath_axis(ax, path, 2.5, r"$E - \mu$ (eV)")
    ax.set_title("bilayer MoTe$_2$ (held out): DFT vs model", fontsize=10)
    save_figure(fig, filename)


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


def _plot_bands(
    path,
    bands: np.ndarray,
    reference: list,
    fermi: float,
    filename: Path,
    title: str = "bilayer MoTe$_2$ with SOC: converted H, S (lines)",
    ylim: float = 2.5,
) -> None:
    fig, axes = new_figure(1, 5.0, 4.0)
    ax = axes[0, 0]
    x = path.get_linear_kpoint_axis()[0]
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
    kpath_axis(ax, path, ylim, r"$E - \mu$ (eV)")
    ax.set_title(title, fontsize=10)
    save_figure(fig, filename)
