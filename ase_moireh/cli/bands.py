"""``moireh bands / chern / ribbon``: thin layers over the calculator and topology code."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from ase_moireh.files import atomic_file
from ase_moireh.plotting import kpath_axis, new_figure, save_figure


def _calculator(model: str | None, dft: str | None, soc: bool, pao_dir: str | None = None):
    from ase_moireh.calculator import MoireHCalculator

    return MoireHCalculator(model=model, soc=soc, dft=dft, pao_dir=pao_dir)


def _read(structure: str):
    import ase.io

    try:
        return ase.io.read(structure)
    except Exception as err:
        raise click.ClickException(f"{structure}: cannot read a structure ({err})") from None


def plot_bands(
    curves: list[tuple[str, object, str]], filename: Path, title: str, window: float = 1.0
) -> None:
    """Band structures (label, BandStructure, colour) overlaid, energies from mid-gap."""
    fig, axes = new_figure(1, 5.0, 4.0)
    ax = axes[0, 0]
    for label, bs, colour in curves:
        x = bs.path.get_linear_kpoint_axis()[0]
        style = "-" if colour == "k" else "--"
        ax.plot(x, bs.energies[0] - bs.reference, color=colour, lw=0.9, ls=style)
        ax.plot([], [], color=colour, ls=style, label=label)
    kpath_axis(ax, curves[0][1].path, window, "E - E_midgap (eV)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    save_figure(fig, filename)


@click.command(name="bands")
@click.argument("structure", type=click.Path(exists=True))
@click.option("--model", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option(
    "--dft",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Converted DFT dataset of STRUCTURE: DFT bands, overlaid on the model's.",
)
@click.option(
    "--pao-dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="OpenMX .pao files for the exact S of a --dft dataset stored without S whose "
    "basis is not the bundled MoTe2 one.",
)
@click.option("--soc/--no-soc", default=True, show_default=True)
@click.option("--npoints", default=40, show_default=True)
@click.option("--nbands", default=None, type=int, help="Levels nearest the gap (sparse).")
@click.option("--sigma", default=None, type=float, help="Energy (eV) to centre on.")
@click.option("-o", "--out", default="bands.png", show_default=True)
def bands_command(structure, model, dft, pao_dir, soc, npoints, nbands, sigma, out) -> None:
    """Bands of STRUCTURE along Gamma-M-K-Gamma (model, DFT or both overlaid)."""
    atoms = _read(structure)
    curves = []
    try:
        if dft:
            dft_atoms = atoms.copy()
            dft_atoms.calc = _calculator(None, dft, soc, pao_dir)
            dft_atoms.calc.set(nbands=nbands, sigma=sigma)
            curves.append(("DFT", dft_atoms.calc.band_structure("GMKG", npoints), "k"))
        atoms.calc = _calculator(model, None, soc)
        atoms.calc.set(nbands=nbands, sigma=sigma)
        curves.append(("model", atoms.calc.band_structure("GMKG", npoints), "tab:red"))
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    if dft:
        a, b = curves[0][1].energies, curves[1][1].energies
        click.echo(
            f"band MAE model vs DFT: {np.abs(a - b).mean() * 1e3:.3f} meV "
            f"({a.shape[-1]} bands x {a.shape[1]} k-points)"
        )
    plot_bands(curves, Path(out), f"{Path(structure).name}: {len(atoms)} atoms")
    click.echo(f"wrote {out}")


@click.command(name="chern")
@click.argument("structure", type=click.Path(exists=True))
@click.option("--model", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--dft", type=click.Path(exists=True, file_okay=False), default=None)
@click.option("--soc/--no-soc", default=True, show_default=True)
@click.option("--nbands", default=1, show_default=True, help="Top valence bands counted.")
@click.option(
    "--spin",
    type=click.Choice(["up", "down", "both"]),
    default="up",
    show_default=True,
    help="SOC: spin sector of the bands.",
)
@click.option("-o", "--out", default=None, help="Also write the table as JSON.")
def chern_command(structure, model, dft, soc, nbands, spin, out) -> None:
    """C3 eigenvalues at Gamma, K, K' and the Chern number (mod 3) of the top bands."""
    atoms = _read(structure)
    atoms.calc = _calculator(model, dft, soc)
    try:
        sector = {"up": 1, "down": -1, "both": None}[spin]
        result = atoms.calc.chern_numbers(nbands=nbands, spin=sector)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    rows = {
        label: [f"{np.angle(v, deg=True):+.1f} deg" for v in values]
        for label, values in result.eigenvalues.items()
    }
    click.echo(f"{'k':6s} C3 eigenvalue phases of the top {nbands} valence band(s)")
    for label, phases in rows.items():
        click.echo(f"{label:6s} {'  '.join(phases)}")
    click.echo(f"Chern number mod 3: {result.chern_mod3}")
    if out:
        with atomic_file(out) as tmp:
            tmp.write_text(
                json.dumps(
                    {
                        "c3_phases_deg": {
                            k: [float(np.angle(v, deg=True)) for v in vals]
                            for k, vals in result.eigenvalues.items()
                        },
                        "chern_mod3": result.chern_mod3,
                    },
                    indent=1,
                )
                + "\n"
            )


@click.command(name="ribbon")
@click.argument("n", type=int)
@click.argument("m", type=int)
@click.option("--repeats", default=3, show_default=True, help="Moire cells across.")
@click.option("--model", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--soc/--no-soc", default=True, show_default=True)
@click.option("--sigma", type=float, required=True, help="Energy (eV) inside the gap.")
@click.option("--nbands", default=20, show_default=True)
@click.option("--nk", default=30, show_default=True)
@click.option("--edge-width", default=5.0, show_default=True, help="A from the edge.")
@click.option("-o", "--out", default="ribbon.png", show_default=True)
@click.option("--json", "json_out", default=None, help="Also write energies and weights.")
def ribbon_command(n, m, repeats, model, soc, sigma, nbands, nk, edge_width, out, json_out) -> None:
    """Nanoribbon of the twisted (N, M) cell: bands near SIGMA coloured by edge and spin."""
    from ase_moireh.build import nanoribbon, twisted_bilayer
    from ase_moireh.ribbon_states import plot_ribbon, ribbon_bands

    ribbon = nanoribbon(twisted_bilayer(n, m), repeats=repeats, edge_width=edge_width)
    ribbon.calc = _calculator(model, None, soc)
    bands = ribbon_bands(ribbon.calc.get_tight_binding(), ribbon, sigma, nbands=nbands, nk=nk)
    plot_ribbon(bands, out, f"({n},{m}) ribbon, {len(ribbon)} atoms")
    click.echo(f"wrote {out}")
    if json_out:
        with atomic_file(json_out) as tmp:
            tmp.write_text(json.dumps(bands.to_dict()) + "\n")
        click.echo(f"wrote {json_out}")
