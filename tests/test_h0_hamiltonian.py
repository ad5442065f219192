"""The whole zeroth-step H0 (T + V_NL + V_NA + V_xc) against OpenMX's own zeroth step, its
edges against OpenMX's, the bundled OpenMX files against the shared ones, and the
refusals.

The reference, ``tests/data/h0/bl1x1_s22_h0.npz``, is stock OpenMX 3.9 (the corpus's
build) run for one SCF step (``scf.maxIter 1``) at Gamma on the inputs of the shared
cases ``bl1x1_nosoc_s22`` and ``bl1x1_soc_s22``: the H0 blocks of 20 collinear and 8 SOC
edges (those of ``bl1x1_s22_vxc.npz``), geometry as OpenMX had it. Script:
/work/h0dev/make_h0_test_data.py.
"""

import lzma

import numpy as np
import pytest
from ase import Atoms

from ase_moireh.basis import Basis
from ase_moireh.data import bundled_openmx_data_path
from ase_moireh.h0 import H0Error, ZerothStepHamiltonian, openmx_edges, resolve_h0
from ase_moireh.h0.hamiltonian import check_structure, h0_builder, input_species
from ase_moireh.io.openmx_input import DEFAULT_SPECIES
from ase_moireh.io.pao import PAOError
from ase_moireh.io.vps import VPSError
from ase_moireh.overlap import bundled_overlap
from shared_data import (
    OPENMX,
    SHARED_OPENMX,
    converted,
    h0_reference,
    needs_shared,
    reference_atoms,
)

BUNDLED = bundled_openmx_data_path()
BASIS = {e: spec[0] for e, spec in DEFAULT_SPECIES.items()}
PSEUDO = {e: spec[1] for e, spec in DEFAULT_SPECIES.items()}
#: the issue's bar for the whole H0 is 5 meV max; measured 1.9e-5 eV (V_xc: libxc's
#: PW92 constants against OpenMX's SIESTA port, grid sums in single precision): ~1.5x
TOL_EV = 3e-5


@pytest.fixture(scope="module")
def reference() -> dict:
    return h0_reference("bl1x1_s22_h0.npz")


@pytest.fixture(scope="module")
def builder() -> ZerothStepHamiltonian:
    return resolve_h0(bundled_overlap().basis)


@pytest.mark.slow
def test_h0_matches_openmx_zeroth_step(reference, builder):
    op = builder.operator(reference_atoms(reference), reference["edges"])
    assert not op.spinful and op.values.dtype == float
    assert np.abs(reference["h0"]).max() > 50  # on-site, eV
    assert np.abs(op.values - reference["h0"]).max() < TOL_EV


@pytest.mark.slow
def test_spin_orbit_h0_matches_openmx_zeroth_step(reference, builder):
    """Spinor blocks; the spin-dependent parts (uu - dd, ud, du: V_NL's j-dependent
    projectors alone) to 1e-9 eV, as every other term is spin-independent."""
    op = builder.operator(reference_atoms(reference, "soc_"), reference["soc_edges"], spinful=True)
    assert op.spinful and np.iscomplexobj(op.values)
    assert np.abs(op.values - reference["soc_h0"]).max() < TOL_EV
    ref = op.__class__(op.numbers, op.basis, op.edges, reference["soc_h0"], True)
    for e in range(op.nedges):
        ours, theirs = op.block(e), ref.block(e)
        n, m = ours.shape[0] // 2, ours.shape[1] // 2
        spin = (slice(None, n), slice(m, None)), (slice(n, None), slice(None, m))
        for rows, cols in spin:
            assert np.abs(ours[rows, cols] - theirs[rows, cols]).max() < 1e-9
        split = (ours[:n, :m] - ours[n:, m:]) - (theirs[:n, :m] - theirs[n:, m:])
        assert np.abs(split).max() < 1e-9


@pytest.mark.slow
def test_h0_is_the_sum_of_its_terms(reference, builder):
    atoms, edges = reference_atoms(reference), reference["edges"]
    for spinful in (False, True):
        whole = builder.operator(atoms, edges, spinful)
        terms = builder.terms(atoms, edges, spinful)
        assert set(builder.timings) == {"T", "V_NL", "V_NA", "V_xc"}
        spinless = sum(terms[t].values for t in ("T", "V_NA", "V_xc"))
        lifted = terms["T"].__class__(atoms.numbers, builder.basis, edges, spinless)
        if spinful:
            from ase_moireh.block_operator import spinor_lift

            lifted = spinor_lift(lifted)
        assert np.abs(whole.values - lifted.values - terms["V_NL"].values).max() < 1e-12


