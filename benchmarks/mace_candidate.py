"""A MACE potential trained on our own OpenMX PBE data, measured as a relaxation candidate.

    python benchmarks/mace_candidate.py export WORK                 # training files
    MACE_PY=/path/to/mace-venv/bin/python
    $MACE_PY benchmarks/mace_candidate.py train WORK                 # mace_run_train
    PYTHONPATH=. $MACE_PY benchmarks/mace_candidate.py measure WORK  # the table's row

mace-torch pins e3nn 0.4.4 and the Hamiltonian models need e3nn 0.6, so MACE lives in a
venv of its own (``pip install mace-torch==0.3.16 dftd3==1.7.0 threadpoolctl spglib
click``); ``measure`` imports the relaxation side of ase_moireh, which needs no e3nn.

Data: the OpenMX PBE energies and forces of the reference (``benchmarks/d3_reference.py``):
the 23 rigid 1x1 stackings and the 3 perturbed 2x2 cells train; the 2 perturbed twisted
(2,1) cells are held out, as for the fitted corrections (``fit_corrections.py``). MACE
learns PBE; D3(BJ) is added after, as for every candidate. All structures are MoTe2, so
the isolated-atom energies are the average fit (only the energy per formula unit
matters). Training is on one thread; ``measure`` writes
``benchmarks/results/relax_<WORK name>.json``: stacking curves, force MAE as
``relax_candidates.py``, and the time of one energy + forces call on the rigid (7,6) and
(23,22) cells. The trained model file is a pickle: load only one you trained yourself.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))

#: small model for ~700 force labels: 32 channels, L = 1, 6 A (the interlayer Te-Te
#: distances, 3.5-4.5 A, inside), correlation 3, two interactions
MACE_ARGS = [
    "--model=MACE",
    "--num_channels=32",
    "--max_L=1",
    "--r_max=6.0",
    "--correlation=3",
    "--num_interactions=2",
    "--E0s=average",
    "--loss=weighted",
    "--forces_weight=100",
    "--batch_size=2",
    "--valid_batch_size=4",
    "--lr=0.01",
    "--ema",
    "--ema_decay=0.99",
    "--scaling=rms_forces_scaling",
    "--default_dtype=float64",
    "--device=cpu",
    "--seed=0",
    "--restart_latest",
]
MODEL = "mote2_pbe.model"


def export(work: Path) -> None:
    """train.xyz (stackings + perturbed 2x2, PBE), test.xyz (perturbed twisted, PBE)."""
    from relax_candidates import PERTURBED, RUNS

    sets = {"train": [], "test": []}
    for name, folder in [("stackings", RUNS), ("perturbed", PERTURBED)]:
        collected = json.loads((RESULTS / f"d3_reference_{name}.json").read_text())
        for run, rec in sorted(collected.items()):
            atoms = ase.io.read(folder / run / "structure.extxyz")
            atoms.info = {"REF_energy": rec["energy_eV"], "run": run}
            atoms.arrays = {k: v for k, v in atoms.arrays.items() if k in ("numbers", "positions")}
            atoms.new_array("REF_forces", np.array(rec["forces_eV_per_A"]))
            sets["test" if run.startswith("twist") else "train"].append(atoms)
    work.mkdir(parents=True, exist_ok=True)
    for split, frames in sets.items():
        ase.io.write(work / f"{split}.xyz", frames, format="extxyz")
        print(f"{split}: {len(frames)} structures, {sum(len(a) for a in frames)} atoms")


def train(work: Path, epochs: int, valid_fraction: float, energy_weight: float) -> None:
    """mace_run_train beside this interpreter, one thread, resumable (--restart_latest)."""
    exe = Path(sys.executable).with_name("mace_run_train")
    args = [
        str(exe),
        "--name=mote2_pbe",
        f"--work_dir={work}",
        f"--train_file={work / 'train.xyz'}",
        f"--test_file={work / 'test.xyz'}",
        f"--valid_fraction={valid_fraction}",
        "--energy_key=REF_energy",
        "--forces_key=REF_forces",
        f"--max_num_epochs={epochs}",
        f"--energy_weight={energy_weight}",
        *MACE_ARGS,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(args, check=True, env=env)
    end = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = end.ru_utime + end.ru_stime - start.ru_utime - start.ru_stime
    record = {"cpu_s": cpu, "epochs": epochs, "energy_weight": energy_weight}
    (work / "train_cpu.json").write_text(json.dumps(record) + "\n")
    print(f"training: {cpu / 60:.1f} CPU min")


def mace_with_d3(work: Path):
    from ase.calculators.mixing import SumCalculator
    from mace.calculators import MACECalculator

    from ase_moireh.build.potentials import d3_pbe

    model = MACECalculator(model_paths=str(work / MODEL), device="cpu", default_dtype="float64")
    return SumCalculator([model, d3_pbe()])


def step_time(calc, n: int, m: int) -> dict:
    """One energy + forces call on the rigid (n, m) cell moved by 0.01 A (first call
    excluded), as ``relax_timing.py``."""
    from ase_moireh.build import twisted_bilayer

    atoms = twisted_bilayer(n, m)
    atoms.calc = calc
    atoms.get_forces()
    moved = atoms.copy()
    moved.positions += np.random.default_rng(0).normal(0.0, 0.01, moved.positions.shape)
    moved.calc = calc
    wall = time.perf_counter()
    moved.get_forces()
    return {
        "cell": [n, m],
        "atoms": len(atoms),
        "step_wall_s": time.perf_counter() - wall,
        "peak_rss_GiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "load_1min": os.getloadavg()[0],
    }


def relaxed_bilayers(calc) -> dict:
    """The 1x1 bilayer at MM and MX relaxed with positions free (cell fixed), as
    ``tests/test_relax.py`` does for the default: interlayer distance and the mean Mo-Te
    height of the layers (the material's layer, which the corpus uses: 1.800 A)."""
    from ase_moireh.build.relax import local_interlayer_distance, relax
    from ase_moireh.workflows.d3_reference import stacked_bilayer

    out = {}
    for site, start in (("MM", 7.3), ("MX", 7.0)):
        atoms = relax(stacked_bilayer(site, start), calc, fmax=0.01, steps=300, progress=False)
        z = atoms.positions[:, 2]
        metal = np.array(atoms.get_chemical_symbols()) == "Mo"
        heights = [np.abs(z[~metal] - zm)[np.abs(z[~metal] - zm) < 2.5].mean() for zm in z[metal]]
        out[site] = {
            "distance_A": float(local_interlayer_distance(atoms).mean()),
            "mo_te_height_A": float(np.mean(heights)),
            "converged": bool(atoms.info["relaxation"]["converged"]),
        }
    return out


def measure(work: Path, cells: list[str]) -> None:
    from relax_candidates import (
        SEPARATED,
        converged_runs,
        curves,
        energies,
        force_errors,
        potential_results,
    )

    from ase_moireh.files import atomic_file

    calc = mace_with_d3(work)
    collected = json.loads((RESULTS / "d3_reference_stackings.json").read_text())
    runs = converged_runs(collected)
    label = "MACE (ours, PBE) + D3"
    out = {
        "label": label,
        "mace_args": MACE_ARGS,
        "training": json.loads((work / "train_cpu.json").read_text()),
        "curves": curves(energies(potential_results(runs, calc))),
        "separated": SEPARATED,
    }
    perturbed = json.loads((RESULTS / "d3_reference_perturbed.json").read_text())
    out["forces"] = force_errors(perturbed, {label: calc})[label]
    out["relaxed_1x1"] = relaxed_bilayers(calc)
    out["timing"] = [step_time(calc, *map(int, c.split(","))) for c in cells]
    with atomic_file(RESULTS / f"relax_{work.name}.json") as tmp:
        tmp.write_text(json.dumps(out, indent=1) + "\n")
    for site, curve in out["curves"].items():
        m = curve["minimum"]
        where = "-" if m is None else f"{m['distance_A']:.2f} A, {m['energy_meV']:.1f} meV"
        print(f"{site}: minimum {where}")
    f = out["forces"]
    print(f"force MAE {f['all']:.0f}, twisted without the Te push {f['twisted_without_push']:.0f}")
    print(json.dumps(out["relaxed_1x1"]))
    print(json.dumps(out["timing"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["export", "train", "measure"])
    parser.add_argument("work", type=Path)
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--valid-fraction", type=float, default=0.1)
    parser.add_argument(
        "--energy-weight", type=float, default=10.0, help="forces weigh 100 (MACE_ARGS)"
    )
    parser.add_argument("--cells", nargs="+", default=["7,6", "23,22"])
    args = parser.parse_args()
    if args.stage == "export":
        export(args.work)
    elif args.stage == "train":
        train(args.work, args.epochs, args.valid_fraction, args.energy_weight)
    else:
        measure(args.work, args.cells)


if __name__ == "__main__":
    main()
