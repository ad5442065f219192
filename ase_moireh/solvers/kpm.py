"""Density of states without diagonalisation: the kernel polynomial method (KPM).

For a moire cell of 10^5 atoms no dense solve fits and shift-invert gives only levels
near one energy. KPM expands the DOS of the generalised problem H c = E S c in
Chebyshev polynomials of A = S^-1 H (same levels; S is factorised once, every step is
one sparse product with H and one solve with S), takes the moments
mu_n = Tr T_n(A~) / N stochastically from random-sign vectors r (Tr X ~ mean r^T X r),
and damps the truncation's Gibbs oscillations with the Jackson kernel (Weisse et al.,
Rev. Mod. Phys. 78, 275 (2006)). Cost: moments x vectors x (product + solve); memory:
the factor of S and three vectors per random vector.

Energies in eV; the DOS counts levels of H(k) at one k (the whole cell, SOC spinor
levels counted singly) per eV and integrates to the dimension of H(k).

Resolution: about pi x (spectral width) / moments. The PAO spectrum of MoTe2 spans
~140 eV (semicore to diffuse orbitals), so 10 meV near the gap takes ~4e4 moments.
:func:`kpm_window_dos` avoids that for the DOS near one energy sigma (the gap): it
expands the spectrum of B = (H - sigma S)^-1 S, whose levels theta = 1/(E - sigma) put
the levels near sigma at the two ends, where Chebyshev resolution is finest, and crowd
the ~140 eV of others near theta = 0. The price is a factorisation of H - sigma S
instead of S (the same sparsity, so the same fill); near the gap a few hundred moments
resolve meV.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from tqdm import tqdm

from ase_moireh.solvers.factorization import factorize, release
from ase_moireh.solvers.solve import arpack

if TYPE_CHECKING:  # an annotation only: any object with pair, shifted and Sk will do
    from ase_moireh.tightbinding import TightBinding

log = logging.getLogger(__name__)

#: fraction of the spectral width added on each side of the estimated bounds, so that
#: the scaled operator stays inside [-1, 1] where Chebyshev recursions are stable
BOUND_PAD = 0.05


@dataclass
class KPMDensity:
    """The DOS on an energy grid, with the moments and scaling it came from."""

    energies: np.ndarray  # eV
    dos: np.ndarray  # levels per eV at the k it was taken
    moments: np.ndarray  # mu_n, mu_0 = 1
    bounds: tuple[float, float]  # the interval mapped onto [-1, 1]: eV, or 1/eV with sigma
    dimension: int
    sigma: float | None = None  # set: moments of theta = 1/(E - sigma) (kpm_window_dos)

    def integrated(self) -> np.ndarray:
        """Levels below each energy (trapezoidal running integral of the DOS)."""
        steps = 0.5 * (self.dos[1:] + self.dos[:-1]) * np.diff(self.energies)
        return np.concatenate([[0.0], np.cumsum(steps)])


def jackson_kernel(n: int) -> np.ndarray:
    """g_0 .. g_{n-1} of the Jackson kernel: a positive, nearly Gaussian broadening of
    width about pi / n in the scaled variable."""
    m = np.arange(n)
    q = np.pi / (n + 1)
    return ((n - m + 1) * np.cos(q * m) + np.sin(q * m) / np.tan(q)) / (n + 1)


def spectral_bounds(
    hk: sp.spmatrix,
    sk: sp.spmatrix,
    solve_s: Callable[[np.ndarray], np.ndarray],
    pad: float = BOUND_PAD,
) -> tuple[float, float]:
    """Lowest and highest level of H c = E S c (ARPACK, loose tolerance, with the caller's
    factorisation of S), widened by ``pad`` of the width on both sides."""
    n = hk.shape[0]
    minv = spla.LinearOperator((n, n), matvec=solve_s, dtype=hk.dtype)
    ends = []
    for which in ("SA", "LA"):
        end = arpack(
            spla.eigsh, hk, k=1, M=sk, Minv=minv, which=which, tol=1e-4, return_eigenvectors=False
        )
        ends.append(float(end[0]))
    low, high = min(ends), max(ends)
    width = high - low
    return low - pad * width, high + pad * width


def chebyshev_moments(
    apply_h: Callable[[np.ndarray], np.ndarray],
    solve_s: Callable[[np.ndarray], np.ndarray],
    bounds: tuple[float, float],
    vectors: np.ndarray,
    nmoments: int,
    progress: bool = False,
) -> np.ndarray:
    """mu_n = mean over the columns r of ``vectors`` of r^dagger T_n(A~) r / (r^dagger r),
    A~ = (S^-1 H - b) / a mapping ``bounds`` onto [-1, 1]. A~ is not Hermitian, so the
    usual two-moments-per-product identities do not hold: every moment costs one
    product with H and one solve with S."""
    a = 0.5 * (bounds[1] - bounds[0])
    b = 0.5 * (bounds[1] + bounds[0])

    def scaled(v: np.ndarray) -> np.ndarray:
        return (solve_s(apply_h(v)) - b * v) / a

    norm = np.einsum("ij,ij->j", vectors.conj(), vectors).real
    mu = np.empty(nmoments)
    previous, current = vectors, scaled(vectors)
    mu[0] = 1.0
    if nmoments > 1:
        mu[1] = float(np.mean(np.einsum("ij,ij->j", vectors.conj(), current).real / norm))
    for n in tqdm(range(2, nmoments), desc="KPM moments", disable=not progress, leave=False):
        previous, current = current, 2.0 * scaled(current) - previous
        mu[n] = float(np.mean(np.einsum("ij,ij->j", vectors.conj(), current).real / norm))
        if abs(mu[n]) > 1.5:  # |T_n| <= 1 inside the bounds: the spectrum lies outside
            raise ValueError(
                f"KPM moment {n} is {mu[n]:.3g}: levels lie outside the bounds {bounds} eV"
            )
    return mu


def density_from_moments(
    mu: np.ndarray, bounds: tuple[float, float], energies: np.ndarray, dimension: int
) -> np.ndarray:
    """Jackson-damped Chebyshev series of the DOS (levels per eV) at ``energies``."""
    a = 0.5 * (bounds[1] - bounds[0])
    b = 0.5 * (bounds[1] + bounds[0])
    x = np.clip((energies - b) / a, -1 + 1e-12, 1 - 1e-12)
    coeff = mu * jackson_kernel(len(mu))
    coeff[1:] *= 2.0
    series = np.polynomial.chebyshev.chebval(x, coeff)
    return dimension * series / (np.pi * np.sqrt(1.0 - x**2) * a)


def typed_solve(
    solve: Callable[[np.ndarray], np.ndarray], complex_h: bool
) -> Callable[[np.ndarray], np.ndarray]:
    """The solver, returning real vectors for a real H: a factor may compute in complex
    (a real S solved as complex, or PARDISO's complex mode) and the Chebyshev recursion
    must stay in H's own field."""

    def typed(y: np.ndarray) -> np.ndarray:
        x = solve(y)
        return x if complex_h else x.real

    return typed


def kpm_dos(
    tb: TightBinding,
    k: Sequence[float] = (0.0, 0.0, 0.0),
    nmoments: int = 256,
    nvectors: int = 16,
    energies: np.ndarray | None = None,
    bounds: tuple[float, float] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> KPMDensity:
    """DOS of H(k) c = E S(k) c by KPM with ``nvectors`` random-sign vectors (stochastic
    error of the moments ~ 1 / sqrt(nvectors x dimension)); resolution about
    pi x (width of the spectrum) / ``nmoments``."""
    hk, sk = tb.pair(k)
    complex_h = np.iscomplexobj(hk.data) and bool(np.any(hk.data.imag))
    rng = np.random.default_rng(seed)
    n = hk.shape[0]
    vectors = rng.choice([-1.0, 1.0], size=(n, nvectors))
    solve = factorize(sk.astype(complex) if complex_h else sk)  # once, for all that follows
    solve_s = typed_solve(solve, complex_h)
    try:
        if bounds is None:
            bounds = spectral_bounds(hk, sk, solve_s)
        mu = chebyshev_moments(hk.__matmul__, solve_s, bounds, vectors, nmoments, progress)
    finally:
        release(solve)
    if energies is None:
        energies = np.linspace(bounds[0], bounds[1], 2001)[1:-1]
    dos = density_from_moments(mu, bounds, np.asarray(energies, dtype=float), n)
    log.info("KPM DOS of %d rows: %d moments, %d vectors", n, nmoments, nvectors)
    return KPMDensity(np.asarray(energies, dtype=float), dos, mu, bounds, n)


def theta_bounds(theta: np.ndarray, pad: float = BOUND_PAD) -> tuple[float, float]:
    """Bounds of theta = 1/(E - sigma) over every level, from the largest |theta| (the
    levels nearest sigma): the nearest level on each side gives that side's extreme; a
    side with none among them is bounded by the smallest |theta| found (every level
    there is farther from sigma still)."""
    theta = np.asarray(theta, dtype=float)
    reach = np.abs(theta).min()
    low = theta.min() if np.any(theta < 0) else -reach
    high = theta.max() if np.any(theta > 0) else reach
    width = high - low
    return low - pad * width, high + pad * width


def kpm_window_dos(
    tb: TightBinding, sigma: float, k: Sequence[float] = (0.0, 0.0, 0.0), **options
) -> KPMDensity:
    """DOS of H(k) c = E S(k) c within ``window`` eV of ``sigma`` by shift-invert KPM
    (module doc; ``options`` as :func:`window_dos`)."""
    a = tb.shifted(k, sigma)
    sk = tb.Sk(k)
    if not np.any(a.data.imag):
        a, sk = a.real, sk.real
    return window_dos(a, sk.__matmul__, sigma, **options)


def hermitian_product(upper: sp.csr_matrix) -> Callable[[np.ndarray], np.ndarray]:
    """x -> M x for the Hermitian M whose upper triangle (diagonal included) is
    ``upper``, in ``upper``'s precision (no copy of the matrix), result in double."""
    diagonal = upper.diagonal()
    dtype = upper.dtype

    def product(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        x = x.astype(np.promote_types(dtype, np.complex64) if np.iscomplexobj(x) else dtype)
        lower = (upper.T @ x.conj()).conj()  # U^dagger x, through U^T: a view, no copy
        y = upper @ x + lower - (diagonal * x.T).T
        return y.astype(np.complex128 if np.iscomplexobj(y) else np.float64)

    return product


def window_dos(
    a: sp.spmatrix,
    apply_s: Callable[[np.ndarray], np.ndarray],
    sigma: float,
    window: float = 1.0,
    nmoments: int = 512,
    nvectors: int | None = 8,
    npoints: int = 2001,
    precision: str = "double",
    seed: int = 0,
    progress: bool = False,
    upper: bool = False,
) -> KPMDensity:
    """Shift-invert KPM (module doc) from ``a`` = H - sigma S (``upper``: only its upper
    triangle, which PARDISO alone reads, so it must be the solver) and a product with
    S: one factorisation, then one solve and one product per moment. Resolution at E: about
    pi x (half-width of the theta bounds) / ``nmoments`` x (E - sigma)^2, finest next
    to sigma; stochastic error of the levels counted in the window ~ sqrt(2 x count /
    ``nvectors``); ``nvectors=None`` takes every unit vector, an exact trace (small
    cells). ``precision="single"`` halves the factor's memory (solves ~1e-7 relative,
    far below KPM's own errors)."""
    complex_h = np.iscomplexobj(a.data)
    n = a.shape[0]
    solve = factorize(a, "pardiso" if upper else "auto", precision)
    del a  # the factor holds all that later steps need of H - sigma S
    solve_a = typed_solve(solve, complex_h)

    def apply_b(v: np.ndarray) -> np.ndarray:
        return solve_a(apply_s(v))

    try:
        dtype = complex if complex_h else float
        b_op = spla.LinearOperator((n, n), matvec=apply_b, dtype=dtype)
        theta = arpack(
            spla.eigs, b_op, k=min(8, n - 2), which="LM", tol=1e-4, return_eigenvectors=False
        )
        bounds = theta_bounds(theta.real)  # real: B = S^-1/2 X S^1/2, X Hermitian
        log.info("theta bounds %.4f .. %.4f 1/eV", *bounds)
        if nvectors is None:
            vectors = np.eye(n)
        else:
            vectors = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n, nvectors))
        mu = chebyshev_moments(apply_s, solve_a, bounds, vectors, nmoments, progress)
    finally:
        release(solve)
    energies = sigma + np.linspace(-window, window, npoints)
    energies = energies[energies != sigma]
    theta = 1.0 / (energies - sigma)
    inside = (theta > bounds[0]) & (theta < bounds[1])  # no level lies outside them
    dos = np.zeros_like(energies)
    dos[inside] = density_from_moments(mu, bounds, theta[inside], n) * theta[inside] ** 2
    log.info("shift-invert KPM DOS of %d rows near %.4f eV: %d moments", n, sigma, nmoments)
    return KPMDensity(energies, dos, mu, bounds, n, sigma)
