"""Time and peak memory of building twisted MoTe2 cells, up to 0.88 deg (25,314 atoms).

Run: python benchmarks/build.py   (prints a table, writes benchmarks/results/build.json)
"""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

from ase_moireh.build import natoms_twisted, twist_angle, twisted_bilayer

CELLS = [(2, 1), (7, 6), (10, 9), (20, 19), (38, 37), (60, 59)]


def main() -> None:
    rows = []
    for n, m in CELLS:
        tracemalloc.start()
        start = time.perf_counter()
        atoms = twisted_bilayer(n, m)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        assert len(atoms) == natoms_twisted(n, m)
        rows.append(
            {
                "n": n,
                "m": m,
                "theta_deg": round(twist_angle(n, m), 4),
                "atoms": len(atoms),
                "seconds": round(seconds, 4),
                "peak_MiB": round(peak, 1),
            }
        )
        print(
            f"({n:2d},{m:2d}) {rows[-1]['theta_deg']:8.4f} deg {len(atoms):7d} atoms "
            f"{seconds:8.3f} s {peak:8.1f} MiB"
        )
    out = Path(__file__).parent / "results" / "build.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
