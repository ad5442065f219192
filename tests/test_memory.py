"""Solves that cannot fit are refused with a message before they allocate, instead of
the kernel's OOM killer (a SIGKILL with no Python message)."""

import gc
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from click.testing import CliRunner

from ase_moireh import memory
from ase_moireh.build import twisted_bilayer
from ase_moireh.calculator import MoireHCalculator
from ase_moireh.cli import moireh
from ase_moireh.memory import InsufficientMemory
from ase_moireh.model import predict
from ase_moireh.solvers import factorization as fz


def cap(monkeypatch, extra_mb: float) -> None:
    """MOIREH_MEMORY_LIMIT at what the process holds plus ``extra_mb`` (garbage of
    earlier tests collected first: freed later, it would widen the margin)."""
    gc.collect()
    limit = memory.process_rss() + int(extra_mb * 2**20)
    monkeypatch.setenv(memory.ENV, str(limit))


@pytest.mark.parametrize(
    ("text", "nbytes"),
    [("123456", 123456), ("500M", 500 * 2**20), ("16G", 16 * 2**30), ("2.5g", int(2.5 * 2**30))],
)
def test_sizes_parse(text, nbytes):
    assert memory.parse_size(text) == nbytes


def test_a_bad_limit_names_the_variable(monkeypatch):
    monkeypatch.setenv(memory.ENV, "lots")
    with pytest.raises(ValueError, match="MOIREH_MEMORY_LIMIT='lots' is not a size"):
        memory.available_bytes()


def test_estimates_scale_as_the_methods_do():
    assert memory.dense_eigh_bytes(2000, True) == 4 * memory.dense_eigh_bytes(1000, True)
    assert memory.dense_eigh_bytes(1000, True) > memory.dense_eigh_bytes(1000, False)
    small, large = memory.superlu_bytes(1000, 10**6), memory.superlu_bytes(4 * 7696, 10**6)
    assert large == pytest.approx(2 * memory.superlu_bytes(7696, 10**6), rel=1e-6)
    assert small == memory.superlu_bytes(7696, 10**6)  # no growth below the calibration


def test_the_limit_caps_the_whole_process(monkeypatch):
    cap(monkeypatch, 100)
    have, source = memory.available_bytes()
    assert source == memory.ENV and 90 * 2**20 < have <= 100 * 2**20
    memory.ensure_fits(10 * 2**20, "a small thing")
    with pytest.raises(InsufficientMemory, match=r"a big thing needs about 1.00 GB, but only"):
        memory.ensure_fits(2**30, "a big thing")


@pytest.fixture(scope="module")
def twisted():
    atoms = twisted_bilayer(2, 1)
    atoms.calc = MoireHCalculator(soc=False)
    return atoms


@pytest.mark.slow
def test_dense_solve_is_refused_before_it_allocates(twisted, monkeypatch):
    """The collinear 42-atom cell (728 rows, ~32 MB for a dense solve) under a 10 MB cap:
    refused with the estimate, the cap and what would fit; nothing dense is built."""
    tb = twisted.calc.get_tight_binding()
    cap(monkeypatch, 10)
    monkeypatch.setattr(type(tb), "dense", lambda *a: pytest.fail("dense matrices were built"))
    with pytest.raises(InsufficientMemory) as err:
        twisted.calc.eigenvalues_at((0, 0, 0))
    message = str(err.value)
    assert f"dense diagonalisation of {tb.dimension} rows needs about" in message
    assert "MOIREH_MEMORY_LIMIT" in message and "rows would fit" in message


@pytest.mark.slow
def test_without_a_cap_the_same_solve_runs(twisted, monkeypatch):
    """Every level, in order, with the gap where the electron count puts it."""
    monkeypatch.delenv(memory.ENV, raising=False)
    levels = twisted.calc.eigenvalues_at((0, 0, 0))
    assert len(levels) == twisted.calc.get_tight_binding().dimension
    assert np.all(np.diff(levels) >= 0)
    nocc = twisted.calc.occupied_bands()
    assert levels[nocc - 1] < twisted.calc.midgap() < levels[nocc]


