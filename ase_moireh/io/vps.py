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
    out = y2 * y2 * (3 * f2 + h2 * g1 + (2 * f2 + h2 * g1) * y2) + y1 * y1 * (
        3 * f3 - h2 * g2 - (2 * f3 - h2 * g2) * y1
    )
    return np.where(points > x[-1], 0.0, out)


def projector_radial(vps: VPSFile, values: np.ndarray, l: int, radii: np.ndarray) -> np.ndarray:
    """A projector beta(r) (``values`` on ``vps.r``) at ``radii`` (Angstrom) as OpenMX's
    ``Nonlocal_RadialF`` evaluates it: below the grid, the first cubic for l = 0, else 0."""
    radii = np.asarray(radii, dtype=float)
    out = interpolate_openmx(vps.r, values, radii, clamp=False)
    return out if l == 0 else np.where(radii < vps.r[0], 0.0, out)
