"""The native zeroth-step H0 (:mod:`ase_moireh.h0`) against OpenMX's own zeroth step, and
the corpus facts of issue 31 re-measured with it.

    python benchmarks/h0_check.py [--corpus data/corpus] [--terms DIR] [--runs DIR]
                                  [--std DIR] [--others NAME ...]

Writes benchmarks/results/h0.md (and .json):

1. V_xc's grid: shape and origin of :class:`~ase_moireh.h0.OpenMXGrid` against the ones
   OpenMX printed (``openmx.std``) for every shared run and the corpus runs whose output
   was kept (``--std DIR``: ``<entry>.std``);
2. term by term (``--terms DIR``: OpenMX rebuilt with one ``F_*_flag`` on,
   ``<term>_bl1x1_{nosoc,soc}_s22`` runs, /work/openmx_terms/NOTES.md), every edge;
3. the whole H0 against OpenMX's zeroth step (``scf.maxIter 1``): the 6-atom runs of
   ``--runs DIR`` (``full_bl1x1_{nosoc,soc}_s22``), and per corpus entry (the holdout
   entries and ``--others``; ``h0_openmx.h5``) per species pair, on-site and off-site
   apart, computed afresh in double precision on OpenMX's geometry and edges; then every
   stored native ``h0.h5`` against its ``h0_openmx.h5`` (both float32);
4. the egg-box: the same structure with one atom moved by a lattice vector moves
   OpenMX's grid by a fraction of a step (its origin follows the mean position): how much
   a grid other than OpenMX's changes H0;
5. the corpus facts with the native H0: |d(H - H0)| against |dH| for the displaced pair
   (shift2x2_009 / displaced2x2_009) and the on-site spread of H and of H - H0 over every
   collinear entry, per species.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import time
from pathlib import Path

import numpy as np
from ase.units import Bohr

from ase_moireh.block_operator import BlockOperator, concatenated_ranges, spinor_lift
from ase_moireh.data import bundled_openmx_data_path
from ase_moireh.h0 import OpenMXGrid, resolve_h0
from ase_moireh.h0.hamiltonian import h0_builder, input_species
from ase_moireh.io.corpus import H0_NATIVE, H0_OPENMX, is_entry, read_hamiltonian

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
HOLDOUT = [
    "shift2x2_009",
    "shift2x2_019",
    "shift2x2_029",
    "shift2x2_039",
    "displaced2x2_009",
    "twist2-1_004",
    "twist2-1_009",
    "shift3x3_000",
    "shift2x2_009_soc",
    "twist2-1_004_soc",
]
OTHERS = ["shift2x2_000", "shift2x2_007", "twist2-1_000", "twist2-1_008"]
#: the issue's bars, eV
MAE_BAR, MAX_BAR = 1e-4, 5e-3
DISPLACED_PAIR = ("shift2x2_009", "displaced2x2_009")


# --------------------------------------------------------------------------- comparisons


def _on_site(edges: np.ndarray) -> np.ndarray:
    return (edges[:, 0] == edges[:, 1]) & ~edges[:, 2:].any(axis=1)


def _aligned(ours: BlockOperator, ref: BlockOperator) -> tuple[np.ndarray, np.ndarray]:
    """(our numbers, reference numbers) of every block of ``ref``, element by element."""
    found = ours.find(ref.edges)
    if (found < 0).any():
        raise ValueError(f"{int((found < 0).sum())} reference blocks missing")
    sizes = np.diff(ref.offsets)
    mine = concatenated_ranges(ours.offsets[found], sizes)
    return ours.values[mine], ref.values


def pair_stats(ours: BlockOperator, ref: BlockOperator) -> list[dict]:
    """MAE and max |ours - ref| (complex modulus for spinors) per species pair, on-site
    and off-site blocks apart (eV)."""
    a, b = _aligned(ours, ref)
    diff = np.abs(a - b)
    sizes = np.diff(ref.offsets)
    labels = np.repeat(np.array(ref.pair_labels()), sizes)
    on = np.repeat(_on_site(ref.edges), sizes)
    rows = []
    for label in sorted(set(labels.tolist())):
        for where, mask in (("on-site", on), ("off-site", ~on)):
            sel = (labels == label) & mask
            if sel.any():
                rows.append(
                    {
                        "pair": label,
                        "blocks": where,
                        "mae": float(diff[sel].mean()),
                        "max": float(diff[sel].max()),
                        "max_ref": float(np.abs(b[sel]).max()),
                    }
                )
    return rows


def spin_parts(ours: BlockOperator, ref: BlockOperator) -> float:
    """max over blocks of the spin-dependent parts' difference (uu - dd, ud, du), eV."""
    found = ours.find(ref.edges)
    worst = 0.0
    for e, f in enumerate(found):
        x, y = ours.block(int(f)), ref.block(e)
        n, m = x.shape[0] // 2, x.shape[1] // 2
        split = (x[:n, :m] - x[n:, m:]) - (y[:n, :m] - y[n:, m:])
        worst = max(worst, np.abs(split).max(), np.abs(x[:n, m:] - y[:n, m:]).max())
        worst = max(worst, np.abs(x[n:, :m] - y[n:, :m]).max())
    return float(worst)


