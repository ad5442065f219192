"""The near-gap band loss: it reads the DFT H as its own levels, and the trainer uses it."""

import csv
import json

import numpy as np
import pytest
import torch

from ase_moireh.io.dataset import read_structure, write_dftio
from ase_moireh.kpoints import extrema_kpoints
from ase_moireh.model.graph import MOTE2_CUTOFF, build_graph, graph_edges
from ase_moireh.model.soc import SOC_CORRECTION
from ase_moireh.overlap import resolve_overlap, with_overlap
from ase_moireh.tightbinding import ElectronicStructure, TightBinding
from ase_moireh.training.band_loss import BandLossError, band_probe
from ase_moireh.training.trainer import TrainConfig, train
from shared_data import converted, require

TINY = {"multiplicity": 2, "num_layers": 1, "radial_hidden": 8, "num_radial": 8}
WINDOW = 1.0  # eV: at least two levels at every k of the 1x1 cells


def exact_overlap(structure: ElectronicStructure):
    h = structure.hamiltonian
    source = resolve_overlap(h.basis, structure.extra["openmx_basis"])
    return source, source.operator(structure.atoms, h.edges)


@pytest.mark.parametrize("case", ["bl1x1_nosoc_s00", "bl1x1_soc_s00"])
def test_an_error_proportional_to_h_gives_the_squared_levels(case):
    """dH = eps H: C^dagger dH C = eps diag(E) for S-orthonormal eigenvectors C, so the
    loss is eps^2 sum(E^2) / n per k over the n watched levels (an independent dense
    diagonalisation here). A wrong row, spin half or phase in the probe's layout would
    leave off-diagonal terms and change the number."""
    s = converted(case)
    source, overlap = exact_overlap(s)
    edges = graph_edges(s.atoms, MOTE2_CUTOFF)
    graph = build_graph(s.atoms, ["Mo", "Te"], MOTE2_CUTOFF, s.hamiltonian, torch.float64)
    probe = band_probe(s, edges, source, WINDOW, torch.float64)
    eps = 0.01
    loss = float(probe.loss(eps * graph.y))
    nocc = int(round(s.extra["n_electrons"])) // (1 if s.spinful else 2)
    tb = TightBinding(s.hamiltonian, overlap)
    levels = [tb.eigh(k) for k in extrema_kpoints(s.atoms.cell)]
    vbm = max(w[nocc - 1] for w in levels)
    cbm = min(w[nocc] for w in levels)
    watched = [w[(w >= vbm - WINDOW) & (w <= cbm + WINDOW)] for w in levels]
    assert min(len(w) for w in watched) >= 2
    expected = np.mean([eps**2 * np.sum(w**2) / len(w) for w in watched])
    assert loss == pytest.approx(expected, rel=1e-9)
    assert float(probe.loss(torch.zeros_like(graph.y))) == 0.0


@pytest.mark.slow
def test_training_with_the_band_loss_logs_it_and_reports_it(tmp_path):
    cases = ["bl1x1_nosoc_s00", "bl1x1_nosoc_s22", "bl1x1_nosoc_s44"]
    require(*cases)
    for c in cases:
        write_dftio(converted(c), tmp_path / c)
    cfg = TrainConfig(
        datasets=[str(tmp_path / c) for c in cases[:2]],
        validation_datasets=[str(tmp_path / cases[2])],
        out=str(tmp_path / "run"),
        epochs=2,
        float64=True,
        model=dict(TINY),
        band_weight=0.1,
    )
    train(cfg, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    band = [float(r["val_band"]) for r in rows]
    assert all(b > 0 for b in band)
    combined = float(rows[-1]["val_mse"]) + 0.1 * band[-1]
    assert float(rows[-1]["val_loss"]) == pytest.approx(combined)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["parts"]["validation"]["band_rms_meV"] == pytest.approx(
        np.sqrt(band[-1]) * 1e3, rel=1e-6
    )


def test_a_dh_so_target_or_a_run_without_electron_count_is_refused(tmp_path):
    soc, col = converted("bl1x1_soc_s00"), converted("bl1x1_nosoc_s00")
    source, _ = exact_overlap(col)
    # what correction_structure makes of SOC / collinear twins: H is dH_SO
    extra = {**soc.extra, "target": SOC_CORRECTION}
    delta = ElectronicStructure(soc.atoms, soc.hamiltonian, None, source="delta", extra=extra)
    edges = graph_edges(soc.atoms, MOTE2_CUTOFF)
    with pytest.raises(BandLossError, match="dH_SO"):
        band_probe(delta, edges, source)
    # the target's kind travels with the dataset
    write_dftio(with_overlap(delta), tmp_path / "delta")
    with pytest.raises(BandLossError, match="dH_SO"):
        band_probe(read_structure(tmp_path / "delta"), edges, source)
    anonymous = ElectronicStructure(col.atoms, col.hamiltonian, None, source="nameless.h5")
    with pytest.raises(BandLossError, match="nameless.h5: no electron count"):
        band_probe(anonymous, edges, source)


def test_a_dh_target_watches_the_levels_of_h0_plus_dh():
    """A dH = H - H0 target (real corpus entry and its native H0): the probe's levels are
    those of H, so any error vector costs what it costs on the H target itself. Levels of
    dH alone (no bands near a gap) would give another number; without H0 it is refused."""
    from pathlib import Path

    from ase_moireh.io.corpus import H0_NATIVE, read_entry, read_hamiltonian
    from ase_moireh.model.residual import residual_structure

    entry = Path(__file__).parents[1] / "data" / "corpus" / "shift2x2_009"
    run, h0 = read_entry(entry), read_hamiltonian(entry / H0_NATIVE)
    target = residual_structure(run, h0)
    source, _ = exact_overlap(run)
    edges = graph_edges(run.atoms, MOTE2_CUTOFF)
    species = ["Mo", "Te"]
    y = build_graph(run.atoms, species, MOTE2_CUTOFF, target.hamiltonian, torch.float64).y
    y_h = build_graph(run.atoms, species, MOTE2_CUTOFF, run.hamiltonian, torch.float64).y
    assert y.shape == y_h.shape  # one layout: an error of dH is the same error of H
    dy = 1e-3 * torch.as_tensor(np.random.default_rng(0).normal(size=y.shape[0]))
    on_h = float(band_probe(run, edges, source, WINDOW, torch.float64).loss(dy))
    on_dh = band_probe(target, edges, source, WINDOW, torch.float64, h0.hamiltonian)
    assert float(on_dh.loss(dy)) == pytest.approx(on_h, rel=1e-9)
    with pytest.raises(BandLossError, match="dH target needs its H0"):
        band_probe(target, edges, source)
