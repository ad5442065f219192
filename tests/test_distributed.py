"""Distributed shift-invert (PETSc/SLEPc over MPI): row shares and the 2-rank solve."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ase_moireh.build import twisted_bilayer
from ase_moireh.calculator import MoireHCalculator
from ase_moireh.io.pencil import local_rows, upper_pencil
from ase_moireh.io.streamed import read_streamed
from ase_moireh.solvers.distributed import SlepcUnavailable, import_slepc, row_partition
from ase_moireh.solvers.kpm import hermitian_product, kpm_window_dos, window_dos
from ase_moireh.tightbinding import TightBinding

K = (0.1234, 0.0567, 0.0)
NEV = 12


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    """The bundled SOC model's (2,1) cell streamed to disk (double precision), and its
    mid-gap."""
    atoms = twisted_bilayer(2, 1)
    atoms.calc = MoireHCalculator(soc=True)
    path = tmp_path_factory.mktemp("mpi") / "tw21.h5"
    atoms.calc.write_operators(path, precision="double")
    return path, atoms.calc.midgap()


def test_row_partition_is_contiguous_complete_and_balanced():
    rows = np.array([28, 38, 38] * 14)
    for ranks in (1, 2, 3, 5):
        parts = row_partition(rows, ranks)
        assert len(parts) == ranks and parts[0].start == 0 and parts[-1].stop == len(rows)
        assert all(a.stop == b.start for a, b in zip(parts[:-1], parts[1:], strict=True))
        share = [rows[p.start : p.stop].sum() for p in parts]
        assert max(share) - min(share) <= 2 * rows.max()
    assert [len(p) for p in row_partition(np.array([5, 5]), 3)].count(0) == 1


@pytest.mark.slow
def test_ranks_rows_add_up_to_the_whole_matrices(streamed):
    """Each rank reads only its atoms' blocks; stacked, its rows are H(k) - sigma S(k)
    and S(k) of the whole file."""
    path, sigma = streamed
    tb = TightBinding(*read_streamed(path))
    whole_a, whole_b = tb.shifted(K, sigma), tb.Sk(K)
    parts = row_partition(tb.H.norbs, 3)
    first_rows = []
    blocks_a, blocks_b = [], []
    for atoms in parts:
        a, b, first = local_rows(path, atoms, K, sigma)
        first_rows.append(first)
        blocks_a.append(a.toarray())
        blocks_b.append(b.toarray())
        assert a.shape[1] == tb.dimension
    assert first_rows[0] == 0 and first_rows == sorted(first_rows)
    assert np.abs(np.vstack(blocks_a) - whole_a.toarray()).max() < 1e-12
    assert np.abs(np.vstack(blocks_b) - whole_b.toarray()).max() < 1e-12
    h_part, _ = read_streamed(path, parts[1])
    assert set(np.unique(h_part.edges[:, 0])) <= set(parts[1])


def _mpi_missing() -> str | None:
    try:
        import_slepc()
    except SlepcUnavailable as err:
        return str(err)
    if shutil.which("mpirun") is None:
        return "mpirun not on PATH"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_mpi_missing() is not None, reason=str(_mpi_missing()))
def test_two_ranks_match_the_serial_solve(streamed, tmp_path):
    """``mpirun -np 2 moireh bands FILE --mpi`` gives the levels of the serial dense
    solve of the same file to 1e-8 eV."""
    path, sigma = streamed
    out = tmp_path / "levels.json"
    moireh = str(Path(sys.executable).with_name("moireh"))
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    env["OMP_NUM_THREADS"] = "1"
    command = ["mpirun", "-np", "2", "--oversubscribe", moireh, "bands", str(path), "--mpi"]
    command += ["--nbands", str(NEV), "--sigma", str(sigma), "--absolute-sigma"]
    command += ["--kpoint", *map(str, K), "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["ranks"] == 2
    levels = np.array(record["levels_eV"])
    every = TightBinding(*read_streamed(path)).eigh(K)
    expected = np.sort(every[np.argsort(np.abs(every - sigma))[:NEV]])
    assert np.abs(levels - expected).max() < 1e-8


@pytest.mark.slow
@pytest.mark.parametrize("k", [(0.0, 0.0, 0.0), K])
def test_upper_pencil_holds_the_whole_pencil_in_single_precision(streamed, k):
    """The triangles assembled 7 atoms at a time, applied as Hermitian matrices, are
    H(k) - sigma S(k) and S(k) (float32 at Gamma, complex64 elsewhere; this SOC cell is
    complex at Gamma too) to single precision."""
    path, sigma = streamed
    tb = TightBinding(*read_streamed(path))
    a_up, s_up = upper_pencil(path, k, sigma, chunk=7)
    assert a_up.dtype == np.complex64 and s_up.dtype == np.complex64
    x = np.random.default_rng(0).standard_normal((tb.dimension, 3))
    for upper, whole in ((a_up, tb.shifted(k, sigma)), (s_up, tb.Sk(k))):
        expected = whole @ x
        got = hermitian_product(upper)(x)
        assert np.abs(got - expected).max() < 1e-5 * np.abs(expected).max()


@pytest.mark.slow
def test_window_dos_from_the_upper_pencil_matches_the_whole_matrices(streamed):
    """Shift-invert KPM from the single-precision triangles gives the moments of the
    double-precision route (same random vectors) to 1e-4."""
    path, sigma = streamed
    tb = TightBinding(*read_streamed(path))
    whole = kpm_window_dos(tb, sigma, nmoments=64, nvectors=4, seed=2)
    a_up, s_up = upper_pencil(path, (0, 0, 0), sigma)
    lean = window_dos(
        a_up, hermitian_product(s_up), sigma, nmoments=64, nvectors=4, seed=2, upper=True
    )
    assert lean.bounds == pytest.approx(whole.bounds, rel=1e-3)
    assert lean.moments == pytest.approx(whole.moments, abs=1e-4)
