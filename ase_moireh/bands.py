"""Band structures along a k-path, as the demo draws them: which of the
path's points to solve when each costs a dense solve (:func:`thinned_path`), and how to
join the levels of each k-point into lines that never cross the gap
(:func:`gap_aligned`)."""

from __future__ import annotations

import numpy as np


def thinned_path(path, npoints: int) -> np.ndarray:
    """Indices of about ``npoints`` of the path's points, evenly spread, with its
    high-symmetry corners (all of them when the path has no more than ``npoints``)."""
    x, corners, _ = path.get_linear_kpoint_axis()
    even = np.linspace(0, len(x) - 1, min(npoints, len(x))).round().astype(int)
    at_corners = [int(np.argmin(np.abs(x - c))) for c in corners]
    return np.unique(np.concatenate([even, at_corners]))


def gap_aligned(levels: np.ndarray, midgap: float) -> np.ndarray:
    """Levels per k-point (rows) re-indexed so that lines follow bands: the n-th level
    below ``midgap`` counted down from it, the n-th above counted up from it (NaN where
    a k-point has fewer). The levels nearest the gap split differently between valence
    and conduction along a path; joined by index, lines jumped across the gap."""
    nb = levels.shape[1]
    out = np.full((levels.shape[0], 2 * nb), np.nan)
    for row, e in zip(out, np.sort(levels, axis=1), strict=True):
        below, above = e[e < midgap], e[e >= midgap]
        row[nb - len(below) : nb] = below  # column nb - 1: the top valence level
        row[nb : nb + len(above)] = above
    return out
