"""Training structures for the DFT dataset (the paper's gen_dataset step).

Two kinds, as in Bao, Mao et al.: non-twisted bilayers with the top layer slid over a
grid of in-plane shifts (every local stacking of a moire cell appears in some small cell),
and perturbed twisted cells; both with a random interlayer distance and random atomic
displacements so the network sees the off-equilibrium environments of relaxed moire
structures. Each structure becomes a folder with ``openmx_in.dat``, ``structure.extxyz``
and ``meta.json``, written atomically.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from tqdm import tqdm

from ase_moireh.build.materials import MATERIALS, Material, get_material
from ase_moireh.build.twist import (
    DEFAULT_VACUUM,
    assemble_bilayer,
    primitive_vectors,
    twisted_bilayer,
)
from ase_moireh.files import atomic_folder
from ase_moireh.io.openmx_input import default_kgrid, resolve_species, write_openmx_input
from ase_moireh.neighbours import neighbour_pairs
from ase_moireh.plotting import new_figure, save_figure

log = logging.getLogger(__name__)

#: structures with two atoms closer than this are refused (Mo-Te bonds are 2.7 A)
MIN_DISTANCE = 2.0
KINDS = ("shifted", "twisted")


# --------------------------------------------------------------------------- structures


def _check_stacking(stacking: str) -> None:
    if stacking not in ("R", "H"):
        raise ValueError(f"stacking must be 'R' or 'H', got {stacking!r}")


def _check_sampling(amplitude: float, interlayer_sigma: float, count: int, seed: int) -> None:
    if amplitude < 0 or interlayer_sigma < 0:
        raise ValueError(
            f"amplitude and interlayer_sigma must be >= 0, got {amplitude}, {interlayer_sigma}"
        )
    if int(count) != count or count < 1:
        raise ValueError(f"count must be a positive integer, got {count}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")


def _perturb(atoms: Atoms, rng: np.random.Generator, amplitude: float, sigma: float) -> float:
    """Move the top layer by a Gaussian dz (sigma), then displace every atom uniformly
    in [-amplitude, amplitude] per Cartesian component; wrap; return dz."""
    dz = float(rng.normal(0.0, sigma)) if sigma > 0 else 0.0
    atoms.positions[atoms.arrays["layer"] == 1, 2] += dz
    if amplitude > 0:
        atoms.positions += rng.uniform(-amplitude, amplitude, size=(len(atoms), 3))
    atoms.wrap()
    return dz


def shifted_bilayers(
    material: str | Material = "MoTe2",
    supercell: tuple[int, int] = (1, 1),
    shifts: int = 3,
    amplitude: float = 0.15,
    interlayer_sigma: float = 0.2,
    seed: int = 0,
    stacking: str = "R",
    vacuum: float = DEFAULT_VACUUM,
    count: int = 1,
) -> list[Atoms]:
    """Non-twisted bilayers, top layer slid by (i/shifts) a1 + (j/shifts) a2, perturbed.

    For every grid shift (i, j) and sample k < ``count``: the top metal plane is moved by
    a Gaussian change (``interlayer_sigma``, A) of the material's interlayer distance,
    then every atom by uniform noise in [-amplitude, amplitude] A per component. The cell
    is fixed (height of the unperturbed bilayer). Noise comes from
    ``default_rng((seed, 0, i, j, k))``: each structure is reproducible on its own. The
    paper used 6x6 cells, 23x23 shifts, 0.15 A and 0.2 A (the CLI defaults).
    """
    mat = get_material(material)
    _check_stacking(stacking)
    _check_sampling(amplitude, interlayer_sigma, count, seed)
    n1, n2 = (int(x) for x in supercell)
    if (n1, n2) != tuple(supercell) or n1 < 1 or n2 < 1:
        raise ValueError(f"supercell must be two positive integers, got {supercell!r}")
    if int(shifts) != shifts or shifts < 1:
        raise ValueError(f"shifts must be a positive integer, got {shifts}")
    prim = primitive_vectors(mat.a)
    cell2d = np.diag([n1, n2]) @ prim
    base = assemble_bilayer(
        mat, cell2d, [(prim, False), (prim, stacking == "H")], mat.interlayer, vacuum
    )
    top = base.arrays["layer"] == 1
    structures = []
    for i in range(shifts):
        for j in range(shifts):
            shift = (i / shifts, j / shifts)
            for k in range(count):
                atoms = base.copy()
                atoms.positions[top, :2] += np.array(shift) @ prim
                dz = _perturb(
                    atoms, np.random.default_rng((seed, 0, i, j, k)), amplitude, interlayer_sigma
                )
                atoms.info.update(
                    kind="shifted",
                    material=mat.name,
                    stacking=stacking,
                    supercell=(n1, n2),
                    shift=shift,
                    shift_index=(i, j),
                    sample=k,
                    interlayer=mat.interlayer + dz,
                    seed=seed,
                    amplitude=amplitude,
                    interlayer_sigma=interlayer_sigma,
                )
                structures.append(atoms)
    return structures


def perturbed_twisted(
    n: int,
    m: int,
    count: int = 1,
    amplitude: float = 0.15,
    interlayer_sigma: float = 0.0,
    seed: int = 0,
    material: str | Material = "MoTe2",
    stacking: str = "R",
    relaxed: Atoms | None = None,
) -> list[Atoms]:
    """``count`` perturbed copies of the twisted (n, m) bilayer (noise as in
    :func:`shifted_bilayers`, from ``default_rng((seed, 1, n, m, k))``). With ``relaxed``
    (the (n, m) cell relaxed, e.g. by ``moireh relax``) its positions are perturbed
    instead of the rigid ones: the paper's recipe for twisted training data."""
    _check_sampling(amplitude, interlayer_sigma, count, seed)
    base = twisted_bilayer(n, m, material=material, stacking=stacking)
    if relaxed is not None:
        base = _relaxed_base(base, relaxed)
    n, m = base.info["twist_nm"]
    structures = []
    for k in range(count):
        atoms = base.copy()
        dz = _perturb(atoms, np.random.default_rng((seed, 1, n, m, k)), amplitude, interlayer_sigma)
        atoms.info.update(
            kind="twisted",
            sample=k,
            interlayer=base.info["interlayer"] + dz,
            seed=seed,
            amplitude=amplitude,
            interlayer_sigma=interlayer_sigma,
        )
        structures.append(atoms)
    return structures


