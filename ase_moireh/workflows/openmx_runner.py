"""Run OpenMX over dataset folders: resumable, staged restarts, a record per folder.

A folder is what ``moireh dataset sample/shifted/twisted`` writes (``openmx_in.dat``,
``structure.extxyz``, ``meta.json``). :func:`run_folders` runs OpenMX in each, in
order, and keeps ``run.json`` there (status, SCF steps, final NormRD, electron count,
wall time, failure reason):

* a converged folder is skipped; a folder left ``running`` by a killed runner, or a
  crash, is started again from scratch;
* convergence means: OpenMX ended normally, its SCF met the input's ``scf.criterion``
  and the electron count it reports equals the neutral one (this catches the
  non-collinear band-solver bug of OpenMX 3.9, see docs/dft-corpus.md). The SCF is met when
  NormRD < criterion, or when OpenMX stopped before ``scf.maxIter`` on its own test
  (DFT.c: change of the band energy < criterion and NormRD < 10 x criterion): the
  shared reference runs include such endings (NormRD 1.14e-8 at criterion 1e-8);
* an SCF that ends unconverged gets a staged restart: a gentler run (mixing weights
  / 4, 1000 K, criterion 1e-6) writes restart files, then the target settings continue
  from them (``scf.restart on``); OpenMX writes restart files only when an SCF loop ends;
* a SOC run whose collinear twin (``meta.json``) has converged starts from its density
  (``scf.restart c2n``);
* every converged run is converted into the corpus (:mod:`ase_moireh.io.corpus`); a failure
  is recorded with its reason, never silently.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ase_moireh.files import atomic_file
from ase_moireh.io.corpus import ELECTRON_TOL

log = logging.getLogger(__name__)

INPUT = "openmx_in.dat"
RECORD = "run.json"
#: OpenMX's closing line of a run that ended normally
FINISHED = "The calculation was normally finished."
#: the gentle first stage of a staged restart
GENTLE = {
    "scf.ElectronicTemperature": "1000.0",
    "scf.criterion": "1.0e-06",
    "scf.Mixing.StartPulay": "20",
}
POLL_SECONDS = 5.0


# --------------------------------------------------------------------------- records


@dataclass
class RunRecord:
    """What happened in one folder (``run.json``)."""

    status: str = "pending"  # pending | running | converged | failed
    stage: str = ""  # target | gentle | restart
    scf_steps: int = 0  # over all stages
    norm_rd: float | None = None
    electrons: float | None = None
    electrons_expected: float | None = None
    wall_seconds: float = 0.0
    reason: str = ""
    attempts: int = 0
    converted: str = ""  # corpus entry written from this run
    seeded_from: str = ""  # collinear twin whose density started this SOC run

    @classmethod
    def read(cls, folder: Path) -> RunRecord:
        path = folder / RECORD
        if not path.exists():
            return cls()
        try:
            raw = json.loads(path.read_text())
            return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})
        except (OSError, ValueError, TypeError) as err:
            raise ValueError(f"{path}: unreadable run record ({err})") from None

    def write(self, folder: Path) -> None:
        with atomic_file(folder / RECORD) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=1) + "\n")


# --------------------------------------------------------------------------- OpenMX text


@dataclass
class ScfState:
    """What an OpenMX standard output says so far."""

    steps: int = 0
    norm_rd: float | None = None
    electrons: float | None = None
    electrons_expected: float | None = None
    finished: bool = False


_NORM_RD = re.compile(r"<DFT>\s+NormRD\s*=\s*(\S+)")
_ELECTRONS = re.compile(r"total=\s*(\S+)\s+ideal\(neutral\)=\s*(\S+)")


def parse_std(text: str) -> ScfState:
    """SCF steps, last NormRD and electron count of an ``openmx.std``."""
    state = ScfState(finished=FINISHED in text)
    norms = _NORM_RD.findall(text)
    state.steps = len(norms)
    if norms:
        state.norm_rd = float(norms[-1])
    electrons = _ELECTRONS.findall(text)
    if electrons:
        state.electrons, state.electrons_expected = (float(x) for x in electrons[-1])
    return state


def keyword(text: str, key: str) -> str | None:
    """Value of an OpenMX keyword (case-insensitive, first word), or None."""
    match = re.search(rf"(?im)^\s*{re.escape(key)}\s+(\S+)", text)
    return match.group(1) if match else None


def with_keywords(text: str, values: dict[str, str]) -> str:
    """The input with keywords set (replaced where present, appended otherwise); a
    value replaces every value word of the line (``scf.Kgrid 1 1 1``), up to a comment."""
    for key, value in values.items():
        pattern = re.compile(rf"(?im)^(\s*{re.escape(key)}[ \t]+)[^\s#]+(?:[ \t]+[^\s#]+)*")
        if pattern.search(text):
            text = pattern.sub(lambda m, v=value: m.group(1) + v, text)
        else:
            text = text.rstrip("\n") + f"\n{key:<27}{value}\n"
    return text


def gentle_keywords(text: str) -> dict[str, str]:
    """GENTLE plus mixing weights a quarter of the input's."""
    out = dict(GENTLE)
    for key, default in (("scf.Init.Mixing.Weight", 0.3), ("scf.Max.Mixing.Weight", 0.4)):
        value = float(keyword(text, key) or default)
        out[key] = f"{value / 4:.4f}"
    return out


