"""BlockOperator on small hand-made operators."""

import numpy as np
import pytest
from toy_models import random_hermitian_operator

from ase_moireh.block_operator import BlockOperator
from ase_moireh.tightbinding import TightBinding


def dense_bloch(op: BlockOperator, k) -> np.ndarray:
    """Straightforward reference Bloch sum."""
    start = np.concatenate([[0], np.cumsum(op.norbs)])
    out = np.zeros((op.dimension, op.dimension), dtype=complex)
    for e, (i, j, *r) in enumerate(op.edges):
        phase = np.exp(2j * np.pi * np.dot(k, r))
        out[start[i] : start[i + 1], start[j] : start[j + 1]] += op.block(e) * phase
    return out


@pytest.mark.parametrize("spinful", [False, True])
def test_bloch_sum_matches_reference_and_is_hermitian(spinful):
    op = random_hermitian_operator(spinful)
    assert op.hermiticity_error() < 1e-14
    for k in ([0, 0, 0], [0.123, 0.4, 0], [0.5, 0, 0]):
        hk = op.bloch(k).toarray()
        assert np.allclose(hk, dense_bloch(op, k))
        assert np.allclose(hk, hk.conj().T)


def _subset(op: BlockOperator, keep: np.ndarray) -> BlockOperator:
    values = np.concatenate([op.block(e).ravel() for e in keep])
    return BlockOperator(op.numbers, op.basis, op.edges[keep], values, op.spinful)


@pytest.mark.parametrize("spinful", [False, True])
def test_bloch_sum_in_chunks_any_edge_order_with_and_without_folding(spinful, monkeypatch):
    """The CSR is written a chunk at a time: chunks of a few numbers, shuffled edges and
    a cell without folded images (R = 0 only: sorted, no duplicates) change nothing."""
    import ase_moireh.block_operator as bo

    monkeypatch.setattr(bo, "BLOCH_CHUNK", 7)
    full = random_hermitian_operator(spinful, seed=3)
    shuffled = _subset(full, np.random.default_rng(1).permutation(full.nedges))
    home = _subset(full, np.flatnonzero(full.edges[:, 2] == 0))
    for op in (shuffled, home):
        assert len(list(op.element_chunks(op._csr_plan().order))) > 2
        for k in ([0, 0, 0], [0.123, 0.4, 0]):
            hk = op.bloch(k)
            assert np.allclose(hk.toarray(), dense_bloch(op, k), atol=1e-14)
    assert home.bloch([0.2, 0, 0]).has_sorted_indices and not home._csr_plan().duplicates


def test_shifted_bloch_sum_lifts_the_overlap_to_spinors_on_the_fly():
    """H(k) - sigma S(k) x 1_2 in H's per-atom spin layout, without a spinor S(R)."""
    s_op = random_hermitian_operator(seed=4)
    h_op = random_hermitian_operator(spinful=True, seed=5)
    k, sigma = [0.31, 0, 0], 0.7
    spatial = dense_bloch(s_op, k)
    order = [0, 1, 2, 3, 5, 6, 7, 8, 4, 9]  # C up, C down, H up, H down
    lifted = np.kron(np.eye(2), spatial)[np.ix_(order, order)]
    shifted = h_op.bloch(k, overlap=s_op, sigma=sigma).toarray()
    assert np.allclose(shifted, dense_bloch(h_op, k) - sigma * lifted, atol=1e-13)
    plain = random_hermitian_operator(seed=6)
    assert np.allclose(
        plain.bloch(k, s_op, sigma).toarray(), dense_bloch(plain, k) - sigma * spatial
    )
    with pytest.raises(ValueError, match="same edges"):
        h_op.bloch(k, overlap=_subset(s_op, np.arange(3)), sigma=sigma)


def test_hermiticity_error_sees_broken_and_missing_partners():
    op = random_hermitian_operator()
    e = op.index(0, 1, [1, 0, 0])
    op.block(e)[0, 0] += 0.5
    assert op.hermiticity_error() == pytest.approx(0.5)
    keep = np.arange(op.nedges) != e
    offsets = op.offsets
    values = np.concatenate([op.block(f).ravel() for f in np.flatnonzero(keep)])
    assert offsets[-1] == op.values.size
    half = BlockOperator(op.numbers, op.basis, op.edges[keep], values)
    assert half.hermiticity_error() == np.inf


def test_find_index_and_reverse():
    op = random_hermitian_operator()
    assert op.index(1, 0, [-1, 0, 0]) >= 0
    assert op.index(1, 0, [5, 0, 0]) == -1
    rev = op.reverse_edges()
    assert np.array_equal(op.edges[rev][:, [1, 0]], op.edges[:, :2])
    assert np.array_equal(op.edges[rev][:, 2:], -op.edges[:, 2:])


def test_save_load_round_trip(tmp_path):
    op = random_hermitian_operator(spinful=True)
    op.cell = np.eye(3) * 3.0
    op.save(tmp_path / "h.h5")
    back = BlockOperator.load(tmp_path / "h.h5")
    assert back.spinful and back.basis == op.basis
    assert np.array_equal(back.edges, op.edges)
    assert np.array_equal(back.values, op.values)
    assert np.array_equal(back.cell, op.cell)
    assert [p.name for p in tmp_path.iterdir()] == ["h.h5"]  # no temporary left


def test_spinor_lift_of_s_and_mae_by_pair():
    """TightBinding.Sk lifts the spinless S to H's SOC layout (per atom: up, then down),
    and spin_z labels those rows."""
    op = random_hermitian_operator()
    spinful_h = BlockOperator(
        op.numbers, op.basis, op.edges, np.zeros(op.values.size * 4, complex), spinful=True
    )
    tb = TightBinding(spinful_h, op)
    k = [0.3, 0, 0]
    hk = op.bloch(k).toarray()
    # per-atom spin layout: atom C rows (4 up, 4 down), then atom H (1 up, 1 down)
    order = [0, 1, 2, 3, 5, 6, 7, 8, 4, 9]
    expect = np.kron(np.eye(2), hk)[np.ix_(order, order)]
    assert np.allclose(tb.Sk(k).toarray(), expect)
    assert list(tb.spin_z()) == [1, 1, 1, 1, -1, -1, -1, -1, 1, -1]
    other = BlockOperator(op.numbers, op.basis, op.edges, op.values + 0.01)
    mae = op.mae_by_pair(other)
    assert set(mae) == {"C-C", "C-H", "H-C", "H-H"}
    assert all(v == pytest.approx(0.01) for v in mae.values())


def test_permute_orbitals_inverse_restores():
    op = random_hermitian_operator(spinful=True)
    perm = {"C": np.array([0, 2, 3, 1]), "H": np.array([0])}
    inverse = {s: np.argsort(p) for s, p in perm.items()}
    moved = op.permute_orbitals(perm)
    assert not np.allclose(moved.values, op.values)
    assert np.allclose(moved.permute_orbitals(inverse).values, op.values)


def test_inconsistent_values_are_refused():
    op = random_hermitian_operator()
    with pytest.raises(ValueError, match="values hold"):
        BlockOperator(op.numbers, op.basis, op.edges, op.values[:-1])
