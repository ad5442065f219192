"""Before/after of the SO(2) edge-frame convolution: the same SOC model (multiplicity 8,
two layers, the bundled models' size) with full tensor products ("tp") and with SO(2)
maps ("so2").

    python benchmarks/convolution.py [--threads 2] [--repeat 3]

Per twisted cell: the network's features (the convolutions), the whole forward pass
(features + blocks + Hermitian symmetrisation) and one training step (forward, MSE,
backward) on the 1x1 bilayer. Best of ``--repeat``, untrained weights (the cost does
not depend on their values). Writes benchmarks/results/convolution.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from ase.build import mx2

from ase_moireh.build import twisted_bilayer
from ase_moireh.model.graph import build_graph
from ase_moireh.model.network import HamiltonianModel, ModelConfig

CELLS = [(2, 1), (4, 3), (7, 6)]
KINDS = ("tp", "so2")


def best_of(repeat: int, work) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def model_of(kind: str) -> HamiltonianModel:
    torch.manual_seed(0)
    config = ModelConfig(
        species=["Mo", "Te"],
        basis={"Mo": "3s2p1d", "Te": "3s2p2d"},
        spinful=True,
        multiplicity=8,
        convolution=kind,
    )
    return HamiltonianModel(config)


def training_step(model: HamiltonianModel, data) -> None:
    model.zero_grad()
    loss = sum(pred.pow(2).mean() for _, pred in model(data).values())
    loss.backward()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = {kind: model_of(kind) for kind in KINDS}
    rows = []
    for n, m in CELLS:
        atoms = twisted_bilayer(n, m)
        data = build_graph(atoms, ["Mo", "Te"], models["tp"].config.cutoff, dtype=torch.float32)
        for kind, model in models.items():
            with torch.no_grad():
                features = best_of(args.repeat, lambda: model.features(data))  # noqa: B023
                forward = best_of(args.repeat, lambda: model(data))  # noqa: B023
            rows.append(
                {
                    "cell": f"({n},{m})",
                    "atoms": len(atoms),
                    "kind": kind,
                    "features_s": round(features, 3),
                    "forward_s": round(forward, 3),
                }
            )
            print(rows[-1])
    bilayer = mx2("MoTe2", vacuum=10.0)
    bilayer = bilayer + bilayer.copy()
    bilayer.positions[3:, 2] += 7.0
    data = build_graph(bilayer, ["Mo", "Te"], models["tp"].config.cutoff, dtype=torch.float32)
    steps = {
        kind: round(best_of(args.repeat, lambda: training_step(model, data)), 3)  # noqa: B023
        for kind, model in models.items()
    }
    print("training step on the 1x1 bilayer (s):", steps)
    params = {kind: sum(p.numel() for p in model.parameters()) for kind, model in models.items()}
    out = Path(__file__).parent / "results" / "convolution.json"
    out.write_text(
        json.dumps(
            {"threads": args.threads, "parameters": params, "rows": rows, "training_step_s": steps},
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
