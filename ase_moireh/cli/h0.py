"""``moireh h0``: the zeroth-step Hamiltonian H0 and the exact S of a structure, as a
dftio folder (thin layer over :mod:`ase_moireh.h0.hamiltonian`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ase import Atoms

#: the corpus inputs' scf.energycutoff (Ry), ase_moireh.h0.vxc.ENERGY_CUTOFF (not
#: imported here: the command line loads no numerical module before it runs)
ENERGY_CUTOFF = 200.0


def _parse_species(values: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """``EL=BASIS:VPS`` -> {EL: (BASIS, VPS)}."""
    out = {}
    for value in values:
        element, _, rest = value.partition("=")
        parts = rest.split(":")
        if not element or len(parts) != 2 or not all(parts):
            raise click.BadParameter(f"{value!r} is not EL=BASIS:VPS", param_hint="--species")
        out[element] = (parts[0], parts[1])
    return out


def _read_structure(path: Path) -> Atoms:
    """ASE-readable files, and OpenMX inputs (``*.dat`` with atoms), as given: the
    positions set V_xc's grid, so they are not wrapped."""
    import ase.io

    from ase_moireh.io.openmx_input import read_openmx_input

    if path.suffix == ".dat":
        return read_openmx_input(path)
    return ase.io.read(path)


def _builder(atoms: Atoms, data_path: str | None, species: dict, energy_cutoff: float):
    """The H0 of the structure's elements (the calculation's species, as an OpenMX input
    of it would define them): bundled Mo/Te unless named."""
    from ase_moireh.data import bundled_openmx_data_path
    from ase_moireh.h0.hamiltonian import bundled_species, check_structure, h0_builder
    from ase_moireh.io.openmx_input import DEFAULT_SPECIES

    check_structure(atoms, {*DEFAULT_SPECIES, *species})  # before reading any file
    elements = sorted(set(atoms.get_chemical_symbols()))
    basis = {e: species[e][0] for e in elements if e in species}
    pseudo = {e: species[e][1] for e in elements if e in species}
    default_basis, default_pseudo = bundled_species([e for e in elements if e not in species])
    folder = data_path if data_path is not None else bundled_openmx_data_path()
    return h0_builder(
        folder, {**default_basis, **basis}, {**default_pseudo, **pseudo}, energy_cutoff
    )


@click.command(name="h0")
@click.argument("structure", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o", "--out", required=True, type=click.Path(file_okay=False), help="dftio folder to write."
)
@click.option(
    "--soc/--no-soc",
    default=True,
    show_default=True,
    help="Spin-orbit coupling: spinor blocks (j-dependent projectors) or collinear.",
)
@click.option(
    "--data-path",
    default=None,
    type=click.Path(file_okay=False),
    help="OpenMX DATA.PATH holding PAO/ and VPS/ (default: the bundled Mo and Te files).",
)
@click.option(
    "--species",
    multiple=True,
    metavar="EL=BASIS:VPS",
    help="Basis and pseudopotential of an element, e.g. W=W7.0-s3p2d2:W_PBE19 (default "
    "for Mo and Te: Mo7.0-s3p2d1:Mo_PBE19, Te7.0-s3p2d2:Te_PBE19).",
)
@click.option(
    "--energy-cutoff",
    default=ENERGY_CUTOFF,
    show_default=True,
    help="scf.energycutoff (Ry) of V_xc's real-space grid.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT folder.")
def h0_command(structure, out, soc, data_path, species, energy_cutoff, overwrite) -> None:
    """OpenMX's zeroth-step Hamiltonian H0 = T + V_NL + V_NA + V_xc of STRUCTURE (the H
    of superposed free atoms; no DFT code needed) and the exact S, on the blocks OpenMX
    keeps, written to OUT as hamiltonians.h5 / overlaps.h5 (dftio layout). Nothing is
    written unless every step succeeds."""
    from ase_moireh.io.dataset import write_dftio

    out_path = Path(out)
    if out_path.exists() and any(out_path.iterdir()) and not overwrite:
        raise click.ClickException(f"{out}: exists and is not empty (pass --overwrite)")
    named = _parse_species(species)
    try:
        atoms = _read_structure(Path(structure))
    except Exception as err:  # any reader's failure is the file's
        reason = str(err).replace(f"{structure}: ", "")
        raise click.ClickException(f"{structure}: cannot read a structure ({reason})") from None
    try:
        builder = _builder(atoms, data_path, named, energy_cutoff)
        result = builder.structure(atoms, spinful=soc)
    except ValueError as err:  # H0Error, PAOError, VPSError, OverlapError: named
        raise click.ClickException(f"{structure}: {err}") from None
    result.source = f"{result.source}: {structure}"
    write_dftio(result, out_path)
    h0 = result.hamiltonian
    seconds = sum(builder.timings.values())
    click.echo(
        f"{structure}: {len(atoms)} atoms, {h0.nedges} blocks, "
        f"{'SOC' if soc else 'collinear'} H0 in {seconds:.1f} s -> {out_path}"
    )
