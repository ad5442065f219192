"""``moireh dataset``: write OpenMX inputs of training structures (thin layer over
:mod:`ase_moireh.build.generate`)."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from ase_moireh.build.generate import NOISE_RANGE
from ase_moireh.build.materials import MATERIALS
from ase_moireh.io.corpus import SPLITS

_MATERIAL = click.option(
    "--material",
    default="MoTe2",
    show_default=True,
    help=f"2H TMD ({', '.join(MATERIALS)}).",
)
_STACKING = click.option(
    "--stacking", type=click.Choice(["R", "H"]), default="R", show_default=True
)
_AMPLITUDE = click.option(
    "--amplitude",
    default=0.15,
    show_default=True,
    help="Uniform displacement of every atom, [-A, A] per component (Å).",
)
_SEED = click.option("--seed", default=0, show_default=True, help="Random seed.")
_SOC = click.option(
    "--soc/--no-soc", default=True, show_default=True, help="Spin-orbit coupling (NC)."
)
_OUT = click.option("-o", "--out", required=True, type=click.Path(file_okay=False))
_SPECIES = click.option(
    "--species",
    multiple=True,
    metavar="EL=PAO:VPS[:VALENCE]",
    help="OpenMX species beyond Mo/Te, e.g. W=W7.0-s3p2d2:W_PBE19:14 (no VALENCE: "
    "read from DATA_PATH/VPS/VPS.vps).",
)
_DATA_PATH = click.option(
    "--data-path",
    default="../DFT_DATA",
    show_default=True,
    help="OpenMX DATA.PATH, relative to each structure folder.",
)
_OVERWRITE = click.option("--overwrite", is_flag=True, help="Replace existing structure folders.")
_NO_PROGRESS = click.option("--no-progress", is_flag=True, help="No progress bar.")


def _parse_species(values: tuple[str, ...]) -> dict[str, tuple]:
    """``EL=PAO:VPS[:VALENCE]`` -> {EL: (PAO, VPS, VALENCE or None)}."""
    species = {}
    for value in values:
        element, _, rest = value.partition("=")
        parts = rest.split(":")
        if not element or len(parts) not in (2, 3) or not all(parts):
            raise click.BadParameter(
                f"{value!r} is not EL=PAO:VPS[:VALENCE]", param_hint="--species"
            )
        try:
            valence = float(parts[2]) if len(parts) == 3 else None
        except ValueError:
            raise click.BadParameter(f"valence in {value!r} is not a number") from None
        species[element] = (parts[0], parts[1], valence)
    return species


def _generate(generator: str, kind: str, out: str, common: dict, **params) -> list[Path]:
    """Call ``build.generate.<generator>`` with the shared options; errors as messages."""
    from ase_moireh.build import generate

    openmx = {"species": _parse_species(common["species"]), "data_path": common["data_path"]}
    try:
        return getattr(generate, generator)(
            kind,
            out,
            overwrite=common["overwrite"],
            progress=not common["no_progress"],
            openmx=openmx,
            **params,
        )
    except ValueError as err:
        raise click.ClickException(str(err)) from None


def _run(kind: str, out: str, soc: bool, common: dict, **params) -> None:
    folders = _generate("generate_dataset", kind, out, common, soc=soc, **params)
    click.echo(f"wrote {len(folders)} structure folders and {Path(out) / 'interlayer_hist.png'}")


@click.group(name="dataset")
def dataset() -> None:
    """Generate training structures with their OpenMX inputs (one folder each)."""


def _interlayer_sigma(default: float):
    """The --interlayer-sigma option (the two kinds of dataset differ only in default)."""
    return click.option(
        "--interlayer-sigma",
        default=default,
        show_default=True,
        help="Gaussian change of the interlayer distance (Å).",
    )


@dataset.command(name="shifted")
@_MATERIAL
@click.option(
    "--supercell",
    nargs=2,
    type=int,
    default=(6, 6),
    show_default=True,
    help="In-plane supercell of the primitive cell.",
)
@click.option("--shifts", default=23, show_default=True, help="Shift grid: SHIFTS x SHIFTS.")
@click.option("--count", default=1, show_default=True, help="Perturbed samples per shift.")
@_AMPLITUDE
@_interlayer_sigma(0.2)
@_SEED
@_SOC
@_STACKING
@_OUT
@_SPECIES
@_DATA_PATH
@_OVERWRITE
@_NO_PROGRESS
def shifted_command(
    material,
    supercell,
    shifts,
    count,
    amplitude,
    interlayer_sigma,
    seed,
    soc,
    stacking,
    out,
    **common,
) -> None:
    """Non-twisted bilayers slid over a SHIFTS x SHIFTS grid, perturbed (paper defaults)."""
    _run(
        "shifted",
        out,
        soc,
        common,
        material=material,
        supercell=tuple(supercell),
        shifts=shifts,
        count=count,
        amplitude=amplitude,
        interlayer_sigma=interlayer_sigma,
        seed=seed,
        stacking=stacking,
    )


@dataset.command(name="twisted")
@click.argument("n", type=int)
@click.argument("m", type=int)
@click.option("--count", default=1, show_default=True, help="Perturbed copies.")
@click.option(
    "--relaxed",
    type=click.Path(exists=True, dir_okay=False),
    help="The (N, M) cell relaxed (moireh relax): perturb its positions, not the rigid ones.",
)
@_AMPLITUDE
@_interlayer_sigma(0.0)
@_SEED
@_SOC
@_MATERIAL
@_STACKING
@_OUT
@_SPECIES
@_DATA_PATH
@_OVERWRITE
@_NO_PROGRESS
def twisted_command(
    n, m, count, relaxed, amplitude, interlayer_sigma, seed, soc, material, stacking, out, **common
) -> None:
    """COUNT perturbed copies of the commensurate twisted (N, M) bilayer, rigid or relaxed."""
    if relaxed is not None:
        import ase.io

        try:
            relaxed = ase.io.read(relaxed)
        except Exception as err:  # any reader's failure is the file's
            raise click.ClickException(f"{relaxed}: cannot read a structure ({err})") from None
    _run(
        "twisted",
        out,
        soc,
        common,
        n=n,
        m=m,
        count=count,
        amplitude=amplitude,
        interlayer_sigma=interlayer_sigma,
        seed=seed,
        material=material,
        stacking=stacking,
        relaxed=relaxed,
    )


# --------------------------------------------------------------------------- corpus sampling


@dataset.command(name="sample")
@click.argument("kind", type=click.Choice(["shifted", "twisted"]))
@click.argument("twist", nargs=-1, type=int)
@click.option("--supercell", default=2, show_default=True, help="Shifted: N x N supercell.")
@click.option("--count", default=1, show_default=True, help="Structures to sample.")
@click.option("--first", default=0, show_default=True, help="Index of the first structure.")
@click.option("--seed", default=None, type=int, help="Seed (default 10 shifted, 20 twisted).")
@click.option(
    "--noise",
    nargs=2,
    type=float,
    default=NOISE_RANGE,
    show_default=True,
    help="Range of the per-structure Gaussian noise sigma (A).",
)
@click.option(
    "--interlayer-range",
    default=0.3,
    show_default=True,
    help="Interlayer distance uniform within +- this of the material's (A).",
)
@click.option(
    "--spin",
    type=click.Choice(["collinear", "soc", "both"]),
    default="collinear",
    show_default=True,
    help="both: a SOC twin of every structure (same geometry, name + '_soc').",
)
@click.option(
    "--split",
    type=click.Choice(SPLITS),
    default=None,
    help="Put every structure into this split (default: fixed by kind and index), e.g. "
    "holdout for a check no training may see.",
)
@_MATERIAL
@_STACKING
@_OUT
@_SPECIES
@_DATA_PATH
@_OVERWRITE
@_NO_PROGRESS
def sample_command(
    kind,
    twist,
    supercell,
    count,
    first,
    seed,
    noise,
    interlayer_range,
    spin,
    split,
    material,
    stacking,
    out,
    **common,
) -> None:
    """Corpus structures: random interlayer shift, distance and per-atom noise.

    KIND shifted samples N x N bilayer supercells; KIND twisted N M samples the twisted
    (N, M) cell with random stacking. Each structure's split (train / validation / test /
    holdout) is fixed now, in its meta.json.
    """
    params = dict(
        count=count,
        first=first,
        noise=tuple(noise),
        interlayer_range=interlayer_range,
        material=material,
        stacking=stacking,
    )
    if kind == "twisted":
        if len(twist) != 2:
            raise click.BadParameter("twisted needs N M, e.g. 'sample twisted 2 1'")
        params.update(n=twist[0], m=twist[1], seed=20 if seed is None else seed)
    else:
        if twist:
            raise click.BadParameter("shifted takes no N M (use --supercell)")
        params.update(n=supercell, seed=10 if seed is None else seed)
    folders = _generate("generate_sampled", kind, out, common, spin=spin, split=split, **params)
    click.echo(f"wrote {len(folders)} structure folders under {out}")


# --------------------------------------------------------------------------- running OpenMX


def _folders(paths: tuple[str, ...]) -> list[Path]:
    """Dataset folders named directly or found one level below the given paths."""
    from ase_moireh.workflows.openmx_runner import INPUT

    found: list[Path] = []
    for p in map(Path, paths):
        if (p / INPUT).is_file():
            found.append(p)
        elif p.is_dir():
            found += sorted(q.parent for q in p.glob(f"*/{INPUT}"))
        else:
            raise click.BadParameter(f"{p}: not a folder", param_hint="FOLDERS")
    if not found:
        raise click.ClickException(f"no folders with an OpenMX input under {', '.join(paths)}")
    return list(dict.fromkeys(found))


@dataset.command(name="run")
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--np", "np_", default=2, show_default=True, help="MPI processes per run.")
@click.option("--openmx", default=None, help="OpenMX executable (default: openmx on PATH).")
@click.option(
    "--corpus",
    default=None,
    type=click.Path(file_okay=False),
    help="Convert converged runs into this corpus (entries + manifest.json).",
)
@click.option("--retry-failed", is_flag=True, help="Run failed folders again.")
@click.option("--no-staging", is_flag=True, help="No gentle-mixing restart of hard SCFs.")
@click.option(
    "--no-twin-seed",
    is_flag=True,
    help="SOC runs start from scratch, not from their converged collinear twin's density.",
)
@_NO_PROGRESS
def run_command(
    folders, np_, openmx, corpus, retry_failed, no_staging, no_twin_seed, no_progress
) -> None:
    """Run OpenMX in FOLDERS (dataset folders, or folders holding them), resumably."""
    from ase_moireh.workflows.openmx_runner import (
        convert_to_corpus,
        find_openmx,
        openmx_command,
        run_folders,
    )

    try:
        command = openmx_command(find_openmx(openmx), np_)
    except FileNotFoundError as err:
        raise click.ClickException(str(err)) from None
    convert = None if corpus is None else functools.partial(convert_to_corpus, corpus=corpus)
    results = run_folders(
        _folders(folders),
        command,
        convert,
        staged=not no_staging,
        retry_failed=retry_failed,
        progress=not no_progress,
        seed_from_twin=not no_twin_seed,
    )
    failed = [(f, r) for f, r in results if r.status != "converged"]
    click.echo(f"{len(results) - len(failed)} converged, {len(failed)} not")
    for folder, record in failed:
        click.echo(f"  {folder}: {record.status} {record.reason}")
    if failed:
        raise SystemExit(1)


@dataset.command(name="h0")
@click.argument("corpus", type=click.Path(exists=True, file_okay=False))
@click.argument("names", nargs=-1)
@click.option(
    "--native",
    is_flag=True,
    help="Compute H0 with ase_moireh.h0 (no OpenMX) into each entry's h0.h5, from the "
    "bundled Mo/Te files unless --data-path is given.",
)
@click.option(
    "--data-path",
    default=None,
    type=click.Path(exists=True, file_okay=False),
    help="Folder holding OpenMX's PAO/ and VPS/ (the corpus inputs' DFT_DATA); required "
    "for OpenMX's zeroth step.",
)
@click.option(
    "--work",
    default="h0-runs",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Scratch folder for the runs (each removed once stored).",
)
@click.option("--np", "np_", default=2, show_default=True, help="MPI processes per run.")
@click.option("--openmx", default=None, help="OpenMX executable (default: openmx on PATH).")
@_NO_PROGRESS
def h0_command(corpus, names, native, data_path, work, np_, openmx, no_progress) -> None:
    """OpenMX's zeroth-step H0 (scf.maxIter 1) of CORPUS entries (all, or NAMES) into
    each entry's h0_openmx.h5, or with --native the same H0 computed here into h0.h5;
    resumably: entries that have one are skipped."""
    from ase_moireh.io.corpus import CorpusError

    try:
        if native:
            from ase_moireh.workflows.native_h0 import native_h0s

            failed = native_h0s(corpus, names or None, data_path, not no_progress)
        else:
            from ase_moireh.workflows.openmx_runner import find_openmx, openmx_command
            from ase_moireh.workflows.zeroth_step import zeroth_steps

            if data_path is None:
                raise click.UsageError("--data-path is required for OpenMX's zeroth step")
            command = openmx_command(find_openmx(openmx), np_)
            failed = zeroth_steps(corpus, work, command, data_path, names or None, not no_progress)
    except (FileNotFoundError, CorpusError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    for name, reason in failed:
        click.echo(f"  {name}: {reason}", err=True)
    if failed:
        raise SystemExit(1)


def _status_row(name: str, kind: str, natoms, record, note: str) -> str:
    """One line of the status table (``record``: a RunRecord or a ManifestEntry)."""
    nrd = "" if record.norm_rd is None else f"{record.norm_rd:.1e}"
    electrons = "" if record.electrons is None else f"{record.electrons:g}"
    minutes = record.wall_seconds / 60 if record.wall_seconds else 0
    return (
        f"{name:<22} {kind:<12} {natoms:>5} {record.status:<9} {record.scf_steps or '':>5} "
        f"{nrd:>8} {electrons:>7} {minutes:>7.1f} {note}"
    )


def _run_rows(folders: list[Path]) -> list[tuple[str, str, str]]:
    """(kind, status, row) of every run folder, from its run.json and meta.json."""
    import json as _json

    from ase_moireh.workflows.openmx_runner import RunRecord

    out = []
    for folder in folders:
        record = RunRecord.read(folder)
        meta_path = folder / "meta.json"
        meta = _json.loads(meta_path.read_text()) if meta_path.exists() else {}
        kind = f"{meta.get('kind', '?')}{' SOC' if meta.get('soc') else ''}"
        row = _status_row(folder.name, kind, meta.get("natoms", ""), record, record.reason)
        out.append((kind, record.status, row))
    return out


def _corpus_rows(corpus: Path) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(kind, status, row) of every manifest entry, and the problems of stored entries
    (:meth:`ManifestEntry.problems`, or no stored H)."""
    from ase_moireh.io.corpus import CorpusError, load_manifest

    try:
        manifest = load_manifest(corpus)
    except CorpusError as err:
        raise click.ClickException(str(err)) from None
    out, problems = [], []
    for name, entry in sorted(manifest.items()):
        kind = f"{entry.kind}{' SOC' if entry.soc else ''}"
        found = entry.problems()
        if entry.status == "converged" and not (corpus / name / "hamiltonian.h5").is_file():
            found.append("no hamiltonian.h5")
        problems += [f"{corpus / name}: {p}" for p in found]
        note = "; ".join(x for x in (entry.split, *found, entry.reason) if x)
        out.append((kind, entry.status, _status_row(name, kind, entry.n_atoms, entry, note)))
    return out, problems