def summary(rows: list[dict]) -> dict:
    return {
        "mae_max": max(r["mae"] for r in rows),
        "max": max(r["max"] for r in rows),
        "on_max": max((r["max"] for r in rows if r["blocks"] == "on-site"), default=0.0),
        "off_max": max((r["max"] for r in rows if r["blocks"] == "off-site"), default=0.0),
        "passes": all(r["mae"] <= MAE_BAR and r["max"] <= MAX_BAR for r in rows),
    }


# --------------------------------------------------------------------------- 1. grids


def _printed_grid(std: Path) -> tuple[list[int], np.ndarray] | None:
    text = std.read_text(errors="replace")
    shape = re.search(r"Num\. of grids of a-, b-, and c-axes = (.*)", text)
    origin = re.search(r"Grid_Origin\s+(\S+)\s+(\S+)\s+(\S+)", text)
    if shape is None or origin is None:
        return None
    return [int(v) for v in shape.group(1).split(",")], np.array(origin.groups(), float) * Bohr


def grid_rows(shared: Path, std_dir: Path | None, corpus: Path) -> list[dict]:
    from ase_moireh.io.openmx import read_scfout

    cases = [(p.parent.name, p, p.parent / "openmx.scfout.xz") for p in shared.glob("*/openmx.std")]
    if std_dir is not None and std_dir.is_dir():
        cases += [(p.stem, p, None) for p in std_dir.glob("*.std")]
    rows = []
    for name, std, scfout in sorted(cases):
        printed = _printed_grid(std)
        if printed is None:
            continue
        if scfout is not None:
            atoms = read_scfout(scfout).atoms
        else:
            entry = corpus / name
            path = entry / H0_OPENMX if (entry / H0_OPENMX).is_file() else entry / "hamiltonian.h5"
            atoms = read_hamiltonian(path).atoms
        given = std.parent / "openmx_in.dat"
        if not given.is_file():
            given = corpus / name / "openmx_in.dat"
        grid = OpenMXGrid.for_structure(atoms, input_species(given)[2])
        rows.append(
            {
                "run": name,
                "atoms": len(atoms),
                "printed_shape": printed[0],
                "shape": list(grid.shape),
                "origin_diff_A": float(np.abs(grid.origin - printed[1]).max()),
            }
        )
    return rows


# --------------------------------------------------------------------------- 2./3. runs


def _builder():
    from ase_moireh.overlap import bundled_overlap

    return resolve_h0(bundled_overlap().basis)


def term_rows(terms_dir: Path) -> list[dict]:
    """Every term against its term-only OpenMX build, every edge of the 6-atom runs."""
    from ase_moireh.io.openmx import read_scfout

    names = {"kin": "T", "nl": "V_NL", "vna": "V_NA", "vna_ds64": "V_NA", "vxc": "V_xc"}
    builder = _builder()
    rows = []
    for variant, term in names.items():
        for case in ("bl1x1_nosoc_s22", "bl1x1_soc_s22"):
            path = terms_dir / f"{variant}_{case}" / "openmx.scfout"
            if not path.is_file():
                continue
            run = read_scfout(path)
            ref = run.hamiltonian
            op = builder.terms(run.atoms, ref.edges, ref.spinful)[term]
            if ref.spinful and not op.spinful:
                op = spinor_lift(op)
            stats = summary(pair_stats(op, ref))
            rows.append(
                {
                    "term": term,
                    "run": f"{variant}_{case}",
                    "edges": ref.nedges,
                    "on_max": stats["on_max"],
                    "off_max": stats["off_max"],
                    "mae": float(np.abs(np.subtract(*_aligned(op, ref))).mean()),
                    "max_ref": float(np.abs(ref.values).max()),
                }
            )
            print(rows[-1], flush=True)
    return rows


