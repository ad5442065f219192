"""Fit the interlayer correction (:mod:`ase_moireh.build.interlayer`) of a base potential
to the OpenMX PBE + D3(BJ) stacking curves.

    python benchmarks/fit_interlayer.py [--base 7net-0+d3] [--name mote2_7net0]

The residual ref - base of every converged stacking run (energies relative to the layers
17 A apart, where the correction is zero, and z forces) is fitted by least squares with a
registry-dependent Te-Te repulsion and a Mo-Te attraction (five parameters, ``TERMS``).
First a check: fitted on the MM and MX curves only, the SP and XM points (held out) are
predicted; then the final fit on all points is written to
``ase_moireh/data/interlayer/<name>.json`` with the check's numbers.
"""

from __future__ import annotations

import argparse
import datetime
import json
from dataclasses import asdict
from pathlib import Path

import ase.io
import numpy as np
from relax_candidates import (
    RESULTS,
    SEPARATED,
    converged_runs,
    potential_results,
    reference_results,
)
from scipy.optimize import least_squares

from ase_moireh.build.interlayer import R0, R_CUT, R_ON, PairTerm, evaluate, interlayer_pairs
from ase_moireh.files import atomic_file

ROOT = Path(__file__).resolve().parents[1]
#: the fitted terms, (species, registry?) with start values (amplitude eV at R0, decay A
#: [, registry width A]): a Te-Te repulsion between chalcogens stacked on top of each
#: other (Kolmogorov-Crespi-like) and a long-range Mo-Te attraction. Isotropic pairs alone
#: (Te-Te + Mo-Te) fit the energies as well but only by cancelling eV-sized terms, which
#: put forces of 2-3 eV/A on single atoms and deform the layers.
TERMS = [(("Te", "Te"), True, (0.1, 0.5, 1.5)), (("Mo", "Te"), False, (-0.05, 1.0))]
#: weight of a z-force residual (meV/A) against an energy residual (meV per MoTe2):
#: the forces keep the terms from pushing single atoms; in-plane forces are left out,
#: the reference's egg-box noise (0.03-0.1 eV/A) dominates them
FORCE_WEIGHT = 0.02


def terms_of(theta: np.ndarray) -> list[PairTerm]:
    out, k = [], 0
    for species, registry, start in TERMS:
        n = len(start)
        values = theta[k : k + n]
        out.append(
            PairTerm(
                species,
                float(values[0]),
                float(values[1]),
                *([float(values[2])] if registry else []),
            )
        )
        k += n
    return out


def fit(names: list[str], data: dict) -> np.ndarray:
    """Least squares over energies (meV per MoTe2) and weighted z forces."""

    def residual(theta: np.ndarray) -> np.ndarray:
        terms = terms_of(theta)
        out = []
        for n in names:
            pairs, e_target, f_target = data[n]
            e, f, _ = evaluate(pairs, terms)
            out.append(1e3 * (e - e_target) / FORMULA_UNITS)
            out.extend(FORCE_WEIGHT * 1e3 * (f - f_target)[:, 2])
        return np.array(out)

    start = np.concatenate([s for *_, s in TERMS])
    lower = np.concatenate([[-np.inf, 0.1] + ([0.3] if r else []) for _, r, _ in TERMS])
    upper = np.concatenate([[np.inf, 6.0] + ([4.0] if r else []) for _, r, _ in TERMS])
    return least_squares(residual, start, bounds=(lower, upper), x_scale="jac").x


def errors(terms: list[PairTerm], names: list[str], data: dict) -> dict[str, dict[str, float]]:
    """Per run: energy error (meV per MoTe2) and z-force MAE (meV/A) with ``terms``."""
    out = {}
    for n in names:
        pairs, e_target, f_target = data[n]
        e, f, _ = evaluate(pairs, terms)
        out[n] = {
            "energy": 1e3 * (e - e_target) / FORMULA_UNITS,
            "force_z_mae": float(1e3 * np.abs(f - f_target)[:, 2].mean()),
        }
    return out


def summary(errs: dict[str, dict[str, float]]) -> dict[str, float]:
    energy = [v["energy"] for v in errs.values()]
    return {
        "energy_rms_meV_per_fu": float(np.sqrt(np.mean(np.square(energy)))),
        "force_z_mae_meV_per_A": float(np.mean([v["force_z_mae"] for v in errs.values()])),
    }


FORMULA_UNITS = 2  # MoTe2 per 1x1 bilayer cell


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="7net-0+d3", help="base potential (no correction)")
    parser.add_argument("--name", default="mote2_7net0")
    args = parser.parse_args()
    collected = json.loads((RESULTS / "d3_reference_stackings.json").read_text())
    runs = converged_runs(collected)
    ref = reference_results(runs, collected)
    base = potential_results(runs, args.base)
    names = [n for n in runs if n != SEPARATED]
    # targets: what the base misses, relative to the separated layers; the base's own
    # intralayer force error (the separated layers' residual) is not the correction's
    e_sep = ref[SEPARATED][0] - base[SEPARATED][0]
    f_sep = ref[SEPARATED][1] - base[SEPARATED][1]
    data = {
        n: (
            interlayer_pairs(ase.io.read(runs[n] / "structure.extxyz")),
            ref[n][0] - base[n][0] - e_sep,
            ref[n][1] - base[n][1] - f_sep,
        )
        for n in names
    }
    train = [n for n in names if n.split("_")[0] in ("MM", "MX")]
    held = [n for n in names if n not in train]
    check = errors(terms_of(fit(train, data)), held, data)
    terms = terms_of(fit(names, data))
    after = errors(terms, names, data)
    out = {
        "base": args.base,
        "reference": "OpenMX 3.9 PBE + D3(BJ) (dftd3), rigid 1x1 R-stacked MoTe2 bilayers",
        "fitted": datetime.date.today().isoformat(),
        "form": f"A exp(-(r - {R0}) / decay) [exp(-rho^2 / registry^2)], cosine cutoff "
        f"{R_ON}-{R_CUT} A, pairs across the layers; z-force weight {FORCE_WEIGHT}",
        "terms": [asdict(t) for t in terms],
        "fit_points": names,
        "before": summary(errors([], names, data)),
        "after": summary(after),
        "errors_after": after,
        "check": {
            "fitted_on": "MM and MX curves",
            "held_out": held,
            **summary(check),
            "errors_held_out": check,
        },
    }
    path = ROOT / "ase_moireh" / "data" / "interlayer" / f"{args.name}.json"
    path.parent.mkdir(exist_ok=True)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(out, indent=1) + "\n")
    for label in ("before", "after"):
        print(f"{label:6s}: " + ", ".join(f"{k} {v:.1f}" for k, v in out[label].items()))
    print(
        "fitted on MM + MX only, SP and XM held out: "
        + ", ".join(f"{k} {v:.1f}" for k, v in summary(check).items())
    )
    for n in held:
        print(f"  {n}: {check[n]['energy']:+.1f} meV/MoTe2")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
