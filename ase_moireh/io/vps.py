"""OpenMX pseudopotential files (``*.vps``, ADPACK format): projectors, local part, PCC.

A ``.vps`` file (OpenMX's ``DFT_DATA*/VPS``) holds a norm-conserving pseudopotential in
the separable (Kleinman-Bylander / Bloechl) form

    V = V_loc(r) + sum_p E_p |beta_p Y_lm> <beta_p Y_lm|,

as OpenMX reads it (``SetPara_DFT.c``, ``Read_VPS``): ``<project.energies`` gives the
number of projectors and, per projector, l and its energy (two energies, j = l + 1/2 and
j = l - 1/2, when ``j.dependent.pseudo.potentials on``); ``<Pseudo.Potentials`` has
``grid.num.output`` rows ``x r V_loc beta_1 ... beta_P`` (x = ln r, r in Bohr; with j
dependence each beta is a pair j+, j-); ``<density.PCC`` has rows ``x r rho_core`` (read
when ``charge.pcc.calc on``).

Units: Hartree and Bohr exist in this module only. Radii come out in Angstrom, V_loc and
E_p in eV, beta in Angstrom^-3/2 and rho_core in Angstrom^-3. The file's energies are the
signs +-1 (Hartree) and the strength sits in beta; converting E to eV and beta by
Bohr^-3/2 keeps <phi|beta> the same number, so E <phi|beta><beta|phi> is in eV.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase.units import Bohr, Hartree

from ase_moireh.io.pao import openmx_data_keyword, openmx_data_text


class VPSError(ValueError):
    """A ``.vps`` file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class VPSFile:
    """Everything of one ``.vps`` file that the Hamiltonian needs (eV, Angstrom)."""

    name: str  # 'Mo_PBE19'
    path: str
    atomic_number: int
    valence: float  # valence electrons = the ion's charge (OpenMX's Spe_Core_Charge)
    r: np.ndarray  # (n,) Angstrom, the file's logarithmic grid
    local: np.ndarray  # (n,) eV, V_loc(r)
    l: np.ndarray  # (P,) angular momentum of every projector, file order
    energies: np.ndarray  # (P, 2) eV: j = l + 1/2, j = l - 1/2 (equal if not j-dependent)
    projectors: np.ndarray  # (P, 2, n) Angstrom^-3/2, same j order
    j_dependent: bool
    core_density: np.ndarray | None  # (n,) Angstrom^-3, partial-core density, or None

    def scalar(self) -> tuple[np.ndarray, np.ndarray]:
        """(energies (P,), projectors (P, n)) averaged over j with weights (l+1, l) / (2l+1),
        each separately, as OpenMX does without spin-orbit coupling (``Read_VPS``)."""
        wp = (self.l + 1) / (2 * self.l + 1)
        wm = self.l / (2 * self.l + 1)
        energies = wp * self.energies[:, 0] + wm * self.energies[:, 1]
        projectors = wp[:, None] * self.projectors[:, 0] + wm[:, None] * self.projectors[:, 1]
        return energies, projectors


def _text(path: Path) -> str:
    return openmx_data_text(path, VPSError)


def _keyword(text: str, key: str, path: Path) -> str:
    return openmx_data_keyword(text, key, path, VPSError, ".vps")


def _block(text: str, name: str, path: Path) -> np.ndarray:
    """The numbers between ``<name`` and ``name>``, flat."""
    match = re.search(rf"<{re.escape(name)}\s*\n(.*?)\n\s*{re.escape(name)}>", text, re.S)
    if match is None:
        raise VPSError(f"{path}: block <{name} missing or unclosed")
    try:
        return np.array(match.group(1).split(), dtype=float)
    except ValueError:
        raise VPSError(f"{path}: block <{name} is not a table of numbers") from None


def _rows(
    flat: np.ndarray, rows: int, width: int, what: str, path: Path, radii: bool = True
) -> np.ndarray:
    """The numbers as (rows, width), finite; column 1 increasing if it holds ``radii``."""
    if flat.size != rows * width:
        raise VPSError(f"{path}: {what} holds {flat.size} numbers, expected {rows} rows of {width}")
    table = flat.reshape(rows, width)
    if not np.all(np.isfinite(table)):
        raise VPSError(f"{path}: {what} has non-finite values")
    if radii and np.any(np.diff(table[:, 1]) <= 0):
        raise VPSError(f"{path}: {what} has non-increasing radii")
    return table


