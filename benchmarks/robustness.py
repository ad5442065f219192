"""How the models hold up on structures they never saw: the corpus's holdout entries.

    python benchmarks/robustness.py --label before --nosoc old_nosoc.pt --soc old_soc.pt
    python benchmarks/robustness.py --label after                 # the bundled models
    python benchmarks/robustness.py --split validation --label round2 --nosoc ... --soc ...

``--split validation`` measures the same figures on the validation entries, to choose
between trained models without looking at the held-out ones
(``robustness_validation.md``).

Every figure is measured on the entries ``data/corpus/manifest.json`` holds out
(``split: holdout``: no training may read them, ``ase_moireh.training`` refuses),
plus the shared 21.79 deg SOC run (exact structure, never trained on) when ``../shared``
is present. Per model pair (collinear, SOC) and label:

* per-pair MAE of H (meV; SOC: real and imaginary parts as separate numbers, as the
  trainer counts them), non-twisted and twisted, collinear and SOC;
* the largest on-site element error (meV);
* bands at Gamma, M, K: the largest error of levels within 0.3 eV of the gap, the
  gap against DFT's (S exact for both), and the error of the top valence level at Gamma
  and at K (the valley order);
* smoothness: the on-site blocks' change under the 0.01 A displacement of the DFT pair
  (``examples/displaced_pair.py``), the model's beside DFT's;
* for ensembles, the correlation of per-block spread with per-block error.

Results accumulate per label in ``benchmarks/results/robustness.json``;
``robustness.md`` tables every label beside the paper's figures, and
``robustness_spread.png`` plots spread against error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from ase_moireh.block_operator import BlockOperator
from ase_moireh.calculator import MoireHCalculator
from ase_moireh.data import bundled_model_path
from ase_moireh.h0.hamiltonian import h0_of
from ase_moireh.io.corpus import H0_NATIVE, H0_OPENMX, load_manifest, read_entry, read_hamiltonian
from ase_moireh.io.openmx import read_scfout
from ase_moireh.kpoints import extrema_kpoints
from ase_moireh.metrics import band_errors_near_gap
from ase_moireh.model.io import load_bundle, training_stages
from ase_moireh.model.predict import predict_operators
from ase_moireh.model.residual import predicts_residual
from ase_moireh.plotting import new_figure, save_figure
from ase_moireh.tightbinding import ElectronicStructure, TightBinding

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
#: as in the tests: $MOIREH_SHARED names the folder that holds data/ (default ../shared)
SHARED = Path(os.environ.get("MOIREH_SHARED", ROOT.parent / "shared")) / "data"
TW2179_SOC = SHARED / "openmx" / "tw2179_soc"
#: the paper's figures (arXiv:2501.12452): per-pair MAE after fine-tuning, band MAE
PAPER = {"mae_meV": "0.07-0.14", "bands_meV": "< 1"}
#: the goals of the dH-models issue ("Models that learn only the self-consistent response")
GOALS = {"twisted_mae_meV": 0.3, "onsite_max_meV": 20.0, "bands_meV": 5.0, "gap_meV": 3.0}


def real_parts(values: np.ndarray) -> np.ndarray:
    """Real numbers the model predicts: SOC values as real and imaginary parts."""
    return np.concatenate([values.real, values.imag]) if np.iscomplexobj(values) else values


def onsite_edges(op: BlockOperator) -> np.ndarray:
    return np.flatnonzero((op.edges[:, 0] == op.edges[:, 1]) & ~op.edges[:, 2:].any(axis=1))


def block_errors(pred: BlockOperator, ref: BlockOperator) -> dict:
    """Per-pair MAE, the largest on-site error and per-block (error, spread) inputs."""
    index = ref.find(pred.edges)
    labels = pred.pair_labels()
    sums: dict[str, list[float]] = {}
    block_max = np.zeros(pred.nedges)
    for e, f in enumerate(index):
        if f < 0:
            continue
        diff = np.abs(real_parts((pred.block(e) - ref.block(int(f))).ravel()))
        pair = "-".join(sorted(labels[e].split("-")))
        acc = sums.setdefault(pair, [0.0, 0])
        acc[0] += diff.sum()
        acc[1] += diff.size
        block_max[e] = diff.max()
    onsite = onsite_edges(pred)
    return {
        "mae_meV": {k: 1e3 * s / n for k, (s, n) in sorted(sums.items())},
        "mae_all_meV": 1e3 * sum(s for s, _ in sums.values()) / sum(n for _, n in sums.values()),
        "onsite_max_meV": 1e3 * float(block_max[onsite].max()),
        "block_max": block_max,
    }


def predicted(bundle, atoms, h0: BlockOperator | None = None):
    """(H, S, spread) of the model: H itself, or H0 + dH for a residual (dH) model, whose
    H0 (here OpenMX's zeroth step of the entry) must be given."""
    return predict_operators(bundle, atoms, h0=h0 if predicts_residual(bundle.info) else None)


def band_figures(h: BlockOperator, s: BlockOperator, dft: ElectronicStructure) -> dict:
    """Band errors near the gap and the gap, model (H, S) against DFT, at Gamma, M and K."""
    ref = MoireHCalculator(dft=dft, domain_check=False)
    nocc = ref.occupied_bands(dft.atoms)
    kpts = extrema_kpoints(dft.atoms.cell)
    dft = ref.get_tight_binding(dft.atoms).eigenvalues(kpts)
    pred = TightBinding(h, s).eigenvalues(kpts)
    return {**band_errors_near_gap(dft, pred, nocc), "valley_meV": valley_errors(dft, pred, nocc)}


def valley_errors(dft: np.ndarray, pred: np.ndarray, nocc: int) -> dict[str, float]:
    """Error of the top valence level at Gamma and at K (rows 0 and 4 of
    :func:`extrema_kpoints`), meV: which valley tops the valence band decides tMoTe2's
    physics, and the Gamma state (interlayer Te p_z) is the one that moves most with
    stacking and interlayer distance."""
    top = (pred[:, nocc - 1] - dft[:, nocc - 1]) * 1e3
    return {"Gamma": float(top[0]), "K": float(top[4])}


def evaluate_entry(
    bundle, ref: ElectronicStructure, h0: BlockOperator | None = None
) -> tuple[dict, np.ndarray, np.ndarray]:
    start = time.perf_counter()
    pred, s, spread = predicted(bundle, ref.atoms, h0)
    errors = block_errors(pred, ref.hamiltonian)
    block_max = errors.pop("block_max")
    row = {**errors, "bands": band_figures(pred, s, ref)}
    row["seconds"] = time.perf_counter() - start
    spread_max = np.zeros(0)
    if spread is not None:  # matched by edge key, not position
        o, where = spread.offsets, spread.find(pred.edges)
        block_max = block_max[where >= 0]
        spread_max = np.array(
            [np.abs(real_parts(spread.values[o[e] : o[e + 1]])).max() for e in where[where >= 0]]
        )
    return row, block_max, spread_max


def onsite_change(bundle, a, b, h0a=None, h0b=None) -> dict[str, float]:
    """Per atom max |H_ii(b) - H_ii(a)| (meV) of the model: median and max over atoms."""
    return _onsite_change(predicted(bundle, a, h0a)[0], predicted(bundle, b, h0b)[0])


def _onsite_change(ha: BlockOperator, hb: BlockOperator) -> dict[str, float]:
    ia, ib = onsite_edges(ha), onsite_edges(hb)
    ib = ib[np.argsort(hb.edges[ib, 0])]
    ia = ia[np.argsort(ha.edges[ia, 0])]
    per_atom = np.array(
        [np.abs(ha.block(e) - hb.block(f)).max() for e, f in zip(ia, ib, strict=True)]
    )
    return {"median_meV": 1e3 * float(np.median(per_atom)), "max_meV": 1e3 * float(per_atom.max())}


def smoothness(bundle, corpus: Path, pair: tuple[str, str]) -> dict | None:
    """On-site change of DFT and of the model between the two structures of the pair."""
    if not all((corpus / name / "hamiltonian.h5").exists() for name in pair):
        return None
    a, b = (read_entry(corpus / name) for name in pair)
    h0s = [entry_h0(corpus / name) for name in pair]
    if predicts_residual(bundle.info) and None in h0s:
        return None
    moved = float(np.abs(a.atoms.positions - b.atoms.positions).max())
    return {
        "pair": list(pair),
        "largest_move_A": moved,
        "dft": _onsite_change(a.hamiltonian, b.hamiltonian),
        "model": onsite_change(bundle, a.atoms, b.atoms, *h0s),
    }


def entry_h0(folder: Path) -> BlockOperator | None:
    """The H0 of a corpus entry a dH model adds to: the native one (``h0.h5``, what
    prediction computes; ``moireh dataset h0 --native``), else OpenMX's zeroth step."""
    for name in (H0_NATIVE, H0_OPENMX):
        if (folder / name).exists():
            return read_hamiltonian(folder / name).hamiltonian
    return None


def split_entries(corpus: Path, split: str) -> list:
    return [
        e
        for e in sorted(load_manifest(corpus).values(), key=lambda e: e.name)
        if e.split == split and (corpus / e.name / "hamiltonian.h5").exists()
    ]


def correlation(errors: list[np.ndarray], spreads: list[np.ndarray]) -> dict | None:
    """Pearson correlation of log spread with log error over blocks, and Spearman's."""
    if not spreads or not all(len(s) for s in spreads):
        return None
    err, spr = np.concatenate(errors), np.concatenate(spreads)
    keep = (err > 0) & (spr > 0)
    err, spr = err[keep], spr[keep]
    step = max(1, len(spr) // 4000)  # points kept for the plot
    rank = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    return {
        "blocks": int(keep.sum()),
        "pearson_log": float(np.corrcoef(np.log(spr), np.log(err))[0, 1]),
        "spearman": float(np.corrcoef(rank(spr), rank(err))[0, 1]),
        "points": [
            spr[::step].tolist(),
            err[::step].tolist(),
        ],
    }


def describe(path: Path, bundle) -> str:
    """A model file as the report names it: where it is (in the repo, or its SHA-256),
    its members, how SOC is made and the CPU time its training stages took."""
    name = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    stages = training_stages(bundle.info)
    cpu = sum(r.get("cpu_seconds", 0.0) for r in stages.values()) / 60
    how = "; SOC = collinear (x) 1 + learned dH_SO" if bundle.corrections else ""
    if predicts_residual(bundle.info):
        how += f"; predicts dH = H - H0, H0 = {bundle.info['target']['h0']}"
    timing = f"{cpu:.0f} CPU min over {', '.join(stages)}" if cpu else "CPU time not recorded"
    return f"`{name}` (sha256 {digest}, {len(bundle.models)} member(s){how}; {timing})"


def measure(
    nosoc: Path, soc: Path, corpus: Path, pair: tuple[str, str], split: str = "holdout"
) -> dict:
    """Every figure on the entries of ``split``: ``holdout`` for the report, or
    ``validation`` to choose between trained models (then without the shared run and
    the smoothness pair, which are held-out figures)."""
    bundles = {False: load_bundle(nosoc), True: load_bundle(soc)}
    out: dict = {
        "models": {"nosoc": describe(nosoc, bundles[False]), "soc": describe(soc, bundles[True])},
        "entries": {},
    }
    errors, spreads = [], []
    for entry in split_entries(corpus, split):
        if entry.kind == "displaced":
            continue  # its DFT pair is the smoothness figure
        bundle, h0 = bundles[entry.soc], entry_h0(corpus / entry.name)
        if predicts_residual(bundle.info) and h0 is None:
            out.setdefault("without_h0", []).append(entry.name)
            logging.warning("%s: no H0 for the dH model; left out", entry.name)
            continue
        logging.info("%s", entry.name)
        row, err, spr = evaluate_entry(bundle, read_entry(corpus / entry.name), h0)
        out["entries"][entry.name] = {"kind": entry.kind, "soc": entry.soc, **row}
        errors.append(err)
        spreads.append(spr)
    if split != "holdout":
        out["spread_vs_error"] = correlation(errors, spreads)
        return out
    if TW2179_SOC.is_dir():
        logging.info("tw2179_soc (shared)")
        dft = read_scfout(next(TW2179_SOC.glob("*.scfout*")))
        h0 = h0_of(dft) if predicts_residual(bundles[True].info) else None
        row, _, _ = evaluate_entry(bundles[True], dft, h0)
        out["entries"]["tw2179_soc (shared, exact)"] = {"kind": "twisted", "soc": True, **row}
    out["smoothness"] = smoothness(bundles[False], corpus, pair)
    out["spread_vs_error"] = correlation(errors, spreads)
    return out


# --------------------------------------------------------------------------- report


def _mean(rows: list[dict], key) -> float | None:
    values = [key(r) for r in rows]
    return float(np.mean(values)) if values else None


def summary(result: dict) -> dict[str, float | None]:
    rows = list(result["entries"].values())
    pick = lambda kind, soc: [r for r in rows if r["kind"] == kind and r["soc"] == soc]  # noqa: E731
    out = {}
    for kind in ("shifted", "twisted"):
        for soc in (False, True):
            out[f"{kind} {'SOC' if soc else 'collinear'}"] = _mean(
                pick(kind, soc), lambda r: r["mae_all_meV"]
            )
    out["onsite_max_meV"] = max((r["onsite_max_meV"] for r in rows), default=None)
    out["bands_max_meV"] = max((r["bands"]["max_meV"] for r in rows), default=None)
    out["gap_error_max_meV"] = max((abs(r["bands"]["gap_error_meV"]) for r in rows), default=None)
    smooth = result.get("smoothness")
    out["smooth_model_meV"] = smooth["model"]["max_meV"] if smooth else None
    out["smooth_dft_meV"] = smooth["dft"]["max_meV"] if smooth else None
    corr = result.get("spread_vs_error")
    out["spearman"] = corr["spearman"] if corr else None
    return out


def _goal(key: str) -> str:
    return f"{GOALS[key]:g}"


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def write_report(results: dict[str, dict], filename: Path, split: str = "holdout") -> None:
    labels = list(results)
    lines = [
        f"# Robustness on {split} structures (`benchmarks/robustness.py --split {split}`)",
        "",
        f"Every structure below is a corpus entry of split `{split}` "
        "(`data/corpus/manifest.json`), never trained on"
        + (", or the shared 21.79 deg SOC run." if split == "holdout" else "."),
        "",
        "## Summary",
        "",
        "| figure | " + " | ".join(labels) + " | goal | paper |",
        "| --- | " + " | ".join("---" for _ in labels) + " | --- | --- |",
    ]
    sums = {label: summary(r) for label, r in results.items()}
    names = {
        "shifted collinear": ("per-pair MAE, non-twisted collinear (meV)", "-", PAPER["mae_meV"]),
        "shifted SOC": ("per-pair MAE, non-twisted SOC (meV)", "-", PAPER["mae_meV"]),
        "twisted collinear": (
            "per-pair MAE, twisted collinear (meV)",
            _goal("twisted_mae_meV"),
            PAPER["mae_meV"],
        ),
        "twisted SOC": (
            "per-pair MAE, twisted SOC (meV)",
            _goal("twisted_mae_meV"),
            PAPER["mae_meV"],
        ),
        "onsite_max_meV": ("max on-site element error (meV)", _goal("onsite_max_meV"), "-"),
        "bands_max_meV": (
            "max band error within 0.3 eV of the gap (meV)",
            _goal("bands_meV"),
            PAPER["bands_meV"],
        ),
        "gap_error_max_meV": ("max gap error (meV); goal: 21.79 deg SOC", _goal("gap_meV"), "-"),
        "smooth_model_meV": ("smoothness: model's max on-site change, DFT pair (meV)", "DFT", "-"),
        "smooth_dft_meV": ("smoothness: DFT's own max on-site change (meV)", "-", "-"),
        "spearman": ("ensemble spread vs error, Spearman", "> 0", "-"),
    }
    for key, (text, goal, paper) in names.items():
        cells = " | ".join(_fmt(sums[label][key]) for label in labels)
        lines.append(f"| {text} | {cells} | {goal} | {paper} |")
    for label, result in results.items():
        lines += _label_section(label, result)
    filename.write_text("\n".join(lines) + "\n")


def _label_section(label: str, result: dict) -> list[str]:
    lines = [
        "",
        f"## {label}",
        "",
        *([result["note"], ""] if result.get("note") else []),
        f"Collinear model: {result['models']['nosoc']}.",
        "",
        f"SOC model: {result['models']['soc']}.",
        "",
        "| entry | kind | SOC | MAE per pair (meV) | max on-site (meV) | bands near gap, max "
        "(meV) | gap DFT / model (meV) | top valence error at Gamma / K (meV) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in result["entries"].items():
        mae = ", ".join(f"{k} {v:.3g}" for k, v in r["mae_meV"].items())
        b = r["bands"]
        lines.append(
            f"| {name} | {r['kind']} | {'yes' if r['soc'] else 'no'} | {mae} | "
            f"{r['onsite_max_meV']:.3g} | {b['max_meV']:.3g} | "
            f"{b['gap_reference_meV']:.1f} / {b['gap_predicted_meV']:.1f} | "
            + (
                f"{b['valley_meV']['Gamma']:.0f} / {b['valley_meV']['K']:.0f} |"
                if "valley_meV" in b
                else "- |"
            )
        )
    if result.get("without_h0"):
        lines += ["", f"Left out (no H0 yet for the dH model): {', '.join(result['without_h0'])}."]
    smooth = result.get("smoothness")
    if smooth:
        d, m = smooth["dft"], smooth["model"]
        lines += [
            "",
            f"Smoothness ({' vs '.join(smooth['pair'])}, atoms moved by up to "
            f"{smooth['largest_move_A']:.3f} A): per-atom max on-site change, median / max "
            f"over atoms: DFT {d['median_meV']:.3g} / {d['max_meV']:.3g} meV, model "
            f"{m['median_meV']:.3g} / {m['max_meV']:.3g} meV.",
        ]
    corr = result.get("spread_vs_error")
    if corr:
        lines += [
            "",
            f"Ensemble spread vs error over {corr['blocks']} blocks: Pearson (log-log) "
            f"{corr['pearson_log']:.2f}, Spearman {corr['spearman']:.2f}.",
        ]
    return lines


def plot_spread(results: dict[str, dict], filename: Path) -> None:
    with_spread = {k: r["spread_vs_error"] for k, r in results.items() if r.get("spread_vs_error")}
    if not with_spread:
        return
    fig, axes = new_figure(len(with_spread), 4.2, 4.0)
    for ax, (label, corr) in zip(axes[0], with_spread.items(), strict=True):
        spread, error = (np.asarray(p) * 1e3 for p in corr["points"])
        ax.loglog(spread, error, ".", ms=2, alpha=0.4)
        ax.set_xlabel("ensemble spread, max over block (meV)")
        ax.set_ylabel("error, max over block (meV)")
        ax.set_title(f"{label}: Spearman {corr['spearman']:.2f}", fontsize=9)
    save_figure(fig, filename, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="e.g. before / after")
    parser.add_argument("--nosoc", type=Path, default=bundled_model_path(False))
    parser.add_argument("--soc", type=Path, default=bundled_model_path(True))
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "corpus")
    parser.add_argument("--pair", nargs=2, default=["shift2x2_009", "displaced2x2_009"])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--note", default="", help="where the models come from, for the report")
    parser.add_argument(
        "--split",
        choices=["holdout", "validation"],
        default="holdout",
        help="holdout: the report; validation: choosing between models (robustness_validation.*)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.results.mkdir(parents=True, exist_ok=True)
    stem = "robustness" if args.split == "holdout" else f"robustness_{args.split}"
    store = args.results / f"{stem}.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    results[args.label] = measure(args.nosoc, args.soc, args.corpus, tuple(args.pair), args.split)
    results[args.label]["note"] = args.note
    store.write_text(json.dumps(results, indent=1) + "\n")
    write_report(results, args.results / f"{stem}.md", args.split)
    plot_spread(results, args.results / f"{stem}_spread.png")
    print((args.results / f"{stem}.md").read_text())


if __name__ == "__main__":
    main()
