"""Twisted nanoribbons streamed to disk: atoms/s, peak memory, and edge states.

    python benchmarks/ribbon.py [--stream 38,37,5 ...] [--edge 4,3,4] [--threads 2]
                                [--scratch DIR]

``--stream N,M,R``: the (N, M) ribbon R moire cells across, predicted by the bundled SOC
ensemble (H_col, dH_SO, spread) and exact S, streamed to ``DIR/ribbon_N_M_R.h5`` in
single precision (``MoireHCalculator.write_operators``). (38,37) is the 0.88 deg cell
(25,314 atoms): 5 across is ~127 k atoms, the paper's ribbon is 10 across (253 k).

``--edge N,M,R``: ``moireh ribbon N M --repeats R --write ...`` with the band solve:
levels near the gap along the ribbon and each state's weight on the two edges (figure
benchmarks/results/ribbon_edge_states.png).

Every ribbon runs in its own process, so its peak resident memory (VmHWM) is its own.
Files are deleted after the measurement (they are tens of GB). Writes
benchmarks/results/ribbon.json and ribbon.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
PAPER = "253,140 atoms (8.8 M orbitals) inferred on a 2 TB node; band solve 764 min, 2.1 TB"


def _cell(text: str) -> tuple[int, int, int]:
    n, m, r = (int(x) for x in text.split(","))
    return n, m, r


def stream_one(n: int, m: int, repeats: int, path: Path, threads: int) -> dict:
    """Runs in the child process: one ribbon streamed, its report as a dict."""
    import torch

    from ase_moireh.build import nanoribbon, twisted_bilayer
    from ase_moireh.calculator import MoireHCalculator

    torch.set_num_threads(threads)
    ribbon = nanoribbon(twisted_bilayer(n, m), repeats=repeats)
    ribbon.calc = MoireHCalculator(soc=True)
    report = ribbon.calc.write_operators(path)
    return {"n": n, "m": m, "repeats": repeats, **report.to_dict(), "threads": threads}


def edge_states(
    n: int, m: int, repeats: int, scratch: Path, nk: int, nbands: int, sigma: float | None
) -> dict:
    """The band solve of a streamed ribbon through the command a user runs (its progress
    bars pass through to this process's stderr); ``sigma``: an absolute energy inside
    the gap (eV), which spares the periodic cell's gap search."""
    path = scratch / f"edge_{n}_{m}_{repeats}.h5"
    figure = RESULTS / "ribbon_edge_states.png"
    data = scratch / "edge_states.json"
    command = [str(Path(sys.executable).with_name("moireh")), "-v", "ribbon", str(n), str(m)]
    command += ["--repeats", str(repeats), "--write", str(path), "--nk", str(nk)]
    command += ["--nbands", str(nbands), "-o", str(figure), "--json", str(data)]
    if sigma is not None:
        command += ["--sigma", str(sigma), "--absolute-sigma"]
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    path.unlink(missing_ok=True)
    if done.returncode:
        raise SystemExit(f"edge-state run failed (its messages are above):\n{done.stdout}")
    bands = json.loads(data.read_text())
    edge = [
        max(lo, up)
        for row_lo, row_up in zip(bands["lower"], bands["upper"], strict=True)
        for lo, up in zip(row_lo, row_up, strict=True)
    ]
    return {
        "n": n,
        "m": m,
        "repeats": repeats,
        "sigma_eV": sigma,
        "seconds": round(time.perf_counter() - start, 1),
        "peak_rss_GB": round(_children_peak_gb(), 2),
        "edge_atom_fraction": round(_edge_atom_fraction(n, m, repeats), 3),
        "k_points": nk,
        "levels": len(edge),
        "states_over_half_on_one_edge": sum(w > 0.5 for w in edge),
        "mean_weight_on_its_edge": round(sum(edge) / len(edge), 3),
        "output": done.stdout.strip().splitlines(),
    }


def _children_peak_gb() -> float:
    """Peak resident memory of the largest finished child process (Linux: KiB)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20


def _edge_atom_fraction(n: int, m: int, repeats: int) -> float:
    """Share of the ribbon's atoms that count as edge atoms (the weights' reference)."""
    from ase_moireh.build import nanoribbon, twisted_bilayer

    side = nanoribbon(twisted_bilayer(n, m), repeats=repeats).arrays["edge_side"]
    return float((side != 0).mean())


def _child(args) -> None:
    n, m, r = _cell(args.one)
    row = stream_one(n, m, r, Path(args.scratch) / f"ribbon_{n}_{m}_{r}.h5", args.threads)
    print("ROW " + json.dumps(row))


def _markdown(rows: list[dict], edge: dict | None) -> str:
    lines = [
        "# Twisted nanoribbons streamed to disk (`benchmarks/ribbon.py`)",
        "",
        "Bundled SOC ensemble (H_col and dH_SO, two members each, with spread) and exact S,",
        "streamed to HDF5 in single precision with `MoireHCalculator.write_operators`",
        "(`moireh ribbon N M --repeats R --write FILE --no-bands`). One process per ribbon;",
        "peak memory is its VmHWM. Paper: " + PAPER + ".",
        "",
        "| ribbon | atoms | orbitals (SOC) | blocks | file (GB) | time (s) | atoms/s "
        "| peak memory (GB) | threads |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| ({r['n']},{r['m']}) x {r['repeats']} | {r['atoms']:,} | {r['orbitals']:,} "
            f"| {r['blocks']:,} | {r['file_GB']} | {r['seconds']:.0f} | {r['atoms_per_second']} "
            f"| {r['peak_rss_GB']} | {r['threads']} |"
        )
    if edge:
        lines += [
            "",
            f"## Edge states: ({edge['n']},{edge['m']}) ribbon, {edge['repeats']} cells across",
            "",
            f"`moireh ribbon` with the band solve read back from the streamed file: "
            f"{edge['levels']} levels ({edge['k_points']} k-points) nearest "
            f"{edge['sigma_eV']:+.3f} eV, inside the bulk gap (the periodic (2,1) and (3,2) "
            "cells with the bundled model, `band_edges` over Gamma, M, K: VBM -4.63 eV, CBM "
            "-3.72 eV, mid-gap -4.19 / -4.17 eV; given as "
            "`--edge-sigma` so the periodic cell's gap search is skipped). "
            f"Edge atoms are {100 * edge['edge_atom_fraction']:.1f}% of the ribbon; "
            f"{edge['states_over_half_on_one_edge']} of the levels have more than half "
            "their weight on one edge (on average "
            f"{100 * edge['mean_weight_on_its_edge']:.0f}%): in-gap states of the cut "
            f"edges. {edge['seconds']:.0f} s in all, peak memory {edge['peak_rss_GB']} GB, "
            f"{edge['threads']} thread(s). Figure: `ribbon_edge_states.png`.",
            "",
            "```",
            *edge["output"],
            "```",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", nargs="*", default=["9,8,3", "38,37,5"])
    parser.add_argument("--edge", default="4,3,4", help="N,M,R of the band solve ('' none)")
    parser.add_argument("--edge-nk", type=int, default=6, help="k-points of the band solve")
    parser.add_argument("--edge-nbands", type=int, default=16, help="levels per k-point")
    parser.add_argument("--edge-sigma", type=float, help="absolute eV inside the gap")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scratch", default="/tmp")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child process: one ribbon
    args = parser.parse_args()
    if args.one:
        return _child(args)
    out = RESULTS / "ribbon.json"
    saved = json.loads(out.read_text()) if out.exists() else {"rows": [], "edge": None}
    rows = saved["rows"]
    for text in args.stream:
        n, m, r = _cell(text)
        command = [sys.executable, __file__, "--one", text, "--scratch", args.scratch]
        done = subprocess.run(
            [*command, "--threads", str(args.threads)], capture_output=True, text=True, check=False
        )
        Path(args.scratch, f"ribbon_{n}_{m}_{r}.h5").unlink(missing_ok=True)
        found = [x for x in done.stdout.splitlines() if x.startswith("ROW ")]
        if done.returncode or not found:
            raise SystemExit(f"ribbon {text} failed:\n{done.stderr[-2000:]}")
        row = json.loads(found[-1][4:])
        rows = [x for x in rows if (x["n"], x["m"], x["repeats"]) != (n, m, r)] + [row]
        print(json.dumps(row))
    rows.sort(key=lambda x: x["atoms"])
    edge = saved["edge"]
    if args.edge:
        edge = edge_states(
            *_cell(args.edge),
            Path(args.scratch),
            args.edge_nk,
            args.edge_nbands,
            args.edge_sigma,
        ) | {"threads": int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))}
    out.write_text(json.dumps({"rows": rows, "edge": edge}, indent=1) + "\n")
    (RESULTS / "ribbon.md").write_text(_markdown(rows, edge))
    print(f"wrote {out} and ribbon.md")


if __name__ == "__main__":
    main()
