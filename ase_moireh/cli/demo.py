"""The main job on the embedded default (bundled OpenMX run, bundled models).

1. The bundled SOC bilayer-MoTe2 run (``ase_moireh/data``) is converted to a dftio
   dataset, loaded back and checked (Hermiticity, eigenvalues against those OpenMX
   printed); its bands along Gamma-M-K-Gamma are plotted with OpenMX's own points.
2. The bundled SOC model predicts H and S of the same cell, which it never trained on;
   DFT and model bands are overlaid.
3. The 21.79 deg twisted bilayer with SOC (42 atoms, the structure of the shared OpenMX
   run ``tw2179_soc``, on which no model trained): model bands against the DFT bands
   bundled in ``ase_moireh/data/reference`` (``twisted_vs_dft.png``), band errors near
   the gap and the gap against DFT.
4. A twisted cell of a few degrees (default 9.43 deg, 222 atoms), relaxed by the default
   potential of ``moireh relax`` when its packages are installed (``.[relax]``; rigid
   otherwise, and the summary says so), through ``MoireHCalculator``: bands near the gap
   (``twisted_bands.png``), the C3 eigenvalues / Chern numbers mod 3 of the top spin-up
   valence bands (``chern.txt``), and the relaxed cell's corrugation.

Every result says how far to trust it: ``summary.txt`` (in words) and ``summary.json``
carry the model's training structures and validation errors, its band errors near the
gap on the held-out cells, the few-degree cell's domain check and ensemble spread, and a
verdict on whether the model resolves that cell's gap (its gap against the band error
near the gap of step 3, the twisted cell DFT could check).
"""

from __future__ import annotations

import json
import logging
from importlib.metadata import version
from pathlib import Path

import numpy as np
from ase import Atoms

from ase_moireh.bands import gap_aligned, thinned_path
from ase_moireh.data import DEMO_TWIST, demo_scfout_path
from ase_moireh.files import atomic_file
from ase_moireh.io.dataset import read_dftio, write_dftio
from ase_moireh.plotting import kpath_axis, new_figure, save_figure

log = logging.getLogger(__name__)


#: the converter check passes below this eigenvalue difference against OpenMX (meV)
CONVERTER_TOLERANCE_MEV = 1.0
#: step 4's relaxation: force convergence (eV/A) and most steps (the (4, 3) cell: 25)
RELAX_FMAX, RELAX_STEPS = 0.01, 500


def run_demo(
    outdir: str | Path,
    npoints: int = 60,
    with_model: bool = True,
    twist: tuple[int, int] = DEMO_TWIST,
) -> dict:
    """Convert, reload, verify, predict and plot; returns the numbers it reports, which
    ``summary.json`` holds and ``summary.txt`` states in words, with what to trust."""
    from ase_moireh.io.openmx import read_scfout

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    log.info("step 1/4: converting and checking %s", demo_scfout_path().name)
    converted = read_scfout(demo_scfout_path())
    folder = write_dftio(converted, outdir / "dataset" / "bl1x1_soc_s00")
    loaded = read_dftio(folder)
    tb = loaded.tight_binding
    kpts = [k for k, _ in converted.reference_eigenvalues]
    ref = np.array([e for _, e in converted.reference_eigenvalues])
    result = {
        "converter": {
            "structure": "bl1x1_soc_s00 (bundled OpenMX run)",
            "atoms": len(loaded.atoms),
            "spinful": loaded.spinful,
            "blocks": loaded.hamiltonian.nedges,
            "hermiticity_H_eV": loaded.hamiltonian.hermiticity_error(),
            "hermiticity_S": loaded.overlap.hermiticity_error(),
            "kpoints_compared": len(kpts),
            "max_eig_diff_meV": float(np.abs(tb.eigenvalues(kpts) - ref).max() * 1e3),
            "fermi_level_eV": loaded.fermi_level,
        },
        "files": ["dataset/bl1x1_soc_s00/", "bands.png"],
    }
    path = loaded.atoms.cell.bandpath("GMKG", npoints=npoints)
    bands = tb.eigenvalues(path.kpts)
    x = path.get_linear_kpoint_axis()[0]
    on_path = [
        (xk, e)
        for k, e in converted.reference_eigenvalues
        for xk in _positions_on_path(path.kpts, x, k)
    ]
    _plot_bands(path, bands, on_path, loaded.fermi_level, outdir / "bands.png")
    if with_model:
        _model_part(loaded, path, bands, outdir, npoints, result, twist)
    result["files"] += ["summary.json", "summary.txt"]
    write_summary(result, outdir)
    return result


