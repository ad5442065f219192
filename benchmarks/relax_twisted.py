"""Relax a rigid twisted MoTe2 cell with a named potential and map its interlayer distance.

    python benchmarks/relax_twisted.py 9 8 [--potential 7net-0+d3+il] [--fmax 0.01]

Writes ``benchmarks/results/relaxed_<n>_<m>.extxyz`` (the relaxed cell), ``relax_<n>_<m>.json``
(wall and CPU time, steps, load, the local metal-metal distance over the cell: MM regions
at its maximum, MX/XM at its minimum) and ``relax_<n>_<m>_map.png`` (the map). Resumable:
the steps go to ``data/relaxed/relax_<n>_<m>.traj``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import time
from pathlib import Path

import ase.io
import numpy as np

from ase_moireh.build import twist_angle, twisted_bilayer
from ase_moireh.build.generate import layer_metals
from ase_moireh.build.potentials import DEFAULT_POTENTIAL, load_potential
from ase_moireh.build.relax import check_elements, local_interlayer_distance, relax
from ase_moireh.files import atomic_file
from ase_moireh.plotting import new_figure, save_figure

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def plot_map(atoms, distance: np.ndarray, title: str, filename: Path) -> None:
    """Top-layer metals coloured by their local distance to the bottom metal plane."""
    _, top = layer_metals(atoms)
    fig, axes = new_figure(1, 6.0, 5.0)
    ax = axes[0, 0]
    cell = np.asarray(atoms.cell)[:2, :2]
    shifts = [i * cell[0] + j * cell[1] for i in (-1, 0, 1) for j in (-1, 0, 1)]
    xy = np.concatenate([top[:, :2] + s for s in shifts])
    values = np.tile(distance, len(shifts))
    art = ax.scatter(xy[:, 0], xy[:, 1], c=values, s=14, cmap="viridis")
    corners = np.array([[0, 0], cell[0], cell[0] + cell[1], cell[1], [0, 0]])
    ax.plot(corners[:, 0], corners[:, 1], color="k", lw=0.8, ls="--")
    lo, hi = corners.min(axis=0) - 5, corners.max(axis=0) + 5
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")
    ax.set_xlabel("x (A)")
    ax.set_ylabel("y (A)")
    fig.colorbar(art, ax=ax, label="local Mo-Mo interlayer distance (A)")
    ax.set_title(title, fontsize=10)
    save_figure(fig, filename)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int)
    parser.add_argument("m", type=int)
    parser.add_argument("--potential", default=DEFAULT_POTENTIAL)
    parser.add_argument("--fmax", type=float, default=0.01)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    n, m = args.n, args.m
    rigid = twisted_bilayer(n, m)
    calc, elements = load_potential(args.potential)
    check_elements(rigid, elements, args.potential)
    trajectory = ROOT / "data" / "relaxed" / f"relax_{n}_{m}.traj"
    trajectory.parent.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), cpu_seconds()
    relaxed = relax(rigid, calc, fmax=args.fmax, trajectory=trajectory)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    distance = local_interlayer_distance(relaxed)
    angle = twist_angle(n, m)
    record = {
        "cell": [n, m],
        "angle_deg": angle,
        "atoms": len(relaxed),
        "potential": args.potential,
        **relaxed.info["relaxation"],
        "wall_s_this_run": wall,
        "cpu_s_this_run": cpu,
        "threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "load_1min_before_after": [load_before, os.getloadavg()[0]],
        "rigid_distance_A": float(local_interlayer_distance(rigid).mean()),
        "local_distance_A": {
            "MM (max)": float(distance.max()),
            "MX/XM (min)": float(distance.min()),
            "mean": float(distance.mean()),
        },
    }
    stem = f"relax_{n}_{m}"
    with atomic_file(RESULTS / f"relaxed_{n}_{m}.extxyz") as tmp:
        ase.io.write(tmp, relaxed, format="extxyz")
    with atomic_file(RESULTS / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    rigid_d = record["rigid_distance_A"]
    title = (
        f"{angle:.2f} deg twisted MoTe$_2$ ({len(relaxed)} atoms) relaxed with {args.potential}\n"
        f"MM {distance.max():.2f} A, MX/XM {distance.min():.2f} A (rigid {rigid_d:.2f} A)"
    )
    plot_map(relaxed, distance, title, RESULTS / f"{stem}_map.png")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