def _relaxed_base(rigid: Atoms, relaxed: Atoms) -> Atoms:
    """``rigid`` with the positions of ``relaxed``, which must be the same cell and atoms
    (layers and info from ``rigid``; ``info['relaxed'] = True`` records it)."""
    same = len(relaxed) == len(rigid) and np.array_equal(relaxed.numbers, rigid.numbers)
    if not same or not np.allclose(relaxed.cell, rigid.cell, atol=1e-6):
        nm = rigid.info["twist_nm"]
        raise ValueError(f"the relaxed structure is not the twisted {nm} cell (atoms or cell)")
    base = rigid.copy()
    base.positions = relaxed.positions
    base.info["relaxed"] = True
    return base


# --------------------------------------------------------------------------- corpus sampling

#: defaults of the corpus sampling (DFT-corpus issue): interlayer distance within
#: +-0.3 A of the material's, Gaussian noise of 0.02-0.06 A on every atom
INTERLAYER_RANGE = 0.3
NOISE_RANGE = (0.02, 0.06)


def _sample_perturbation(
    atoms: Atoms,
    rng: np.random.Generator,
    prim: np.ndarray,
    interlayer_range: float,
    noise: tuple[float, float],
) -> dict:
    """Slide the top layer by a uniform random shift over a primitive cell, move it by a
    uniform dz in [-range, range], then add Gaussian noise (sigma uniform in ``noise``)
    to every coordinate; wrap. The order of the draws fixes every structure by its seed."""
    shift = rng.uniform(0.0, 1.0, 2)
    dz = rng.uniform(-interlayer_range, interlayer_range)
    sigma = rng.uniform(*noise)
    top = atoms.arrays["layer"] == 1
    atoms.positions[top, :2] += shift @ prim
    atoms.positions[top, 2] += dz
    atoms.positions += rng.normal(0.0, sigma, size=(len(atoms), 3))
    atoms.wrap()
    return {"shift": shift.tolist(), "interlayer_change": dz, "noise_sigma": sigma}


def _check_ranges(interlayer_range: float, noise: tuple[float, float], count: int) -> None:
    if interlayer_range < 0 or not 0 <= noise[0] <= noise[1]:
        raise ValueError(
            f"need interlayer_range >= 0 and 0 <= noise min <= max, got {interlayer_range}, {noise}"
        )
    if int(count) != count or count < 1:
        raise ValueError(f"count must be a positive integer, got {count}")


