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
from ase_moireh.model.stream import read_streamed
from ase_moireh.tightbinding import TightBinding
from ase_moireh.tools.distributed import SlepcUnavailable, import_slepc, local_rows, row_partition

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
