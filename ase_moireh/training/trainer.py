"""Training: pretrain and fine-tune (transfer learning) the Hamiltonian model.

What the paper did: Adam; ReduceLROnPlateau (factor 0.5, cooldown, threshold 0.05,
patience); revert to the best weights when the validation loss stays above 2x the best
for 20 epochs (then lr x 0.8); a seeded 80/15/5 split; batch size one structure; MSE
over block elements (eV^2, :mod:`ase_moireh.training.losses`), plus (``band_weight`` >
0, our addition) the near-gap band loss of :mod:`ase_moireh.training.band_loss`.
Fine-tuning loads all weights of a pretrained model, starts a fresh Adam at a lower
learning rate and may freeze chosen modules.

A run writes into its output folder: ``checkpoint.pt`` (every epoch, atomically; a
killed run resumes from it with optimiser and scheduler state), ``log.csv``,
``summary.json``, ``loss.png`` and the final ``model.pt``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ase_moireh.domain import ModelDomain, domain_of, union
from ase_moireh.io.dataset import read_structure
from ase_moireh.model.graph import MOTE2_CUTOFF, build_graph, graph_edges
from ase_moireh.model.io import ModelBundle, atomic_torch_save, load_bundle, save_bundle
from ase_moireh.model.network import HamiltonianModel, ModelConfig, new_model
from ase_moireh.model.partition import Partition
from ase_moireh.model.residual import RESIDUAL, TARGET, training_target
from ase_moireh.overlap import OverlapError, TwoCentreOverlap, resolve_overlap
from ase_moireh.plotting import new_figure, save_figure
from ase_moireh.tightbinding import ElectronicStructure
from ase_moireh.training.band_loss import BAND_WINDOW, BandProbe, band_probe
from ase_moireh.training.losses import evaluate, gather_targets, structure_loss

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """A training run; read from JSON or TOML by :func:`load_train_config`."""

    datasets: list[str]  # dftio structure folders (globs allowed)
    out: str = "moireh-train"
    epochs: int = 100
    lr: float = 2e-3
    seed: int = 0
    float64: bool = False
    split: tuple[float, float, float] = (0.8, 0.15, 0.05)
    lr_factor: float = 0.5
    lr_patience: int = 60
    lr_cooldown: int = 40
    lr_threshold: float = 0.05
    #: "plateau" (the paper's ReduceLROnPlateau above) or "cosine": lr falls from ``lr``
    #: to ``lr * lr_min_factor`` along a half cosine over ``epochs``, for CPU budgets too
    #: short for the plateau rule ever to fire
    lr_schedule: str = "plateau"
    lr_min_factor: float = 0.02
    revert_ratio: float = 2.0
    revert_epochs: int = 20
    revert_lr_factor: float = 0.8
    freeze: list[str] = field(default_factory=list)  # parameter-name prefixes
    #: named validation / test structures: when either is given, ``datasets`` are all
    #: trained on and ``split`` is unused (a corpus's fixed splits)
    validation_datasets: list[str] = field(default_factory=list)
    test_datasets: list[str] = field(default_factory=list)
    model: dict = field(default_factory=dict)  # ModelConfig fields (multiplicity, ...)
    partition: dict | None = None  # {"pairs": ["Mo-Te"], "shells": "same"}: one share
    pao_dir: str | None = None  # .pao files of a basis other than the bundled MoTe2 one
    device: str = "cpu"  # torch device ("cuda" where present)
    #: weight of the near-gap band loss (:mod:`.band_loss`) beside the element MSE;
    #: 0 trains on elements alone (dH_SO targets must: they have no bands)
    band_weight: float = 0.0
    band_window: float = BAND_WINDOW  # eV beyond the band edges
    #: weight of on-site blocks' squared errors in the element MSE. An atom has one
    #: on-site block among ~55, so at 1 they are underfit (round 3: 29 meV mean on-site
    #: diagonal error on a training cell against a 4 meV overall MAE), yet they set
    #: the levels near the gap
    onsite_weight: float = 1.0
    #: weight of the squared errors of elements with a semicore orbital
    #: (:data:`ase_moireh.basis.SEMICORE_SHELLS`): their on-site errors are the largest
    #: (215 meV, Mo 4s) but leave the bands near the gap unchanged, while the valence
    #: shells' on-site energies set them (benchmarks/results/error_anatomy.md)
    semicore_weight: float = 1.0


def load_train_config(path: str | os.PathLike) -> TrainConfig:
    path = Path(path)
    try:
        text = path.read_text()
        if path.suffix == ".toml":
            import tomllib

            raw = tomllib.loads(text)
        else:
            raw = json.loads(text)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read training config ({err})") from None
    base = path.parent
    for key in ("datasets", "validation_datasets", "test_datasets"):
        raw[key] = [str(base / p) if not Path(p).is_absolute() else p for p in raw.get(key, [])]
    for key in ("out", "pao_dir"):
        if raw.get(key) is not None and not Path(raw[key]).is_absolute():
            raw[key] = str(base / raw[key])
    try:
        config = TrainConfig(**raw)
    except TypeError as err:
        raise ValueError(f"{path}: {err}") from None
    config.split = tuple(config.split)
    return config


def expand_datasets(patterns: list[str]) -> list[Path]:
    """Folders named directly or by glob, sorted for reproducibility."""
    found: list[Path] = []
    for pattern in patterns:
        p = Path(pattern)
        matches = sorted(p.parent.glob(p.name)) if any(c in p.name for c in "*?[") else [p]
        found += [m for m in matches if m.is_dir()]
    if not found:
        raise ValueError(f"no dataset folders match {patterns}")
    return found


def refuse_holdout(paths: list[Path]) -> None:
    """No training may see a corpus entry its manifest holds out (``split: holdout``):
    those entries are the honest test of what users bring."""
    from ase_moireh.io.corpus import load_manifest

    manifests: dict[Path, dict] = {}
    for path in paths:
        corpus = path.resolve().parent
        if corpus not in manifests:
            manifests[corpus] = load_manifest(corpus)
        entry = manifests[corpus].get(path.name)
        if entry is not None and entry.split == "holdout":
            raise ValueError(f"{path}: a holdout entry of the corpus; no training may see it")


def training_parts(config: TrainConfig) -> tuple[list[Path], tuple[list, list, list]]:
    """Folders to load and the (train, validation, test) indices into them: the named
    validation / test sets when given, else a seeded split of ``datasets``."""
    paths = expand_datasets(config.datasets)
    refuse_holdout(paths)
    if not (config.validation_datasets or config.test_datasets):
        return paths, split_indices(len(paths), config.split, config.seed)
    val = expand_datasets(config.validation_datasets) if config.validation_datasets else []
    test = expand_datasets(config.test_datasets) if config.test_datasets else []
    refuse_holdout(val)
    overlap = {p.resolve() for p in paths} & {p.resolve() for p in [*val, *test]}
    if overlap:
        raise ValueError(f"in training and validation/test at once: {sorted(map(str, overlap))}")
    n, m = len(paths), len(val)
    return [*paths, *val, *test], (
        list(range(n)),
        list(range(n, n + m)),
        list(range(n + m, n + m + len(test))),
    )


def split_indices(n: int, fractions, seed: int) -> tuple[list[int], list[int], list[int]]:
    """Seeded train/validation/test split; with very few structures every part that can
    be non-empty is (at least one training structure)."""
    order = list(np.random.default_rng(seed).permutation(n))
    n_val = max(1, round(fractions[1] * n)) if n >= 2 else 0
    n_test = max(1, round(fractions[2] * n)) if n >= 3 and fractions[2] > 0 else 0
    n_train = n - n_val - n_test
    return order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]


# --------------------------------------------------------------------------- model set-up


def default_model_config(structures: list[ElectronicStructure], **overrides) -> ModelConfig:
    """Species, basis and spin from the data; average neighbour count from the graphs."""
    first = structures[0].hamiltonian
    species = sorted({sym for s in structures for sym in s.atoms.get_chemical_symbols()})
    spinful = first.spinful
    if any(s.spinful != spinful for s in structures):
        raise ValueError("datasets mix spinful and spinless Hamiltonians")
    cutoff = overrides.pop("cutoff", MOTE2_CUTOFF)
    degrees = [len(graph_edges(s.atoms, cutoff)) / len(s.atoms) - 1 for s in structures]
    return ModelConfig(
        species=species,
        basis={k: v for k, v in first.basis.to_dftio().items() if k in species},
        spinful=spinful,
        cutoff=cutoff,
        avg_neighbors=float(np.mean(degrees)),
        **overrides,
    )


@torch.no_grad()
def init_statistics(model: HamiltonianModel, graphs) -> None:
    """Per block key scale and shift from the training targets in irreps space."""
    per_key: dict[str, list[torch.Tensor]] = {}
    for g in graphs:
        groups = model.edge_groups(g)
        for key, edges in groups.items():
            target = gather_targets(g, edges)
            if target is None:
                continue
            per_key.setdefault(key, []).append(model.to_irreps(key, target))
    for key, chunks in per_key.items():
        model.scale_shift[key].set_statistics(torch.cat(chunks))
    if model.config.h0_features:
        model.set_h0_statistics(graphs)


# --------------------------------------------------------------------------- the loop


@dataclass
class RunState:
    epoch: int = 0
    best_val: float = math.inf
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # numpy randomness goes through seeded default_rng


def load_structures(paths: list[Path]) -> list[ElectronicStructure]:
    return [read_structure(p) for p in tqdm(paths, desc="load", unit="structure", leave=False)]


def _make_graphs(model_config: ModelConfig, structures, dtype, overlap=None, h0s=None):
    """Graphs with targets; a long-range model's also carry the exact S of every edge,
    the S its bundle computes at prediction (:attr:`HamiltonianModel.overlap_source`);
    an ``h0_features`` model's the H0 of every edge (``h0s``, one per structure)."""
    if model_config.long_range and overlap is None:
        raise ValueError(
            "long_range needs the exact overlap S (PAO radial functions: pao_dir) of the basis"
        )
    if model_config.h0_features and h0s is None:
        raise ValueError("h0_features needs the H0 of every structure")
    s_source = overlap if model_config.long_range else None
    h0s = h0s if model_config.h0_features else [None] * len(structures)
    return [
        build_graph(
            s.atoms, model_config.species, model_config.cutoff, s.hamiltonian, dtype, s_source, h0
        )
        for s, h0 in zip(structures, h0s, strict=True)
    ]