def sampled_shifted_bilayers(
    n: int,
    count: int,
    seed: int = 10,
    first: int = 0,
    interlayer_range: float = INTERLAYER_RANGE,
    noise: tuple[float, float] = NOISE_RANGE,
    material: str | Material = "MoTe2",
    stacking: str = "R",
    vacuum: float = DEFAULT_VACUUM,
) -> list[Atoms]:
    """Non-twisted n x n bilayer supercells with a random interlayer shift over the whole
    cell, a random interlayer distance and per-atom Gaussian noise (the corpus kind;
    :func:`shifted_bilayers` is the paper's shift grid). Structure ``index`` (from
    ``first``) draws from ``default_rng((seed, n, index))``, so it is reproducible alone."""
    mat = get_material(material)
    _check_stacking(stacking)
    _check_ranges(interlayer_range, noise, count)
    if int(n) != n or n < 1:
        raise ValueError(f"supercell size must be a positive integer, got {n}")
    prim = primitive_vectors(mat.a)
    cell2d = n * prim
    base = assemble_bilayer(
        mat, cell2d, [(prim, False), (prim, stacking == "H")], mat.interlayer, vacuum
    )
    out = []
    for index in range(first, first + count):
        atoms = base.copy()
        drawn = _sample_perturbation(
            atoms, np.random.default_rng((seed, n, index)), prim, interlayer_range, noise
        )
        atoms.info.update(
            kind="shifted",
            sampling="random",
            material=mat.name,
            stacking=stacking,
            supercell=(n, n),
            sample=index,
            seed=seed,
            rng_entropy=(seed, n, index),
            **drawn,
        )
        out.append(atoms)
    return out


def sampled_twisted_bilayers(
    n: int,
    m: int,
    count: int,
    seed: int = 20,
    first: int = 0,
    interlayer_range: float = INTERLAYER_RANGE,
    noise: tuple[float, float] = NOISE_RANGE,
    material: str | Material = "MoTe2",
    stacking: str = "R",
) -> list[Atoms]:
    """The twisted (n, m) cell with a random stacking (top layer slid by a uniform point
    of the bottom layer's primitive cell: every local stacking shows up), interlayer
    distance and noise as :func:`sampled_shifted_bilayers`; structure ``index`` draws
    from ``default_rng((seed, n, m, index))``."""
    _check_ranges(interlayer_range, noise, count)
    base = twisted_bilayer(n, m, material=material, stacking=stacking)
    n, m = base.info["twist_nm"]
    prim = primitive_vectors(get_material(material).a)
    out = []
    for index in range(first, first + count):
        atoms = base.copy()
        drawn = _sample_perturbation(
            atoms, np.random.default_rng((seed, n, m, index)), prim, interlayer_range, noise
        )
        atoms.info.update(
            kind="twisted",
            sampling="random",
            sample=index,
            seed=seed,
            rng_entropy=(seed, n, m, index),
            **drawn,
        )
        out.append(atoms)
    return out


# --------------------------------------------------------------------------- checks


def _metal(atoms: Atoms) -> str:
    """The metal of an MX2 bilayer: from info['material'], else the rarer element."""
    material = atoms.info.get("material")
    if material in MATERIALS:
        return MATERIALS[material].metal
    symbols, counts = np.unique(atoms.get_chemical_symbols(), return_counts=True)
    return str(symbols[np.argmin(counts)])


def layer_metals(atoms: Atoms) -> tuple[np.ndarray, np.ndarray]:
    """Positions (A) of the metal atoms of the bottom and of the top layer.

    Needs ``atoms.arrays['layer']`` (set by the builders, kept by extxyz).
    """
    if "layer" not in atoms.arrays:
        raise ValueError("atoms have no 'layer' array; build them with ase_moireh.build")
    metal = np.array(atoms.get_chemical_symbols()) == _metal(atoms)
    out = []
    for layer in (0, 1):
        mask = metal & (atoms.arrays["layer"] == layer)
        if not mask.any():
            raise ValueError(f"no metal atoms in layer {layer}")
        out.append(atoms.positions[mask])
    return out[0], out[1]


def interlayer_distance(atoms: Atoms) -> float:
    """Mean metal z of the top layer minus that of the bottom layer (A)."""
    bottom, top = layer_metals(atoms)
    return float(top[:, 2].mean() - bottom[:, 2].mean())


