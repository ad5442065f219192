"""Band paths and band lines (ase_moireh.bands): the k-points the demo solves along a
path and the lines it draws through their levels."""

import numpy as np
from ase.lattice import HEX2D

from ase_moireh.bands import gap_aligned, thinned_path


def test_thinned_path_keeps_the_corners_and_about_npoints():
    path = HEX2D(3.5).bandpath("GMKG", npoints=40)
    x, corners, _ = path.get_linear_kpoint_axis()
    take = thinned_path(path, 18)
    assert 18 <= len(take) <= 18 + len(corners) and np.all(np.diff(take) > 0)
    assert all(np.isclose(x[take], c).any() for c in corners)
    assert np.array_equal(thinned_path(path, 60), np.arange(40))


def test_gap_aligned_lines_never_cross_the_gap():
    """Along a path the window of levels nearest the gap holds 2 valence + 2 conduction
    levels at one k-point and 3 + 1 at the next: by index a line would jump the gap."""
    levels = np.array([[-2.0, -1.0, 1.0, 2.0], [-3.0, -2.0, -1.0, 1.0]])
    lines = gap_aligned(levels, 0.0)
    for column in lines.T:
        seen = column[~np.isnan(column)]
        assert np.all(seen < 0) or np.all(seen > 0)
    np.testing.assert_array_equal(lines[:, 3], [-1.0, -1.0])  # the top valence band
    np.testing.assert_array_equal(lines[:, 4], [1.0, 1.0])  # the lowest conduction band
    np.testing.assert_array_equal(lines[:, 1], [np.nan, -3.0])
    assert np.isnan(lines).sum() == 8 - 4 + 8 - 4


def test_thinned_path_of_few_points_keeps_every_corner():
    """Asked for fewer points than the path has corners, it still gives every corner
    (Gamma, M, K, Gamma: the band edges of a twisted cell lie there)."""
    path = HEX2D(3.5).bandpath("GMKG", npoints=40)
    x, corners, _ = path.get_linear_kpoint_axis()
    take = thinned_path(path, 2)
    assert [int(np.argmin(np.abs(x - c))) for c in corners] == list(take)


def test_gap_aligned_keeps_every_level_once_and_counts_from_the_gap():
    """Each row holds the k-point's levels, each once, sorted; a level at the mid-gap
    itself counts as conduction; a k-point with no level below the gap leaves the
    valence columns empty."""
    rng = np.random.default_rng(4)
    levels = rng.normal(size=(5, 6))
    levels[2] = np.abs(levels[2]) + 0.1  # all above the gap
    levels[3, 0] = 0.0  # exactly at the mid-gap
    lines = gap_aligned(levels, 0.0)
    assert lines.shape == (5, 12)
    for row, e in zip(lines, levels, strict=True):
        seen = row[~np.isnan(row)]
        np.testing.assert_array_equal(seen, np.sort(e))
    assert np.isnan(lines[2, :6]).all()
    assert lines[3, 6] == 0.0
    below = (levels < 0).sum(axis=1)
    np.testing.assert_array_equal(np.isnan(lines[:, :6]).sum(axis=1), 6 - below)