def training_h0(path: Path, structure: ElectronicStructure):
    """The H0 of the training folder ``path`` (what a model with ``h0_features`` reads,
    and what the band loss of a dH target adds back): its ``h0.h5`` (corpus format,
    :func:`ase_moireh.io.corpus.read_hamiltonian`; a corpus entry's native H0, which
    ``examples/train_corpus.py`` copies beside the dH folders it writes), checked to be
    of the same structure."""
    from ase_moireh.io.corpus import H0_NATIVE, read_hamiltonian
    from ase_moireh.model.soc import check_same_structure

    file = Path(path) / H0_NATIVE
    if not file.is_file():
        raise ValueError(f"{path}: needs the structure's H0 as {H0_NATIVE}, none there")
    h0 = read_hamiltonian(file).hamiltonian
    check_same_structure(structure.hamiltonian, h0, f"{path}, its {H0_NATIVE}")
    return h0


@dataclass
class _Setup:
    """Everything a run trains on, built before the first epoch."""

    paths: list[Path]
    structures: list[ElectronicStructure]
    parts: tuple[list[int], list[int], list[int]]  # train, validation, test indices
    model: HamiltonianModel
    graphs: list
    overlap: TwoCentreOverlap | None
    base: ModelBundle | None
    probes: list[BandProbe | None]  # per graph: near-gap states (train and validation)


