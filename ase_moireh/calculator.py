"""MoireHCalculator: an ASE calculator giving the Hamiltonian, overlap, bands and Chern
numbers of a structure.

    atoms.calc = MoireHCalculator()                   # bundled SOC model
    h = atoms.calc.get_hamiltonian()                  # BlockOperator (CSR with k=...)
    tb = atoms.calc.get_tight_binding()               # H and S together
    atoms.calc.set(kpts=atoms.cell.bandpath("GMKG", npoints=40), nbands=20)
    bs = atoms.calc.band_structure()                  # ASE's own machinery
    atoms.calc.eigenvalues_at((1/3, 2/3, 0), nbands=20)   # K, our solver
    atoms.calc.chern_numbers(nbands=2)                # C3 eigenvalues -> C mod 3

It follows ASE's contract: options live in ``parameters`` (``default_parameters``,
``todict()``, ``set()``), results in ``results`` are recomputed when ``check_state``
sees the atoms change, and the band-structure interface (``get_eigenvalues(kpt, spin)``,
``get_ibz_k_points``, ``get_number_of_spins``, ``get_fermi_level``) is ASE's, so
``band_structure()`` and ``ase.dft`` tools work. With ``dft=`` a DFT dataset supplies H
(and S, if stored) instead of the model, so DFT and model bands go through one code path.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.spectrum.band_structure import BandStructure
from tqdm import tqdm

from ase_moireh.basis import filled_levels
from ase_moireh.block_operator import BlockOperator
from ase_moireh.data import bundled_model_path
from ase_moireh.domain import ModelDomain, check, findings, spread_finding
from ase_moireh.factorize import mkl_library
from ase_moireh.io.dataset import read_structure
from ase_moireh.kpoints import extrema_kpoints
from ase_moireh.overlap import resolve_overlap
from ase_moireh.tightbinding import ElectronicStructure, TightBinding

log = logging.getLogger(__name__)

#: dense diagonalisation up to this matrix size, shift-invert above
DENSE_LIMIT = 3000
#: parameters that change H or S (the others only change which levels are computed)
OPERATOR_PARAMETERS = ("model", "soc", "device", "dft", "pao_dir", "openmx_basis", "domain_check")


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
      (:mod:`ase_moireh.domain`) before predicting: True raises
      :class:`~ase_moireh.domain.OutOfDomainError` for structures the model cannot
      describe at all (unknown elements, overlapping atoms, a bulk-like stack) and warns
      (:class:`~ase_moireh.domain.OutOfDomainWarning`) for milder departures; False only
      warns.
    """

    implemented_properties = ["hamiltonian", "overlap", "hamiltonian_spread", "band_edges"]
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
        self._attached: Atoms | None = None
        super().__init__(**kwargs)

    def set(self, **kwargs) -> dict:
        unknown = sorted(set(kwargs) - set(self.default_parameters))
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {unknown}; known: {sorted(self.default_parameters)}"
            )
        changed = super().set(**kwargs)
        if any(key in changed for key in OPERATOR_PARAMETERS):
            self._bundle = None if {"model", "soc"} & set(changed) else self._bundle
            self._dft = None
            self.reset()
        elif changed:  # other k-points or levels: H and S stay valid
            self.results.pop("eigenvalues", None)
        return changed

    # ------------------------------------------------------------------ atoms
    def set_atoms(self, atoms: Atoms) -> None:
        """Called by ASE on ``atoms.calc = calc``: the Atoms the methods default to."""
        self._attached = atoms

    def _update(self, atoms: Atoms | None) -> Atoms:
        """The atoms to work on; H and S computed for them (ASE's ``check_state`` drops
        every cached result when they changed since the last calculation)."""
        atoms = atoms if atoms is not None else self._attached
        if atoms is None:
            raise ValueError("no Atoms: attach the calculator (atoms.calc = ...) or pass atoms")
        self.get_property("hamiltonian", atoms)
        return atoms

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
        if "hamiltonian" not in self.results or system_changes:
            super().calculate(atoms, properties, system_changes)
            self.results = self._operators(self.atoms)
        if "band_edges" in properties:
            self.results["band_edges"] = self._band_edges()

    def _operators(self, atoms: Atoms) -> dict:
        """H, S (exact where not stored) and, for an ensemble, the spread of H."""
        if self.dft is not None:
            _check_same_structure(atoms, self.dft.atoms)
            h, s, spread = self.dft.hamiltonian, self.dft.overlap, None
        else:
            from ase_moireh.model.predict import predict_operators

            self._check_domain(atoms)
            h, s, spread = predict_operators(self.bundle, atoms, self.parameters["device"])
            if spread is not None:
                self._check_spread(atoms, spread)
        if s is None:  # a dataset stored without S, or an H-only model
            extra = self.dft.extra if self.dft is not None else {}
            named = self.parameters["openmx_basis"] or extra.get("openmx_basis")
            s = resolve_overlap(h.basis, named, self.parameters["pao_dir"]).operator(atoms, h.edges)
        results = {"hamiltonian": h, "overlap": s, "tight_binding": TightBinding(h, s)}
        if spread is not None:
            results["hamiltonian_spread"] = spread
        return results

    # ------------------------------------------------------------------ domain
    def model_domain(self) -> ModelDomain | None:
        """What the model was trained on (None: its file records nothing)."""
        data = self.bundle.info.get("domain")
        return None if data is None else ModelDomain.from_dict(data)

    def domain_findings(self, atoms: Atoms | None = None) -> tuple[list[str], list[str]]:
        """(severe, mild) reasons why the structure lies outside the model's domain."""
        atoms = atoms if atoms is not None else self._attached
        domain = self.model_domain()
        if domain is None or self.dft is not None:
            return [], []
        return findings(atoms, domain, self.bundle.config.cutoff)

    def _check_domain(self, atoms: Atoms) -> None:
        if self.model_domain() is None:
            log.warning("the model file records no training domain: structures go unchecked")
            return
        severe, mild = self.domain_findings(atoms)
        check(severe, mild, strict=self.parameters["domain_check"], where=_describe(atoms))

    def _check_spread(self, atoms: Atoms, spread: BlockOperator) -> None:
        domain = self.model_domain()
        if domain is not None:
            largest = float(np.abs(spread.values).max()) if spread.nedges else 0.0
            check([], spread_finding(largest, domain), where=_describe(atoms))

    # ------------------------------------------------------------------ operators
    def get_hamiltonian(self, atoms: Atoms | None = None, k=None):
        """H as a BlockOperator, or H(k) as CSR at fractional k."""
        h = self.get_property("hamiltonian", self._update(atoms))
        return h if k is None else h.bloch(k)

    def get_overlap(self, atoms: Atoms | None = None, k=None):
        """S as a spinless BlockOperator, or S(k) as CSR in H's layout at fractional k."""
        self._update(atoms)
        return self.results["overlap"] if k is None else self.get_tight_binding().Sk(k)

    def get_tight_binding(self, atoms: Atoms | None = None) -> TightBinding:
        """H and S together (:class:`ase_moireh.tightbinding.TightBinding`)."""
        self._update(atoms)
        return self.results["tight_binding"]

    def get_hamiltonian_spread(self, atoms: Atoms | None = None) -> BlockOperator:
        """Per-element standard deviation of H over the ensemble's members."""
        return self.get_property("hamiltonian_spread", self._update(atoms))

    def write_operators(self, path, atoms: Atoms | None = None, precision: str = "single"):
        """Stream the predicted H and exact S of ``atoms`` to an HDF5 file, never holding
        them (10^5-atom ribbons: :mod:`ase_moireh.model.stream`), with the domain and
        spread checks of a prediction in memory. Returns the StreamReport (time, memory)."""
        from ase_moireh.model.stream import stream_prediction

        atoms = atoms if atoms is not None else self._attached
        if atoms is None:
            raise ValueError("no Atoms: attach the calculator (atoms.calc = ...) or pass atoms")
        if self.dft is not None:
            raise ValueError("write_operators streams a model's prediction, not a DFT dataset")
        self._check_domain(atoms)
        device = self.parameters["device"]
        report = stream_prediction(self.bundle, atoms, path, device, precision)
        domain = self.model_domain()
        if domain is not None:
            check([], spread_finding(report.largest_spread_eV, domain), where=_describe(atoms))
        return report

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
        atoms = self._update(atoms)
        table = self.valence()
        missing = sorted(set(atoms.get_chemical_symbols()) - set(table))
        if missing:
            raise ValueError(f"no valence electron count for {', '.join(missing)}")
        electrons = sum(table[s] for s in atoms.get_chemical_symbols())
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
        tb = self.get_tight_binding(atoms)
        if nbands is None:
            return tb.eigh(k)
        if tb.dimension <= DENSE_LIMIT:
            if sigma is None:
                first = max(0, self.occupied_bands(atoms) - nbands // 2)
                return tb.eigh(k, bands=slice(first, first + nbands))
            energies = tb.eigh(k)
            return np.sort(energies[np.argsort(np.abs(energies - sigma))[:nbands]])
        centre = self.midgap(atoms) if sigma is None else sigma
        return tb.eigsh(k, centre, nbands, precision=self.parameters["precision"])

    def band_edges(self, atoms: Atoms | None = None) -> tuple[float, float]:
        """(valence-band maximum, conduction-band minimum) in eV over Gamma, the three M
        and the two K points, by electron counting (dense for small cells, inertia
        counts and shift-invert with PARDISO for large ones)."""
        return tuple(self.get_property("band_edges", self._update(atoms)))

    def midgap(self, atoms: Atoms | None = None) -> float:
        """The middle of the gap (eV)."""
        vbm, cbm = self.band_edges(atoms)
        return 0.5 * (vbm + cbm)

    def _band_edges(self) -> tuple[float, float]:
        tb = self.results["tight_binding"]
        nocc = self.occupied_bands()
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
        kpts = self.parameters["kpts"]
        if kpts is None:
            atoms = self._update(None)
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
        self._update(None)
        cache = self.results.setdefault("eigenvalues", {})
        if kpt not in cache:
            k = self.get_ibz_k_points()[kpt]
            cache[kpt] = self.eigenvalues_at(k, self.parameters["nbands"], self.parameters["sigma"])
        return cache[kpt].copy()

    def get_fermi_level(self) -> float:
        """The mid-gap energy, where the Fermi level of the neutral insulator lies."""
        return self.midgap()

    def band_structure(self, path: str | None = None, npoints: int = 60) -> BandStructure:
        """ASE's band structure at ``kpts`` (mid-gap reference); with ``path`` (e.g.
        "GMKG") ``kpts`` is first set to that path of the cell."""
        if path is not None:
            self.set(kpts=self._update(None).cell.bandpath(path, npoints=npoints))
        from ase.spectrum.band_structure import get_band_structure

        self._update(None)
        kpts = range(len(self.get_ibz_k_points()))
        for kpt in tqdm(kpts, desc=f"bands ({len(self.atoms)} atoms)", unit="k", disable=None):
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

        tb = self.get_tight_binding(atoms)
        nocc = self.occupied_bands(atoms)
        sector = bool(tb.spinful and spin)
        points = self._c3_points(tb, nocc, sector_window(nbands) if sector else nbands + 6)
        if sector:
            return sector_c3_eigenvalues(
                tb, self.atoms, nbands, nocc, spin=spin, tol=tol, points=points
            )
        bands = np.arange(nocc - nbands, nocc)
        return c3_eigenvalues(tb, self.atoms, bands, degeneracy_tol=tol, points=points)

    def _c3_points(self, tb: TightBinding, nocc: int, window: int) -> list:
        """Gamma, K, K' (:func:`.topology.c3_points`), kept in ``results`` for the next
        call: every level for small cells, for large ones the ``window`` levels below the
        mid-gap (one factorisation per point instead of a dense diagonalisation)."""
        from ase_moireh.topology import C3_DENSE_LIMIT, c3_points

        reach, points = self.results.get("c3_points", (0, None))
        if points is not None and reach >= window:
            return points
        below = (self.midgap(), nocc, window) if tb.dimension > C3_DENSE_LIMIT else None
        points = list(c3_points(tb, self.atoms, below=below))
        self.results["c3_points"] = (window if below else tb.dimension, points)
        return points


def _describe(atoms: Atoms) -> str:
    return f"{atoms.get_chemical_formula()} ({len(atoms)} atoms)"


def _check_same_structure(a: Atoms, b: Atoms) -> None:
    if (
        len(a) != len(b)
        or not np.array_equal(a.numbers, b.numbers)
        or np.abs(a.positions - b.positions).max() > 1e-4
        or np.abs(np.asarray(a.cell) - np.asarray(b.cell)).max() > 1e-4
    ):
        raise ValueError("the DFT dataset describes a different structure than the Atoms")