def full_run_rows(runs_dir: Path) -> list[dict]:
    from ase_moireh.io.openmx import read_scfout

    builder = _builder()
    rows = []
    for case in ("bl1x1_nosoc_s22", "bl1x1_soc_s22"):
        path = runs_dir / f"full_{case}" / "openmx.scfout"
        if not path.is_file():
            continue
        run = read_scfout(path)
        ref = run.hamiltonian
        op = builder.operator(run.atoms, spinful=ref.spinful)
        assert op.nedges == ref.nedges, "default edges are not OpenMX's"
        row = {"run": f"full_{case}", "edges": ref.nedges, **summary(pair_stats(op, ref))}
        if ref.spinful:
            row["spin_parts_max"] = spin_parts(op, ref)
        rows.append(row)
        print(row, flush=True)
    return rows


# --------------------------------------------------------------------------- 3. corpus


def corpus_rows(corpus: Path, names: list[str]) -> tuple[list[dict], list[str]]:
    """Fresh double-precision H0 on OpenMX's geometry and edges of every entry with an
    ``h0_openmx.h5``; the others are pending."""
    rows, pending = [], []
    for name in names:
        entry = corpus / name
        if not (entry / H0_OPENMX).is_file():
            pending.append(name)
            continue
        ref_run = read_hamiltonian(entry / H0_OPENMX)
        ref = ref_run.hamiltonian
        basis, pseudo, cutoff = input_species(entry / "openmx_in.dat")
        builder = h0_builder(bundled_openmx_data_path(), basis, pseudo, cutoff)
        start = time.perf_counter()
        op = builder.operator(ref_run.atoms, spinful=ref.spinful)
        seconds = time.perf_counter() - start
        same_edges = op.nedges == ref.nedges and bool((op.find(ref.edges) >= 0).all())
        stats = pair_stats(op, ref)
        row = {
            "entry": name,
            "atoms": len(ref_run.atoms),
            "soc": ref.spinful,
            "same_edges": same_edges,
            "seconds": round(seconds, 1),
            "timings": {k: round(v, 1) for k, v in builder.timings.items()},
            "pairs": stats,
            **summary(stats),
        }
        if ref.spinful:
            row["spin_parts_max"] = spin_parts(op, ref)
        rows.append(row)
        print(name, summary(stats), f"{seconds:.1f} s", flush=True)
    return rows, pending


def stored_rows(corpus: Path) -> list[dict]:
    """Every stored native h0.h5 against the entry's h0_openmx.h5 (both float32)."""
    rows = []
    for entry in sorted(p for p in corpus.iterdir() if is_entry(p)):
        if not ((entry / H0_NATIVE).is_file() and (entry / H0_OPENMX).is_file()):
            continue
        ours = read_hamiltonian(entry / H0_NATIVE).hamiltonian
        ref = read_hamiltonian(entry / H0_OPENMX).hamiltonian
        rows.append({"entry": entry.name, "soc": ref.spinful, **summary(pair_stats(ours, ref))})
    return rows


# --------------------------------------------------------------------------- 4. egg-box


def _moved_edges(edges: np.ndarray, atom: int, shift: np.ndarray) -> np.ndarray:
    """The edges of the same blocks once ``atom`` sits at r + shift . cell."""
    out = edges.copy()
    out[edges[:, 0] == atom, 2:] += shift
    out[edges[:, 1] == atom, 2:] -= shift
    return out