def _setup(config: TrainConfig, pretrained: str | os.PathLike | None, member: int = 0) -> _Setup:
    """Data, split, model (fresh or pretrained), graphs and the overlap the model carries
    (resolved now, so a missing basis file fails before hours of training)."""
    dtype = torch.float64 if config.float64 else torch.float32
    paths, parts = training_parts(config)
    structures = load_structures(paths)
    log.info("%d structures: %d train, %d validation, %d test", len(paths), *map(len, parts))
    training_target([s.extra for s in structures])  # refuse mixed targets before training
    base = load_bundle(pretrained, dtype) if pretrained else None
    if base is not None:
        model_config, overlap = base.config, base.overlap
    else:
        model_config = default_model_config(structures, **config.model)
        overlap = training_overlap(model_config, structures, config.pao_dir)
    if config.partition is not None:
        Partition.from_dict(config.partition)  # validate early
        model_config.extra = {**model_config.extra, "partition": config.partition}
    model = new_model(model_config, dtype).to(config.device)
    h0s = None
    if model_config.h0_features:
        h0s = [training_h0(p, s) for p, s in zip(paths, structures, strict=True)]
    graphs = _make_graphs(model_config, structures, dtype, overlap, h0s)
    del h0s
    graphs = [g.to(config.device) for g in graphs]
    if model_config.long_range:
        model.attach_overlap(overlap)
    if base is not None:
        model.load_state_dict(base.models[member % len(base.models)].state_dict())
    else:
        init_statistics(model, [graphs[k] for k in parts[0]])
    for name, p in model.named_parameters():
        if any(name.startswith(prefix) for prefix in config.freeze):
            p.requires_grad_(False)
    probes = _band_probes(config, model_config, paths, structures, parts, overlap, dtype)
    return _Setup(paths, structures, parts, model, graphs, overlap, base, probes)


