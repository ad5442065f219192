"""``moireh dataset``: write OpenMX inputs of training structures (thin layer over
:mod:`ase_moireh.build.generate`)."""

from __future__ import annotations

from pathlib import Path

import click

from .build.materials import MATERIALS

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


def _run(kind: str, out: str, soc: bool, common: dict, **params) -> None:
    from .build.generate import generate_dataset

    openmx = {"species": _parse_species(common["species"]), "data_path": common["data_path"]}
    try:
        folders = generate_dataset(
            kind,
            out,
            soc=soc,
            overwrite=common["overwrite"],
            progress=not common["no_progress"],
            openmx=openmx,
            **params,
        )
    except ValueError as err:
        raise click.ClickException(str(err)) from None
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
    n, m, count, amplitude, interlayer_sigma, seed, soc, material, stacking, out, **common
) -> None:
    """COUNT perturbed copies of the commensurate twisted (N, M) bilayer."""
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
    )
