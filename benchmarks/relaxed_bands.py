"""Bands and Chern numbers of a rigid and a relaxed twisted MoTe2 cell, side by side.

    python benchmarks/relaxed_bands.py 4 3 benchmarks/results/relaxed_4_3.extxyz [--only rigid]

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
from ase_moireh.plotting import new_figure, save_figure
from ase_moireh.topology import phases_deg

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WINDOW = 0.8  # eV each side of the mid-gap shown (the gap is ~1 eV)


def electronic(atoms, bundle, npoints: int, gap_guess: float | None) -> dict:
    """Gap, bands along Gamma-M-K-Gamma near it, C3 Chern numbers, domain findings."""
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
    return {
        "domain_findings": severe + mild,
        "local_distance_A": [float(distance.min()), float(distance.max())],
        "vbm_eV": vbm,
        "cbm_eV": cbm,
        "gap_meV": 1e3 * (cbm - vbm),
        "chern_spin_up": chern,
        "seconds": time.perf_counter() - start,
        "path": path_axis(bs.path),
        "energies_eV": bs.energies[0].tolist(),
    }


def path_axis(path) -> dict:
    """x (1/A, cumulative distance between successive k-points, 2 pi included) and the
    special points' ticks of a continuous band path. ASE's ``get_linear_kpoint_axis``
    drops a segment that has no interior point (with 7 points on Gamma-M-K-Gamma, M and
    K fell on one tick)."""
    k = path.kpts @ (2 * np.pi * path.cell.reciprocal())
    x = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(k, axis=0), axis=1))])
    ticks, labels, at = [], [], 0
    for label in path.path:
        while not np.allclose(path.kpts[at], path.special_points[label]):
            at += 1
        ticks.append(float(x[at]))
        labels.append(label)
    return {"x": x.tolist(), "ticks": ticks, "labels": labels}


def plot(results: dict, title: str, filename: Path) -> None:
    """The levels near the gap at each k of the path as markers (the sparse solver gives
    the 16 levels nearest the mid-gap, which need not join into lines), side by side."""
    fig, axes = new_figure(1, 5.5, 4.5)
    ax = axes[0, 0]
    for (label, info), (marker, shift) in zip(
        results.items(), (("k_", -0.01), ("r_", 0.01)), strict=True
    ):
        mid = 0.5 * (info["vbm_eV"] + info["cbm_eV"])
        x = np.array(info["path"]["x"]) + shift * info["path"]["x"][-1]
        energies = np.array(info["energies_eV"]) - mid
        ax.plot(np.repeat(x, energies.shape[1]), energies.ravel(), marker, ms=8)
        ax.plot([], [], marker, label=f"{label}: gap {info['gap_meV']:.0f} meV")
    path = next(iter(results.values()))["path"]
    ax.set_xticks(path["ticks"], [r"$\Gamma$" if t == "G" else t for t in path["labels"]])
    ax.set_ylim(-WINDOW, WINDOW)
    ax.set_ylabel(r"$E - E_\mathrm{midgap}$ (eV)")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(title, fontsize=10)
    save_figure(fig, filename)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int)
    parser.add_argument("m", type=int)
    parser.add_argument("relaxed", help="the relaxed cell (benchmarks/relax_twisted.py)")
    parser.add_argument("--npoints", type=int, default=12)
    parser.add_argument(
        "--only", choices=["rigid", "relaxed"], help="one structure (run both in parallel)"
    )
    parser.add_argument(
        "--gap-guess", type=float, default=None, help="eV inside the gap, where counting starts"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rigid = twisted_bilayer(args.n, args.m)
    relaxed = ase.io.read(args.relaxed)
    if len(relaxed) != len(rigid) or not np.allclose(relaxed.cell, rigid.cell, atol=1e-6):
        raise SystemExit(f"{args.relaxed}: not a relaxed ({args.n}, {args.m}) cell")
    stem = f"relaxed_bands_{args.n}_{args.m}"
    bundle = load_bundle(bundled_model_path(soc=True))
    for label, atoms in (("rigid", rigid), ("relaxed", relaxed)):
        part = RESULTS / f"{stem}_{label}.json"
        if args.only not in (None, label) or part.exists():
            continue
        logging.info("%s cell", label)
        info = electronic(atoms, bundle, args.npoints, args.gap_guess)
        with atomic_file(part) as tmp:
            tmp.write_text(json.dumps(info, default=float) + "\n")
    parts = {label: RESULTS / f"{stem}_{label}.json" for label in ("rigid", "relaxed")}
    if not all(p.exists() for p in parts.values()):
        return
    results = {label: json.loads(p.read_text()) for label, p in parts.items()}
    npoints = len(results["rigid"]["energies_eV"])
    for info in results.values():  # parts written before path_axis: recompute the axis
        info["path"] = path_axis(rigid.cell.bandpath("GMKG", npoints=npoints))
    angle = twist_angle(args.n, args.m)
    out = {
        "cell": [args.n, args.m],
        "angle_deg": angle,
        "atoms": len(rigid),
        "relaxed_from": str(args.relaxed),
        "model": "bundled SOC dH model",
        **{
            label: {k: v for k, v in info.items() if k not in ("path", "energies_eV")}
            for label, info in results.items()
        },
    }
    with atomic_file(RESULTS / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(out, indent=1, default=float) + "\n")
    title = f"{angle:.2f} deg twisted MoTe$_2$ ({len(rigid)} atoms), bundled SOC model"
    plot(results, title, RESULTS / f"{stem}.png")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
