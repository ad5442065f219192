"""MoireHCalculator: an ASE calculator giving the Hamiltonian, overlap, bands and Chern
numbers of a structure.

    atoms.calc = MoireHCalculator()                   # bundled SOC model
    h = atoms.calc.get_hamiltonian()                  # BlockOperator (CSR with k=...)
    tb = atoms.calc.get_tight_binding()               # H and S together
    atoms.calc.set(kpts=atoms.cell.bandpath("GMKG", npoints=40), nbands=20)
    bs = atoms.calc.band_structure()                  # ASE's own machinery
    atoms.calc.eigenvalues_at((1/3, 2/3, 0), nbands=20)   # K, our solver
    atoms.calc.chern_numbers(nbands=2)                # C3 eigenvalues -> C mod 3
    MoireHCalculator(soc=False).midgap(other)         # any Atoms, attached or not

Every method answers for the Atoms it is given; without them, for the Atoms the
calculator is attached to (``atoms.calc = calc`` calls :meth:`set_atoms`), else for those
of its last calculation (``calc.atoms``, ASE's copy). ASE's ``check_state`` compares them
with ``calc.atoms``; when they differ, :meth:`reset` drops H, S and everything computed
from them, and H and S are computed anew. Every step after that reads ``calc.atoms``,
never another structure's state.

Options are ASE ``parameters`` (``default_parameters``, ``todict()``, ``set()``); a new
value drops what it changes (:data:`OPERATOR_PARAMETERS`: everything; the others: the
caches :data:`DERIVED_BY` names). ``results`` holds the operators only (``hamiltonian``,
``overlap``, ``hamiltonian_spread``); band edges, C3 points and levels are private caches.

ASE tools tested with it (tests/test_calculator.py): :meth:`band_structure` (ASE's
``get_band_structure`` on ``get_eigenvalues(kpt, spin)``, ``get_ibz_k_points``,
``get_number_of_spins`` and ``get_fermi_level``, the mid-gap), ``ase.dft.bandgap.bandgap``,
``export_properties()`` (ASE's standard names: ``fermi_level`` once the band edges are
known; ``eigenvalues``, ``ibz_kpoints``, ``kpoint_weights`` once every k-point has its
levels) and ``ase.io.write`` of an attached structure (extxyz; the operators have no ASE
name and are not written). With ``dft=`` a DFT dataset supplies H (and S, if stored)
instead of the model, so DFT and model bands go through one code path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.outputs import Properties
from ase.spectrum.band_structure import BandStructure
from tqdm import tqdm

from ase_moireh.basis import filled_levels
from ase_moireh.block_operator import BlockOperator
from ase_moireh.data import bundled_model_path
from ase_moireh.domain import ModelDomain
from ase_moireh.io.dataset import read_structure
from ase_moireh.kpoints import extrema_kpoints
from ase_moireh.overlap import resolve_overlap
from ase_moireh.solvers.factorization import mkl_library
from ase_moireh.tightbinding import ElectronicStructure, TightBinding

log = logging.getLogger(__name__)

#: dense diagonalisation up to this matrix size, shift-invert above
DENSE_LIMIT = 3000
#: parameters that change H or S: a new value drops everything (:meth:`reset`)
OPERATOR_PARAMETERS = ("model", "soc", "device", "dft", "pao_dir", "openmx_basis", "domain_check")
#: the caches a new value of each other parameter drops (``gap_guess``: none, it only
#: decides where the electron counting starts)
DERIVED_BY = {
    "valence": ("band_edges", "c3_points", "eigenvalues"),
    "kpts": ("eigenvalues",),
    "nbands": ("eigenvalues",),
    "sigma": ("eigenvalues",),
    "precision": ("eigenvalues",),
}
NO_ATOMS = "no Atoms: pass atoms, or attach the calculator (atoms.calc = calc)"


class MoireHCalculator(Calculator):
    """H, S and bands of a structure from a trained model (or a DFT dataset).

    Parameters (ASE ``parameters``, changeable with ``set``):

    * ``model``: model file or loaded ModelBundle; None: the bundled MoTe2 model
      (``soc`` chooses the SOC or the collinear one). Its S is exact, from the basis
      it carries.
    * ``device``: torch device of the model ("cpu", "cuda").
    * ``dft``: a dataset folder (dftio or corpus entry) or ElectronicStructure whose H
      (and S, if stored) are used instead of the model; same atoms required.
    * ``pao_dir`` / ``openmx_basis``: radial functions for S when neither the model
      nor the dataset brings them (e.g. ``{'W': 'W7.0-s3p2d2'}`` and its .pao folder).
    * ``valence``: electrons per element (e.g. ``{'Mo': 14, 'Te': 16}``) when neither
      the model nor the dataset records them.
    * ``kpts``: k-points of ``get_eigenvalues(kpt)`` / ``band_structure()``: a BandPath,
      a list of fractional k, or None for the cell's Gamma-M-K-Gamma path (60 points).
    * ``nbands`` / ``sigma``: levels per k-point: all (None, dense) or the ``nbands``
      nearest ``sigma`` (eV; None: around the gap).
    * ``gap_guess``: an energy (eV) likely inside the gap, where the electron counting of
      large cells starts (checked by inertia, so a wrong guess costs time, never
      correctness; a good one, e.g. the mid-gap of a smaller cell of the same material
      and model, saves the bisection's factorisations).
    * ``precision``: "double" or "single" factorisation for the shift-invert levels of
      large cells: single halves the factor's memory, and the levels stay within
      ~1e-8 eV (Rayleigh-Ritz in double; tests/test_solve.py).
    * ``domain_check``: check each structure against the model's training domain
      (:mod:`ase_moireh.domain`, :func:`ase_moireh.model.predict.check_domain`: the
      check of every prediction route) before predicting: True raises
      :class:`~ase_moireh.domain.OutOfDomainError` for structures the model cannot
      describe at all (unknown elements, overlapping atoms, a bulk-like stack) and warns
      (:class:`~ase_moireh.domain.OutOfDomainWarning`) for milder departures; False only
      warns.
    """

    implemented_properties = ["hamiltonian", "overlap", "hamiltonian_spread"]
    default_parameters = {
        "model": None,
        "soc": True,
        "device": "cpu",
        "dft": None,
        "pao_dir": None,
        "openmx_basis": None,
        "valence": None,
        "kpts": None,
        "nbands": None,
        "sigma": None,
        "gap_guess": None,
        "domain_check": True,
        "precision": "double",
    }

    def __init__(self, **kwargs):
        self._bundle = None
        self._dft: ElectronicStructure | None = None
        self._owner: Atoms | None = None
        self._cache: dict[str, Any] = {}
        super().__init__(**kwargs)

    def set(self, **kwargs) -> dict:
        """ASE's ``set``; a new value drops what it changes (:data:`OPERATOR_PARAMETERS`:
        H, S and all computed from them; the others: their :data:`DERIVED_BY` caches)."""
        unknown = sorted(set(kwargs) - set(self.default_parameters))
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {unknown}; known: {sorted(self.default_parameters)}"
            )
        changed = super().set(**kwargs)
        if any(key in changed for key in OPERATOR_PARAMETERS):
            self._bundle = None if {"model", "soc"} & set(changed) else self._bundle
            self._dft = None if "dft" in changed else self._dft
            self.reset()
        for key in changed:
            for name in DERIVED_BY.get(key, ()):
                self._cache.pop(name, None)
        return changed

    def reset(self) -> None:
        """Drop H, S and everything computed from them (ASE's ``calc.atoms`` too)."""
        super().reset()
        self._cache = {}

    # ------------------------------------------------------------------ atoms
    def set_atoms(self, atoms: Atoms) -> None:
        """Called by ASE on ``atoms.calc = calc``: the Atoms that methods called without
        atoms answer for. They are read once, when such a call starts; every step after
        reads ``self.atoms``."""
        self._owner = atoms

    def _target(self, atoms: Atoms | None) -> Atoms:
        """The Atoms a call answers for: those given, else the attached ones, else those
        of the last calculation."""
        for candidate in (atoms, self._owner, self.atoms):
            if candidate is not None:
                return candidate
        raise ValueError(NO_ATOMS)

    def _sync(self, atoms: Atoms | None) -> Atoms:
        """H and S up to date for the call's Atoms (``check_state``: all dropped when
        they changed); returns ``self.atoms``, the copy every later step reads."""
        self.get_property("hamiltonian", self._target(atoms))
        return self.atoms

    def _cached(self, name: str, compute: Callable[[], Any]) -> Any:
        """A private cache entry of ``self.atoms`` (dropped by :meth:`reset` and ``set``)."""
        if name not in self._cache:
            self._cache[name] = compute()
        return self._cache[name]

    # ------------------------------------------------------------------ sources
    @property
    def bundle(self):
        """The model, loaded on first use (on ``device``)."""
        if self._bundle is None:
            from ase_moireh.model.io import ModelBundle, load_bundle

            model = self.parameters["model"]
            if isinstance(model, ModelBundle):
                self._bundle = model
            else:
                self._bundle = load_bundle(model or bundled_model_path(self.parameters["soc"]))
        return self._bundle

    @property
    def dft(self) -> ElectronicStructure | None:
        """The DFT dataset of the ``dft`` parameter, loaded on first use."""
        source = self.parameters["dft"]
        if source is not None and self._dft is None:
            self._dft = read_structure(source) if isinstance(source, str | Path) else source
        return self._dft

    def calculate(self, atoms=None, properties=("hamiltonian",), system_changes=all_changes):
        """H, S (and the spread) of ``atoms``, everything computed before dropped."""
        atoms = self.atoms if atoms is None else atoms
        if atoms is None:
            raise ValueError(NO_ATOMS)
        if "hamiltonian" in self.results and not system_changes:
            return
        self.reset()
        super().calculate(atoms, properties, system_changes)
        self.results = self._operators(self.atoms)

    def _operators(self, atoms: Atoms) -> dict:
        """H, S (exact where not stored) and, for an ensemble, the spread of H."""
        if self.dft is not None:
            _check_same_structure(atoms, self.dft.atoms)
            h, s, spread = self.dft.hamiltonian, self.dft.overlap, None
        else:
            from ase_moireh.model.predict import predict_checked

            strict = self.parameters["domain_check"]
            h, s, spread = predict_checked(self.bundle, atoms, self.parameters["device"], strict)
        if s is None:  # a dataset stored without S, or an H-only model
            extra = self.dft.extra if self.dft is not None else {}
            named = self.parameters["openmx_basis"] or extra.get("openmx_basis")
            s = resolve_overlap(h.basis, named, self.parameters["pao_dir"]).operator(atoms, h.edges)
        results = {"hamiltonian": h, "overlap": s}
        if spread is not None:
            results["hamiltonian_spread"] = spread
        return results

    def export_properties(self) -> Properties:
        """ASE's standard outputs among what has been computed (the operators have no
        standard name): ``fermi_level`` (the mid-gap) once the band edges are known;
        ``eigenvalues``, ``ibz_kpoints`` and ``kpoint_weights`` once every k-point of
        ``kpts`` has its levels."""
        out: dict[str, Any] = {}
        if "band_edges" in self._cache:
            out["fermi_level"] = self._midgap()
        levels = self._cache.get("eigenvalues", {})
        if levels and self.atoms is not None:
            kpts = self._kpoints(self.atoms)
            if all(k in levels for k in range(len(kpts))):
                out["eigenvalues"] = np.array([[levels[k] for k in range(len(kpts))]])
                out["ibz_kpoints"] = kpts
                out["kpoint_weights"] = np.full(len(kpts), 1.0 / len(kpts))
        return Properties(out)

    # ------------------------------------------------------------------ domain
    def model_domain(self) -> ModelDomain | None:
        """What the model was trained on (None: its file records nothing)."""
        from ase_moireh.model.predict import model_domain

        return model_domain(self.bundle)

    def domain_findings(self, atoms: Atoms | None = None) -> tuple[list[str], list[str]]:
        """(severe, mild) reasons why the structure lies outside the model's domain
        (none for a DFT dataset: nothing is predicted)."""
        if self.dft is not None:
            return [], []
        from ase_moireh.model.predict import domain_findings

        return domain_findings(self.bundle, self._target(atoms))

    # ------------------------------------------------------------------ operators
    def get_hamiltonian(self, atoms: Atoms | None = None, k=None):
        """H as a BlockOperator, or H(k) as CSR at fractional k."""
        self._sync(atoms)
        h = self.results["hamiltonian"]
        return h if k is None else h.bloch(k)

    def get_overlap(self, atoms: Atoms | None = None, k=None):
        """S as a spinless BlockOperator, or S(k) as CSR in H's layout at fractional k."""
        self._sync(atoms)
        return self.results["overlap"] if k is None else self._tight_binding().Sk(k)

    def get_tight_binding(self, atoms: Atoms | None = None) -> TightBinding:
        """H and S together (:class:`ase_moireh.tightbinding.TightBinding`)."""
        self._sync(atoms)
        return self._tight_binding()

    def _tight_binding(self) -> TightBinding:
        h, s = self.results["hamiltonian"], self.results["overlap"]
        return self._cached("tight_binding", lambda: TightBinding(h, s))

    def get_hamiltonian_spread(self, atoms: Atoms | None = None) -> BlockOperator:
        """Per-element standard deviation of H over the ensemble's members."""
        return self.get_property("hamiltonian_spread", self._target(atoms))

    def write_operators(self, path, atoms: Atoms | None = None, precision: str = "single"):
        """Stream the predicted H and exact S of ``atoms`` to an HDF5 file, never holding
        them (10^5-atom ribbons: :mod:`ase_moireh.model.stream`), behind the domain and
        spread checks of every prediction. Returns the StreamReport (time, memory)."""
        from ase_moireh.model.stream import stream_checked

        atoms = self._target(atoms)
        if self.dft is not None:
            raise ValueError("write_operators streams a model's prediction, not a DFT dataset")
        device, strict = self.parameters["device"], self.parameters["domain_check"]
        return stream_checked(self.bundle, atoms, path, device, precision, strict)

    # ------------------------------------------------------------------ electrons
    def valence(self) -> dict[str, float]:
        """Electrons per element: the ``valence`` parameter, else what the model or
        dataset recorded (from the DFT runs it came from)."""
        table = self.parameters["valence"]
        if table is None and self.dft is not None:
            table = self.dft.extra.get("valence")
        if table is None and self.dft is None:
            table = self.bundle.info.get("valence")
        if not table:
            raise ValueError(
                "the number of valence electrons is unknown (neither the model nor the "
                "dataset records it): pass valence={'Mo': 14, 'Te': 16}-style counts"
            )
        return {str(k): float(v) for k, v in table.items()}

    def occupied_bands(self, atoms: Atoms | None = None) -> int:
        """Filled bands of the neutral structure (SOC: one electron per band)."""
        self._sync(atoms)
        return self._occupied()

    def _occupied(self) -> int:
        symbols = self.atoms.get_chemical_symbols()
        table = self.valence()
        missing = sorted(set(symbols) - set(table))
        if missing:
            raise ValueError(f"no valence electron count for {', '.join(missing)}")
        electrons = sum(table[s] for s in symbols)
        return filled_levels(electrons, self.results["hamiltonian"].spinful)

    # ------------------------------------------------------------------ our k-resolved solver
    def eigenvalues_at(
        self,
        k=(0.0, 0.0, 0.0),
        nbands: int | None = None,
        sigma: float | None = None,
        atoms: Atoms | None = None,
    ) -> np.ndarray:
        """Levels (eV) at fractional k: all of them (dense) when nbands is None; else
        ``nbands`` levels: the nearest ``sigma`` when given, otherwise (small cells) the
        bands numbered nocc - nbands/2 ... around the gap, so that band lines stay the
        same bands along a path, or (large cells) those nearest the mid-gap energy."""
        self._sync(atoms)
        return self._levels(k, nbands, sigma)

    def _levels(self, k, nbands: int | None, sigma: float | None) -> np.ndarray:
        tb = self._tight_binding()
        if nbands is None:
            return tb.eigh(k)
        if tb.dimension <= DENSE_LIMIT:
            if sigma is None:
                first = max(0, self._occupied() - nbands // 2)
                return tb.eigh(k, bands=slice(first, first + nbands))
            energies = tb.eigh(k)
            return np.sort(energies[np.argsort(np.abs(energies - sigma))[:nbands]])
        centre = self._midgap() if sigma is None else sigma
        return tb.eigsh(k, centre, nbands, precision=self.parameters["precision"])

    def band_edges(self, atoms: Atoms | None = None) -> tuple[float, float]:
        """(valence-band maximum, conduction-band minimum) in eV over Gamma, the three M
        and the two K points, by electron counting (dense for small cells, inertia
        counts and shift-invert with PARDISO for large ones)."""
        self._sync(atoms)
        return self._band_edges()

    def midgap(self, atoms: Atoms | None = None) -> float:
        """The middle of the gap (eV)."""
        self._sync(atoms)
        return self._midgap()

    def _midgap(self) -> float:
        vbm, cbm = self._band_edges()
        return 0.5 * (vbm + cbm)

    def _band_edges(self) -> tuple[float, float]:
        return self._cached("band_edges", self._find_band_edges)

    def _find_band_edges(self) -> tuple[float, float]:
        tb = self._tight_binding()
        nocc = self._occupied()
        kpts = extrema_kpoints(self.atoms.cell)
        if tb.dimension <= DENSE_LIMIT:
            e = tb.eigenvalues(kpts, bands=slice(nocc - 1, nocc + 1))  # the two edges only
            return float(e[:, 0].max()), float(e[:, 1].min())
        if mkl_library() is None:
            raise ValueError(
                f"H has {tb.dimension} rows: finding the gap of a large cell needs PARDISO "
                "(pip install mkl), or pass sigma (eV, inside the gap) explicitly"
            )
        log.info("finding the gap of %d rows by inertia counts (PARDISO)", tb.dimension)
        sigma, vbm, cbm = self.parameters["gap_guess"], -np.inf, np.inf
        for k in tqdm(kpts, desc="band edges", unit="k", disable=None):
            v, c = tb.band_edges(k, nocc, sigma)
            vbm, cbm = max(vbm, v), min(cbm, c)
            sigma = 0.5 * (vbm + cbm) if vbm < cbm else 0.5 * (v + c)  # next k starts here
        return float(vbm), float(cbm)

    # ------------------------------------------------------------------ ASE's band interface
    def get_ibz_k_points(self) -> np.ndarray:
        """The ``kpts`` parameter as fractional k-points (no symmetry reduction)."""
        return self._kpoints(None if self.parameters["kpts"] is not None else self._target(None))

    def _kpoints(self, atoms: Atoms | None) -> np.ndarray:
        """``kpts``, or the Gamma-M-K-Gamma path of the cell of ``atoms`` (60 points)."""
        kpts = self.parameters["kpts"]
        if kpts is None:
            kpts = atoms.cell.bandpath("GMKG", npoints=60)
        kpts = getattr(kpts, "kpts", kpts)
        return np.array(kpts, dtype=float).reshape(-1, 3)

    def get_k_point_weights(self) -> np.ndarray:
        n = len(self.get_ibz_k_points())
        return np.full(n, 1.0 / n)

    def get_number_of_spins(self) -> int:
        """1: spinless bands (doubly degenerate) or, with SOC, spinor bands."""
        return 1

    def get_spin_polarized(self) -> bool:
        return False

    def get_eigenvalues(self, kpt: int = 0, spin: int = 0) -> np.ndarray:
        """ASE's interface: levels (eV) at the ``kpt``-th k-point of ``kpts`` (all, or
        ``nbands`` around the gap / ``sigma``)."""
        if spin != 0:
            raise ValueError("one spin channel (spinors with SOC): spin must be 0")
        atoms = self._sync(None)
        levels = self._cache.setdefault("eigenvalues", {})
        if kpt not in levels:
            k = self._kpoints(atoms)[kpt]
            levels[kpt] = self._levels(k, self.parameters["nbands"], self.parameters["sigma"])
        return levels[kpt].copy()

    def get_fermi_level(self) -> float:
        """The mid-gap energy, where the Fermi level of the neutral insulator lies."""
        return self.midgap()

    def band_structure(self, path: str | None = None, npoints: int = 60) -> BandStructure:
        """ASE's band structure at ``kpts`` (mid-gap reference); with ``path`` (e.g.
        "GMKG") ``kpts`` is first set to that path of the cell."""
        from ase.spectrum.band_structure import get_band_structure

        atoms = self._sync(None)
        if path is not None:
            self.set(kpts=atoms.cell.bandpath(path, npoints=npoints))
        kpts = range(len(self._kpoints(atoms)))
        for kpt in tqdm(kpts, desc=f"bands ({len(atoms)} atoms)", unit="k", disable=None):
            self.get_eigenvalues(kpt)  # cached: ASE's call below reads them back
        return get_band_structure(atoms=self.atoms, calc=self)

    # ------------------------------------------------------------------ topology
    def chern_numbers(
        self, nbands: int = 1, spin: int | None = 1, atoms: Atoms | None = None, tol: float = 5e-3
    ):
        """C3 eigenvalues at Gamma, K, K' and the Chern number mod 3 of the top ``nbands``
        valence bands; with SOC those of one spin sector (``spin`` = +1 / -1, None: all
        bands regardless of spin). See :mod:`ase_moireh.topology`."""
        from ase_moireh.topology import c3_eigenvalues, sector_c3_eigenvalues, sector_window

        atoms = self._sync(atoms)
        tb, nocc = self._tight_binding(), self._occupied()
        sector = bool(tb.spinful and spin)
        points = self._c3_points(sector_window(nbands) if sector else nbands + 6)
        if sector:
            return sector_c3_eigenvalues(tb, atoms, nbands, nocc, spin=spin, tol=tol, points=points)
        bands = np.arange(nocc - nbands, nocc)
        return c3_eigenvalues(tb, atoms, bands, degeneracy_tol=tol, points=points)

    def _c3_points(self, window: int) -> list:
        """Gamma, K, K' (:func:`.topology.c3_points`), cached for the next call: every
        level for small cells, for large ones the ``window`` levels below the mid-gap
        (one factorisation per point instead of a dense diagonalisation)."""
        from ase_moireh.topology import C3_DENSE_LIMIT, c3_points

        tb = self._tight_binding()
        reach, points = self._cache.get("c3_points", (0, None))
        if points is not None and reach >= window:
            return points
        below = None
        if tb.dimension > C3_DENSE_LIMIT:
            below = (self._midgap(), self._occupied(), window)
        points = list(c3_points(tb, self.atoms, below=below))
        self._cache["c3_points"] = (window if below else tb.dimension, points)
        return points


def _check_same_structure(a: Atoms, b: Atoms) -> None:
    if (
        len(a) != len(b)
        or not np.array_equal(a.numbers, b.numbers)
        or np.abs(a.positions - b.positions).max() > 1e-4
        or np.abs(np.asarray(a.cell) - np.asarray(b.cell)).max() > 1e-4
    ):
        raise ValueError("the DFT dataset describes a different structure than the Atoms")