#: (atoms moved, by which lattice vector): grid shifts of 2.083, 4.167, 10.417 and 25
#: (an integer: the control, OpenMX's grid again) steps along a for the 24-atom cells,
#: 0.75 along c, and along a and b at once
EGGBOX_MOVES = [
    (1, (1, 0, 0)),
    (2, (1, 0, 0)),
    (5, (1, 0, 0)),
    (12, (1, 0, 0)),
    (1, (0, 0, 1)),
    (3, (1, 1, 0)),
]


def eggbox_rows(corpus: Path, name: str) -> list[dict]:
    """H0 with atoms moved by lattice vectors (the same crystal; OpenMX's grid origin,
    the mean position, moves by a fraction of a grid step) against OpenMX's H0."""
    entry = corpus / name
    ref_run = read_hamiltonian(entry / H0_OPENMX)
    ref = ref_run.hamiltonian
    builder = _builder()
    grid = OpenMXGrid.for_structure(ref_run.atoms)
    rows = []
    for count, vector in EGGBOX_MOVES:
        atoms = ref_run.atoms.copy()
        edges = ref.edges.copy()
        for atom in range(count):
            atoms.positions[atom] += np.array(vector) @ atoms.cell
            edges = _moved_edges(edges, atom, np.array(vector))
        moved = OpenMXGrid.for_structure(atoms)
        fraction = (moved.origin - grid.origin) @ np.linalg.inv(grid.steps)
        # row k of the moved edges is the block of reference edge k: relabelled as such
        values = builder.operator(atoms, edges, ref.spinful).values
        relabelled = BlockOperator(ref.numbers, ref.basis, ref.edges, values, ref.spinful)
        rows.append(
            {
                "entry": name,
                "atoms_moved": count,
                "by": vector,
                "origin_shift_steps": [round(float(f), 3) for f in fraction],
                **summary(pair_stats(relabelled, ref)),
                "mae": float(np.abs(relabelled.values - ref.values).mean()),
            }
        )
        print(rows[-1], flush=True)
    return rows


# --------------------------------------------------------------------------- 5. facts


def _common(a: BlockOperator, b: BlockOperator) -> tuple[np.ndarray, np.ndarray]:
    """(numbers of a, numbers of b) over the blocks both hold."""
    found = b.find(a.edges)
    keep = np.flatnonzero(found >= 0)
    sizes = np.diff(a.offsets)[keep]
    return (
        a.values[concatenated_ranges(a.offsets[keep], sizes)],
        b.values[concatenated_ranges(b.offsets[found[keep]], sizes)],
    )


def displaced_pair(corpus: Path) -> dict:
    """|dH| and |d(H - H0)| between the displaced pair, with each H0 at hand."""
    first, second = (corpus / n for n in DISPLACED_PAIR)
    h = [read_hamiltonian(p / "hamiltonian.h5") for p in (first, second)]
    moved = h[1].atoms.positions - h[0].atoms.positions
    out = {
        "pair": list(DISPLACED_PAIR),
        "max_displacement_A": float(np.linalg.norm(moved, axis=1).max()),
        "max_component_A": float(np.abs(moved).max()),
    }
    a, b = _common(h[0].hamiltonian, h[1].hamiltonian)
    out["dH"] = {"mean": float(np.abs(b - a).mean()), "max": float(np.abs(b - a).max())}
    for label, file in (("native", H0_NATIVE), ("openmx", H0_OPENMX)):
        if not all((p / file).is_file() for p in (first, second)):
            out[f"d(H-H0) {label}"] = None
            continue
        r = []
        for run, p in zip(h, (first, second), strict=True):
            h0 = read_hamiltonian(p / file).hamiltonian
            dh = run.hamiltonian
            x, y = _common(dh, h0)
            r.append(BlockOperator(dh.numbers, dh.basis, dh.edges, x - y, dh.spinful))
        a, b = _common(r[0], r[1])
        out[f"d(H-H0) {label}"] = {
            "mean": float(np.abs(b - a).mean()),
            "max": float(np.abs(b - a).max()),
        }
    return out


def _on_site_blocks(op: BlockOperator) -> dict[str, list[np.ndarray]]:
    from ase.data import chemical_symbols

    out: dict[str, list[np.ndarray]] = {}
    for e in np.flatnonzero(_on_site(op.edges)):
        out.setdefault(chemical_symbols[op.numbers[op.edges[e, 0]]], []).append(op.block(int(e)))
    return out