def write_summary(result: dict, outdir: Path) -> None:
    """``summary.json`` (numbers) and ``summary.txt`` (a report a physicist reads cold)."""
    with atomic_file(outdir / "summary.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1, default=float) + "\n")
    with atomic_file(outdir / "summary.txt") as tmp:
        tmp.write_text(report_text(result))


def _model_part(
    dft, path, dft_bands: np.ndarray, outdir: Path, npoints: int, result, twist
) -> None:
    """Steps 2-4 of the module docstring."""
    from ase_moireh.calculator import MoireHCalculator
    from ase_moireh.data import bundled_model_path
    from ase_moireh.kpoints import extrema_kpoints
    from ase_moireh.metrics import band_errors_near_gap
    from ase_moireh.model.io import load_bundle

    log.info("step 2/4: the bundled SOC model on the held-out bilayer")
    bundle = load_bundle(bundled_model_path(soc=True))
    atoms = dft.atoms.copy()
    atoms.calc = MoireHCalculator(model=bundle)
    model_tb = atoms.calc.get_tight_binding()
    model_bands = model_tb.eigenvalues(path.kpts)
    window = np.abs(dft_bands - dft.fermi_level) < 2.0  # bands within 2 eV of mu
    kpts = extrema_kpoints(atoms.cell)
    near_gap = band_errors_near_gap(
        dft.tight_binding.eigenvalues(kpts),
        model_tb.eigenvalues(kpts),
        atoms.calc.occupied_bands(),
    )
    result["model"] = {
        **model_provenance(bundle, atoms.calc),
        "held_out_structure": "bl1x1_soc_s00",
        "H_mae_meV": {
            k: v * 1e3 for k, v in atoms.calc.get_hamiltonian().mae_by_pair(dft.hamiltonian).items()
        },
        "band_mae_meV_within_2eV": float(np.abs(model_bands - dft_bands)[window].mean() * 1e3),
        "bands_near_gap": near_gap,
    }
    _plot_overlay(path, dft_bands, model_bands, dft.fermi_level, outdir / "bands_model_vs_dft.png")
    result["files"].append("bands_model_vs_dft.png")
    log.info("step 3/4: the 21.79 deg SOC cell against DFT")
    result["reference"] = reference_part(bundle, outdir, npoints)
    result["files"].append("twisted_vs_dft.png")
    log.info("step 4/4: a %d, %d twisted cell through MoireHCalculator", *twist)
    expected = result["reference"]["bands_near_gap"]["max_meV"]
    guess = result["reference"]["model_midgap_eV"]
    result["twisted"] = twisted_part(bundle, outdir, npoints, *twist, expected, guess)
    result["files"] += ["twisted_bands.png", "chern.txt"]


def reference_part(bundle, outdir: Path, npoints: int = 60) -> dict:
    """Step 3: the model on the structure of the shared 21.79 deg SOC run, against the
    DFT bands bundled from it (the levels near the gap, absolute energies in eV). The
    bundled path is thinned to about ``npoints`` k-points (its corners kept) when it
    holds more: each point is a dense solve of 1456 rows."""
    from ase import Atoms

    from ase_moireh.calculator import MoireHCalculator
    from ase_moireh.data import REFERENCE_BANDS
    from ase_moireh.metrics import band_errors_near_gap

    ref = np.load(REFERENCE_BANDS)
    atoms = Atoms(numbers=ref["numbers"], positions=ref["positions"], cell=ref["cell"], pbc=True)
    atoms.calc = MoireHCalculator(model=bundle)
    tb = atoms.calc.get_tight_binding()
    first, nocc = int(ref["first_band"]), int(ref["nocc"])
    keep = slice(first, first + ref["path_energies"].shape[1])
    extrema = tb.eigenvalues(ref["extrema_kpts"], bands=keep)
    near = band_errors_near_gap(ref["extrema_energies"], extrema, nocc - first)
    path = atoms.cell.bandpath("GMKG", npoints=len(ref["kpts"]))
    if not np.allclose(path.kpts, ref["kpts"], atol=1e-8):
        raise ValueError(f"{REFERENCE_BANDS}: its k-path is not Gamma-M-K-Gamma of its cell")
    take = thinned_path(path, npoints)
    model = tb.eigenvalues(ref["kpts"][take], bands=keep)
    dft = ref["path_energies"][take]
    zero = 0.5 * (dft[:, nocc - first - 1].max() + dft[:, nocc - first].min())
    _plot_overlay(
        path,
        dft,
        model,
        zero,
        outdir / "twisted_vs_dft.png",
        x=path.get_linear_kpoint_axis()[0][take],
        title=f"21.79° twisted MoTe$_2$ with SOC (never trained on)\n"
        f"gap: model {near['gap_predicted_meV']:.0f} meV, DFT {near['gap_reference_meV']:.0f} meV",
        ylabel=r"$E - E_\mathrm{midgap}$ (DFT's mid-gap, eV)",
        ylim=0.8,
    )
    return {
        "structure": str(ref["source"]),
        "atoms": len(atoms),
        "bands_near_gap": near,
        "band_mae_meV_on_path": float(np.abs(model - dft).mean() * 1e3),
        "kpoints_on_path": len(take),
        # where step 4 starts counting electrons: gaps of one material and model sit at
        # nearly the same energy whatever the twist
        "model_midgap_eV": float(
            0.5 * (extrema[:, nocc - first - 1].max() + extrema[:, nocc - first].min())
        ),
        "bands_on_path": int(dft.shape[1]),
    }


def model_provenance(bundle, calc) -> dict:
    """What the model is and what it was trained and validated on (from its file)."""
    from ase_moireh.model.io import training_stages

    stages = training_stages(bundle.info)
    domain = calc.model_domain()

    def part(name: str, key: str) -> dict:
        return {s: r["parts"][name][key] for s, r in stages.items() if r["parts"][name][key]}

    return {
        "members": len(bundle.models),
        "trained_on": domain.structures if domain else None,
        # by stage: a SOC model made as a correction reports its collinear stages and
        # the dH_SO stage, whose errors are those of the SOC part alone
        "validation_mae_meV": part("validation", "mae_meV"),
        "validation_structures": part("validation", "structures"),
        "test_mae_meV": part("test", "mae_meV"),
        "training_cpu_minutes": {
            s: r["cpu_seconds"] / 60 for s, r in stages.items() if "cpu_seconds" in r
        },
    }


def twisted_part(
    bundle,
    outdir: Path,
    npoints: int,
    n: int,
    m: int,
    expected_error: float = 0.0,
    gap_guess: float | None = None,
    relax_cell: bool = True,
) -> dict:
    """Step 4: a twisted cell (relaxed if ``relax_cell`` and the potential's packages
    are there) through the calculator: bands near the gap, C3 Chern table, and whether
    the model can resolve that gap (``expected_error``: band error near the gap on the
    held-out twisted cell of step 3, meV)."""
    from ase_moireh.build import twist_angle, twisted_bilayer
    from ase_moireh.calculator import MoireHCalculator

    twisted, relaxation = relaxed_cell(twisted_bilayer(n, m), relax_cell)
    twisted.calc = MoireHCalculator(model=bundle, nbands=16, gap_guess=gap_guess)
    severe, mild = twisted.calc.domain_findings(twisted)
    vbm, cbm = twisted.calc.band_edges()
    gap = float((cbm - vbm) * 1e3)
    spread = _spread_meV(twisted.calc)
    resolved = gap > expected_error and not severe
    info = {
        "nm": (n, m),
        "angle_deg": round(twist_angle(n, m), 3),
        "atoms": len(twisted),
        "relaxation": relaxation,
        "domain_findings": severe + mild,
        # over Gamma, the three M and both K: negative means the model makes it a metal
        "gap_meV": gap,
        "expected_band_error_meV": expected_error,
        "ensemble_spread_max_meV": spread,
        "gap_resolved": bool(resolved),
    }
    bs = twisted.calc.band_structure("GMKG", npoints=max(12, npoints // 3))
    verdict = f"gap {gap:.1f} meV" + (
        "" if resolved else f" < expected error {expected_error:.0f} meV: illustrative only"
    )
    _plot_bands(
        bs.path,
        gap_aligned(bs.energies[0], bs.reference),
        [],
        bs.reference,
        outdir / "twisted_bands.png",
        title=f"{twist_angle(n, m):.2f}° twisted MoTe$_2$ ({len(twisted)} atoms), model "
        f"H, S with SOC\n{verdict}",
        ylim=0.6,
        ylabel=r"$E - E_\mathrm{midgap}$ (eV)",
    )
    info["chern_mod3_top1_top2"] = _chern_table(twisted, info, outdir / "chern.txt")
    return info


def relaxed_cell(atoms: Atoms, relax_cell: bool = True) -> tuple[Atoms, dict]:
    """``atoms`` relaxed by ``moireh relax``'s default potential (fixed cell, 0.01 eV/A),
    with what was done: potential, steps, and the local metal-metal interlayer distance
    (its spread is the corrugation); the rigid ``atoms`` and why when not relaxed."""
    from ase_moireh.build.potentials import DEFAULT_POTENTIAL, load_potential
    from ase_moireh.build.relax import check_elements, local_interlayer_distance, relax

    def distances(cell) -> dict:
        local = local_interlayer_distance(cell)
        return {"interlayer_min_A": float(local.min()), "interlayer_max_A": float(local.max())}

    if not relax_cell:
        return atoms, {"relaxed": False, "why": "not asked", **distances(atoms)}
    try:
        calc, elements = load_potential(DEFAULT_POTENTIAL)
    except ValueError as err:  # the optional packages are missing: say so, stay rigid
        return atoms, {"relaxed": False, "why": str(err), **distances(atoms)}
    check_elements(atoms, elements, DEFAULT_POTENTIAL)
    log.info("relaxing the %d-atom cell with %s", len(atoms), DEFAULT_POTENTIAL)
    out = relax(atoms, calc, fmax=RELAX_FMAX, steps=RELAX_STEPS, progress=False)
    out.calc = None
    done = out.info["relaxation"]
    info = {
        "relaxed": bool(done["converged"]),
        "potential": DEFAULT_POTENTIAL,
        "steps": done["steps"],
        "fmax_reached_eV_per_A": done["fmax_reached"],
        **distances(out),
    }
    if not done["converged"]:
        info["why"] = f"not converged to {RELAX_FMAX} eV/A in {RELAX_STEPS} steps: used as reached"
    return out, info


def _spread_meV(calc) -> float | None:
    """Largest ensemble spread of H (meV); None for a single model."""
    if "hamiltonian_spread" not in calc.results:
        return None
    return float(np.abs(calc.results["hamiltonian_spread"].values).max() * 1e3)


def _chern_table(twisted, info: dict, filename: Path) -> tuple[int, int]:
    """chern.txt: the trust verdict first, then the C3 phases and Chern numbers mod 3."""
    from ase_moireh.topology import phases_deg

    trust = (
        "TRUSTWORTHY: the gap exceeds the expected band error"
        if info["gap_resolved"]
        else f"NOT TRUSTWORTHY: model gap {info['gap_meV']:.1f} meV is below the expected "
        f"band error near the gap ({info['expected_band_error_meV']:.0f} meV, on the 21.79 "
        "deg SOC cell against DFT): these bands may touch or reorder, so the table only "
        "shows the pipeline"
    )
    lines = [
        f"# {info['angle_deg']} deg twisted MoTe2 ({info['atoms']} atoms), bundled SOC model",
        f"# {trust}",
        "# C3 eigenvalue phases (deg, in (-180, 180]) of the top valence bands, spin-up sector",
        "# nbands  Gamma  K  K'  Chern_mod3",
    ]
    chern = []
    for nb in (1, 2):
        r = twisted.calc.chern_numbers(nbands=nb, spin=1)
        row = "  ".join(str(phases_deg(r.eigenvalues[label])) for label in ("Gamma", "K", "K'"))
        lines.append(f"{nb}  {row}  {r.chern_mod3}")
        chern.append(r.chern_mod3)
    with atomic_file(filename) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return chern[0], chern[1]


def report_text(result: dict) -> str:
    """The summary in words: each number with what it means and whether to trust it."""
    c = result["converter"]
    ok = c["max_eig_diff_meV"] < CONVERTER_TOLERANCE_MEV
    lines = [
        f"ase-moireh {version('ase-moireh')}: main job on the embedded default",
        "Energies: bands.png relative to OpenMX's Fermi level; bands_model_vs_dft.png to the",
        "same; twisted_vs_dft.png to DFT's mid-gap; twisted_bands.png to the model's mid-gap.",
        "Files: " + ", ".join(result["files"]),
        "",
        f"1. Converter check ({c['structure']}, {c['atoms']} atoms, SOC: {c['spinful']})",
        f"   eigenvalues of the converted H, S against those OpenMX printed at "
        f"{c['kpoints_compared']} k-points: max difference {c['max_eig_diff_meV']:.3f} meV",
        f"   -> {'PASS' if ok else 'FAIL'} (tolerance {CONVERTER_TOLERANCE_MEV} meV); "
        f"Hermiticity of H {c['hermiticity_H_eV']:.1e} eV",
    ]
    if "model" in result:
        lines += _model_lines(result["model"])
        lines += _reference_lines(result["reference"]) + _twisted_lines(result["twisted"])
    return "\n".join(lines) + "\n"


def _model_lines(m: dict) -> list[str]:
    def pairs(values: dict | None) -> str:
        return ", ".join(f"{k} {v:.2f}" for k, v in (values or {}).items()) or "not recorded"

    near = m["bands_near_gap"]
    members = m["members"]
    return [
        "",
        f"2. Bundled SOC model on {m['held_out_structure']}, a structure it never trained on",
        f"   trained on: {', '.join(m['trained_on'] or ['(not recorded)'])}",
        *(
            f"   validation MAE per pair at training, {stage} (meV): {pairs(mae)}"
            for stage, mae in (m["validation_mae_meV"] or {"(not recorded)": {}}).items()
        ),
        "   training CPU time (min): "
        + (
            ", ".join(f"{k} {v:.0f}" for k, v in m["training_cpu_minutes"].items())
            or "not recorded"
        ),
        f"   here, H MAE per pair (meV): {pairs(m['H_mae_meV'])}",
        f"   bands within 0.3 eV of the gap at Gamma/M/K ({near['levels']} levels): max error "
        f"{near['max_meV']:.1f} meV, mean {near['mean_meV']:.1f} meV; gap "
        f"{near['gap_predicted_meV']:.1f} meV vs DFT {near['gap_reference_meV']:.1f} meV",
        f"   band MAE within 2 eV of the Fermi level: {m['band_mae_meV_within_2eV']:.1f} meV",
        f"   ensemble: {members} member(s)"
        + ("; no spread, so no per-structure uncertainty" if members == 1 else ""),
        "   -> trust this model's bands to about the max error above, on cells like these",
    ]


def _reference_lines(r: dict) -> list[str]:
    near = r["bands_near_gap"]
    return [
        "",
        f"3. 21.79 deg twisted bilayer with SOC ({r['atoms']} atoms, structure of "
        f"{r['structure']}), which no model trained on",
        f"   bands within 0.3 eV of the gap at Gamma/M/K ({near['levels']} levels): max error "
        f"{near['max_meV']:.1f} meV, mean {near['mean_meV']:.1f} meV (absolute energies)",
        f"   gap: model {near['gap_predicted_meV']:.1f} meV, DFT {near['gap_reference_meV']:.1f} "
        f"meV (error {near['gap_error_meV']:+.1f} meV)",
        f"   band MAE over the {r['bands_on_path']} bands drawn in twisted_vs_dft.png "
        f"({r['kpoints_on_path']} k-points): {r['band_mae_meV_on_path']:.1f} meV",
    ]


def _relaxation_words(r: dict) -> str:
    low, high = r["interlayer_min_A"], r["interlayer_max_A"]
    span = f"local Mo-Mo interlayer distance {low:.2f}-{high:.2f} A"
    if "potential" not in r:
        return f"rigid ({r['why']}); {span}"
    state = "relaxed" if r["relaxed"] else f"partly relaxed ({r['why']})"
    corrugation = high - low
    return (
        f"{state} with {r['potential']} ({r['steps']} steps, fmax "
        f"{r['fmax_reached_eV_per_A']:.3f} eV/A); {span}, corrugation {corrugation:.2f} A"
    )


def _twisted_lines(t: dict) -> list[str]:
    findings = t["domain_findings"] or ["none: inside the training domain"]
    spread = t["ensemble_spread_max_meV"]
    verdict = (
        "gap resolved: larger than the expected band error"
        if t["gap_resolved"]
        else "NOT TRUSTWORTHY: the model cannot tell whether this cell is gapped; the "
        "Chern numbers in chern.txt only show the pipeline"
    )
    return [
        "",
        f"4. {t['angle_deg']} deg twisted bilayer ({t['atoms']} atoms) via MoireHCalculator",
        f"   structure: {_relaxation_words(t['relaxation'])}",
        f"   domain check: {'; '.join(findings)}",
        f"   model gap over Gamma, M, K: {t['gap_meV']:.1f} meV (negative: bands overlap)",
        f"   expected band error near the gap: {t['expected_band_error_meV']:.0f} meV "
        "(the 21.79 deg SOC cell of step 3; larger cells relax differently, so this is a "
        "lower bound)",
        f"   ensemble spread of H: {'n/a (one model)' if spread is None else f'{spread:.1f} meV'}",
        f"   Chern numbers mod 3 of the top 1 / 2 spin-up valence bands: "
        f"{t['chern_mod3_top1_top2'][0]} / {t['chern_mod3_top1_top2'][1]}",
        f"   -> {verdict}",
    ]


def _plot_overlay(
    path,
    dft: np.ndarray,
    model: np.ndarray,
    fermi: float,
    filename: Path,
    title: str = "bilayer MoTe$_2$ (held out): DFT vs model",
    ylabel: str = r"$E - E_F$ (OpenMX's Fermi level, eV)",
    ylim: float = 2.5,
    x: np.ndarray | None = None,
) -> None:
    """DFT (lines) and model (dashes) bands along ``path``, at its points or at ``x``."""
    fig, axes = new_figure(1, 5.0, 4.0)
    ax = axes[0, 0]
    x = path.get_linear_kpoint_axis()[0] if x is None else x
    ax.plot(x, dft - fermi, color="k", lw=1.2)
    ax.plot(x, model - fermi, color="tab:red", lw=0.8, ls="--")
    ax.plot([], [], color="k", label="DFT (OpenMX)")
    ax.plot([], [], color="tab:red", ls="--", label="model (bundled, SOC)")
    ax.legend(loc="upper right", fontsize=8)
    kpath_axis(ax, path, ylim, ylabel)
    ax.set_title(title, fontsize=10)
    save_figure(fig, filename)


def _positions_on_path(kpts: np.ndarray, x: np.ndarray, k: np.ndarray) -> list[float]:
    """Linear-axis positions where k or its time-reversed -k lies on the path's segments,
    so OpenMX's own grid eigenvalues can be drawn over our bands."""
    found = []
    for q in (k, -k):
        for a in range(len(kpts) - 1):
            d = kpts[a + 1] - kpts[a]
            t = float(np.clip(np.dot(q - kpts[a], d) / max(np.dot(d, d), 1e-30), 0, 1))
            if np.linalg.norm(kpts[a] + t * d - q) < 2e-5:
                found.append(float(x[a] + t * (x[a + 1] - x[a])))
                break
    return sorted(set(np.round(found, 8)))


def _plot_bands(
    path,
    bands: np.ndarray,
    reference: list,
    fermi: float,
    filename: Path,
    title: str = "bilayer MoTe$_2$ with SOC: converted H, S (lines)",
    ylim: float = 2.5,
    ylabel: str = r"$E - E_F$ (OpenMX's Fermi level, eV)",
) -> None:
    fig, axes = new_figure(1, 5.0, 4.0)
    ax = axes[0, 0]
    x = path.get_linear_kpoint_axis()[0]
    ax.plot(x, bands - fermi, color="k", lw=0.8)
    for n, (xk, energies) in enumerate(reference):
        ax.plot(
            np.full(len(energies), xk),
            energies - fermi,
            "o",
            ms=3,
            mfc="none",
            color="tab:red",
            label="OpenMX printed" if n == 0 else None,
        )
    if reference:
        ax.legend(loc="upper right", fontsize=8)
    kpath_axis(ax, path, ylim, ylabel)
    ax.set_title(title, fontsize=10)
    save_figure(fig, filename)
