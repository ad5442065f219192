"""Time and memory of one energy + forces call of each potential on twisted MoTe2 cells.

    python benchmarks/relax_timing.py [--potential 7net-0+d3+il ...] [--cells 7,6 23,22]

Each (potential, cell) runs in a fresh process: the potential is built, called once on
the rigid cell (set-up, first call), then timed on a copy with every atom moved by
0.01 A (what an optimizer step costs). Wall and CPU time of that call, and the process's
peak RSS, go to ``benchmarks/results/relax_timing.json`` with the machine's load.
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

from ase_moireh.files import atomic_file

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_POTENTIALS = ("7net-0+d3", "7net-0+d3+fit", "chgnet+d3")


def one_case(potential: str, n: int, m: int) -> dict:
    """Runs inside the child process."""
    import numpy as np

    from ase_moireh.build import twisted_bilayer
    from ase_moireh.build.potentials import load_potential

    atoms = twisted_bilayer(n, m)
    calc, _ = load_potential(potential)
    atoms.calc = calc
    atoms.get_forces()
    moved = atoms.copy()
    moved.positions += np.random.default_rng(0).normal(0.0, 0.01, moved.positions.shape)
    moved.calc = calc
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu, wall = usage.ru_utime + usage.ru_stime, time.perf_counter()
    moved.get_forces()
    wall = time.perf_counter() - wall
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "potential": potential,
        "cell": [n, m],
        "atoms": len(atoms),
        "step_wall_s": wall,
        "step_cpu_s": usage.ru_utime + usage.ru_stime - cpu,
        "peak_rss_GiB": usage.ru_maxrss / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--potential", action="append", default=None)
    parser.add_argument("--cells", nargs="+", default=["7,6", "23,22"])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        potential, n, m = args.child
        print(json.dumps(one_case(potential, int(n), int(m))))
        return
    out = RESULTS / "relax_timing.json"
    rows = json.loads(out.read_text())["rows"] if out.exists() else []
    for potential in args.potential or DEFAULT_POTENTIALS:
        for cell in args.cells:
            n, m = cell.split(",")
            load = os.getloadavg()[0]
            proc = subprocess.run(
                [sys.executable, __file__, "--child", potential, n, m],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                row = {"potential": potential, "cell": [int(n), int(m)]}
                row["returncode"] = proc.returncode  # -9: SIGKILL, e.g. out of memory
                row["failed"] = proc.stderr[-500:]
            else:
                row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["load_1min_before"] = load
            row["threads"] = os.environ.get("OMP_NUM_THREADS", "default")
            print(json.dumps(row))
            rows = [r for r in rows if (r["potential"], r["cell"]) != (potential, row["cell"])]
            rows.append(row)
            with atomic_file(out) as tmp:
                tmp.write_text(json.dumps({"rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
