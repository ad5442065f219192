"""KPM density of states against dense diagonalisation of converted OpenMX runs."""

import numpy as np
import pytest

from ase_moireh.solvers.kpm import (
    KPMDensity,
    chebyshev_moments,
    density_from_moments,
    jackson_kernel,
    kpm_dos,
    kpm_window_dos,
)
from shared_data import converted

CASES = [("bl1x1_nosoc_s00", (0, 0, 0)), ("bl1x1_soc_s00", (1 / 3, 2 / 3, 0))]


def exact_moments(levels: np.ndarray, bounds, n: int) -> np.ndarray:
    """mu_n = mean T_n(x_i) over the scaled dense levels: KPM's target, by another route."""
    a, b = 0.5 * (bounds[1] - bounds[0]), 0.5 * (bounds[1] + bounds[0])
    return np.polynomial.chebyshev.chebvander((levels - b) / a, n - 1).mean(axis=0)


@pytest.mark.parametrize(("case", "k"), CASES)
def test_moments_over_every_unit_vector_are_the_dense_ones(case, k):
    """With all unit vectors the stochastic trace is exact: the recursion (products with
    H, solves with S) must give the moments of the dense generalised levels (SOC at K:
    complex Hermitian H(k))."""
    tb = converted(case).tight_binding
    levels = tb.eigh(k)
    n = len(levels)
    bounds = kpm_dos(tb, k, nmoments=8, nvectors=1).bounds
    assert bounds[0] < levels[0] and levels[-1] < bounds[1]
    hk, sk = tb.pair(k)

    def solve(y):  # dense, a second route to S^-1
        return np.linalg.solve(sk.toarray(), y)

    mu = chebyshev_moments(hk.__matmul__, solve, bounds, np.eye(n), 64)
    assert mu == pytest.approx(exact_moments(levels, bounds, 64), abs=1e-9)


@pytest.mark.slow
def test_stochastic_dos_holds_the_spectral_weight_within_one_percent():
    """21.79 deg cell (728 rows): 32 random vectors, 256 moments. The integrated DOS
    stays within 1 % of the levels of the Jackson-smoothed dense spectrum at every
    energy, and integrates to the dimension."""
    tb = converted("tw2179_nosoc").tight_binding
    levels = tb.eigh((0, 0, 0))
    n = len(levels)
    d = kpm_dos(tb, nmoments=256, nvectors=32, seed=1)
    mu = exact_moments(levels, d.bounds, 256)
    ref = KPMDensity(d.energies, density_from_moments(mu, d.bounds, d.energies, n), mu, d.bounds, n)
    assert np.abs(d.integrated() - ref.integrated()).max() < 0.01 * n
    assert d.integrated()[-1] == pytest.approx(n, rel=0.01)
    # a route that shares nothing with the reconstruction: in every gap between levels
    # wider than 8 Jackson widths (pi x half-width / moments), the integrated DOS is the
    # number of levels below it (this cell has four such gaps, semicore to diffuse)
    width = np.pi * 0.5 * (d.bounds[1] - d.bounds[0]) / 256
    gaps = np.flatnonzero(np.diff(levels) > 8 * width)
    assert len(gaps) >= 2
    middles = 0.5 * (levels[gaps] + levels[gaps + 1])
    assert np.interp(middles, d.energies, d.integrated()) == pytest.approx(gaps + 1, abs=0.01 * n)


def test_jackson_kernel_starts_at_one_and_decays():
    g = jackson_kernel(100)
    assert g[0] == pytest.approx(1.0) and np.all(np.diff(g) < 0) and g[-1] < 1e-3


def test_bounds_inside_the_spectrum_are_refused():
    tb = converted("bl1x1_nosoc_s00").tight_binding
    with pytest.raises(ValueError, match="outside the bounds"):
        kpm_dos(tb, nmoments=200, nvectors=2, bounds=(-1.0, 1.0))


def _gap_sigma(levels: np.ndarray, near: float) -> float:
    """Middle of the widest gap between levels within 2 eV of ``near``."""
    inside = np.flatnonzero(np.abs(levels[:-1] - near) < 2.0)
    widest = inside[np.argmax(np.diff(levels)[inside])]
    return 0.5 * (levels[widest] + levels[widest + 1])


