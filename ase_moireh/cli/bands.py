"""``moireh bands / chern / ribbon``: thin layers over the calculator and topology code."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from ase_moireh.files import atomic_file
from ase_moireh.plotting import kpath_axis, new_figure, save_figure
from ase_moireh.topology import phases_deg


def _calculator(
    model: str | None,
    dft: str | None,
    soc: bool,
    pao_dir: str | None = None,
    domain_check: bool = True,
):
    from ase_moireh.calculator import MoireHCalculator

    return MoireHCalculator(
        model=model, soc=soc, dft=dft, pao_dir=pao_dir, domain_check=domain_check
    )


MODEL_FILE = click.Path(exists=True, dir_okay=False)
MODEL_HELP = "Model file (default: the bundled MoTe2 model, SOC or collinear per --soc)."
model_option = click.option("--model", type=MODEL_FILE, default=None, help=MODEL_HELP)
#: the commands' opt-out of the domain check's refusals (the calculator's domain_check)
NO_DOMAIN_CHECK = "--no-domain-check"
domain_check_option = click.option(
    NO_DOMAIN_CHECK,
    "no_domain_check",
    is_flag=True,
    help="Predict structures far outside the model's training domain (unknown elements, "
    "overlapping atoms, bulk-like stacks), which are refused otherwise, with a warning. "
    "Milder findings (a monolayer, strained bonds) always just warn.",
)


def refusal(err: Exception) -> str:
    """An error's message for the command line: a domain refusal names the flag."""
    from ase_moireh.domain import OutOfDomainError

    return err.explained(NO_DOMAIN_CHECK) if isinstance(err, OutOfDomainError) else str(err)


def precision_option(default: str, text: str):
    """--precision single/double (of a factorisation or of stored numbers)."""
    choice = click.Choice(["double", "single"])
    return click.option("--precision", type=choice, default=default, show_default=True, help=text)


SOC_HELP = "Spin-orbit coupling: the SOC model (spinor bands) or the collinear one."
SIGMA_HELP = (
    "Centre of the --nbands levels, eV relative to the mid-gap (0: the mid-gap, found "
    "by electron counting over Gamma, M and K); with --absolute-sigma, absolute eV."
)


def gap_report(label: str, calc) -> float:
    """Print the band edges the calculator finds; return the mid-gap (the energy zero)."""
    vbm, cbm = calc.band_edges()
    gap = (cbm - vbm) * 1e3
    state = f"gap {gap:.1f} meV" if gap > 0 else f"no gap (bands overlap by {-gap:.1f} meV)"
    click.echo(
        f"{label}: VBM {vbm:+.4f} eV, CBM {cbm:+.4f} eV, {state} over Gamma, M, K; "
        f"mid-gap {0.5 * (vbm + cbm):+.4f} eV is the energy zero of the plots"
    )
    return 0.5 * (vbm + cbm)


def centre(calc, label: str, sigma: float, absolute: bool) -> float | None:
    """The calculator's sigma from the command's (relative to the mid-gap unless
    ``absolute``); None for the mid-gap itself, where the calculator keeps whole bands
    around the gap on small cells."""
    mid = gap_report(label, calc)
    if absolute:
        return sigma
    return None if sigma == 0 else mid + sigma


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
    # below the axes, where it hides no band
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=len(curves))
    save_figure(fig, filename)