# --------------------------------------------------------------------------- running


def openmx_command(openmx: str, np_: int) -> list[str]:
    """``mpirun -np N openmx`` (N > 1) or ``openmx``; root needs mpirun's consent."""
    if np_ <= 1:
        return [openmx]
    extra = ["--allow-run-as-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    return ["mpirun", *extra, "-np", str(np_), openmx]


def find_openmx(openmx: str | None) -> str:
    path = shutil.which(openmx or "openmx")
    if path is None:
        raise FileNotFoundError(
            f"no OpenMX executable {openmx or 'openmx'!r} (on PATH or given by --openmx); "
            "see docs/dft-corpus.md for building OpenMX 3.9"
        )
    return path


def _run_stage(
    folder: Path,
    input_text: str,
    stage: str,
    command: list[str],
    on_progress: Callable[[ScfState], None],
) -> tuple[int, ScfState, float]:
    """One OpenMX run in ``folder`` on ``input_text``; returns (exit code, state, seconds)."""
    name = INPUT if input_text == (folder / INPUT).read_text() else f"openmx_{stage}.dat"
    if name != INPUT:
        (folder / name).write_text(input_text)
    std = folder / ("openmx.std" if stage == "target" else f"openmx_{stage}.std")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    start = time.perf_counter()
    with open(std, "w") as out:
        proc = subprocess.Popen(
            [*command, name], cwd=folder, stdout=out, stderr=subprocess.STDOUT, env=env
        )
        while proc.poll() is None:
            time.sleep(POLL_SECONDS)
            on_progress(parse_std(std.read_text(errors="replace")))
    state = parse_std(std.read_text(errors="replace"))
    on_progress(state)
    return proc.returncode, state, time.perf_counter() - start


#: OpenMX's own SCF test accepts NormRD up to this multiple of scf.criterion (DFT.c)
OPENMX_NORM_RD_FACTOR = 10.0


def _scf_met(state: ScfState, criterion: float, max_iter: int) -> bool:
    """NormRD below the criterion, or OpenMX's own convergence stop (see module doc)."""
    if state.norm_rd is None:
        return False
    if state.norm_rd < criterion:
        return True
    return state.steps < max_iter and state.norm_rd < OPENMX_NORM_RD_FACTOR * criterion


def _verdict(code: int, state: ScfState, criterion: float, max_iter: int) -> str:
    """'' if converged, else the reason."""
    if code != 0 or not state.finished:
        return f"OpenMX stopped (exit code {code}) after {state.steps} SCF steps"
    if state.electrons is not None and (
        abs(state.electrons - state.electrons_expected) > ELECTRON_TOL
    ):
        return (
            f"electron count {state.electrons} != neutral {state.electrons_expected} "
            "(an OpenMX build without the non-collinear band-solver fix?)"
        )
    if not _scf_met(state, criterion, max_iter):
        return f"not converged: NormRD {state.norm_rd} >= {criterion} after {state.steps} steps"
    return ""


def collinear_twin(folder: Path) -> Path | None:
    """The converged collinear run of the same structure as a SOC folder, with its
    restart files, or None (``meta.json`` names the twin; it is a sibling folder)."""
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text())
    if not meta.get("soc") or not meta.get("twin"):
        return None
    twin = folder.parent / meta["twin"]
    system = keyword((folder / INPUT).read_text(), "System.Name") or "openmx"
    if RunRecord.read(twin).status != "converged" or not (twin / f"{system}_rst").is_dir():
        return None
    return twin


def run_folder(
    folder: str | os.PathLike,
    command: list[str],
    staged: bool = True,
    on_progress: Callable[[str, ScfState], None] | None = None,
    seed_from_twin: bool = True,
) -> RunRecord:
    """Run OpenMX in one folder (see the module doc); returns and writes its record.

    With ``seed_from_twin``, a SOC run whose collinear twin has converged starts from
    the twin's density (OpenMX's ``scf.restart c2n``): the same fixed point in fewer
    SCF steps."""
    folder = Path(folder)
    record = RunRecord.read(folder)
    if record.status == "converged":
        return record
    text = (folder / INPUT).read_text()
    system = keyword(text, "System.Name") or "openmx"
    shutil.rmtree(folder / f"{system}_rst", ignore_errors=True)  # never resume a stale density
    record = RunRecord(status="running", attempts=record.attempts + 1)
    twin = collinear_twin(folder) if seed_from_twin else None
    target = text
    if twin is not None:
        shutil.copytree(twin / f"{system}_rst", folder / f"{system}_rst")
        target = with_keywords(text, {"scf.restart": "c2n"})
        record.seeded_from = twin.name
    report = on_progress or (lambda stage, state: None)

    def stage(name: str, stage_text: str) -> str:
        record.stage = name
        record.write(folder)
        code, state, seconds = _run_stage(
            folder, stage_text, name, command, lambda st: report(name, st)
        )
        record.scf_steps += state.steps
        record.wall_seconds += seconds
        record.norm_rd = state.norm_rd
        record.electrons, record.electrons_expected = state.electrons, state.electrons_expected
        return _verdict(
            code,
            state,
            float(keyword(stage_text, "scf.criterion") or 1e-6),
            int(keyword(stage_text, "scf.maxIter") or 40),
        )

    reason = stage("target", target)
    if reason.startswith("not converged") and staged:
        log.info("%s: %s; staged restart", folder.name, reason)
        gentle = stage("gentle", with_keywords(text, gentle_keywords(text)))
        if gentle and not gentle.startswith("not converged"):
            reason = gentle  # a crash: nothing to restart from
        else:
            reason = stage("restart", with_keywords(text, {"scf.restart": "on"}))
    record.status = "failed" if reason else "converged"
    record.reason = f"{record.stage}: {reason}" if reason else ""
    record.write(folder)
    return record


