"""Does a collinear dH carry the SOC twin's dH? Measured on the corpus's SOC twins.

    python benchmarks/soc_twins.py

A SOC entry ``X_soc`` and its collinear twin ``X`` share one structure. With the native
H0 of each (``h0.h5``, :mod:`ase_moireh.h0`; spin-orbit enters H0 through the
j-dependent projectors), dH = H - H0. A dH model adds a collinear dH to the SOC H0 as
dH (x) 1_2, which is right when, for every twin:

* the spin-dependent parts of dH_SOC vanish: (uu - dd) / 2, Im (uu + dd) / 2, ud;
* the scalar part Re (uu + dd) / 2 of dH_SOC equals dH_col.

Writes ``benchmarks/results/soc_twins.{md,json}`` (meV; every element of every block
both entries hold).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from ase_moireh.block_operator import BlockOperator
from ase_moireh.io.corpus import H0_NATIVE, load_manifest, read_entry, read_hamiltonian
from ase_moireh.model.residual import scalar_part
from ase_moireh.model.soc import on_edges

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "data" / "corpus"
RESULTS = ROOT / "benchmarks" / "results"


def twins(corpus: Path) -> list[tuple[str, str]]:
    """(collinear, SOC) entry names whose H and native H0 are both stored."""
    names = load_manifest(corpus)
    have = lambda n: (corpus / n / "hamiltonian.h5").exists() and (corpus / n / H0_NATIVE).exists()  # noqa: E731
    return sorted(
        (n[: -len("_soc")], n)
        for n in names
        if n.endswith("_soc") and n[: -len("_soc")] in names and have(n) and have(n[:-4])
    )


def spinor_difference(corpus: Path, name: str) -> BlockOperator:
    """H - H0 of an entry on H's blocks, spin parts kept (:func:`residual` would keep
    only the scalar part of a SOC entry)."""
    h = read_entry(corpus / name).hamiltonian
    base, have = on_edges(read_hamiltonian(corpus / name / H0_NATIVE).hamiltonian, h.edges)
    assert have.all(), f"{name}: H0 lacks blocks of H"
    return replace(h, values=h.values - base.values)


def spin_parts(op) -> np.ndarray:
    """|spin-dependent numbers| of every spinor block, concatenated (eV)."""
    out = []
    for b in op.blocks():
        n, m = b.shape[0] // 2, b.shape[1] // 2
        uu, ud, du, dd = b[:n, :m], b[:n, m:], b[n:, :m], b[n:, m:]
        out += [np.abs(uu - dd).ravel() / 2, np.abs((uu + dd).imag).ravel() / 2]
        out += [np.abs(ud).ravel(), np.abs(du).ravel()]
    return np.concatenate(out)


def compare(corpus: Path, col: str, soc: str) -> dict:
    d_col, d_soc = spinor_difference(corpus, col), spinor_difference(corpus, soc)
    scalar = scalar_part(d_soc)
    where = d_col.find(scalar.edges)
    diffs, onsite = [], []
    for e in np.flatnonzero(where >= 0):
        diff = np.abs(scalar.block(e) - d_col.block(int(where[e]))).ravel()
        diffs.append(diff)
        i, j = scalar.edges[e, :2]
        if i == j and not scalar.edges[e, 2:].any():
            onsite.append(diff)
    diff, on, spin = np.concatenate(diffs), np.concatenate(onsite), spin_parts(d_soc)
    return {
        "scalar_vs_col_mean_meV": 1e3 * float(diff.mean()),
        "scalar_vs_col_onsite_mean_meV": 1e3 * float(on.mean()),
        "scalar_vs_col_max_meV": 1e3 * float(diff.max()),
        "spin_part_mean_meV": 1e3 * float(spin.mean()),
        "spin_part_max_meV": 1e3 * float(spin.max()),
    }


def main() -> None:
    rows = {soc: compare(CORPUS, col, soc) for col, soc in twins(CORPUS)}
    lines = [
        "# SOC twins: dH_SOC against dH_col (`benchmarks/soc_twins.py`)",
        "",
        "dH = H - H0 with the native H0 of each entry. Spin part: |uu - dd| / 2, "
        "|Im (uu + dd)| / 2, |ud|, |du| of dH_SOC; scalar: Re (uu + dd) / 2 of dH_SOC "
        "against dH_col, every element of the blocks both hold (meV).",
        "",
        "| SOC entry | scalar vs col, mean | on-site mean | max | spin part, mean | max |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['scalar_vs_col_mean_meV']:.3f} | "
            f"{r['scalar_vs_col_onsite_mean_meV']:.3f} | {r['scalar_vs_col_max_meV']:.1f} | "
            f"{r['spin_part_mean_meV']:.4f} | {r['spin_part_max_meV']:.3f} |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soc_twins.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "soc_twins.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
