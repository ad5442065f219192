"""Command line: ``moireh`` (group) and ``moireh-convert``; thin layers over the library."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from ase_moireh.cli.bands import bands_command, chern_command, ribbon_command
from ase_moireh.cli.dataset import dataset
from ase_moireh.cli.h0 import h0_command
from ase_moireh.cli.model import (
    analyze_command,
    finetune_command,
    predict_command,
    train_command,
)
from ase_moireh.cli.relax import relax_command
from ase_moireh.data import DEMO_TWIST
from ase_moireh.workflows.convert import WRITERS, convert_files


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log what is being done.")
def moireh(verbose: bool) -> None:
    """ase-moireh: Hamiltonians of twisted bilayer semiconductors."""
    _setup_logging(verbose)


def _codes_epilog() -> str:
    from ase_moireh.io.plugins import converter_names

    return (
        f"Installed converters (CODE): {', '.join(converter_names()) or 'none'}. An output "
        "folder that exists already is never replaced silently: pass --overwrite or "
        "--skip-existing."
    )


@click.command(name="convert", epilog=_codes_epilog())
@click.argument("code")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder; one sub-folder per structure.",
)
@click.option("--jobs", "-j", default=1, show_default=True, help="Parallel workers.")
@click.option(
    "--format", "fmt", type=click.Choice(sorted(WRITERS)), default="dftio", show_default=True
)
@click.option("--skip-existing", is_flag=True, help="Leave already converted structures.")
@click.option("--overwrite", is_flag=True, help="Replace existing output folders.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def convert_command(code, paths, out, jobs, fmt, skip_existing, overwrite, no_progress) -> None:
    """Convert DFT outputs of CODE (e.g. openmx) in PATHS (files or folders) to datasets."""
    from ase_moireh.io.plugins import ConversionError

    try:
        report = convert_files(
            code,
            paths,
            out,
            fmt=fmt,
            jobs=jobs,
            skip_existing=skip_existing,
            overwrite=overwrite,
            progress=not no_progress,
        )
    except (ConversionError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    for source, target in report.converted:
        click.echo(f"wrote {target} (from {source})")
    click.echo(
        f"converted {len(report.converted)}, skipped {len(report.skipped)}, "
        f"failed {len(report.failed)}"
    )
    for _, message in report.failed:
        click.echo(f"error: {message}", err=True)
    if report.failed:
        sys.exit(1)
    if not (report.converted or report.skipped):
        raise click.ClickException("no input files found")


@click.command(name="demo")
@click.option(
    "-o", "--out", default="moireh-demo", show_default=True, type=click.Path(file_okay=False)
)
@click.option(
    "--twist",
    nargs=2,
    type=int,
    default=DEMO_TWIST,
    show_default=True,
    help="(n, m) of the twisted cell of step 4; 2 1 (21.79 deg, 42 atoms) is quick.",
)
def demo_command(out: str, twist: tuple[int, int] | None) -> None:
    """Main job on the embedded default: convert and verify the bundled run, the bundled
    models against DFT, then a twisted cell's bands and Chern numbers."""
    from ase_moireh.cli.demo import run_demo

    result = run_demo(out, twist=tuple(twist))
    click.echo((Path(out) / "summary.txt").read_text())
    click.echo("wrote " + ", ".join(f"{out}/{name}" for name in result["files"]))


moireh.add_command(convert_command)
moireh.add_command(demo_command)
moireh.add_command(dataset)
for _command in (
    h0_command,
    train_command,
    finetune_command,
    predict_command,
    analyze_command,
    bands_command,
    chern_command,
    ribbon_command,
    relax_command,
):
    moireh.add_command(_command)


@click.command(
    name="moireh-convert",
    help=convert_command.help,
    params=convert_command.params,
    epilog=convert_command.epilog,
)
@click.pass_context
def moireh_convert(ctx: click.Context, **kwargs) -> None:
    _setup_logging(False)
    ctx.invoke(convert_command, **kwargs)
