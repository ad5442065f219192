"""dftio folders (ours and dftio's own), DeepH export."""

import json

import h5py
import numpy as np
import pytest
import scipy.linalg as sl
from click.testing import CliRunner

from ase_moireh.cli import moireh_convert
from ase_moireh.io.corpus import read_entry
from ase_moireh.io.dataset import (
    DFTIO_INFO_KEYS,
    METADATA_FILE,
    DatasetError,
    read_dftio,
    write_deeph,
    write_dftio,
)
from ase_moireh.overlap import OverlapError, resolve_overlap, with_overlap
from ase_moireh.tightbinding import TightBinding
from shared_data import ROOT, SI64, converted, scfout_path

#: the keys DeePTB 2.2.1 allows in info.json (dptb/utils/argcheck.py, set_info_options,
#: checked strictly by normalize_setinfo), the first three required
DEEPTB_INFO_REQUIRED = {"nframes", "pos_type", "pbc"}
DEEPTB_INFO_OPTIONAL = {"natoms", "bandinfo"}
CORPUS_ENTRY = ROOT / "data" / "corpus" / "shift2x2_000"


@pytest.mark.parametrize("case", ["bl1x1_nosoc_s04", "bl1x1_soc_s22"])
def test_dftio_round_trip_gives_the_same_arrays(case, tmp_path):
    s = converted(case)
    write_dftio(s, tmp_path / case)
    back = read_dftio(tmp_path / case)
    for a, b in ((s.hamiltonian, back.hamiltonian), (s.overlap, back.overlap)):
        idx = b.find(a.edges)
        assert np.all(idx >= 0) and b.nedges == a.nedges
        assert b.spinful == a.spinful and b.values.dtype == a.values.dtype
        for e, f in enumerate(idx):
            assert np.array_equal(a.block(e), b.block(int(f)))
    assert np.allclose(back.atoms.positions, s.atoms.positions)
    assert np.allclose(back.atoms.cell, s.atoms.cell)
    assert back.fermi_level == s.fermi_level
    info = json.loads((tmp_path / case / "info.json").read_text())
    meta = json.loads((tmp_path / case / METADATA_FILE).read_text())
    assert meta["spinful"] == s.spinful and info["nframes"] == 1
    assert back.extra == {k: v for k, v in s.extra.items() if k in meta}
    assert (tmp_path / case / "basis.dat").read_text() == "{'Mo': '3s2p1d', 'Te': '3s2p2d'}"
    with h5py.File(tmp_path / case / "overlaps.h5") as f:
        assert not np.iscomplexobj(f["0"]["0_0_0_0_0"][()])  # overlap stays spinless
    assert [p.name for p in tmp_path.iterdir()] == [case]  # no temporary folder left


def _assert_peer_readable(folder, openmx_basis) -> None:
    """What DeePTB's loader asks of a folder: info.json with only the keys it allows (all
    it requires), and overlaps.h5, spinless, on H's blocks, equal to the exact S."""
    info = json.loads((folder / "info.json").read_text())
    assert set(DFTIO_INFO_KEYS) == DEEPTB_INFO_REQUIRED | DEEPTB_INFO_OPTIONAL
    assert DEEPTB_INFO_REQUIRED <= set(info) <= set(DFTIO_INFO_KEYS), info
    assert info == {"nframes": 1, "pos_type": "cart", "pbc": True}  # as the Si64 peer
    with h5py.File(folder / "hamiltonians.h5") as fh, h5py.File(folder / "overlaps.h5") as fs:
        assert set(fs["0"]) == set(fh["0"])
        assert not np.iscomplexobj(fs["0"]["0_0_0_0_0"][()])
    s = read_dftio(folder)
    exact = resolve_overlap(s.hamiltonian.basis, openmx_basis).operator(s.atoms, s.overlap.edges)
    assert np.abs(s.overlap.values - exact.values).max() < 1e-6  # OpenMX's S: 9e-8


def _convert_folder(tmp_path):
    """One run through ``moireh-convert`` (its S is OpenMX's)."""
    args = ["openmx", str(scfout_path("bl1x1_nosoc_s00")), "-o", str(tmp_path), "--no-progress"]
    result = CliRunner().invoke(moireh_convert, args)
    assert result.exit_code == 0, result.output
    return tmp_path / "bl1x1_nosoc_s00"


def _corpus_folder(tmp_path):
    """One corpus entry (H only) written as a dftio folder: its S is computed."""
    entry = read_entry(CORPUS_ENTRY)
    assert entry.overlap is None
    return write_dftio(with_overlap(entry), tmp_path / CORPUS_ENTRY.name)


@pytest.mark.parametrize("make", [_convert_folder, _corpus_folder], ids=["convert", "corpus"])
def test_written_folders_pass_deeptb_info_check_and_carry_overlap(make, tmp_path):
    folder = make(tmp_path)
    meta = json.loads((folder / METADATA_FILE).read_text())
    assert meta["spinful"] is False and meta["openmx_basis"]["Mo"] == "Mo7.0-s3p2d1"
    _assert_peer_readable(folder, meta["openmx_basis"])
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temporary folder left


def test_old_folders_with_metadata_in_info_json_still_read(tmp_path):
    s = converted("bl1x1_soc_s00")
    folder = write_dftio(s, tmp_path / "old")
    old_info = {
        **json.loads((folder / "info.json").read_text()),
        **json.loads((folder / METADATA_FILE).read_text()),
    }
    (folder / "info.json").write_text(json.dumps(old_info))
    (folder / METADATA_FILE).unlink()
    back = read_dftio(folder)
    assert back.spinful and back.fermi_level == s.fermi_level and back.source == s.source
    assert back.extra["openmx_basis"] == s.extra["openmx_basis"]
    assert back.extra["n_electrons"] == s.extra["n_electrons"]


