"""Bands and Chern numbers of a rigid and a relaxed twisted MoTe2 cell, side by side.

    python benchmarks/relaxed_bands.py 4 3 benchmarks/results/relaxed_4_3.extxyz

The bundled SOC model (H = H0 + dH) through :class:`MoireHCalculator`, as the main job:
gap over Gamma, M and K, bands along Gamma-M-K-Gamma near the gap, and the C3 eigenvalues
and Chern numbers (mod 3) of the top 1 and 2 spin-up valence bands; the model's domain
findings for each structure. Writes ``benchmarks/results/relaxed_bands_<n>_<m>.{json,png}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import ase.io
import numpy as np

from ase_moireh.build import twist_angle, twisted_bilayer
from ase_moireh.build.relax import local_interlayer_distance
from ase_moireh.calculator import MoireHCalculator
from ase_moireh.data import bundled_model_path
from ase_moireh.files import atomic_file
from ase_moireh.model.io import load_bundle
from ase_moireh.plotting import kpath_axis, new_figure, save_figure
from ase_moireh.topology import phases_deg

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WINDOW = 0.3  # eV each side of the mid-gap shown


def electronic(atoms, bundle, npoints: int, gap_guess: float | None) -> tuple[dict, object]:
    start = time.perf_counter()
    atoms.calc = MoireHCalculator(model=bundle, nbands=16, gap_guess=gap_guess)
    severe, mild = atoms.calc.domain_findings(atoms)
    vbm, cbm = atoms.calc.band_edges()
    bs = atoms.calc.band_structure("GMKG", npoints=npoints)
    chern = {}
    for nb in (1, 2):
        r = atoms.calc.chern_numbers(nbands=nb, spin=1)
        chern[f"top{nb}"] = {
            "phases_deg": {k: phases_deg(r.eigenvalues[k]) for k in ("Gamma", "K", "K'")},
            "chern_mod3": int(r.chern_mod3),
        }
    distance = local_interlayer_distance(atoms)
    info = {
        "domain_findings": severe + mild,
        "local_distance_A": [float(distance.min()), float(distance.max())],
        "vbm_eV": vbm,
        "cbm_eV": cbm,
        "gap_meV": 1e3 * (cbm - vbm),
        "chern_spin_up": chern,
        "seconds": time.perf_counter() - start,
    }
    return info, bs


def plot(results: dict, title: str, filename: Path) -> None:
    fig, axes = new_figure(1, 5.5, 4.5)
    ax = axes[0, 0]
    for (label, (info, bs)), style in zip(results.items(), ("k-", "r--"), strict=True):
        mid = 0.5 * (info["vbm_eV"] + info["cbm_eV"])
        x = bs.path.get_linear_kpoint_axis()[0]
        energies = bs.energies[0] - mid
        ax.plot(x, energies, style, lw=0.8)
        ax.plot([], [], style, label=f"{label}: gap {info['gap_meV']:.0f} meV")
    ax.legend(fontsize=8, loc="upper right")
    kpath_axis(ax, next(iter(results.values()))[1].path, WINDOW, r"$E - E_\mathrm{midgap}$ (eV)")
    ax.set_title(title, fontsize=10)
    save_figure(fig, filename)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int)
    parser.add_argument("m", type=int)
    parser.add_argument("relaxed", help="the relaxed cell (benchmarks/relax_twisted.py)")
    parser.add_argument("--npoints", type=int, default=12)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rigid = twisted_bilayer(args.n, args.m)
    relaxed = ase.io.read(args.relaxed)
    if len(relaxed) != len(rigid) or not np.allclose(relaxed.cell, rigid.cell, atol=1e-6):
        raise SystemExit(f"{args.relaxed}: not a relaxed ({args.n}, {args.m}) cell")
    bundle = load_bundle(bundled_model_path(soc=True))
    results, guess = {}, None
    for label, atoms in (("rigid", rigid), ("relaxed", relaxed)):
        logging.info("%s cell", label)
        results[label] = electronic(atoms, bundle, args.npoints, guess)
        guess = 0.5 * (results[label][0]["vbm_eV"] + results[label][0]["cbm_eV"])
    angle = twist_angle(args.n, args.m)
    stem = f"relaxed_bands_{args.n}_{args.m}"
    out = {
        "cell": [args.n, args.m],
        "angle_deg": angle,
        "atoms": len(rigid),
        "relaxed_from": str(args.relaxed),
        "model": "bundled SOC dH model",
        **{label: info for label, (info, _) in results.items()},
    }
    with atomic_file(RESULTS / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(out, indent=1) + "\n")
    title = f"{angle:.2f} deg twisted MoTe$_2$ ({len(rigid)} atoms), bundled SOC model"
    plot(results, title, RESULTS / f"{stem}.png")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