def _band_probes(config, model_config, paths, structures, parts, overlap, dtype) -> list:
    """Band-loss probes of the training and validation structures (none when
    ``band_weight`` is 0); a dH target's levels are those of H0 + dH, its H0 read as
    :func:`training_h0` does."""
    probes: list[BandProbe | None] = [None] * len(structures)
    if config.band_weight <= 0:
        return probes
    if config.partition is not None:
        raise ValueError("band_weight needs whole blocks: not with a partition share")
    if overlap is None:
        raise ValueError("band_weight needs the exact overlap (no PAO radial functions)")
    chosen = parts[0] + parts[1]
    for k in tqdm(chosen, desc="band probes", unit="structure", leave=False):
        edges = graph_edges(structures[k].atoms, model_config.cutoff)
        residual = structures[k].extra.get(TARGET) == RESIDUAL
        h0 = training_h0(paths[k], structures[k]) if residual else None
        probe = band_probe(structures[k], edges, overlap, config.band_window, dtype, h0)
        probes[k] = probe.to(config.device)
    log.info("band loss (weight %g) on %d structures", config.band_weight, len(chosen))
    return probes


def _optimizer(model: HamiltonianModel, config: TrainConfig):
    """Adam on the trainable weights and the learning-rate schedule of ``config``."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    if config.lr_schedule == "cosine":
        floor, n = config.lr_min_factor, max(config.epochs, 1)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda e: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(e, n) / n))
        )
    if config.lr_schedule != "plateau":
        raise ValueError(f"lr_schedule {config.lr_schedule!r}: expected 'plateau' or 'cosine'")
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        factor=config.lr_factor,
        patience=config.lr_patience,
        threshold=config.lr_threshold,
        cooldown=config.lr_cooldown,
    )
    return optimizer, scheduler


def _keep_best(model, optimizer, state: RunState, best: dict, val_loss: float, config, epoch):
    """Track the best weights; revert to them (lr x revert_lr_factor) when the
    validation loss stays above revert_ratio x the best for revert_epochs epochs."""
    if val_loss < state.best_val:
        state.best_val = val_loss
        best = {k: v.clone() for k, v in model.state_dict().items()}
    bad = val_loss > config.revert_ratio * state.best_val
    state.bad_epochs = state.bad_epochs + 1 if bad else 0
    if state.bad_epochs >= config.revert_epochs:
        model.load_state_dict(best)
        for group in optimizer.param_groups:
            group["lr"] *= config.revert_lr_factor
        state.bad_epochs = 0
        log.info("epoch %d: reverted to best weights, lr x %.2f", epoch, config.revert_lr_factor)
    return best


def train(
    config: TrainConfig,
    pretrained: str | os.PathLike | None = None,
    resume: bool = True,
    progress: bool = True,
    member: int = 0,
) -> ModelBundle:
    """Run (or resume) one training; returns the bundle also written to ``out/model.pt``.
    ``member``: which member of a pretrained ensemble to start from."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    _seed_everything(config.seed)
    run = _setup(config, pretrained, member)
    model, (tr, va, _) = run.model, run.parts
    train_g = [run.graphs[k] for k in tr]
    train_p = [run.probes[k] for k in tr]
    val_g = [run.graphs[k] for k in va] or train_g
    val_p = [run.probes[k] for k in va] or train_p
    optimizer, scheduler = _optimizer(model, config)
    state, best = RunState(), {k: v.clone() for k, v in model.state_dict().items()}
    ckpt = out / "checkpoint.pt"
    if resume and ckpt.exists():
        state, best = _load_checkpoint(ckpt, model, optimizer, scheduler)
        log.info("resumed %s at epoch %d", ckpt, state.epoch)
    bar = tqdm(
        range(state.epoch, config.epochs),
        desc="train",
        unit="epoch",
        disable=not progress,
        initial=state.epoch,
        total=config.epochs,
    )
    for epoch in bar:
        start, cpu = time.perf_counter(), time.process_time()
        train_loss = _train_epoch(model, optimizer, train_g, epoch, config, train_p)
        val_mse, _, band = evaluate(model, val_g, val_p)
        val_band = band if config.band_weight > 0 else None
        val_loss = val_mse + config.band_weight * val_band if val_band is not None else val_mse
        if config.lr_schedule == "plateau":
            scheduler.step(val_loss)
        else:
            scheduler.step()
        best = _keep_best(model, optimizer, state, best, val_loss, config, epoch)
        state.history.append(
            {
                "epoch": epoch + 1,
                "train_mse": train_loss,  # the training loss (with the band term if any)
                "val_mse": val_mse,
                **({"val_band": val_band, "val_loss": val_loss} if val_band is not None else {}),
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - start,
                "cpu_seconds": time.process_time() - cpu,
            }
        )
        state.epoch = epoch + 1
        _save_checkpoint(ckpt, model, optimizer, scheduler, state, best)
        _write_log(out / "log.csv", state.history)
        bar.set_postfix(
            train=f"{math.sqrt(train_loss) * 1e3:.2f} meV",
            val=f"{math.sqrt(val_mse) * 1e3:.2f} meV",
            **({"bands": f"{math.sqrt(val_band) * 1e3:.1f} meV"} if val_band is not None else {}),
        )
    model.load_state_dict(best)
    model.eval()
    return _finish(run, config, state, out)