@pytest.mark.parametrize("case", ["bl1x1_nosoc_s22", "bl1x1_soc_s00"])
def test_default_edges_are_openmx_edges(case):
    """Every pair within the sum of the PAO cutoffs, and the on-site blocks: the blocks
    OpenMX wrote, no more, no fewer."""
    run = converted(case)
    atoms, h = run.atoms, run.hamiltonian
    cutoff = {s: bundled_overlap().species(s).cutoff for s in ("Mo", "Te")}
    edges = openmx_edges(atoms, np.array([cutoff[s] for s in atoms.get_chemical_symbols()]))
    assert len(edges) == h.nedges and (h.find(edges) >= 0).all()
    assert np.array_equal(edges[: len(atoms), 0], np.arange(len(atoms)))  # on-site first


@needs_shared
def test_bundled_files_are_the_shared_ones_byte_for_byte():
    """The H0 of the bundled files is the H0 of the shared DFT_DATA (the corpus's)."""
    shared = SHARED_OPENMX / "DFT_DATA"
    files = [("PAO", f"{b.split('-')[0]}.pao") for b in BASIS.values()]
    files += [("VPS", f"{p}.vps") for p in PSEUDO.values()]
    for sub, name in files:
        packed = (BUNDLED / sub / f"{name}.xz").read_bytes()
        assert lzma.decompress(packed) == (shared / sub / name).read_bytes(), name


@needs_shared
@pytest.mark.slow
def test_bundled_files_reproduce_the_shared_h0():
    """A Mo dimer in a small box (one species pair of tables: fast), every term."""
    atoms = Atoms("Mo2", positions=[[2.0, 2.0, 2.0], [4.2, 2.5, 3.1]], cell=[6, 6.5, 7], pbc=True)
    ours = ZerothStepHamiltonian(BUNDLED, {"Mo": BASIS["Mo"]}, {"Mo": PSEUDO["Mo"]})
    shared = ZerothStepHamiltonian(
        SHARED_OPENMX / "DFT_DATA", {"Mo": BASIS["Mo"]}, {"Mo": PSEUDO["Mo"]}
    )
    a, b = ours.operator(atoms, spinful=True), shared.operator(atoms, spinful=True)
    assert np.array_equal(a.edges, b.edges) and a.nedges > 10
    assert np.abs(a.values).max() > 10 and np.abs(a.values - b.values).max() < 1e-9


def test_resolve_h0_is_cached_and_names_what_it_lacks():
    basis = bundled_overlap().basis
    with pytest.raises(H0Error, match="not among the bundled files"):
        resolve_h0(basis, {"Mo": "Mo9.0-s2p2d1"})
    with pytest.raises(H0Error, match="element W among the bundled"):
        resolve_h0(Basis.from_dftio("{'Mo': '3s2p1d', 'W': '3s2p2d'}"))
    with pytest.raises(H0Error, match="do not give the shells"):
        resolve_h0(Basis.from_dftio("{'Mo': '3s2p2d', 'Te': '3s2p2d'}"))
    assert resolve_h0(basis) is resolve_h0(basis, BASIS, pseudopotentials=PSEUDO)


def test_missing_and_broken_files_are_named(tmp_path):
    """A DATA.PATH without the .vps, then with a corrupt .pao: the reader's error names
    the file, before any work."""
    for sub in ("PAO", "VPS"):
        (tmp_path / sub).mkdir()
    (tmp_path / "PAO" / "Mo7.0.pao.xz").write_bytes((BUNDLED / "PAO" / "Mo7.0.pao.xz").read_bytes())
    with pytest.raises(VPSError, match="no Mo_PBE19.vps"):
        h0_builder(tmp_path, {"Mo": BASIS["Mo"]}, {"Mo": PSEUDO["Mo"]})
    (tmp_path / "PAO" / "Mo7.0.pao.xz").write_bytes(b"\xfd7zXZ\x00 truncated")
    with pytest.raises(PAOError, match=r"Mo7\.0\.pao\.xz: corrupt"):
        h0_builder(tmp_path, {"Mo": BASIS["Mo"]}, {"Mo": PSEUDO["Mo"]})
    with pytest.raises(H0Error, match="no pseudopotential named for element Mo"):
        h0_builder(tmp_path, {"Mo": BASIS["Mo"]}, {})