@dataset.command(name="status")
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=True))
def status_command(folders) -> None:
    """Table of the OpenMX runs in FOLDERS: converged, failed, running, pending.

    A corpus folder (one holding manifest.json) is tabled from its manifest, with each
    entry's split; a stored entry with NormRD >= 1e-8, a wrong electron count or no H is
    named and the exit code is 1.
    """
    from ase_moireh.io.corpus import MANIFEST

    rows, problems = [], []
    for path in map(Path, folders):
        if (path / MANIFEST).is_file():
            found_rows, found = _corpus_rows(path)
            rows += found_rows
            problems += found
        else:
            rows += _run_rows(_folders((str(path),)))
    click.echo(
        f"{'folder':<22} {'kind':<12} {'atoms':>5} {'status':<9} {'SCF':>5} {'NormRD':>8} "
        f"{'elec.':>7} {'minutes':>7} reason / split"
    )
    click.echo("\n".join(row for _, _, row in rows))
    click.echo("")
    counts: dict[str, dict[str, int]] = {}
    for kind, status, _ in rows:
        counts.setdefault(kind, {}).setdefault(status, 0)
        counts[kind][status] += 1
    for kind, by_status in sorted(counts.items()):
        parts = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()))
        click.echo(f"{kind}: {parts}")
    if problems:
        click.echo("\nnot fit to train on:\n  " + "\n  ".join(problems), err=True)
        raise SystemExit(1)