@pytest.mark.parametrize(("case", "k"), [CASES[0], pytest.param(*CASES[1], marks=pytest.mark.slow)])
def test_window_moments_over_every_unit_vector_are_the_dense_theta_moments(case, k):
    """Shift-invert KPM with an exact trace: its moments are those of theta = 1/(E -
    sigma) over the dense levels, its bounds enclose every theta, and its DOS integrated
    over the window holds the levels in it (the 1/(E - sigma)^2 change of variable)."""
    tb = converted(case).tight_binding
    levels = tb.eigh(k)
    sigma = _gap_sigma(levels, -4.0)
    d = kpm_window_dos(tb, sigma, k, window=2.0, nmoments=200, nvectors=None, npoints=20001)
    theta = 1.0 / (levels - sigma)
    assert d.bounds[0] < theta.min() and theta.max() < d.bounds[1]
    assert d.moments == pytest.approx(exact_moments(theta, d.bounds, 200), abs=1e-8)
    # between two gap middles inside the window where the gap is wider than 6 local
    # Jackson widths, the integrated DOS counts the levels between them (to 0.1)
    assert np.diff(np.searchsorted(levels, gap_middles(d, levels, 6.0, 1.8))).sum() >= 1
    assert np.diff(miscount(d, levels, 6.0, 1.8)) == pytest.approx(0, abs=0.1)


def gap_middles(d, levels: np.ndarray, widths: float, reach: float) -> np.ndarray:
    """Middles of the gaps between levels within ``reach`` eV of sigma that are wider
    than ``widths`` local resolutions (pi a / N x (E - sigma)^2), at least two."""
    resolution = np.pi * 0.5 * (d.bounds[1] - d.bounds[0]) / len(d.moments)
    middles = 0.5 * (levels[1:] + levels[:-1])
    local = resolution * (middles - d.sigma) ** 2
    keep = (np.diff(levels) > 2 * widths * local) & (np.abs(middles - d.sigma) < reach)
    assert keep.sum() >= 2
    return middles[keep]


def miscount(d, levels: np.ndarray, widths: float, reach: float) -> np.ndarray:
    """KPM's integrated DOS minus the dense count of levels below, at
    :func:`gap_middles`. KPM integrates from the window's edge, so only differences
    between middles count."""
    middles = gap_middles(d, levels, widths, reach)
    return np.interp(middles, d.energies, d.integrated()) - np.searchsorted(levels, middles)


@pytest.mark.slow
def test_window_dos_resolves_the_levels_near_the_gap_of_a_twisted_cell():
    """21.79 deg cell (728 rows), 16 random vectors, 200 moments, window +-1.2 eV about
    mid-gap: the highest peak on each side of the gap lies on a dense level (within the
    local resolution), nothing lies in the gap, and the levels counted between gap
    middles agree with the dense count within the stochastic error, 4 sqrt(2 m / 16)."""
    tb = converted("tw2179_nosoc").tight_binding
    levels = tb.eigh((0, 0, 0))
    sigma = _gap_sigma(levels, -4.0)
    d = kpm_window_dos(tb, sigma, window=1.2, nmoments=200, nvectors=16, seed=3)
    vbm, cbm = levels[levels < sigma].max(), levels[levels > sigma].min()
    resolution = np.pi * 0.5 * (d.bounds[1] - d.bounds[0]) / 200
    in_gap = (d.energies > vbm + 0.1) & (d.energies < cbm - 0.1)
    assert d.dos[in_gap].max() < 0.05 * d.dos.max()
    for side in (d.energies < sigma, d.energies > sigma):
        peak = d.energies[side][np.argmax(d.dos[side])]
        assert np.abs(levels - peak).min() < 2 * resolution * (peak - sigma) ** 2
    errors = np.diff(miscount(d, levels, 4.0, 1.1))
    between = np.diff(np.searchsorted(levels, gap_middles(d, levels, 4.0, 1.1)))
    assert between.sum() >= 5
    assert np.all(np.abs(errors) < 4 * np.sqrt(2 * np.maximum(between, 1) / 16))