def test_structures_h0_cannot_describe_are_refused():
    cell = np.diag([6.0, 6.0, 20.0])
    with pytest.raises(H0Error, match="no pseudopotential for element W"):
        check_structure(Atoms("WTe2", positions=np.eye(3) * 2, cell=cell, pbc=True), BASIS)
    close = Atoms("MoTe", positions=[[1, 1, 5], [1.2, 1, 5]], cell=cell, pbc=True)
    with pytest.raises(H0Error, match=r"overlapping atoms: 0 \(Mo\) and 1 \(Te\).*0\.200 A"):
        check_structure(close, BASIS)
    image = Atoms("Mo", positions=[[0, 0, 0]], cell=[1.0, 6, 20], pbc=True)
    with pytest.raises(H0Error, match=r"image \[-?1, 0, 0\]"):
        check_structure(image, BASIS)
    flat = Atoms("MoTe", positions=[[1, 1, 5], [3, 1, 5]], cell=[6, 6, 0], pbc=[1, 1, 0])
    with pytest.raises(H0Error, match="no volume"):
        check_structure(flat, BASIS)
    magnetic = Atoms("MoTe", positions=[[1, 1, 5], [3, 1, 5]], cell=cell, pbc=True)
    magnetic.set_initial_magnetic_moments([1.0, 0.0])
    with pytest.raises(H0Error, match="spin-polarised"):
        check_structure(magnetic, BASIS)


def test_input_species_reads_a_corpus_input():
    basis, pseudo, cutoff = input_species(OPENMX / "bl1x1_nosoc_s22" / "openmx_in.dat")
    assert basis == BASIS and pseudo == PSEUDO and cutoff == 200.0


@pytest.mark.slow
def test_h0_of_a_converted_run_gives_its_residual(reference, builder):
    """H0 on H's blocks and spin layout: dH = H - H0 needs nothing else."""
    from ase_moireh.h0 import h0_of

    run = converted("bl1x1_nosoc_s22")  # the reference's structure, converged
    h0 = h0_of(run)
    assert np.array_equal(h0.edges, run.hamiltonian.edges)
    found = h0.find(reference["edges"])
    ours = np.concatenate([h0.block(int(e)).ravel() for e in found])
    assert np.abs(ours - reference["h0"]).max() < TOL_EV
    dh = run.hamiltonian.values - h0.values  # same blocks, same order
    assert 0 < np.abs(dh).max() < np.abs(run.hamiltonian.values).max() / 10


@pytest.mark.slow
def test_symmetrized_h0_keeps_the_cell_symmetry_the_grid_breaks():
    """V_xc on OpenMX's grid breaks the rigid (2,1) cell's rotations (egg-box); the group
    average restores every one to rounding, and moves H0 by no more than that error."""
    from ase_moireh.build import twisted_bilayer
    from ase_moireh.symmetry import proper_operations, symmetrized, symmetry_deviation

    atoms = twisted_bilayer(2, 1)
    h0 = resolve_h0(bundled_overlap().basis).operator(atoms, spinful=True)
    ops = proper_operations(atoms)
    assert len(ops) > 1  # D3: the identity, two C3, three C2
    before = max(symmetry_deviation(h0, atoms, op)[0] for op in ops)
    sym = symmetrized(h0, atoms, ops)
    after = max(symmetry_deviation(sym, atoms, op)[0] for op in ops)
    moved = float(np.abs(sym.values - h0.values).max())
    # measured 0.020 eV before; after, 8.6e-9 eV: the rotations of the built cell hold to
    # its positions' precision
    assert before > 1e-3 and after < 1.3e-8  # eV
    assert moved <= before
    rattled = atoms.copy()
    rattled.rattle(0.01, seed=1)
    assert len(proper_operations(rattled)) == 1  # the identity: H0 stays as it is
