"""Interatomic potentials that :func:`ase_moireh.build.relax.relax` can use, by name.

Only potentials whose weights ship inside their pip package work here (no download at
run time). Universal potentials trained on PBE data (Materials Project) lack dispersion,
which holds the two layers together: D3(BJ) with PBE's parameters (Grimme et al.,
J. Comput. Chem. 32, 1456 (2011); ``dftd3``, simple-dftd3's Python API) is added to them.
Their packages are optional: ``pip install -e '.[relax]'``. Which potential is right for
twisted MoTe2 is measured against OpenMX PBE-D3 in ``benchmarks/results/relax.md``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from ase.calculators.calculator import Calculator
from ase.data import chemical_symbols

INSTALL_HINT = "pip install -e '.[relax]'"


@dataclass(frozen=True)
class Potential:
    """A named potential: what it is, the packages it needs, how to build it."""

    description: str
    packages: tuple[str, ...]
    build: Callable[[], tuple[Calculator, frozenset[str]]]


def d3_pbe() -> Calculator:
    """D3(BJ) with PBE's parameters, the dispersion added to potentials that lack it."""
    from dftd3.ase import DFTD3

    return DFTD3(method="PBE", damping="d3bj")


def _sevennet_d3(model: str) -> Callable[[], tuple[Calculator, frozenset[str]]]:
    def build() -> tuple[Calculator, frozenset[str]]:
        from ase.calculators.mixing import SumCalculator
        from sevenn.calculator import SevenNetCalculator

        net = SevenNetCalculator(model, device="cpu")
        elements = frozenset(chemical_symbols[z] for z in net.type_map)
        return SumCalculator([net, d3_pbe()]), elements

    return build


POTENTIALS: dict[str, Potential] = {
    "7net-0+d3": Potential(
        "SevenNet 7net-0 (universal, PBE/PBE+U, MPtrj) + D3(BJ)",
        ("sevenn", "dftd3"),
        _sevennet_d3("7net-0"),
    ),
}
#: the potential ``moireh relax`` uses unless told otherwise
DEFAULT_POTENTIAL = "7net-0+d3"


def load_potential(name: str = DEFAULT_POTENTIAL) -> tuple[Calculator, frozenset[str]]:
    """The calculator named ``name`` and the elements it covers; a clear error for an
    unknown name or a missing package."""
    if name not in POTENTIALS:
        raise ValueError(f"unknown potential {name!r}; known: {', '.join(sorted(POTENTIALS))}")
    spec = POTENTIALS[name]
    missing = [p for p in spec.packages if importlib.util.find_spec(p) is None]
    if missing:
        raise ValueError(
            f"potential {name!r} needs the package(s) {', '.join(missing)}: {INSTALL_HINT}"
        )
    return spec.build()