def read_vps(path: str | os.PathLike) -> VPSFile:
    """Read a ``.vps`` file (plain, .xz or .gz) of the ADPACK >= 1.2 format."""
    path = Path(path)
    try:
        text = _text(path)
    except FileNotFoundError:
        raise VPSError(f"{path}: no such VPS file") from None
    except OSError as err:
        raise VPSError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        z = float(_keyword(text, "AtomSpecies", path))
        total = float(_keyword(text, "total.electron", path))
        valence = float(_keyword(text, "valence.electron", path))
        nmesh = int(_keyword(text, "grid.num.output", path))
    except ValueError as err:
        raise VPSError(f"{path}: bad keyword value ({err})") from None
    j_dep = _flag(text, "j.dependent.pseudo.potentials")
    nj = 2 if j_dep else 1

    head = _block(text, "project.energies", path)
    if head.size == 0 or head[0] != int(head[0]) or head[0] < 0:
        raise VPSError(f"{path}: <project.energies must start with the number of projectors")
    nproj = int(head[0])
    table = _rows(head[1:], nproj, 1 + nj, "<project.energies", path, False) if nproj else None
    l = (table[:, 0] if nproj else np.zeros(0)).astype(np.int64)
    energies = np.zeros((nproj, 2))
    if nproj:
        energies[:] = table[:, 1:] if j_dep else table[:, 1:2]

    pot = _rows(
        _block(text, "Pseudo.Potentials", path), nmesh, 3 + nj * nproj, "<Pseudo.Potentials", path
    )
    beta = pot[:, 3:].T.reshape(nproj, nj, nmesh)
    projectors = np.repeat(beta, 2 // nj, axis=1)

    core = None
    if _flag(text, "charge.pcc.calc"):
        pcc = _rows(_block(text, "density.PCC", path), nmesh, 3, "<density.PCC", path)
        if not np.allclose(pcc[:, 1], pot[:, 1]):
            raise VPSError(f"{path}: <density.PCC uses another radial grid")
        core = pcc[:, 2] * Bohr**-3

    name = re.sub(r"\.vps(\.xz|\.gz)?$", "", path.name)
    return VPSFile(
        name=name,
        path=str(path),
        atomic_number=int(round(z)),
        valence=valence + z - total,
        r=pot[:, 1] * Bohr,
        local=pot[:, 2] * Hartree,
        l=l,
        energies=energies * Hartree,
        projectors=projectors * Bohr**-1.5,
        j_dependent=j_dep,
        core_density=core,
    )


def _flag(text: str, key: str) -> bool:
    """OpenMX's ``input_logical``: on/yes/true (any case); absent means off."""
    match = re.search(rf"^\s*{re.escape(key)}\s+(\S+)", text, re.M)
    return match is not None and match.group(1).lower() in ("on", "yes", "true", "t", "1")


def find_vps(folder: str | os.PathLike, name: str) -> Path:
    """``<folder>/<name>.vps`` (or ``<folder>/VPS/<name>.vps``, OpenMX's DATA.PATH layout)."""
    folder = Path(folder)
    for candidate in (folder / f"{name}.vps", folder / "VPS" / f"{name}.vps"):
        for suffix in ("", ".xz", ".gz"):
            path = candidate.with_name(candidate.name + suffix)
            if path.is_file():
                return path
    raise VPSError(f"{folder}: no {name}.vps (looked in {folder} and {folder / 'VPS'})")


def interpolate_openmx(
    x: np.ndarray, values: np.ndarray, points: np.ndarray, clamp: bool
) -> np.ndarray:
    """OpenMX's piecewise-cubic Hermite interpolation of tabulated values (last axis) on
    a grid x, slopes from neighbouring secants; zero beyond the last point.

    ``clamp=True`` is ``RF_BesselF`` / ``RadialF`` (segments 2..n-2 only, the ends
    extrapolated); ``clamp=False`` is ``Nonlocal_RadialF`` / ``NLRF_BesselF`` (the end
    segments use a mirrored outer point). Points below x[0] use the first segment's cubic
    with the mirrored point (both routines).
    """
    points = np.asarray(points, dtype=float)
    n = len(x)
    m = np.searchsorted(x, points, side="left")  # OpenMX's bisection: x[m-1] < p <= x[m]
    m = np.clip(m, 2, n - 2) if clamp else np.clip(m, 1, n - 1)
    m = np.where(points < x[0], 1, m)
    return np.where(points > x[-1], 0.0, _hermite(x, values, points, m))


def interpolate_phif(x: np.ndarray, values: np.ndarray, points: np.ndarray) -> np.ndarray:
    """OpenMX's ``PhiF`` / ``VNAF`` (the neutral-atom potential and its projectors):
    segments 2..n-1, the last with a mirrored outer point; below x[0] the parabola
    a p^2 + b with the value and slope of the cubic at x[4]; zero beyond the last point."""
    points = np.asarray(points, dtype=float)
    n = len(x)
    m = np.clip(np.searchsorted(x, points, side="left"), 2, n - 1)
    out = _hermite(x, values, points, m)
    h2, h3 = x[4] - x[3], x[5] - x[4]
    f2, f3, f4 = values[..., 3:4], values[..., 4:5], values[..., 5:6]
    slope = ((f4 - f3) * h2 / h3 + (f3 - f2) * h3 / h2) / (h2 + h3)
    a = 0.5 * slope / x[4]
    below = a * points**2 + (f3 - a * x[4] ** 2)
    out = np.where(points < x[0], below, out)
    return np.where(points > x[-1], 0.0, out)


def interpolate_kumo(x: np.ndarray, values: np.ndarray, points: np.ndarray) -> np.ndarray:
    """OpenMX's ``KumoF`` inside the table: the four-point cubic on the uniform grid x
    (a file's ln r) of ``values`` extended by one linearly extrapolated point at each
    end; points outside [x[0], x[-1]] are clamped to it."""
    n = len(x)
    ext = np.concatenate([[2 * values[0] - values[1]], values, [2 * values[-1] - values[-2]]])
    t = (n - 1.0) * (np.clip(points, x[0], x[-1]) - x[0]) / (x[-1] - x[0])
    i = np.minimum(np.floor(t).astype(np.int64), n - 2)
    dt = t - i
    y0, y1, y2, y3 = ext[i], ext[i + 1], ext[i + 2], ext[i + 3]
    cubic = ((y3 - y0 - 3.0 * (y2 - y1)) * dt - y3 + 4.0 * y2 - 5.0 * y1 + 2.0 * y0) * dt
    return 0.5 * (cubic + (y2 - y0)) * dt + y1


def interpolate_log_radial(x: np.ndarray, values: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """A function tabulated on a uniform grid x = ln r read at ``radii`` (the unit of
    exp(x)) as OpenMX reads its atomic densities (``AtomicDenF``, ``AtomicPCCF``):
    :func:`interpolate_kumo` in ln r, the last value beyond the table, and below its
    first point a r^2 + b matched in value and slope to the Hermite cubic at r[4]."""
    radii = np.asarray(radii, dtype=float)
    with np.errstate(divide="ignore"):
        out = interpolate_kumo(x, values, np.log(radii))
    below = radii < np.exp(x[0])
    if below.any():
        out[below] = _kumo_below(np.exp(x), values, radii[below])
    return out


def _kumo_below(r: np.ndarray, values: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """``AtomicDenF`` below the table: a r^2 + b with the value and slope at r[4] of the
    Hermite cubic through the table padded by one extrapolated point in front (OpenMX's
    mix of padded values and unpadded radii kept)."""
    y = np.concatenate([[2 * values[0] - values[1]], values])
    m = 4
    rm = r[m]
    h1, h2, h3 = r[m - 1] - r[m - 2], r[m] - r[m - 1], r[m + 1] - r[m]
    f1, f2, f3, f4 = y[m - 2], y[m - 1], y[m], y[m + 1]
    g1 = ((f3 - f2) * h1 / h2 + (f2 - f1) * h2 / h1) / (h1 + h2)
    g2 = ((f4 - f3) * h2 / h3 + (f3 - f2) * h3 / h2) / (h2 + h3)
    y1, y2 = (rm - r[m - 1]) / h2, (rm - r[m]) / h2
    f = y2 * y2 * (3 * f2 + h2 * g1 + (2 * f2 + h2 * g1) * y2) + y1 * y1 * (
        3 * f3 - h2 * g2 - (2 * f3 - h2 * g2) * y1
    )
    df = (
        2 * y2 / h2 * (3 * f2 + h2 * g1 + (2 * f2 + h2 * g1) * y2)
        + y2 * y2 * (2 * f2 + h2 * g1) / h2
        + 2 * y1 / h2 * (3 * f3 - h2 * g2 - (2 * f3 - h2 * g2) * y1)
        - y1 * y1 * (2 * f3 - h2 * g2) / h2
    )
    a = 0.5 * df / rm
    return a * radii**2 + (f - a * rm * rm)


@dataclass(frozen=True)
class LogRadialTable:
    """A radial function on an OpenMX logarithmic grid, uniform in x = ln(r / Angstrom),
    read as OpenMX reads atomic and partial-core densities (:func:`interpolate_log_radial`)."""

    x: np.ndarray  # (n,) ln(r / Angstrom), uniform
    values: np.ndarray  # (n,)

    def __call__(self, radii: np.ndarray) -> np.ndarray:
        """Values at ``radii`` (Angstrom)."""
        return interpolate_log_radial(self.x, self.values, radii)


def core_density_table(vps: VPSFile) -> LogRadialTable | None:
    """The partial-core density (Angstrom^-3) of a pseudopotential as a table, or None."""
    if vps.core_density is None:
        return None
    return LogRadialTable(np.log(vps.r), vps.core_density)


def _hermite(x: np.ndarray, values: np.ndarray, points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The cubic of OpenMX's segment m (x[m-1]..x[m]) at the points; the segments 1 and
    n-1 mirror their missing outer point."""
    n = len(x)
    lo, hi = np.clip(m - 2, 0, n - 1), np.clip(m + 1, 0, n - 1)
    h2 = x[m] - x[m - 1]
    h1 = np.where(m == 1, 0.0, x[m - 1] - x[lo])
    h3 = np.where(m == n - 1, 0.0, x[hi] - x[m])
    f1, f2, f3, f4 = values[..., lo], values[..., m - 1], values[..., m], values[..., hi]
    first, last = m == 1, m == n - 1
    h1 = np.where(first, -(h2 + h3), h1)
    f1 = np.where(first, f4, f1)
    h3 = np.where(last, -(h1 + h2), h3)
    f4 = np.where(last, f1, f4)
    g1 = ((f3 - f2) * h1 / h2 + (f2 - f1) * h2 / h1) / (h1 + h2)
    g2 = ((f4 - f3) * h2 / h3 + (f3 - f2) * h3 / h2) / (h2 + h3)
    y1 = (points - x[m - 1]) / h2
    y2 = (points - x[m]) / h2
    return y2 * y2 * (3 * f2 + h2 * g1 + (2 * f2 + h2 * g1) * y2) + y1 * y1 * (
        3 * f3 - h2 * g2 - (2 * f3 - h2 * g2) * y1
    )


def projector_radial(vps: VPSFile, values: np.ndarray, l: int, radii: np.ndarray) -> np.ndarray:
    """A projector beta(r) (``values`` on ``vps.r``) at ``radii`` (Angstrom) as OpenMX's
    ``Nonlocal_RadialF`` evaluates it: below the grid, the first cubic for l = 0, else 0."""
    radii = np.asarray(radii, dtype=float)
    out = interpolate_openmx(vps.r, values, radii, clamp=False)
    return out if l == 0 else np.where(radii < vps.r[0], 0.0, out)


@dataclass(frozen=True)
class ValenceDensity:
    """The free atom's valence density, ``<valence.charge.density`` of a ``.pao`` file
    (rows x r rho): what OpenMX's neutral-atom potential screens V_loc with and what its
    zeroth step superposes for V_xc. Read here, beside the ``.vps``, as only the
    pseudopotential terms use it."""

    path: str
    x: np.ndarray  # (n,) the file's x = ln(r / Bohr), shifted to ln(r / Angstrom)
    r: np.ndarray  # (n,) Angstrom
    density: np.ndarray  # (n,) Angstrom^-3, as in the file (OpenMX rescales it)

    def scaled(self, charge: float) -> np.ndarray:
        """The density rescaled to ``charge`` electrons as OpenMX rescales it
        (``Read_VPS``, ``SetPara_DFT.c``): by the rectangle rule in x, 4 pi sum rho r^3 dx."""
        total = 4 * np.pi * (self.x[1] - self.x[0]) * np.sum(self.density * np.exp(3 * self.x))
        return self.density * (charge / total)

    def table(self, charge: float) -> LogRadialTable:
        """:meth:`scaled` as a :class:`LogRadialTable` (Angstrom^-3)."""
        return LogRadialTable(self.x, self.scaled(charge))


def read_valence_density(path: str | os.PathLike) -> ValenceDensity:
    """The valence density block of a ``.pao`` file (plain, .xz or .gz)."""
    path = Path(path)
    try:
        text = _text(path)
    except FileNotFoundError:
        raise VPSError(f"{path}: no such PAO file") from None
    except OSError as err:
        raise VPSError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        nmesh = int(_keyword(text, "grid.num.output", path))
    except ValueError as err:
        raise VPSError(f"{path}: bad keyword value ({err})") from None
    rows = _rows(
        _block(text, "valence.charge.density", path), nmesh, 3, "<valence.charge.density", path
    )
    return ValenceDensity(
        path=str(path),
        x=rows[:, 0] + np.log(Bohr),
        r=rows[:, 1] * Bohr,
        density=rows[:, 2] * Bohr**-3,
    )
