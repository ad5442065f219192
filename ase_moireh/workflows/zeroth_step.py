"""OpenMX's zeroth-step Hamiltonian H0 of corpus entries: the reference of dH models.

OpenMX's first SCF step builds H from the superposed free-atom densities: H0 = T + V_NL
(spin-orbit included) + V_NA + V_xc[atomic densities + partial cores], a fixed function
of the geometry. Run with ``scf.maxIter 1`` (no restart), OpenMX writes that H0 to the
``.scfout`` (``NormRD = 1`` at its only step). :func:`zeroth_steps` does this for corpus
entries, resumably, and stores each H0 beside the entry's H as ``h0_openmx.h5`` in the
corpus H format (:func:`ase_moireh.io.corpus.write_hamiltonian`), and the wall time in
the manifest row's ``extra["h0_openmx_seconds"]``; the run folder is then removed (its
``.scfout`` is large and now redundant).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import ase.io
from tqdm import tqdm

from ase_moireh.io.corpus import (
    ELECTRON_TOL,
    H0_OPENMX,
    load_manifest,
    save_manifest,
    write_hamiltonian,
)
from ase_moireh.workflows.openmx_runner import (
    INPUT,
    ScfState,
    _run_stage,
    check_same_structure,
    read_run,
    with_keywords,
)

log = logging.getLogger(__name__)


#: what makes a corpus input OpenMX's zeroth step. H0 is built before the step's
#: diagonalisation and depends neither on k-points nor on forces, so one k-point and no
#: forces save half the time: shift2x2_007's H0 so equals its 5x5x1 run with forces to
#: 1.9e-6 eV (of 64 eV: float32 storage rounding), 2026-12-06
ZEROTH_STEP = {
    "scf.maxIter": "1",
    "scf.restart": "off",
    "HS.fileout": "on",
    "scf.Kgrid": "1 1 1",
    "orbitalOpt.Force.Skip": "on",
}


def zeroth_step_input(text: str, data_path: str | os.PathLike) -> str:
    """A corpus input turned into OpenMX's zeroth step (:data:`ZEROTH_STEP`: one SCF
    step from the atomic densities, never a restart, H written), DATA.PATH absolute."""
    return with_keywords(text, {**ZEROTH_STEP, "DATA.PATH": str(Path(data_path).resolve())})


def _check_zeroth(code: int, state: ScfState, folder: Path) -> None:
    """The run ended normally after exactly one step, with the neutral electron count."""
    if code != 0 or not state.finished:
        raise ValueError(f"{folder}: OpenMX stopped (exit code {code}) in the zeroth step")
    if state.steps != 1:
        raise ValueError(f"{folder}: {state.steps} SCF steps where the zeroth step has one")
    if state.electrons is not None and (
        abs(state.electrons - state.electrons_expected) > ELECTRON_TOL
    ):
        raise ValueError(
            f"{folder}: electron count {state.electrons} != neutral {state.electrons_expected}"
        )


def zeroth_step(
    entry: Path, work: Path, command: list[str], data_path: str | os.PathLike, bar=None
) -> float:
    """OpenMX's H0 of one corpus entry into ``entry/h0_openmx.h5``; returns seconds."""
    folder = work / entry.name
    shutil.rmtree(folder, ignore_errors=True)  # a killed run starts again
    folder.mkdir(parents=True)
    text = zeroth_step_input((entry / INPUT).read_text(), data_path)
    (folder / INPUT).write_text(text)

    def show(state: ScfState) -> None:
        if bar is not None:
            bar.set_postfix_str(f"{entry.name} SCF {state.steps}")

    code, state, seconds = _run_stage(folder, text, "target", command, show)
    _check_zeroth(code, state, folder)
    run = read_run(folder)
    check_same_structure(ase.io.read(entry / "structure.extxyz"), run.atoms, folder)
    write_hamiltonian(entry / H0_OPENMX, run)
    shutil.rmtree(folder)
    return seconds


#: the order splits get their H0: what a dH model trains and is validated on first (the
#: go/no-go of dH models needs them), the held-out reference last
SPLIT_ORDER = {"validation": 0, "train": 1, "test": 2, "holdout": 3}


def _order(manifest, names: Iterable[str]) -> list[str]:
    """Collinear before SOC (SOC runs cost several times more), smaller cells first,
    then by :data:`SPLIT_ORDER`."""
    return sorted(
        names,
        key=lambda n: (
            manifest[n].soc,
            manifest[n].n_atoms,
            SPLIT_ORDER.get(manifest[n].split, 4),
            n,
        ),
    )


def zeroth_steps(
    corpus: str | os.PathLike,
    work: str | os.PathLike,
    command: list[str],
    data_path: str | os.PathLike,
    names: Iterable[str] | None = None,
    progress: bool = True,
) -> list[tuple[str, str]]:
    """H0 of every converged entry (or ``names``) lacking one; returns (name, failure)
    pairs. Resumable: an entry with ``h0_openmx.h5`` is skipped."""
    corpus, work = Path(corpus), Path(work)
    manifest = load_manifest(corpus)
    wanted = list(manifest) if names is None else list(names)
    unknown = [n for n in wanted if n not in manifest]
    if unknown:
        raise ValueError(f"{corpus}: no manifest entries {', '.join(unknown)}")
    todo = [
        n
        for n in _order(manifest, wanted)
        if manifest[n].status == "converged" and not (corpus / n / H0_OPENMX).is_file()
    ]
    failed = []
    bar = tqdm(todo, desc="OpenMX H0", unit="entry", disable=not progress)
    for name in bar:
        log.info("zeroth step of %s", name)
        try:
            seconds = zeroth_step(corpus / name, work, command, data_path, bar)
        except (ValueError, OSError) as err:
            log.error("%s", err)
            failed.append((name, str(err)))
            continue
        manifest = load_manifest(corpus)  # another runner may have added rows meanwhile
        manifest[name].extra["h0_openmx_seconds"] = round(seconds, 1)
        save_manifest(corpus, manifest)
        log.info("%s: H0 in %.0f s", name, seconds)
    return failed
