"""Binding curves of the stacked 1x1 bilayers: OpenMX PBE + D3(BJ) against the potentials.

    python benchmarks/relax_candidates.py [--potential 7net-0+d3 ...]

Reads OpenMX's PBE energies of the converged stacking runs
(``benchmarks/results/d3_reference_stackings.json``, from ``benchmarks/d3_reference.py
stackings``; structures in ``data/d3_reference/stackings``), adds D3(BJ) (``dftd3``, PBE
parameters), evaluates each potential on the same structures, and writes
``benchmarks/results/relax_candidates.{json,png}``: energies per formula unit relative to
the layers 17 A apart (MM_17.00), and per stacking the minimum of a parabola through the
three lowest points (optimal metal-metal distance, binding energy). With the perturbed
set collected (``benchmarks/d3_reference.py perturbed``), also each potential's force
MAE on those cells.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import ase.io
import numpy as np
from ase.calculators.calculator import Calculator

from ase_moireh.build.potentials import DEFAULT_POTENTIAL, d3_pbe, load_potential
from ase_moireh.files import atomic_file
from ase_moireh.plotting import new_figure, save_figure

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "data" / "d3_reference" / "stackings"
PERTURBED = ROOT / "data" / "d3_reference" / "perturbed"
RESULTS = ROOT / "benchmarks" / "results"
SEPARATED = "MM_17.00"
REFERENCE = "OpenMX PBE + D3(BJ)"


def converged_runs(collected: dict[str, dict]) -> dict[str, Path]:
    """Structure folder of every run with a collected PBE energy."""
    return {name: RUNS / name for name in sorted(collected)}


def reference_results(
    runs: dict[str, Path], collected: dict[str, dict]
) -> dict[str, tuple[float, np.ndarray]]:
    """eV per cell and eV/A: OpenMX's PBE Utot and forces plus D3(BJ)'s."""
    d3 = d3_pbe()
    out = {}
    for name, folder in runs.items():
        atoms = ase.io.read(folder / "structure.extxyz")
        atoms.calc = d3
        energy = collected[name]["energy_eV"] + atoms.get_potential_energy()
        out[name] = (energy, np.array(collected[name]["forces_eV_per_A"]) + atoms.get_forces())
    return out


def potential_results(
    runs: dict[str, Path], potential: str | Calculator
) -> dict[str, tuple[float, np.ndarray]]:
    """eV per cell and eV/A of a potential (a registered name, or a calculator) on the
    runs' structures."""
    calc = load_potential(potential)[0] if isinstance(potential, str) else potential
    out = {}
    for name, folder in runs.items():
        atoms = ase.io.read(folder / "structure.extxyz")
        atoms.calc = calc
        out[name] = (float(atoms.get_potential_energy()), atoms.get_forces())
    return out


def energies(results: dict[str, tuple[float, np.ndarray]]) -> dict[str, float]:
    return {name: e for name, (e, _) in results.items()}


def outward(atoms) -> np.ndarray:
    """+1 / -1 for chalcogens above / below their layer's metal plane, 0 for metals."""
    from ase_moireh.domain import layer_labels

    layer = layer_labels(atoms)
    metal = np.array(atoms.get_chemical_symbols()) == "Mo"
    sign = np.zeros(len(atoms))
    for label in np.unique(layer):
        mine = layer == label
        plane = atoms.positions[mine & metal, 2].mean()
        sign[mine & ~metal] = np.sign(atoms.positions[mine & ~metal, 2] - plane)
    return sign


def force_errors(
    collected: dict[str, dict], potentials: dict[str, str | Calculator]
) -> dict[str, dict]:
    """Force MAE (meV/A, per Cartesian component) of each potential (label: name or
    calculator) on the perturbed cells against OpenMX's PBE forces + D3(BJ)'s, per cell
    and over all atoms; also the reference's own net force per atom (egg-box), the floor
    of any comparison."""
    runs = {name: PERTURBED / name for name in sorted(collected)}
    ref = {n: f for n, (_, f) in reference_results(runs, collected).items()}
    out = {
        "cells": sorted(runs),
        "reference_net_force_per_atom_meV_per_A": {
            n: float(1e3 * np.linalg.norm(f.sum(axis=0)) / len(f)) for n, f in ref.items()
        },
    }
    signs = {n: outward(ase.io.read(folder / "structure.extxyz")) for n, folder in runs.items()}
    for potential, source in potentials.items():
        diff = {n: f - ref[n] for n, (_, f) in potential_results(runs, source).items()}
        out[potential] = {n: float(1e3 * np.abs(e).mean()) for n, e in diff.items()}
        out[potential]["all"] = float(1e3 * np.abs(np.concatenate(list(diff.values()))).mean())
        # the part left once one uniform outward force on every chalcogen (OpenMX's layer
        # wants them further out than the material's) is taken off: stiffness errors
        push = np.mean([(diff[n][:, 2] * signs[n])[signs[n] != 0].mean() for n in diff])
        for n in diff:
            diff[n][:, 2] -= push * signs[n]
        out[potential]["uniform_te_push_eV_per_A"] = float(-push)
        out[potential]["all_without_push"] = float(
            1e3 * np.abs(np.concatenate(list(diff.values()))).mean()
        )
        out[potential]["twisted_without_push"] = float(
            1e3 * np.abs(np.concatenate([d for n, d in diff.items() if "twist" in n])).mean()
        )
    return out


