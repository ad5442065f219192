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
from functools import partial

from ase.calculators.calculator import Calculator
from ase.data import chemical_symbols

INSTALL_HINT = "pip install -e '.[relax]'"


@dataclass(frozen=True)
class Potential:
    """A named potential: what it is, the packages it needs, how to build it."""

    description: str
    packages: tuple[str, ...]
    build: Callable[[], tuple[Calculator, frozenset[str]]]
    install: str = INSTALL_HINT


def d3_pbe() -> Calculator:
    """D3(BJ) with PBE's parameters, the dispersion added to potentials that lack it."""
    from dftd3.ase import DFTD3

    return DFTD3(method="PBE", damping="d3bj")


def _sevennet(model: str) -> tuple[Calculator, frozenset[str]]:
    from sevenn.calculator import SevenNetCalculator

    net = SevenNetCalculator(model, device="cpu")
    return net, frozenset(chemical_symbols[z] for z in net.type_map)


def _chgnet() -> tuple[Calculator, frozenset[str]]:
    from chgnet.model.dynamics import CHGNetCalculator

    net = CHGNetCalculator(use_device="cpu", on_isolated_atoms="ignore")
    # CHGNet embeds elements 1-94 (``AtomEmbedding(max_num_elements=94)``)
    return net, frozenset(chemical_symbols[1:95])


def _with_d3(
    base: Callable[[], tuple[Calculator, frozenset[str]]], corrections: str | None = None
) -> Callable[[], tuple[Calculator, frozenset[str]]]:
    """``base`` + D3(BJ), and the bundled corrections ``corrections`` if given (which
    narrow the elements to the ones they were fitted for)."""

    def build() -> tuple[Calculator, frozenset[str]]:
        from ase.calculators.mixing import SumCalculator

        net, elements = base()
        parts = [net, d3_pbe()]
        if corrections is not None:
            from ase_moireh.build.corrections import bundled_correction

            parts.append(bundled_correction(corrections))
            elements = elements & parts[-1].elements
        return SumCalculator(parts), elements

    return build


POTENTIALS: dict[str, Potential] = {
    "7net-0+d3": Potential(
        "SevenNet 7net-0 (universal, PBE/PBE+U, MPtrj) + D3(BJ)",
        ("sevenn", "dftd3"),
        _with_d3(partial(_sevennet, "7net-0")),
    ),
    "7net-0+d3+fit": Potential(
        "SevenNet 7net-0 + D3(BJ) + corrections fitted to OpenMX PBE-D3 (MoTe2 only): "
        "interlayer registry terms (stacking curves) and intralayer springs (perturbed cells)",
        ("sevenn", "dftd3"),
        _with_d3(partial(_sevennet, "7net-0"), "mote2_7net0"),
    ),
    "chgnet+d3": Potential(
        "CHGNet 0.3.0 (universal, PBE/PBE+U, MPtrj; magmom-aware) + D3(BJ)",
        ("chgnet", "dftd3"),
        _with_d3(_chgnet),
        # a measured candidate, not in [relax]: it pulls pymatgen (~250 MB)
        "pip install chgnet==0.4.2 dftd3==1.7.0",
    ),
}
#: the potential ``moireh relax`` uses unless told otherwise
DEFAULT_POTENTIAL = "7net-0+d3+fit"


def load_potential(name: str = DEFAULT_POTENTIAL) -> tuple[Calculator, frozenset[str]]:
    """The calculator named ``name`` and the elements it covers; a clear error for an
    unknown name or a missing package."""
    if name not in POTENTIALS:
        raise ValueError(f"unknown potential {name!r}; known: {', '.join(sorted(POTENTIALS))}")
    spec = POTENTIALS[name]
    missing = [p for p in spec.packages if importlib.util.find_spec(p) is None]
    if missing:
        raise ValueError(
            f"potential {name!r} needs the package(s) {', '.join(missing)}: {spec.install}"
        )
    return spec.build()