def min_distance(atoms: Atoms, cutoff: float = 3.0) -> float:
    """Smallest interatomic distance including periodic images (A); O(N) neighbour list.

    The cutoff doubles until a pair is found (inf for a lone atom without periodicity).
    """
    if len(atoms) == 0:
        raise ValueError("no atoms")
    for _ in range(6):
        d = neighbour_pairs(atoms, cutoff)[3]
        if len(d):
            return float(d.min())
        cutoff *= 2
    return float("inf")


def _check_distance(atoms: Atoms, where: str) -> float:
    dmin = min_distance(atoms)
    if dmin < MIN_DISTANCE:
        raise ValueError(
            f"overlapping atoms in {where}: minimum distance {dmin:.3f} A < {MIN_DISTANCE} A"
        )
    return dmin


# --------------------------------------------------------------------------- writing


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_structure_folder(
    folder: str | os.PathLike, atoms: Atoms, soc: bool, meta: dict, **openmx_kwargs
) -> Path:
    """One dataset folder: ``openmx_in.dat``, ``structure.extxyz``, ``meta.json``.

    Refuses structures with atoms closer than 2.0 A (ValueError "overlapping atoms"):
    OpenMX would run, but on an unphysical geometry. ``openmx_kwargs`` go to
    :func:`write_openmx_input`. Written via :func:`ase_moireh.files.atomic_folder`.
    """
    folder = Path(folder)
    dmin = _check_distance(atoms, str(folder))
    kgrid = openmx_kwargs.get("kgrid") or default_kgrid(atoms.cell)
    record = {
        "natoms": len(atoms),
        "formula": atoms.get_chemical_formula(),
        "soc": bool(soc),
        "kgrid": list(kgrid),
        "ecut": openmx_kwargs.get("ecut", 200.0),
        "min_distance": dmin,
        **meta,
    }
    with atomic_folder(folder) as tmp:
        write_openmx_input(tmp, atoms, soc, **{**openmx_kwargs, "kgrid": kgrid})
        ase.io.write(tmp / "structure.extxyz", atoms, format="extxyz")
        text = json.dumps(_jsonable(record), indent=1)
        (tmp / "meta.json").write_text(text + "\n")
    return folder


def interlayer_histogram(structures: Iterable[Atoms], filename: str | os.PathLike) -> Path:
    """PNG histogram of the interlayer distances: shows the sampled range at a glance."""
    distances = [interlayer_distance(atoms) for atoms in structures]
    fig, axes = new_figure(1, 5.0, 3.5)
    ax = axes[0, 0]
    ax.hist(distances, bins=min(30, max(1, len(distances))), color="tab:blue")
    ax.set_xlabel("interlayer metal-metal distance (Å)")
    ax.set_ylabel("structures")
    ax.set_title(f"{len(distances)} structures")
    return save_figure(fig, filename, dpi=120)


def structure_name(atoms: Atoms) -> str:
    """Folder name: ``shift_i_j_k`` or ``twist_n_m_k`` (k = sample index) for the shift
    grid; ``shift{n}x{n}_kkk`` or ``twist{n}-{m}_kkk`` for sampled structures."""
    if atoms.info.get("sampling") == "random":
        k = atoms.info["sample"]
        if atoms.info["kind"] == "shifted":
            n = atoms.info["supercell"][0]
            return f"shift{n}x{n}_{k:03d}"
        n, m = atoms.info["twist_nm"]
        return f"twist{n}-{m}_{k:03d}"
    if atoms.info.get("kind") == "shifted":
        i, j = atoms.info["shift_index"]
        return f"shift_{i}_{j}_{atoms.info['sample']}"
    if atoms.info.get("kind") == "twisted":
        n, m = atoms.info["twist_nm"]
        return f"twist_{n}_{m}_{atoms.info['sample']}"
    raise ValueError(f"not a generated structure (info kind = {atoms.info.get('kind')!r})")


def _meta(atoms: Atoms) -> dict:
    """Generating parameters (atoms.info) plus the interlayer distance after the noise."""
    return {**atoms.info, "interlayer_actual": interlayer_distance(atoms)}


def _preflight(
    structures: Sequence[Atoms],
    out: Path,
    overwrite: bool,
    openmx_kwargs: dict,
    folders: list[Path] | None = None,
) -> list[Path]:
    """Every check that can fail, before the first folder is written."""
    folders = folders or [out / structure_name(atoms) for atoms in structures]
    if len(set(folders)) != len(folders):
        raise ValueError("two structures would share a folder name")
    existing = [f for f in folders if f.exists()]
    if existing and not overwrite:
        raise ValueError(
            f"{len(existing)} structure folders already exist (first: {existing[0]}); "
            "choose another output folder or overwrite (--overwrite, overwrite=True)"
        )
    symbols = {s for atoms in structures for s in atoms.get_chemical_symbols()}
    resolve_species(
        sorted(symbols),
        openmx_kwargs.get("species"),
        openmx_kwargs.get("data_path", "../DFT_DATA"),
        folders[0] if folders else out,
    )
    for folder, atoms in zip(folders, structures, strict=True):
        _check_distance(atoms, folder.name)
    return folders


