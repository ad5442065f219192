"""Relax a structure with an interatomic potential: ASE optimizer, fixed cell by default,
progress bar, and a trajectory that lets a killed run resume where it stopped.

Twisted bilayers relax: the layers move apart in the MM regions and together in MX/XM
(several tenths of an Angstrom) and twist locally. That reshapes the moire potential and
with it the bands. The potential is any ASE calculator; which one is measured in
``benchmarks/results/relax.md``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.io import Trajectory
from ase.optimize import BFGS, FIRE, LBFGS
from ase.optimize.optimize import Optimizer
from tqdm import tqdm

log = logging.getLogger(__name__)

OPTIMIZERS: dict[str, type[Optimizer]] = {"LBFGS": LBFGS, "BFGS": BFGS, "FIRE": FIRE}


class RelaxError(ValueError):
    """A relaxation that cannot start: unsupported element, mismatching trajectory."""


def check_elements(atoms: Atoms, supported: Iterable[str], potential: str) -> None:
    """Refuse, naming them, elements the potential was not made for."""
    missing = sorted(set(atoms.get_chemical_symbols()) - set(supported))
    if missing:
        raise RelaxError(
            f"{potential} has no parameters for {', '.join(missing)} "
            f"(it covers {', '.join(sorted(supported))})"
        )


def _resume(atoms: Atoms, trajectory: Path) -> int:
    """Move ``atoms`` to the last frame of ``trajectory`` (same atoms, same cell);
    returns the steps already done (its frames after the starting one)."""
    if not trajectory.exists() or trajectory.stat().st_size == 0:
        return 0
    try:
        with Trajectory(trajectory) as frames:
            done = len(frames)
            last = frames[-1] if done else None
    except Exception as err:  # ase raises several kinds on a damaged file
        msg = f"{trajectory}: unreadable trajectory ({err}); delete it to restart"
        raise RelaxError(msg) from None
    if last is None:
        return 0
    if last.get_chemical_symbols() != atoms.get_chemical_symbols():
        raise RelaxError(f"{trajectory}: holds another structure; delete it or pick another path")
    if not np.allclose(last.cell, atoms.cell, atol=1e-6):
        raise RelaxError(f"{trajectory}: holds another cell; delete it or pick another path")
    atoms.positions = last.positions
    log.info("resuming from frame %d of %s", done, trajectory)
    return done - 1


def max_force(atoms: Atoms) -> float:
    """The largest force on any atom (eV/A), what ``fmax`` is compared with."""
    return float(np.linalg.norm(atoms.get_forces(), axis=1).max())


def relax(
    atoms: Atoms,
    calculator: Calculator,
    fmax: float = 0.01,
    steps: int = 2000,
    trajectory: str | os.PathLike | None = None,
    optimizer: str = "LBFGS",
    progress: bool = True,
) -> Atoms:
    """Relax the positions of a copy of ``atoms`` (cell fixed) until every force is
    below ``fmax`` eV/A or ``steps`` steps have run; return the copy with
    ``info['relaxation']`` (converged, steps, fmax reached). With ``trajectory``, every
    step is appended there and a rerun resumes from its last frame."""
    if fmax <= 0 or steps < 1:
        raise RelaxError(f"need fmax > 0 and steps >= 1, got {fmax}, {steps}")
    if optimizer not in OPTIMIZERS:
        raise RelaxError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
    work = atoms.copy()
    work.calc = calculator
    done = 0 if trajectory is None else _resume(work, Path(trajectory))
    opt = OPTIMIZERS[optimizer](
        work,
        logfile=None,
        trajectory=None if trajectory is None else str(trajectory),
        append_trajectory=True,
    )
    bar = tqdm(total=steps, desc="relax", unit="step", disable=not progress, initial=0)

    def report() -> None:
        bar.set_postfix_str(f"fmax {max_force(work):.4f} eV/A")
        bar.update(1)

    opt.attach(report, interval=1)
    try:
        converged = bool(opt.run(fmax=fmax, steps=steps))
    finally:
        bar.close()
    reached = max_force(work)
    verdict = "converged" if converged else "stopped"
    log.info("relaxation %s after %d steps: fmax %.4f eV/A", verdict, opt.nsteps, reached)
    out = work.copy()
    out.info["relaxation"] = {
        "converged": converged,
        "steps": int(opt.nsteps) + done,
        "fmax_reached": reached,
        "fmax": fmax,
        "optimizer": optimizer,
    }
    return out


def local_interlayer_distance(atoms: Atoms) -> np.ndarray:
    """Per top-layer metal atom: its height above the bottom metal plane there (A), the
    bottom metals' heights interpolated at its in-plane position (inverse squared
    distance over the three nearest, periodic images included; a k-d tree, so O(N log N)
    for any cell). Its spread over a relaxed moire cell is the corrugation (MM regions
    high, MX/XM low)."""
    from scipy.spatial import cKDTree

    from ase_moireh.build.generate import layer_metals

    bottom, top = layer_metals(atoms)
    cell = np.asarray(atoms.cell)[:2, :2]
    images = np.array([i * cell[0] + j * cell[1] for i in (-1, 0, 1) for j in (-1, 0, 1)])
    plane = (bottom[None, :, :2] + images[:, None, :]).reshape(-1, 2)
    heights = np.tile(bottom[:, 2], len(images))
    d, nearest = cKDTree(plane).query(top[:, :2], k=3)
    w = 1.0 / np.maximum(d, 1e-6) ** 2
    return top[:, 2] - (w * heights[nearest]).sum(axis=1) / w.sum(axis=1)