# --------------------------------------------------------------------------- many folders


def run_folders(
    folders: Iterable[str | os.PathLike],
    command: list[str],
    convert: Callable[[Path, RunRecord], str] | None = None,
    staged: bool = True,
    retry_failed: bool = False,
    progress: bool = True,
    seed_from_twin: bool = True,
) -> list[tuple[Path, RunRecord]]:
    """Run every folder in order (skipping converged ones; failed ones only with
    ``retry_failed``), converting each converged run with ``convert`` (returns where
    it wrote, recorded in run.json)."""
    folders = [Path(f) for f in folders]
    out = []
    bar = tqdm(folders, desc="OpenMX", unit="run", disable=not progress)
    for folder in bar:
        if not (folder / INPUT).is_file():
            raise FileNotFoundError(f"{folder}: no {INPUT}: not a dataset folder")
        record = RunRecord.read(folder)
        if record.status == "failed" and not retry_failed:
            out.append((folder, record))
            continue
        if record.status != "converged":
            log.info("running OpenMX in %s", folder)

            def show(stage: str, state: ScfState, name=folder.name) -> None:
                nrd = "-" if state.norm_rd is None else f"{state.norm_rd:.1e}"
                bar.set_postfix_str(f"{name} {stage} SCF {state.steps} NormRD {nrd}")

            record = run_folder(folder, command, staged, show, seed_from_twin)
            log.info("%s: %s %s", folder.name, record.status, record.reason)
        if record.status == "converged" and convert is not None and not record.converted:
            try:
                record.converted = convert(folder, record)
            except (ValueError, OSError) as err:
                record.status, record.reason = "failed", f"conversion: {err}"
            record.write(folder)
        out.append((folder, record))
    return out


# --------------------------------------------------------------------------- corpus


def read_run(folder: str | os.PathLike):
    """The converted run of a folder (the .scfout with openmx.out appended as text, as
    the reader expects, so the printed eigenvalues come along)."""
    from ase_moireh.io.openmx import ScfoutError, read_scfout

    folder = Path(folder)
    system = keyword((folder / INPUT).read_text(), "System.Name") or "openmx"
    scfout, out = folder / f"{system}.scfout", folder / f"{system}.out"
    try:
        raw = scfout.read_bytes() + (out.read_bytes() if out.exists() else b"")
        return read_scfout(raw)
    except (OSError, ScfoutError) as err:
        raise ValueError(f"{scfout}: {err}") from None


def check_same_structure(expected, found, folder: Path, tol: float = 1e-4) -> None:
    """The run's atoms are the folder's structure (up to lattice translations)."""
    if len(expected) != len(found) or list(expected.numbers) != list(found.numbers):
        raise ValueError(f"{folder}: the OpenMX output holds another structure (atoms differ)")
    frac = np.linalg.solve(np.asarray(found.cell).T, (found.positions - expected.positions).T).T
    frac -= np.round(frac)
    worst = np.abs(frac @ np.asarray(found.cell)).max()
    cell = np.abs(np.asarray(found.cell) - np.asarray(expected.cell)).max()
    if worst > tol or cell > tol:
        raise ValueError(
            f"{folder}: the OpenMX output holds another structure (positions differ by "
            f"{worst:.2e} A, cell by {cell:.2e} A)"
        )


def convert_to_corpus(folder: Path, record: RunRecord, corpus: str | os.PathLike) -> str:
    """Write the corpus entry of a converged folder and its manifest row; returns the
    entry's path."""
    import ase.io

    from ase_moireh.io.corpus import load_manifest, manifest_entry, save_manifest, write_entry

    corpus = Path(corpus)
    run = read_run(folder)
    check_same_structure(ase.io.read(folder / "structure.extxyz"), run.atoms, folder)
    entry = write_entry(corpus / folder.name, run, folder)
    meta = json.loads((folder / "meta.json").read_text())
    manifest = load_manifest(corpus)
    manifest[folder.name] = manifest_entry(folder.name, meta, asdict(record))
    save_manifest(corpus, manifest)
    return str(entry)
