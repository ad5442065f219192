"""Lattice constants and layer geometry of 2H transition-metal dichalcogenide monolayers.

MoTe2 is the geometry of the shared OpenMX runs (a = 3.52 A, chalcogens 1.80 A above and
below the metal plane, metal-metal interlayer distance 7.00 A). The other entries are
typical experimental bulk values rounded to 0.01 A (lattice constant a, chalcogen height
d, interlayer metal-metal distance), good enough for building structures; give your own
``Material`` for production numbers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Material:
    """A 2H-MX2 monolayer: metal at (0, 0), chalcogens at (1/3, 1/3) at heights +-d."""

    metal: str
    chalcogen: str
    a: float  # in-plane lattice constant, A
    d: float  # chalcogen height above/below the metal plane, A
    interlayer: float  # metal-metal distance of the bilayer, A
    poisson: float = 0.25  # in-plane Poisson ratio used by heterostrain (typical TMD)

    @property
    def name(self) -> str:
        return f"{self.metal}{self.chalcogen}2"


MATERIALS: dict[str, Material] = {
    m.name: m
    for m in (
        Material("Mo", "Te", 3.52, 1.80, 7.00),
        Material("Mo", "Se", 3.29, 1.67, 6.46),
        Material("Mo", "S", 3.16, 1.56, 6.15),
        Material("W", "Se", 3.28, 1.68, 6.49),
        Material("W", "S", 3.15, 1.57, 6.16),
        Material("W", "Te", 3.55, 1.81, 7.05),
    )
}


def get_material(material: str | Material) -> Material:
    if isinstance(material, Material):
        return material
    try:
        return MATERIALS[material]
    except KeyError:
        raise ValueError(
            f"unknown material {material!r}; known: {', '.join(MATERIALS)} (or pass a Material)"
        ) from None