#: groups of entries for the on-site spread, by name prefix ("" = all)
SPREAD_GROUPS = {"all": "", "2x2 shifted": "shift2x2_", "(2,1) twisted": "twist2-1_"}


def _spread(blocks: list[np.ndarray], slices: list[slice]) -> dict:
    """Std over atoms (eV) of the on-site blocks: of the shell levels (trace / (2l + 1)
    of every shell's diagonal block: rotation-invariant, so what varies is the
    environment, not the orientation), RMS over shells; and of every matrix element,
    RMS over the block (orientation included: the s-p_z element of a Te flips sign
    between the two Te planes of a layer)."""
    stack = np.array(blocks)
    levels = np.stack(
        [np.trace(stack[:, sl, sl], axis1=1, axis2=2) / (sl.stop - sl.start) for sl in slices],
        axis=1,
    )
    return {
        "shell_rms_std": float(np.sqrt(np.mean(levels.std(axis=0) ** 2))),
        "shell_max_std": float(levels.std(axis=0).max()),
        "element_rms_std": float(np.sqrt(np.mean(stack.std(axis=0) ** 2))),
    }


def on_site_spread(corpus: Path) -> dict:
    """The on-site spread (:func:`_spread`) of H and of H - H0 (native) over the atoms of
    every collinear entry with h0.h5, per species and group of entries."""
    per_entry = {}
    basis = None
    for entry in sorted(p for p in corpus.iterdir() if is_entry(p)):
        if not (entry / H0_NATIVE).is_file():
            continue
        h = read_hamiltonian(entry / "hamiltonian.h5").hamiltonian
        if h.spinful:
            continue
        h0 = read_hamiltonian(entry / H0_NATIVE).hamiltonian
        x, y = _common(h, h0)
        d = BlockOperator(h.numbers, h.basis, h.edges, x - y)
        per_entry[entry.name] = (_on_site_blocks(h), _on_site_blocks(d))
        basis = h.basis
    out = {"entries": len(per_entry), "groups": {}}
    for group, prefix in SPREAD_GROUPS.items():
        names = [n for n in per_entry if n.startswith(prefix)]
        rows = {}
        for s in sorted(basis or {}):
            slices = basis[s].shell_slices()
            h_blocks = [b for n in names for b in per_entry[n][0].get(s, [])]
            d_blocks = [b for n in names for b in per_entry[n][1].get(s, [])]
            if h_blocks:
                rows[s] = {
                    "atoms": len(h_blocks),
                    "H": _spread(h_blocks, slices),
                    "H - H0": _spread(d_blocks, slices),
                }
        out["groups"][group] = {"entries": len(names), "species": rows}
    return out


def sizes(corpus: Path) -> dict:
    data = bundled_openmx_data_path()
    stored = [p.stat().st_size for p in corpus.glob(f"*/{H0_NATIVE}")]
    return {
        "bundled_openmx_bytes": sum(p.stat().st_size for p in data.rglob("*.xz")),
        "stored_h0_files": len(stored),
        "stored_h0_bytes": int(sum(stored)),
        "corpus_bytes": int(sum(p.stat().st_size for p in corpus.rglob("*") if p.is_file())),
    }


# --------------------------------------------------------------------------- report


def _mev(x: float) -> str:
    return f"{x * 1e3:.4f}"