def curves(energies: dict[str, float], formula_units: int = 2) -> dict[str, dict]:
    """Per stacking: distances, meV per formula unit relative to the separated layers,
    and the parabola minimum through the three lowest points (None with fewer)."""
    zero = energies[SEPARATED]
    sites: dict[str, list[tuple[float, float]]] = {}
    for name, e in energies.items():
        if name == SEPARATED:
            continue
        site, d = name.split("_")
        sites.setdefault(site, []).append((float(d), 1e3 * (e - zero) / formula_units))
    out = {}
    for site, points in sites.items():
        points.sort()
        d, e = np.array(points).T
        minimum = None
        k = int(np.argmin(e))
        if 0 < k < len(e) - 1:
            a, b, c = np.polyfit(d[k - 1 : k + 2], e[k - 1 : k + 2], 2)
            minimum = {"distance_A": float(-b / (2 * a)), "energy_meV": float(c - b * b / (4 * a))}
        out[site] = {"distance_A": d.tolist(), "energy_meV": e.tolist(), "minimum": minimum}
    return out


def plot(results: dict[str, dict], filename: Path) -> None:
    """One panel per stacking: the reference (black) and each potential's curve."""
    sites = list(next(iter(results.values())))
    fig, axes = new_figure(2, 4.2, 3.3, nrows=2)
    styles = ["k-o", "--s", ":^", "-.d", "--v"]
    for ax, site in zip(axes.flat, sites, strict=False):
        for (label, curves_of), style in zip(results.items(), styles, strict=False):
            if site in curves_of:
                c = curves_of[site]
                ax.plot(c["distance_A"], c["energy_meV"], style, ms=4, label=label)
        ax.set_title(f"{site} stacking", fontsize=10)
        ax.set_xlabel("metal-metal interlayer distance (A)")
        ax.set_ylabel("meV / MoTe2 vs layers 17 A apart")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("1x1 R-stacked MoTe2 bilayer, rigid layers", fontsize=11)
    save_figure(fig, filename)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--potential", action="append", default=None)
    args = parser.parse_args()
    collected = json.loads((RESULTS / "d3_reference_stackings.json").read_text())
    runs = converged_runs(collected)
    if SEPARATED not in runs:
        raise SystemExit(f"{RUNS / SEPARATED}: not converged yet, nothing to measure against")
    results = {REFERENCE: curves(energies(reference_results(runs, collected)))}
    for name in args.potential or [DEFAULT_POTENTIAL]:
        results[name] = curves(energies(potential_results(runs, name)))
    out = {"runs": sorted(runs), "curves": results}
    perturbed = RESULTS / "d3_reference_perturbed.json"
    if perturbed.exists():
        named = {name: name for name in list(results)[1:]}
        out["forces"] = force_errors(json.loads(perturbed.read_text()), named)
    with atomic_file(RESULTS / "relax_candidates.json") as tmp:
        tmp.write_text(json.dumps(out, indent=1) + "\n")
    plot(results, RESULTS / "relax_candidates.png")
    for label, sites in results.items():
        for site, curve in sites.items():
            m = curve["minimum"]
            where = "-" if m is None else f"{m['distance_A']:.2f} A, {m['energy_meV']:.1f} meV"
            print(f"{label:28s} {site}: minimum {where}")
    for label, errors in out.get("forces", {}).items():
        if label not in ("cells", "reference_net_force_per_atom_meV_per_A"):
            print(f"{label:28s} force MAE on the perturbed cells {errors['all']:.1f} meV/A")


if __name__ == "__main__":
    main()
