"""Write the DFT reference bands the main job compares the bundled SOC model with.

    python examples/bundle_reference.py --shared ../shared/data/openmx

The shared OpenMX run of the 21.79 deg twisted bilayer with SOC (``tw2179_soc``, exact
structure, never trained on) is 24 MB; the demo needs only its bands near the gap. This
reads the run, checks its structure is ``twisted_bilayer(2, 1)`` (the same atoms, in
OpenMX's order) and stores in ``ase_moireh/data/reference/tw2179_soc_bands.npz`` (18 kB)
that structure, the levels of the ``WINDOW`` bands on either side of the gap along the
demo's Gamma-M-K-Gamma path and at Gamma, M and K (eV), the occupied-band count and the
source's SHA-256.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from ase_moireh.build import twisted_bilayer
from ase_moireh.calculator import MoireHCalculator
from ase_moireh.data import REFERENCE_BANDS, TWISTED_PATH_POINTS
from ase_moireh.files import atomic_file
from ase_moireh.io.openmx import read_scfout
from ase_moireh.kpoints import extrema_kpoints

WINDOW = 24  # bands kept below and above the gap


def same_atoms(a, b) -> float:
    """Largest distance (A) from an atom of ``b`` to the nearest periodic image of an
    atom of ``a`` of the same element (inf for different cells or compositions)."""
    if not np.allclose(a.cell, b.cell) or sorted(a.numbers) != sorted(b.numbers):
        return float("inf")
    worst = 0.0
    for z, pos in zip(b.numbers, b.get_scaled_positions(), strict=True):
        d = (a.get_scaled_positions()[a.numbers == z] - pos + 0.5) % 1.0 - 0.5
        worst = max(worst, float(np.linalg.norm(d @ np.asarray(a.cell), axis=1).min()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data/openmx"))
    args = parser.parse_args()
    source = next((args.shared / "tw2179_soc").glob("openmx.scfout*"))
    run = read_scfout(source)
    built = twisted_bilayer(2, 1)
    moved = same_atoms(built, run.atoms)
    if moved > 1e-3:
        raise SystemExit(f"{source}: not twisted_bilayer(2, 1) ({moved:.2g} A off)")
    calc = MoireHCalculator(dft=run)
    calc.set_atoms(run.atoms)
    nocc = calc.occupied_bands()
    tb = calc.get_tight_binding()
    path = built.cell.bandpath("GMKG", npoints=TWISTED_PATH_POINTS)
    keep = slice(nocc - WINDOW, nocc + WINDOW)
    extrema = extrema_kpoints(built.cell)
    with atomic_file(REFERENCE_BANDS) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f,
            numbers=run.atoms.numbers,
            positions=run.atoms.positions,
            cell=np.asarray(run.atoms.cell),
            kpts=path.kpts,
            path_energies=tb.eigenvalues(path.kpts)[:, keep],
            extrema_kpts=extrema,
            extrema_energies=tb.eigenvalues(extrema)[:, keep],
            first_band=nocc - WINDOW,
            nocc=nocc,
            source=f"shared/data/openmx/tw2179_soc/{source.name}",
            sha256=hashlib.sha256(source.read_bytes()).hexdigest(),
        )
    print(f"wrote {REFERENCE_BANDS} ({REFERENCE_BANDS.stat().st_size} bytes) from {source}")


if __name__ == "__main__":
    main()
