"""``moireh bands / chern / ribbon``: thin layers over the calculator and topology code."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from .files import atomic_file


def _calculator(model: str | None, dft: str | None, soc: bool, pao_dir: str | None = None):
    from .calculator import MoireHCalculator

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for label, bs, colour in curves:
        x, xticks, labels = bs.path.get_linear_kpoint_axis()
        e = bs.energies[0] - bs.reference
        ax.plot(x, e, color=colour, lw=0.9, ls="-" if colour == "k" else "--")
        ax.plot([], [], color=colour, ls="-" if colour == "k" else "--", label=label)
    ax.set_xticks(xticks, [r"$\Gamma$" if t == "G" else t for t in labels])
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(-window, window)
    for t in xticks:
        ax.axvline(t, color="grey", lw=0.5)
    ax.axhline(0, color="grey", ls=":", lw=0.5)
    ax.set_ylabel("E - E_midgap (eV)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    with atomic_file(filename) as tmp:
        fig.savefig(tmp, dpi=150, format="png")
    plt.close(fig)


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
            bs = dft_atoms.calc.band_structure(npoints=npoints, nbands=nbands, sigma=sigma)
            curves.append(("DFT", bs, "k"))
        atoms.calc = _calculator(model, None, soc)
        curves.append(
            (
                "model",
                atoms.calc.band_structure(npoints=npoints, nbands=nbands, sigma=sigma),
                "tab:red",
            )
        )
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
    from .topology import sector_c3_eigenvalues

    atoms = _read(structure)
    atoms.calc = _calculator(model, dft, soc)
    try:
        h, s = atoms.calc.operators()
        if h.spinful and spin != "both":
            result = sector_c3_eigenvalues(
                h, s, atoms, nbands, atoms.calc.occupied_bands(), spin=1 if spin == "up" else -1
            )
        else:
            result = atoms.calc.chern_numbers(nbands=nbands)
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
def ribbon_command(n, m, repeats, model, soc, sigma, nbands, nk, edge_width, out) -> None:
    """Nanoribbon of the twisted (N, M) cell: bands near SIGMA coloured by edge and spin."""
    from .build import nanoribbon, twisted_bilayer
    from .edges import plot_ribbon, ribbon_bands

    ribbon = nanoribbon(twisted_bilayer(n, m), repeats=repeats, edge_width=edge_width)
    ribbon.calc = _calculator(model, None, soc)
    h, s = ribbon.calc.operators()
    bands = ribbon_bands(h, s, ribbon, sigma, nbands=nbands, nk=nk)
    plot_ribbon(bands, out, f"({n},{m}) ribbon, {len(ribbon)} atoms")
    click.echo(f"wrote {out}")
