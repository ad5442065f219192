"""``moireh relax``: relax a structure's positions with an interatomic potential (thin
layer over :mod:`ase_moireh.build.relax` and :mod:`ase_moireh.build.potentials`)."""

from __future__ import annotations

from pathlib import Path

import click

from ase_moireh.build.potentials import DEFAULT_POTENTIAL, POTENTIALS
from ase_moireh.build.relax import OPTIMIZERS
from ase_moireh.cli.h0 import _read_structure


def trajectory_path(out: Path) -> Path:
    """Where the steps of a relaxation into ``out`` go, so that a rerun resumes."""
    return out.with_name(out.stem + ".traj")


@click.command(name="relax")
@click.argument("structure", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Relaxed structure "
    "(any ASE format by its extension, e.g. .extxyz); OUT-stem.traj beside it keeps the steps.",
)
@click.option(
    "--potential",
    default=None,
    help=f"Named potential: {', '.join(POTENTIALS)} (default {DEFAULT_POTENTIAL}).",
)
@click.option("--fmax", default=0.01, show_default=True, help="Force convergence (eV/A).")
@click.option("--steps", default=2000, show_default=True, help="Most optimizer steps.")
@click.option(
    "--optimizer",
    type=click.Choice(list(OPTIMIZERS)),
    default="LBFGS",
    show_default=True,
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def relax_command(structure, out, potential, fmax, steps, optimizer, no_progress) -> None:
    """Relax the positions of STRUCTURE (cell fixed) until every force is below FMAX
    and write it to OUT. Every step goes to OUT-stem.traj: a killed run, or one whose
    STEPS ran out (exit code 1, OUT not written), resumes from there when rerun."""
    import ase.io

    from ase_moireh.build.potentials import load_potential
    from ase_moireh.build.relax import check_elements, local_interlayer_distance, relax
    from ase_moireh.files import atomic_file

    name = potential or DEFAULT_POTENTIAL
    out_path = Path(out)
    fmt = ase.io.formats.filetype(out_path, read=False)
    known = ase.io.formats.ioformats.get(fmt)
    if known is None or not known.can_write:
        raise click.ClickException(f"{out}: cannot tell a structure format by its name")
    try:
        atoms = _read_structure(Path(structure))
    except Exception as err:  # any reader's failure is the file's
        raise click.ClickException(f"{structure}: cannot read a structure ({err})") from None
    try:
        calculator, elements = load_potential(name)
        check_elements(atoms, elements, name)
        relaxed = relax(
            atoms, calculator, fmax, steps, trajectory_path(out_path), optimizer, not no_progress
        )
    except ValueError as err:  # RelaxError and the potential's refusals: named
        raise click.ClickException(f"{structure}: {err}") from None
    info = relaxed.info["relaxation"]
    info["potential"] = name
    if not info["converged"]:
        raise click.ClickException(
            f"{structure}: not converged after {info['steps']} steps (fmax "
            f"{info['fmax_reached']:.4f} > {fmax} eV/A); rerun to resume from "
            f"{trajectory_path(out_path)}"
        )
    relaxed.calc = None
    with atomic_file(out_path) as tmp:
        ase.io.write(tmp, relaxed, format=fmt)
    click.echo(
        f"{structure}: converged after {info['steps']} steps, "
        f"fmax {info['fmax_reached']:.4f} eV/A -> {out_path}"
    )
    if "layer" in relaxed.arrays:
        local = local_interlayer_distance(relaxed)
        click.echo(
            f"interlayer metal-metal distance {local.min():.3f}-{local.max():.3f} A "
            f"(corrugation {local.max() - local.min():.3f} A)"
        )