def hermitian(n: int = 3000) -> sp.csc_matrix:
    rng = np.random.default_rng(1)
    a = sp.random(n, n, density=5e-3, random_state=rng) + 1j * sp.random(
        n, n, density=5e-3, random_state=rng
    )
    return sp.csc_matrix(a + a.conj().T + sp.identity(n) * 4)


def test_superlu_is_refused_before_factorising(monkeypatch):
    a = hermitian()
    cap(monkeypatch, 1)
    monkeypatch.setattr(fz.spla, "splu", lambda *a, **k: pytest.fail("factorised"))
    with pytest.raises(InsufficientMemory, match="SuperLU factorisation of 3000 rows"):
        fz.factorize(a, "superlu")


@pytest.mark.skipif(fz.mkl_library() is None, reason="Intel MKL (PARDISO) not installed")
def test_pardiso_refuses_after_its_analysis_and_frees_it(monkeypatch):
    a = hermitian()
    cap(monkeypatch, 0.01)
    phases = []
    original = fz.PardisoLDL._call
    monkeypatch.setattr(
        fz.PardisoLDL,
        "_call",
        lambda self, phase, b: (phases.append(phase), original(self, phase, b))[1],
    )
    with pytest.raises(InsufficientMemory, match="PARDISO factorisation of 3000 rows"):
        fz.factorize(a, "pardiso")
    assert phases == [11, -1]  # analysed, refused, freed: never factorised
    monkeypatch.delenv(memory.ENV)
    x = fz.factorize(a, "pardiso")(np.ones(3000, dtype=complex))
    assert np.allclose(a @ x, 1.0)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("h0_fits", "refusal"),
    [
        (False, "Error: the native H0 of Mo14Te28 (42 atoms) needs about"),
        (True, "Error: dense diagonalisation of 728 rows needs about"),
    ],
)
def test_cli_says_it_instead_of_a_traceback(tmp_path, monkeypatch, h0_fits, refusal):
    """Both guards of ``moireh bands`` under a 10 MB margin: the bundled dH model's
    native H0 (checked first), then, with H0's estimate set to nothing, the dense solve."""
    structure = tmp_path / "cell.extxyz"
    twisted_bilayer(2, 1).write(structure)
    if h0_fits:
        monkeypatch.setattr(predict, "H0_BYTES_PER_ATOM", {False: 0, True: 0})
    cap(monkeypatch, 10)
    result = CliRunner().invoke(moireh, ["bands", str(structure), "--no-soc", "--npoints", "4"])
    assert result.exit_code == 1
    assert refusal in result.output
    assert "Traceback" not in result.output


def _no_peak_reset() -> str | None:
    """Why this machine cannot reset a process's peak resident size, or None. Probed here,
    apart from memory.reset_peak_rss, so a broken reset fails instead of skipping."""
    if not Path("/proc/self/status").exists():
        return "no /proc/self/status (not Linux): peak_rss has no VmHWM to read"
    try:  # clears this test process's own peak, which no test relies on
        Path("/proc/self/clear_refs").write_text("5")
    except OSError as err:  # "5" (reset the peak) arrived in Linux 4.0
        return f"this kernel does not reset the peak via /proc/self/clear_refs: {err}"
    return None


def test_peak_rss_can_be_reset_for_a_stage():
    """benchmarks measure each stage's own peak: a large array raises the peak, and
    after a reset the peak falls back near what the process holds now. In a fresh
    interpreter: late in a long test process the 400 MB may come from heap memory it
    holds already, and then neither the peak nor the resident size moves."""
    reason = _no_peak_reset()
    if reason:
        pytest.skip(reason)
    code = (
        "import gc, numpy as np\n"
        "from ase_moireh import memory\n"
        "big = np.ones(400 * 2**20 // 8)\n"  # 400 MB, touched
        "high = memory.peak_rss()\n"
        "del big\n"
        "gc.collect()\n"
        "memory.reset_peak_rss()\n"
        "print(high, memory.peak_rss())\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    high, after = map(int, run.stdout.split())
    assert high > 400 * 2**20  # the array was resident: the peak saw it
    assert after < high - 300 * 2**20
