"""The paper's partition of the blocks among several models, and merging them back.

DeepH-style MoTe2 training splits the work: per element pair (Mo-Mo, Mo-Te, Te-Mo,
Te-Te; on-site blocks count with their own pair) one model learns the same-shell
elements (orbitals of equal l) and one the others. :class:`Partition` names one such
share; merged models must cover every element of every block exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ase_moireh.basis import Basis


@dataclass(frozen=True)
class Partition:
    pairs: tuple[str, ...] | None = None  # e.g. ("Mo-Te",); None: every pair
    shells: str = "all"  # "same" (equal l), "other", or "all"

    def __post_init__(self) -> None:
        if self.shells not in ("same", "other", "all"):
            raise ValueError(f"shells must be 'same', 'other' or 'all', got {self.shells!r}")
        if self.pairs is not None:
            object.__setattr__(self, "pairs", tuple(self.pairs))

    @classmethod
    def from_dict(cls, d: dict | None) -> Partition:
        return cls(**d) if d else cls()

    def mask(self, key: str, basis: Basis, spinful: bool) -> np.ndarray | None:
        """Boolean mask over the flat block of ``key`` (pair "A-B" or on-site "A"), or
        None when this share holds nothing of that key."""
        a, b = key.split("-") if "-" in key else (key, key)
        if self.pairs is not None and f"{a}-{b}" not in self.pairs:
            return None
        li, lj = _orbital_l(basis, a, spinful), _orbital_l(basis, b, spinful)
        same = li[:, None] == lj[None, :]
        chosen = {"same": same, "other": ~same, "all": np.ones_like(same)}[self.shells]
        flat = chosen.ravel()
        return np.concatenate([flat, flat]) if spinful else flat


def _orbital_l(basis: Basis, symbol: str, spinful: bool) -> np.ndarray:
    spec = basis[symbol]
    ls = np.concatenate([[l] * (2 * l + 1) for l in spec.shells])
    return np.concatenate([ls, ls]) if spinful else ls


def check_coverage(
    partitions: list[Partition], keys: list[str], basis: Basis, spinful: bool
) -> None:
    """Every element of every block key filled by exactly one share, else ValueError."""
    for key in keys:
        count = None
        for p in partitions:
            m = p.mask(key, basis, spinful)
            if m is None:
                continue
            count = m.astype(int) if count is None else count + m
        if count is None or np.any(count != 1):
            holes = (
                "no share"
                if count is None
                else f"{int((count == 0).sum())} unfilled, "
                f"{int((count > 1).sum())} doubly filled elements"
            )
            raise ValueError(f"partition does not cover block {key} exactly once: {holes}")
