"""MoireHCalculator: an ASE calculator giving H, S, bands and Chern numbers of a structure.

    atoms.calc = MoireHCalculator()              # bundled SOC model
    h = atoms.calc.get_hamiltonian()             # BlockOperator (or CSR at k=...)
    bs = atoms.calc.band_structure(npoints=40, nbands=20)   # ase BandStructure
    atoms.calc.chern_numbers(nbands=2)           # C3 eigenvalues -> C mod 3

Results are cached against the Atoms like any ASE calculator (``check_state``). With
``dft=`` a converted DFT dataset supplies H and S instead of the model, so DFT and model
bands go through the same code.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.spectrum.band_structure import BandStructure

from .build.openmx_input import DEFAULT_SPECIES
from .dataset import ElectronicStructure, read_structure
from .factorize import mkl_library
from .operator import BlockOperator
from .overlap import resolve_overlap
from .solve import band_edges, bloch_pair, dense_eigenvalues, gap_energy, shift_invert_eigh

log = logging.getLogger(__name__)

#: dense diagonalisation below this matrix size, shift-invert above
DENSE_LIMIT = 3000
#: Gamma, M1, M2, M3, K, K' of a hexagonal cell (fractional): where band edges sit
EXTREMA_KPOINTS = [
    (0, 0, 0),
    (0.5, 0, 0),
    (0, 0.5, 0),
    (0.5, 0.5, 0),
    (1 / 3, 1 / 3, 0),
    (2 / 3, 2 / 3, 0),
]


def valence_electrons(atoms: Atoms) -> int:
    """Electrons of the OpenMX pseudopotentials the models were trained with."""
    try:
        return int(sum(DEFAULT_SPECIES[s][2] for s in atoms.get_chemical_symbols()))
    except KeyError as err:
        raise ValueError(f"valence electron count unknown for {err}") from None


class MoireHCalculator(Calculator):
    implemented_properties = ["hamiltonian", "overlap"]

    def __init__(
        self,
        model=None,
        soc: bool = True,
        device: str = "cpu",
        dft: str | Path | ElectronicStructure | None = None,
        pao_dir: str | Path | None = None,
        openmx_basis: dict[str, str] | None = None,
        **kwargs,
    ):
        """``model``: a model file, a loaded ModelBundle, or None for the bundled model
        (``soc`` picks SOC or collinear); its S is exact, from the basis it carries.
        ``dft``: a dftio folder or ElectronicStructure whose H (and S, if stored) are used
        instead of the model (same atoms required); a dataset without S gets the exact
        one, from the bundled MoTe2 radial functions or the ``.pao`` files in
        ``pao_dir`` (``openmx_basis`` names them, e.g. {'W': 'W7.0-s3p2d2'}, when the
        dataset does not)."""
        super().__init__(**kwargs)
        self.pao_dir = pao_dir
        self.openmx_basis = openmx_basis
        self.device = device
        self.soc = soc
        self._model = model
        self._bundle = None
        self.dft = read_structure(dft) if isinstance(dft, str | Path) else dft
        self._attached: Atoms | None = None

    def set_atoms(self, atoms: Atoms) -> None:
        """Called by ASE on ``atoms.calc = calc``: the Atoms the methods default to."""
        self._attached = atoms

    def _atoms(self, atoms: Atoms | None) -> Atoms:
        atoms = atoms if atoms is not None else self._attached
        if atoms is None:
            raise ValueError("no Atoms: attach the calculator (atoms.calc = ...) or pass atoms")
        return atoms

    @property
    def bundle(self):
        """The model, loaded on first use."""
        if self._bundle is None:
            from .cli_model import bundled_model_path
            from .model.io import ModelBundle, load_bundle

            if isinstance(self._model, ModelBundle):
                self._bundle = self._model
            else:
                self._bundle = load_bundle(self._model or bundled_model_path(self.soc))
        return self._bundle

    def calculate(self, atoms=None, properties=("hamiltonian",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if self.dft is not None:
            self._check_same_structure(self.atoms, self.dft.atoms)
            h, s, spread = self.dft.hamiltonian, self.dft.overlap, None
        else:
            from .model.predict import predict_operators

            h, s, spread = predict_operators(self.bundle, self.atoms, self.device)
        if s is None:  # a dataset stored without S, or an H-only model
            named = self.openmx_basis or (self.dft.extra if self.dft else {}).get("openmx_basis")
            s = resolve_overlap(h.basis, named, self.pao_dir).operator(self.atoms, h.edges)
        self.results = {"hamiltonian": h, "overlap": s, "spread": spread}

    @staticmethod
    def _check_same_structure(a: Atoms, b: Atoms) -> None:
        if (
            len(a) != len(b)
            or not np.array_equal(a.numbers, b.numbers)
            or (
                np.abs(a.positions - b.positions).max() > 1e-4
                or np.abs(np.asarray(a.cell) - np.asarray(b.cell)).max() > 1e-4
            )
        ):
            raise ValueError("the DFT dataset describes a different structure than the Atoms")

    # ------------------------------------------------------------------ operators
    def get_hamiltonian(self, atoms: Atoms | None = None, k=None):
        """H as a BlockOperator, or as CSR at fractional k."""
        h = self.get_property("hamiltonian", self._atoms(atoms))
        return h if k is None else h.bloch(k)

    def get_overlap(self, atoms: Atoms | None = None, k=None):
        """S as a BlockOperator (spinless), or as CSR at fractional k."""
        s = self.get_property("overlap", self._atoms(atoms))
        return s if k is None else s.bloch(k)

    def operators(self, atoms: Atoms | None = None) -> tuple[BlockOperator, BlockOperator]:
        return self.get_hamiltonian(atoms), self.get_overlap(atoms)

    # ------------------------------------------------------------------ bands
    def occupied_bands(self, atoms: Atoms | None = None) -> int:
        """Number of filled bands of the neutral structure (SOC: one electron per band)."""
        h = self.get_hamiltonian(atoms)
        electrons = valence_electrons(self.atoms)
        return electrons if h.spinful else electrons // 2

    def get_eigenvalues(
        self,
        k=(0.0, 0.0, 0.0),
        nbands: int | None = None,
        sigma: float | None = None,
        atoms: Atoms | None = None,
    ) -> np.ndarray:
        """Eigenvalues (eV) at fractional k: all of them (dense) when nbands is None;
        else ``nbands`` levels: the nearest ``sigma`` when given, otherwise (small cells)
        the bands numbered nocc - nbands/2 ... around the gap, so that band lines stay
        the same bands along a path, or (large cells) the nearest the mid-gap energy."""
        h, s = self.operators(atoms)
        if nbands is None or h.dimension <= DENSE_LIMIT:
            energies = dense_eigenvalues(h, s, [k])[0]
            if nbands is None:
                return energies
            if sigma is None:
                first = max(0, self.occupied_bands(atoms) - nbands // 2)
                return energies[first : first + nbands]
            return np.sort(energies[np.argsort(np.abs(energies - sigma))[:nbands]])
        hk, sk = bloch_pair(h, s, k)
        return shift_invert_eigh(
            hk, sk, self.midgap(atoms) if sigma is None else sigma, nbands, k=k
        )

    def midgap(self, atoms: Atoms | None = None) -> float:
        """Middle of the gap between the valence-band maximum and conduction-band minimum
        found at Gamma, the three M and the two K points, by electron counting: dense
        diagonalisation for small cells, inertia counts plus shift-invert (PARDISO, i.e.
        Intel MKL installed) for large ones."""
        if "midgap" not in self.results:
            h, s = self.operators(atoms)
            nocc = self.occupied_bands(atoms)
            if h.dimension <= DENSE_LIMIT:
                e = dense_eigenvalues(h, s, EXTREMA_KPOINTS)
                vbm, cbm = e[:, nocc - 1].max(), e[:, nocc].min()
            else:
                vbm, cbm = self._band_edges_sparse(h, s, nocc)
            self.results["midgap"] = 0.5 * (vbm + cbm)
        return self.results["midgap"]

    @staticmethod
    def _band_edges_sparse(h: BlockOperator, s: BlockOperator, nocc: int) -> tuple[float, float]:
        if mkl_library() is None:
            raise ValueError(
                f"H has {h.dimension} rows: finding the gap of a large cell needs PARDISO "
                "(pip install mkl), or pass sigma (eV, inside the gap) explicitly"
            )
        sigma = gap_energy(*bloch_pair(h, s, EXTREMA_KPOINTS[0]), nocc)
        edges = [band_edges(*bloch_pair(h, s, k), nocc, sigma, k=k) for k in EXTREMA_KPOINTS]
        return max(v for v, _ in edges), min(c for _, c in edges)

    def band_structure(
        self,
        path: str = "GMKG",
        npoints: int = 60,
        nbands: int | None = None,
        sigma: float | None = None,
        atoms: Atoms | None = None,
    ) -> BandStructure:
        """Bands along a path of the (moire) Brillouin zone as an ASE BandStructure,
        energies in eV with the mid-gap energy as reference."""
        self.get_hamiltonian(atoms)
        bandpath = self.atoms.cell.bandpath(path, npoints=npoints)
        energies = np.array([self.get_eigenvalues(k, nbands, sigma) for k in bandpath.kpts])
        return BandStructure(bandpath, energies[None], reference=self.midgap())

    def chern_numbers(
        self, nbands: int = 1, spin: int | None = 1, atoms: Atoms | None = None, tol: float = 5e-3
    ):
        """C3 eigenvalues at Gamma, K, K' and the Chern number mod 3 of the top ``nbands``
        valence bands; with SOC those of one spin sector (``spin`` = +1 / -1, None: all
        bands regardless of spin). See :mod:`.topology`."""
        from .topology import c3_eigenvalues, sector_c3_eigenvalues

        h, s = self.operators(atoms)
        nocc = self.occupied_bands(atoms)
        if h.spinful and spin:
            return sector_c3_eigenvalues(h, s, self.atoms, nbands, nocc, spin=spin, tol=tol)
        bands = np.arange(nocc - nbands, nocc)
        return c3_eigenvalues(h, s, self.atoms, bands, degeneracy_tol=tol)