@click.command(name="bands")
@click.argument("structure", type=click.Path(exists=True))
@model_option
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
@click.option("--soc/--no-soc", default=True, show_default=True, help=SOC_HELP)
@domain_check_option
@click.option("--npoints", default=40, show_default=True, help="k-points along the path.")
@click.option("--nbands", default=None, type=int, help="Levels nearest the gap (sparse).")
@click.option("--sigma", default=0.0, show_default=True, type=float, help=SIGMA_HELP)
@click.option("--absolute-sigma", is_flag=True, help="--sigma is absolute eV.")
@precision_option("double", "Factorisation precision with --nbands (single: half the memory).")
@click.option("-o", "--out", default="bands.png", show_default=True, help="Figure (PNG).")
@click.option(
    "--mpi",
    is_flag=True,
    help="Distributed shift-invert (PETSc/SLEPc, MUMPS) under mpirun: STRUCTURE is then a "
    "streamed prediction (moireh predict --stream), the --nbands levels nearest the "
    "absolute --sigma at --kpoint are printed (and written as JSON to --out).",
)
@click.option(
    "--kpoint",
    nargs=3,
    type=float,
    default=(0.0, 0.0, 0.0),
    show_default=True,
    help="Fractional k of the --mpi solve.",
)
def bands_command(
    structure,
    model,
    dft,
    pao_dir,
    soc,
    no_domain_check,
    npoints,
    nbands,
    sigma,
    absolute_sigma,
    precision,
    out,
    mpi,
    kpoint,
) -> None:
    """Bands of STRUCTURE along Gamma-M-K-Gamma (model, DFT or both overlaid), relative
    to each one's mid-gap; prints the band edges. With --mpi: levels at one k-point of a
    streamed prediction, solved across MPI ranks."""
    if mpi:
        return _mpi_levels(structure, nbands, sigma, absolute_sigma, kpoint, out)
    atoms = _read(structure)
    curves = []
    sources = [("DFT", None, dft, "k")] if dft else []
    sources.append(("model", model, None, "tab:red"))
    try:
        for label, model_file, dataset, colour in sources:
            copy = atoms.copy()
            pao = pao_dir if dataset else None
            copy.calc = _calculator(model_file, dataset, soc, pao, not no_domain_check)
            copy.calc.set(precision=precision)
            copy.calc.set(nbands=nbands, sigma=centre(copy.calc, label, sigma, absolute_sigma))
            curves.append((label, copy.calc.band_structure("GMKG", npoints), colour))
    except (ValueError, MemoryError) as err:  # named causes
        raise click.ClickException(refusal(err)) from None
    if dft:
        a, b = curves[0][1].energies, curves[1][1].energies
        click.echo(
            f"band MAE model vs DFT: {np.abs(a - b).mean() * 1e3:.3f} meV "
            f"({a.shape[-1]} bands x {a.shape[1]} k-points)"
        )
    title = f"{atoms.get_chemical_formula()}, {len(atoms)} atoms ({Path(structure).name})"
    plot_bands(curves, Path(out), title)
    click.echo(f"wrote {out}")


def _mpi_levels(path: str, nbands, sigma: float, absolute: bool, k, out: str) -> None:
    """``bands --mpi``: every rank solves its share; rank 0 reports."""
    from ase_moireh.io.pencil import local_rows, rows_per_atom
    from ase_moireh.solvers.distributed import SlepcUnavailable, distributed_levels, world

    if not absolute or nbands is None:
        raise click.ClickException(
            "--mpi needs --nbands and an absolute --sigma (--absolute-sigma, eV inside the "
            "gap): the mid-gap search is not distributed"
        )
    try:
        rows = rows_per_atom(path)
        levels = distributed_levels(
            rows, lambda atoms: local_rows(path, atoms, k, sigma), sigma, nbands
        )
    except (ValueError, SlepcUnavailable) as err:
        raise click.ClickException(str(err)) from None
    except RuntimeError as err:
        raise click.ClickException(f"{err} at k = {tuple(k)}") from None
    rank, ranks = world()
    if rank != 0:
        return
    click.echo(
        f"{path}: {len(levels)} levels nearest {sigma:+.4f} eV at k = {tuple(k)} "
        f"on {ranks} MPI rank(s):"
    )
    click.echo(" ".join(f"{e:.6f}" for e in levels))
    if out.endswith(".json"):
        record = {"k": list(k), "sigma_eV": sigma, "ranks": ranks, "levels_eV": levels.tolist()}
        with atomic_file(out) as tmp:
            tmp.write_text(json.dumps(record, indent=1) + "\n")
        click.echo(f"wrote {out}")


