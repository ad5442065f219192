"""Batch conversion of DFT output files to datasets (the engine behind ``moireh-convert``).

Each file becomes one folder, written atomically; failures are collected, never fatal
for the other files. Output folder names are the converter's structure names (for OpenMX
the file name without ``.scfout[.xz|.gz]``, or the run's folder when the file has the
generic name ``openmx.scfout``); when those collide, the parent folder names are used
instead. An existing output folder is never replaced silently: that file fails with a
message, unless ``skip_existing`` (leave it) or ``overwrite`` (replace it atomically).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ase_moireh.io.dataset import DatasetError, write_deeph, write_dftio
from ase_moireh.tightbinding import ElectronicStructure

log = logging.getLogger(__name__)

WRITERS: dict[str, Callable[[ElectronicStructure, Path], Path]] = {
    "dftio": write_dftio,
    "deeph": write_deeph,
}


@dataclass
class ConversionReport:
    converted: list[tuple[Path, Path]] = field(default_factory=list)  # (input, output)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def find_inputs(paths: Iterable[str | Path], patterns: Iterable[str]) -> list[Path]:
    """Files given directly, plus files matching ``patterns`` under given folders."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            for pattern in patterns:
                found.extend(sorted(p.rglob(pattern)))
        else:
            found.append(p)
    return list(dict.fromkeys(found))


def output_names(files: list[Path], name_of: Callable[[Path], str]) -> list[str]:
    """One distinct folder name per input file."""
    names = [name_of(f) for f in files]
    if len(set(names)) == len(names):
        return names
    parents = [f.resolve().parent.name for f in files]
    if len(set(parents)) == len(parents):
        return parents
    raise ValueError("input files share both names and parent folder names")


def _convert_one(converter_name: str, path: Path, target: Path, fmt: str) -> tuple[str, str]:
    """Worker: convert one file. Returns ("ok", "") or ("failed", one-line reason)."""
    from ase_moireh.io.plugins import ConversionError, get_converter

    try:
        structure = get_converter(converter_name).read(path)
        WRITERS[fmt](structure, target)
    except (ConversionError, DatasetError) as err:
        return "failed", str(err)
    except OSError as err:
        return "failed", f"{path}: {err}"
    except Exception as err:  # a bug, but one bad file must not stop the batch
        log.exception("unexpected error converting %s", path)
        return "failed", f"{path}: internal error {type(err).__name__}: {err}"
    return "ok", ""


def convert_files(
    converter_name: str,
    paths: Iterable[str | Path],
    out: str | Path,
    fmt: str = "dftio",
    jobs: int = 1,
    skip_existing: bool = False,
    progress: bool = True,
    overwrite: bool = False,
) -> ConversionReport:
    """Convert every input to ``out/<name>``; see the module docstring for names."""
    from ase_moireh.io.plugins import get_converter

    if fmt not in WRITERS:
        raise ValueError(f"unknown format {fmt!r}; choose from {sorted(WRITERS)}")
    converter = get_converter(converter_name)
    files = find_inputs(paths, converter.patterns)
    out = Path(out)
    report = ConversionReport()
    todo = []
    for f, name in zip(files, output_names(files, converter.structure_name), strict=True):
        target = out / name
        if target.exists() and skip_existing:
            report.skipped.append(f)
        elif target.exists() and not overwrite:
            report.failed.append(
                (
                    f,
                    f"{f}: {target} exists already; pass --overwrite to "
                    "replace it or --skip-existing to keep it",
                )
            )
        else:
            todo.append((f, target))
    log.info("converting %d files with %s to %s (%s)", len(todo), converter_name, out, fmt)
    bar = tqdm(total=len(todo), desc="convert", unit="file", disable=not progress)

    def record(f: Path, target: Path, result: tuple[str, str]) -> None:
        status, message = result
        if status == "ok":
            report.converted.append((f, target))
        else:
            report.failed.append((f, message))
        bar.update()

    if jobs <= 1 or len(todo) <= 1:
        for f, target in todo:
            record(f, target, _convert_one(converter_name, f, target, fmt))
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {
                pool.submit(_convert_one, converter_name, f, target, fmt): (f, target)
                for f, target in todo
            }
            for future in as_completed(futures):
                record(*futures[future], future.result())
    bar.close()
    return report