#: spin variants of sampled structures: folder suffix and SOC flag
SPINS = {"collinear": [("", False)], "soc": [("_soc", True)], "both": [("", False), ("_soc", True)]}


def generate_sampled(
    kind: str,
    out: str | os.PathLike,
    spin: str = "both",
    overwrite: bool = False,
    progress: bool = True,
    openmx: dict | None = None,
    split: str | None = None,
    **params,
) -> list[Path]:
    """Sampled corpus structures (:func:`sampled_shifted_bilayers` or
    :func:`sampled_twisted_bilayers`, ``params`` go there) as OpenMX folders, collinear,
    SOC or both (twins: the same structure, ``_soc`` appended). ``meta.json`` carries the
    fixed split (:func:`ase_moireh.io.corpus.assign_split`, the same for twins; ``split``
    puts every structure into one, e.g. ``holdout`` for a check no training may see) and
    the twin's name (None without ``spin="both"``). Every check runs before anything is
    written."""
    from ase_moireh.io.corpus import SPLITS, assign_split

    if spin not in SPINS:
        raise ValueError(f"spin must be one of {', '.join(SPINS)}, got {spin!r}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if kind == "shifted":
        structures = sampled_shifted_bilayers(**params)
    elif kind == "twisted":
        structures = sampled_twisted_bilayers(**params)
    else:
        raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    out = Path(out)
    jobs = []
    for atoms in structures:
        base = structure_name(atoms)
        for suffix, soc in SPINS[spin]:
            twin = base + ("" if suffix else "_soc") if spin == "both" else None
            meta = {
                **_meta(atoms),
                "split": split or assign_split(kind, atoms.info["sample"]),
                "twin": twin,
            }
            jobs.append((out / (base + suffix), atoms, soc, meta))
    openmx_kwargs = dict(openmx or {})
    _preflight([a for _, a, _, _ in jobs], out, overwrite, openmx_kwargs, [f for f, *_ in jobs])
    for folder, atoms, soc, meta in tqdm(
        jobs, desc=f"{kind} structures", unit="structure", disable=not progress
    ):
        write_structure_folder(folder, atoms, soc, meta, **openmx_kwargs)
    interlayer_histogram(structures, out / "interlayer_hist.png")
    log.info("wrote %d folders to %s", len(jobs), out)
    return [f for f, *_ in jobs]


def build_structures(kind: str, **params) -> list[Atoms]:
    """``shifted`` -> :func:`shifted_bilayers`, ``twisted`` -> :func:`perturbed_twisted`."""
    if kind == "shifted":
        return shifted_bilayers(**params)
    if kind == "twisted":
        return perturbed_twisted(**params)
    raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")


def generate_dataset(
    kind: str,
    out: str | os.PathLike,
    soc: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    openmx: dict | None = None,
    **params,
) -> list[Path]:
    """Build the structures of ``kind`` (``params`` go to the builder), write one folder
    each under ``out`` plus ``out/interlayer_hist.png``; return the folders.

    All checks (materials, species, overlaps, existing folders unless ``overwrite``) run
    before anything is written, so a bad request leaves ``out`` untouched.
    ``openmx`` holds keyword arguments of :func:`write_openmx_input`.
    """
    out = Path(out)
    openmx_kwargs = dict(openmx or {})
    structures = build_structures(kind, **params)
    folders = _preflight(structures, out, overwrite, openmx_kwargs)
    log.info("writing %d %s structures to %s (soc=%s)", len(structures), kind, out, soc)
    for folder, atoms in tqdm(
        list(zip(folders, structures, strict=True)),
        desc=f"{kind} structures",
        unit="structure",
        disable=not progress,
    ):
        write_structure_folder(folder, atoms, soc, _meta(atoms), **openmx_kwargs)
        log.debug("wrote %s", folder)
    hist = interlayer_histogram(structures, out / "interlayer_hist.png")
    log.info("wrote %d folders and %s", len(folders), hist)
    return folders