def _finish(run: _Setup, config: TrainConfig, state: RunState, out: Path) -> ModelBundle:
    """Report, model file (with the valence electrons of the data), summary and plot."""
    report = _report(run.model, run.graphs, *run.parts, run.paths, config, run.probes)
    report["cpu_seconds"] = sum(h.get("cpu_seconds", 0.0) for h in state.history)
    report["wall_seconds"] = sum(h["seconds"] for h in state.history)
    report["threads"] = torch.get_num_threads()
    info = {"train": report}
    known = run.base.info.get("valence") if run.base else None
    valence = training_valence(run.structures, known)
    if valence:
        info["valence"] = valence  # the calculator counts electrons with it
    info["domain"] = training_domain(run).to_dict()  # the calculator checks structures
    target = training_target([s.extra for s in run.structures])
    if target is not None:  # a dH model: never to run without H0
        info[TARGET] = target
    bundle = ModelBundle([run.model], run.overlap, info)
    save_bundle(bundle, out / "model.pt")
    (out / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_loss(state.history, out / "loss.png")
    return bundle


def _train_epoch(model, optimizer, graphs, epoch: int, config: TrainConfig, probes) -> float:
    model.train()
    order = np.random.default_rng(config.seed + 1000 * (epoch + 1)).permutation(len(graphs))
    total = 0.0
    for k in order:
        optimizer.zero_grad()
        loss = structure_loss(
            model,
            graphs[k],
            probes[k],
            config.band_weight,
            config.onsite_weight,
            config.semicore_weight,
        )
        loss.backward()
        optimizer.step()
        total += loss.item()
    model.eval()
    return total / max(len(graphs), 1)


def member_config(config: TrainConfig, k: int) -> TrainConfig:
    """Member k of an ensemble: seed + k, in ``out/member_k`` (where :func:`train_ensemble`
    resumes it, so members may also be trained apart, e.g. in parallel processes)."""
    member = TrainConfig(**{**asdict(config), "seed": config.seed + k})
    member.out = str(Path(config.out) / f"member_{k}")
    return member


def train_ensemble(
    config: TrainConfig,
    members: int,
    pretrained: str | os.PathLike | None = None,
    resume: bool = True,
    progress: bool = True,
) -> ModelBundle:
    """``members`` trainings with seeds seed, seed + 1, ... in ``out/member_k`` (member k
    of a pretrained ensemble starts from its member k), merged into ``out/model.pt``.

    One member is member 0 too (in ``out/member_0``), so that a later run with more
    members resumes it instead of training it again. The merged model's domain records
    the largest ensemble spread seen on the validation structures, against which the
    calculator flags predictions."""
    from ase_moireh.model.io import merge_bundles

    bundles = [
        train(member_config(config, k), pretrained, resume, progress, member=k)
        for k in range(max(members, 1))
    ]
    if len(bundles) == 1:
        save_bundle(bundles[0], Path(config.out) / "model.pt")
        return bundles[0]
    info = {**bundles[0].info, "ensemble_of": members}
    # the cost of the ensemble, not of its first member
    info["train"] = {
        **info["train"],
        **{
            key: sum(b.info["train"].get(key, 0.0) for b in bundles)
            for key in ("cpu_seconds", "wall_seconds")
        },
    }
    merged = merge_bundles(bundles, info)
    validation = bundles[0].info["train"]["parts"]["validation"]["structures"]
    if validation:
        paths, _ = training_parts(config)
        named = {p.name: p for p in paths}
        spread = validation_spread(merged, [named[n] for n in validation])
        domain = ModelDomain.from_dict(info["domain"])
        domain.spread_max = spread
        merged.info["domain"] = domain.to_dict()
        log.info("largest ensemble spread on validation: %.2f meV", spread * 1e3)
    save_bundle(merged, Path(config.out) / "model.pt")
    return merged


def validation_spread(bundle: ModelBundle, paths: list[Path]) -> float:
    """Largest per-element ensemble spread (eV) of H over the given structures (the
    members' own predictions: a residual model's spread of dH is that of H0 + dH)."""
    from ase_moireh.model.predict import members_on_graph, predict_hamiltonian

    largest = 0.0
    for path in paths:
        structure = read_structure(path)
        atoms = structure.atoms
        h0 = training_h0(path, structure) if bundle.config.h0_features else None
        models, data = members_on_graph(bundle.models, atoms, "cpu", h0)
        _, spread = predict_hamiltonian(models, atoms, data, bundle.partitioned)
        if spread is not None and spread.nedges:
            largest = max(largest, float(np.abs(spread.values).max()))
    return largest


def training_domain(run: _Setup) -> ModelDomain:
    """The structures the model was fitted to (train part), joined with its base's."""
    train = run.parts[0]
    domain = domain_of([run.structures[k].atoms for k in train], [run.paths[k].name for k in train])
    base = run.base.info.get("domain") if run.base else None
    return union(ModelDomain.from_dict(base), domain) if base else domain


def training_valence(structures: list[ElectronicStructure], known: dict | None) -> dict | None:
    """Electrons per element of the DFT runs trained on (all must agree), or None."""
    table = dict(known or {})
    for s in structures:
        for element, value in (s.extra.get("valence") or {}).items():
            if table.setdefault(element, value) != value:
                raise ValueError(
                    f"{s.source}: {element} has {value} valence electrons, "
                    f"the other data {table[element]}"
                )
    if not table:
        log.warning("the datasets record no valence electrons: give the calculator valence=")
    return table or None


def training_overlap(
    model_config: ModelConfig, structures: list[ElectronicStructure], pao_dir: str | None
) -> TwoCentreOverlap | None:
    """The exact overlap a trained model carries: from ``pao_dir`` or the bundled
    radial functions, for the OpenMX basis the datasets record (if they do). A basis
    with no radial functions at hand (e.g. another code's orbitals) gives an H-only
    model, with a warning; a ``pao_dir`` that cannot serve is an error."""
    named = [s.extra.get("openmx_basis") for s in structures if s.extra.get("openmx_basis")]
    if any(b != named[0] for b in named):
        raise ValueError("the datasets were computed with different OpenMX bases")
    try:
        return resolve_overlap(model_config.basis_obj, named[0] if named else None, pao_dir)
    except OverlapError as err:
        if pao_dir is not None:
            raise
        log.warning("the model will predict H only, without S: %s", err)
        return None


def _report(model, graphs, tr, va, te, paths, config, probes) -> dict:
    parts = {"train": tr, "validation": va, "test": te}
    report = {"config": {**asdict(config), "split": list(config.split)}, "parts": {}}
    for name, idx in parts.items():
        chosen = ([graphs[k] for k in idx], [probes[k] for k in idx])
        mse, mae, band = evaluate(model, *chosen) if idx else (float("nan"), {}, float("nan"))
        report["parts"][name] = {
            "structures": [paths[k].name for k in idx],
            "rmse_meV": math.sqrt(mse) * 1e3 if idx else None,
            "mae_meV": {k: v * 1e3 for k, v in mae.items()},
        }
        if np.isfinite(band):  # root-mean-square first-order level error near the gap
            report["parts"][name]["band_rms_meV"] = math.sqrt(band) * 1e3
    return report


# --------------------------------------------------------------------------- files


def _save_checkpoint(path, model, optimizer, scheduler, state: RunState, best) -> None:
    atomic_torch_save(
        {
            "model": model.state_dict(),
            "best": best,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "state": json.dumps(asdict(state)),
            "config": model.config.to_json(),
        },
        path,
    )


def _load_checkpoint(path, model, optimizer, scheduler):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    # parsed, not as text: a checkpoint from before a new config field still matches
    if ModelConfig.from_json(ckpt["config"]) != model.config:
        raise ValueError(f"{path}: checkpoint of a different model; remove it to start anew")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    return RunState(**json.loads(ckpt["state"])), ckpt["best"]


def _write_log(path: Path, history: list[dict]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        fields = list(dict.fromkeys(k for row in history for k in row))  # old rows lack some
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, path)


def plot_loss(history: list[dict], filename: Path) -> None:
    if not history:
        return
    epochs = [h["epoch"] for h in history]
    fig, axes = new_figure(1, 5.0, 3.5)
    ax = axes[0, 0]
    for key, label in (
        ("train_mse", "train loss"),
        ("val_mse", "validation elements"),
        ("val_band", "validation near-gap levels"),
    ):
        if key in history[-1]:
            rms = [math.sqrt(h.get(key, math.nan)) * 1e3 for h in history]
            ax.semilogy(epochs, rms, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("root-mean-square error (meV)")
    ax.legend()
    save_figure(fig, filename, dpi=120)