@click.command(name="chern")
@click.argument("structure", type=click.Path(exists=True))
@model_option
@click.option(
    "--dft",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Converted DFT dataset of STRUCTURE: its H and S instead of the model's.",
)
@click.option("--soc/--no-soc", default=True, show_default=True, help=SOC_HELP)
@click.option("--nbands", default=1, show_default=True, help="Top valence bands counted.")
@click.option(
    "--spin",
    type=click.Choice(["up", "down", "both"]),
    default="up",
    show_default=True,
    help="SOC: spin sector of the bands.",
)
@click.option("-o", "--out", default=None, help="Also write the table as JSON.")
@domain_check_option
def chern_command(structure, model, dft, soc, nbands, spin, out, no_domain_check) -> None:
    """C3 eigenvalues at Gamma, K, K' and the Chern number (mod 3) of the top bands."""
    atoms = _read(structure)
    atoms.calc = _calculator(model, dft, soc, domain_check=not no_domain_check)
    try:
        sector = {"up": 1, "down": -1, "both": None}[spin]
        result = atoms.calc.chern_numbers(nbands=nbands, spin=sector)
    except (ValueError, MemoryError) as err:  # named causes
        raise click.ClickException(refusal(err)) from None
    phases = {label: phases_deg(values) for label, values in result.eigenvalues.items()}
    rows = {label: [f"{p:+.1f} deg" for p in values] for label, values in phases.items()}
    click.echo(f"{'k':6s} C3 eigenvalue phases of the top {nbands} valence band(s)")
    for label, row in rows.items():
        click.echo(f"{label:6s} {'  '.join(row)}")
    click.echo(f"Chern number mod 3: {result.chern_mod3}")
    if out:
        with atomic_file(out) as tmp:
            tmp.write_text(
                json.dumps(
                    {
                        "c3_phases_deg": phases,
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
@model_option
@click.option("--soc/--no-soc", default=True, show_default=True, help=SOC_HELP)
@click.option(
    "--sigma",
    default=0.0,
    show_default=True,
    type=float,
    help="Centre of the levels, eV relative to the mid-gap of the periodic (N, M) cell "
    "(edge states live in its gap); with --absolute-sigma, absolute eV and no gap "
    "search of the periodic cell.",
)
@click.option("--absolute-sigma", is_flag=True, help="--sigma is absolute eV.")
@click.option("--nbands", default=20, show_default=True, help="Levels per k-point.")
@click.option("--nk", default=30, show_default=True, help="k-points along the ribbon.")
@click.option("--edge-width", default=5.0, show_default=True, help="A from the edge.")
@click.option("-o", "--out", default="ribbon.png", show_default=True, help="Figure (PNG).")
@click.option("--json", "json_out", default=None, help="Also write energies and weights.")
@click.option(
    "--write",
    default=None,
    type=click.Path(dir_okay=False),
    help="Stream the predicted H and S to this HDF5 file with bounded memory (ribbons of "
    "10^5 atoms); a band solve then reads them back from it.",
)
@precision_option("single", "Numbers stored by --write.")
@click.option("--bands/--no-bands", default=True, show_default=True, help="Solve for bands.")
@domain_check_option
def ribbon_command(
    n,
    m,
    repeats,
    model,
    soc,
    sigma,
    absolute_sigma,
    nbands,
    nk,
    edge_width,
    out,
    json_out,
    write,
    precision,
    bands,
    no_domain_check,
) -> None:
    """Nanoribbon of the twisted (N, M) cell: bands near SIGMA coloured by edge and spin,
    relative to the periodic cell's mid-gap; with --write, H and S streamed to disk."""
    from ase_moireh.build import nanoribbon, twisted_bilayer

    cell = twisted_bilayer(n, m)
    ribbon = nanoribbon(cell, repeats=repeats, edge_width=edge_width)
    click.echo(f"({n},{m}) ribbon, {repeats} cells across: {len(ribbon)} atoms")
    try:
        ribbon.calc = _calculator(model, None, soc, domain_check=not no_domain_check)
        if write:
            report = ribbon.calc.write_operators(write, precision=precision)
            click.echo(
                f"wrote {write}: {report.orbitals} orbitals, {report.blocks} blocks, "
                f"{report.file_GB} GB in {report.seconds:.0f} s ({report.atoms_per_second} "
                f"atoms/s), peak memory {report.peak_rss_GB} GB"
            )
        if bands:
            levels = (sigma, absolute_sigma, nbands, nk)
            _ribbon_bands(f"({n},{m})", cell, ribbon, write, levels, out, json_out)
    except (ValueError, MemoryError) as err:  # named causes
        raise click.ClickException(refusal(err)) from None


def _ribbon_bands(
    label: str, cell, ribbon, written, levels, out: str, json_out: str | None
) -> None:
    """Levels along the ribbon (from the streamed file when there is one), plotted."""
    from ase_moireh.io.streamed import read_streamed
    from ase_moireh.ribbon_states import plot_ribbon, ribbon_bands
    from ase_moireh.tightbinding import TightBinding

    sigma, absolute_sigma, nbands, nk = levels
    calc = ribbon.calc
    reference_name = "E_midgap of the periodic cell"
    if absolute_sigma:  # no gap search of the periodic cell (costly past a few 1000 rows)
        mid = target = sigma
        reference_name = f"({sigma:+.3f} eV)"
        click.echo(f"levels nearest {sigma:+.4f} eV, the energy zero of the plot")
    else:
        params = calc.parameters
        cell.calc = _calculator(
            params["model"], None, params["soc"], domain_check=params["domain_check"]
        )
        mid = gap_report(f"periodic {label} cell", cell.calc)
        target = mid + sigma
    tb = TightBinding(*read_streamed(written)) if written else calc.get_tight_binding()
    found = ribbon_bands(tb, ribbon, target, nbands=nbands, nk=nk)
    title = f"{label} ribbon, {len(ribbon)} atoms"
    plot_ribbon(found, out, title, reference=mid, reference_name=reference_name)
    click.echo(f"wrote {out}")
    if json_out:
        with atomic_file(json_out) as tmp:
            tmp.write_text(json.dumps(found.to_dict()) + "\n")
        click.echo(f"wrote {json_out}")