def write_markdown(result: dict, path: Path) -> None:
    lines = ["# Native zeroth-step H0 against OpenMX", ""]
    lines += [
        "Made by `benchmarks/h0_check.py` (all numbers eV unless said; meV where said).",
        f"Bars of issue 31: per-pair MAE <= {MAE_BAR * 1e3:g} meV, max <= {MAX_BAR * 1e3:g} meV.",
        "",
        "## 1. V_xc's grid against the one OpenMX printed",
        "",
        "| run | atoms | OpenMX grid | ours | max origin difference (A) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in result["grids"]:
        printed = "x".join(map(str, r["printed_shape"]))
        ours = "x".join(map(str, r["shape"]))
        lines.append(
            f"| {r['run']} | {r['atoms']} | {printed} | {ours} | {r['origin_diff_A']:.1e} |"
        )
    if result.get("terms"):
        lines += [
            "",
            "## 2. Term by term",
            "",
            "OpenMX rebuilt with one F_*_flag on (/work/openmx_terms/NOTES.md), every edge of",
            "the 6-atom runs:",
            "",
            "| term | run | edges | on-site max | off-site max | MAE | max abs ref |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in result["terms"]:
            lines.append(
                f"| {r['term']} | {r['run']} | {r['edges']} | {r['on_max']:.1e} | "
                f"{r['off_max']:.1e} | {r['mae']:.1e} | {r['max_ref']:.1f} |"
            )
    lines += ["", "## 3. Whole H0 against OpenMX's zeroth step (scf.maxIter 1)", ""]
    if result.get("full_runs"):
        lines += [
            "6-atom bilayer runs (stock OpenMX 3.9, every edge):",
            "",
            "| run | edges | on-site max | off-site max | largest pair MAE | spin parts max |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for r in result["full_runs"]:
            spin = f"{r['spin_parts_max']:.1e}" if "spin_parts_max" in r else "-"
            lines.append(
                f"| {r['run']} | {r['edges']} | {r['on_max']:.1e} | {r['off_max']:.1e} | "
                f"{r['mae_max']:.1e} | {spin} |"
            )
        lines.append("")
    lines += [
        "Corpus entries, H0 computed afresh (float64) on OpenMX's geometry (the positions in",
        "h0_openmx.h5, so OpenMX's grid) and compared with h0_openmx.h5 (float32), per pair:",
        "",
        "| entry | atoms | SOC | pair | blocks | MAE (meV) | max (meV) | max abs ref (eV) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["corpus"]:
        for p in r["pairs"]:
            lines.append(
                f"| {r['entry']} | {r['atoms']} | {'yes' if r['soc'] else 'no'} | {p['pair']} | "
                f"{p['blocks']} | {_mev(p['mae'])} | {_mev(p['max'])} | {p['max_ref']:.1f} |"
            )
    lines += [
        "",
        "| entry | same edges as OpenMX | largest pair MAE (meV) | max (meV) | spin parts max (eV) "
        "| passes | H0 seconds (T / V_NA / V_xc / V_NL) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["corpus"]:
        spin = f"{r['spin_parts_max']:.1e}" if "spin_parts_max" in r else "-"
        t = r["timings"]
        parts = " / ".join(f"{t.get(k, 0):.1f}" for k in ("T", "V_NA", "V_xc", "V_NL"))
        lines.append(
            f"| {r['entry']} | {r['same_edges']} | {_mev(r['mae_max'])} | {_mev(r['max'])} | "
            f"{spin} | {r['passes']} | {r['seconds']} ({parts}) |"
        )
    if result["pending"]:
        lines += [
            "",
            "Pending (no h0_openmx.h5 yet: the OpenMX zeroth-step campaign has not reached "
            f"them): {', '.join(result['pending'])}.",
        ]
    stored = result["stored"]
    if stored:
        worst = max(stored, key=lambda r: r["max"])
        lines += [
            "",
            f"Stored native h0.h5 against h0_openmx.h5 (both float32), {len(stored)} entries: "
            f"largest pair MAE {_mev(max(r['mae_max'] for r in stored))} meV, max "
            f"{_mev(worst['max'])} meV ({worst['entry']}); all pass: "
            f"{all(r['passes'] for r in stored)}.",
        ]
    lines += [
        "",
        "## 4. Egg-box: a grid other than OpenMX's",
        "",
        "Atoms moved by lattice vectors (the same crystal); OpenMX's grid origin (the mean",
        "position) then moves by a fraction of a step against the atoms. MAE over all",
        "numbers, max per block kind:",
        "",
        "| entry | atoms moved | by | origin shift (steps) | on-site max (meV) "
        "| off-site max (meV) | MAE (meV) | passes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["eggbox"]:
        lines.append(
            f"| {r['entry']} | {r['atoms_moved']} | {r['by']} | {r['origin_shift_steps']} | "
            f"{_mev(r['on_max'])} | {_mev(r['off_max'])} | {_mev(r['mae'])} | {r['passes']} |"
        )
    facts = result["facts"]
    pair = facts["displaced_pair"]
    lines += [
        "",
        "## 5. Corpus facts with the native H0",
        "",
        f"Displaced pair {' / '.join(pair['pair'])} (atoms moved up to "
        f"{pair['max_component_A']:.3f} A per component, {pair['max_displacement_A']:.3f} A "
        "in length), over the blocks both hold:",
        "",
        "| quantity | mean (meV) | max (meV) |",
        "| --- | --- | --- |",
        f"| dH | {_mev(pair['dH']['mean'])} | {_mev(pair['dH']['max'])} |",
    ]
    for label in ("native", "openmx"):
        value = pair.get(f"d(H-H0) {label}")
        if value:
            lines.append(
                f"| d(H - H0), {label} H0 | {_mev(value['mean'])} | {_mev(value['max'])} |"
            )
    spread = facts["on_site_spread"]
    lines += [
        "",
        f"On-site spread over the atoms of {spread['entries']} collinear entries (std over",
        "atoms, meV): of the shell levels (trace / (2l + 1) of each shell's diagonal block,",
        "rotation-invariant), RMS over shells (largest shell's); and of every matrix element,",
        "RMS over the block (orientation included: a Te's s-p_z element flips sign between",
        "the Te planes, 6 eV std in H, none in H - H0):",
        "",
        "| entries | species | atoms | H levels | H - H0 levels | H elements | H - H0 elements |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for group, data in spread["groups"].items():
        for s, row in data["species"].items():
            h, d = row["H"], row["H - H0"]
            lines.append(
                f"| {group} ({data['entries']}) | {s} | {row['atoms']} | "
                f"{h['shell_rms_std'] * 1e3:.1f} ({h['shell_max_std'] * 1e3:.1f}) | "
                f"{d['shell_rms_std'] * 1e3:.1f} ({d['shell_max_std'] * 1e3:.1f}) | "
                f"{h['element_rms_std'] * 1e3:.1f} | {d['element_rms_std'] * 1e3:.1f} |"
            )
    size = result["sizes"]
    lines += [
        "",
        "## Sizes and resources",
        "",
        f"- bundled OpenMX files (ase_moireh/data/openmx, xz): {size['bundled_openmx_bytes']:,} "
        "bytes",
        f"- stored native H0: {size['stored_h0_files']} h0.h5 files, "
        f"{size['stored_h0_bytes'] / 1e6:.1f} MB; corpus {size['corpus_bytes'] / 1e6:.1f} MB",
        f"- this benchmark: {result['seconds']:.0f} s, peak RSS {result['peak_rss_gb']:.2f} GB "
        "(machine shared with an OpenMX campaign and a training run)",
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "corpus")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared/data/openmx")
    parser.add_argument("--terms", type=Path, default=Path("/work/openmx_terms/runs"))
    parser.add_argument("--runs", type=Path, default=Path("/work/h0dev/runs"))
    parser.add_argument("--std", type=Path, default=Path("/work/h0dev/std"))
    parser.add_argument("--others", nargs="*", default=OTHERS)
    args = parser.parse_args()
    start = time.time()
    result = {"grids": grid_rows(args.shared, args.std, args.corpus)}
    print("grids done", flush=True)
    result["terms"] = term_rows(args.terms) if args.terms.is_dir() else []
    result["full_runs"] = full_run_rows(args.runs) if args.runs.is_dir() else []
    result["corpus"], result["pending"] = corpus_rows(args.corpus, HOLDOUT + args.others)
    result["stored"] = stored_rows(args.corpus)
    result["eggbox"] = eggbox_rows(args.corpus, DISPLACED_PAIR[0])
    result["facts"] = {
        "displaced_pair": displaced_pair(args.corpus),
        "on_site_spread": on_site_spread(args.corpus),
    }
    result["sizes"] = sizes(args.corpus)
    result["seconds"] = time.time() - start
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "h0.json").write_text(json.dumps(result, indent=1) + "\n")
    write_markdown(result, RESULTS / "h0.md")
    print(f"wrote {RESULTS / 'h0.md'}")


if __name__ == "__main__":
    main()