def test_writing_without_any_s_source_fails_and_leaves_nothing(tmp_path):
    s = read_entry(CORPUS_ENTRY)
    with pytest.raises(DatasetError, match="no S to write.*with_overlap"):
        write_dftio(s, tmp_path / "x")
    s.extra["openmx_basis"] = {"Mo": "Mo9.0-s3p2d1", "Te": "Te7.0-s3p2d2"}  # not bundled
    with pytest.raises(OverlapError, match="no S.*pao_dir"):
        with_overlap(s)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("case", ["bl1x1_nosoc_s00", "bl1x1_soc_s00"])
def test_deeph_export_keys_shapes_and_order(case, tmp_path):
    s = converted(case)
    write_deeph(s, tmp_path / "d")
    info = json.loads((tmp_path / "d" / "info.json").read_text())
    # 2 Mo x 14 (s3p2d1) + 4 Te x 19 (s3p2d2) orbitals (the shared data README's basis)
    assert info["isspinful"] == s.spinful and info["nsites"] == 6 and info["norbits"] == 104
    lat = np.loadtxt(tmp_path / "d" / "lat.dat")
    assert np.allclose(lat.T, s.atoms.cell)
    rlat = np.loadtxt(tmp_path / "d" / "rlat.dat")
    assert np.allclose(np.asarray(s.atoms.cell) @ rlat, 2 * np.pi * np.eye(3))
    orbital_types = (tmp_path / "d" / "orbital_types.dat").read_text().splitlines()
    assert orbital_types[0] == "0 0 0 1 1 2" and orbital_types[-1] == "0 0 0 1 1 2 2"
    h = s.hamiltonian
    m = h.spin_factor
    with h5py.File(tmp_path / "d" / "hamiltonians.h5") as f:
        assert len(f.keys()) == h.nedges
        e = h.index(0, 2, [0, 0, 0])  # Mo (1-based atom 1) to Te (atom 3)
        block = f["[0, 0, 0, 1, 3]"][()]
        assert block.shape == (14 * m, 19 * m)
        # written out by hand from the two conventions: OpenMX s,s,s,(x,y,z)x2,(z2,x2-y2,xy,
        # xz,yz); ours s,s,s,(y,z,x)x2,(xy,yz,z2,xz,x2-y2). openmx_index -> our index:
        mo = [0, 1, 2, 5, 3, 4, 8, 6, 7, 11, 13, 9, 12, 10]
        te = mo + [16, 18, 14, 17, 15]
        rows = mo + [14 + x for x in mo] if m == 2 else mo
        cols = te + [19 + x for x in te] if m == 2 else te
        assert np.array_equal(block, h.block(e)[np.ix_(rows, cols)])


@pytest.mark.slow
@pytest.mark.skipif(not SI64.is_dir(), reason=f"dftio peer dataset not found at {SI64}")
def test_dftio_written_si64_peer_dataset_loads():
    s = read_dftio(SI64)
    assert len(s.atoms) == 64 and set(s.atoms.numbers) == {14} and s.atoms.pbc.all()
    assert set(json.loads((SI64.parent / "info.json").read_text())) == DEEPTB_INFO_REQUIRED
    assert s.hamiltonian.basis.to_dftio() == {"Si": "1s1p"}
    assert not s.spinful and s.hamiltonian.nedges > s.overlap.nedges  # S has shorter range
    assert s.hamiltonian.hermiticity_error() < 1e-5  # stored as float32 by dftio
    assert s.overlap.hermiticity_error() < 1e-5
    hk = s.hamiltonian.bloch([0, 0, 0]).toarray()
    sk = s.overlap.bloch([0, 0, 0]).toarray()
    assert np.abs(hk - hk.conj().T).max() < 1e-5
    assert np.abs(sk - sk.conj().T).max() < 1e-5
    assert sl.eigvalsh(sk).min() > 0  # positive definite
    bands = TightBinding(s.hamiltonian, s.overlap).eigenvalues([[0, 0, 0]])
    # silicon is a semiconductor: 64 atoms x 4 valence electrons fill 128 spin-degenerate
    # levels, and a gap opens above them (1.75 eV at this cell's Gamma, which holds the
    # primitive cell's Gamma and X; the bulk PBE gap is 0.6 eV, indirect)
    assert bands.shape == (1, 256) and np.all(np.diff(bands[0]) >= -1e-9)
    assert bands[0, 128] - bands[0, 127] > 0.5


def test_broken_dataset_folders_are_named_in_errors(tmp_path):
    with pytest.raises(DatasetError, match="not a dataset folder"):
        read_dftio(tmp_path / "absent")
    s = converted("bl1x1_nosoc_s00")
    write_dftio(s, tmp_path / "x")
    (tmp_path / "x" / "basis.dat").write_text("{'Mo': '3s2p1d'}")
    with pytest.raises(DatasetError, match="basis.dat.*Te"):
        read_dftio(tmp_path / "x")
    (tmp_path / "x" / "basis.dat").write_text("{'Mo': '3s2p2d', 'Te': '3s2p2d'}")
    with pytest.raises(DatasetError, match="hamiltonians.h5: block .* has shape"):
        read_dftio(tmp_path / "x")
