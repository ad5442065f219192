"""Basis strings, orbital conventions and rotation matrices."""

import numpy as np
import pytest
import torch
from e3nn import o3
from scipy.spatial.transform import Rotation

from ase_moireh.basis import (
    E3NN_FRAME,
    Basis,
    BasisError,
    SpeciesBasis,
    parse_dftio_basis,
    parse_openmx_basis,
    real_spherical_harmonics,
    spin_rotation,
    wigner_d_real,
)

PAULI = [np.array([[0, 1], [1, 0]]), np.array([[0, -1j], [1j, 0]]), np.diag([1, -1])]


def random_orthogonal(seed: int, improper: bool = False) -> np.ndarray:
    q = Rotation.random(random_state=seed).as_matrix()
    return -q if improper else q


def test_openmx_basis_strings_give_paper_orbital_counts():
    name, shells = parse_openmx_basis("Mo7.0-s3p2d1")
    assert name == "Mo7.0" and shells == (0, 0, 0, 1, 1, 2)
    assert SpeciesBasis("Mo", shells).norb == 14
    assert SpeciesBasis("Te", parse_openmx_basis("Te7.0-s3p2d2")[1]).norb == 19


def test_dftio_basis_round_trip():
    basis = Basis.from_dftio("{'Mo': '3s2p1d', 'Te': '3s2p2d'}")
    assert basis.to_dftio() == {"Mo": "3s2p1d", "Te": "3s2p2d"}
    assert Basis.from_openmx({"Mo": "Mo7.0-s3p2d1", "Te": "Te7.0-s3p2d2"}) == basis
    assert parse_dftio_basis("1s1p") == (0, 1)
    assert list(basis.norbs([42, 52, 52])) == [14, 19, 19]


@pytest.mark.parametrize("bad", ["Mo7.0", "Mo7.0-x2", "Mo7.0-p1s1", "", "Mo-"])
def test_bad_openmx_basis_is_refused(bad):
    with pytest.raises(BasisError):
        parse_openmx_basis(bad)


def test_bad_dftio_basis_is_refused():
    for bad in ["{'Si': 'sp'}", "['Si']", "{'Xx': '1s'}", "not python"]:
        with pytest.raises(BasisError):
            Basis.from_dftio(bad)


def test_openmx_permutation_is_the_documented_one():
    # ours p (y, z, x) from OpenMX (x, y, z); d (xy, yz, z2, xz, x2-y2) from
    # OpenMX (z2, x2-y2, xy, xz, yz)
    perm = SpeciesBasis("Mo", (0, 1, 2)).openmx_permutation()
    assert list(perm) == [0, 2, 3, 1, 6, 8, 4, 7, 5]
    with pytest.raises(BasisError):
        SpeciesBasis("Ce", (3,)).openmx_permutation()


@pytest.mark.parametrize("l", [0, 1, 2, 3])
@pytest.mark.parametrize("improper", [False, True])
def test_wigner_d_is_an_orthogonal_representation(l, improper):
    q1, q2 = random_orthogonal(1, improper), random_orthogonal(2)
    d1, d2 = wigner_d_real(l, q1), wigner_d_real(l, q2)
    assert np.allclose(d1 @ d1.T, np.eye(2 * l + 1), atol=1e-12)
    assert np.allclose(wigner_d_real(l, q1 @ q2), d1 @ d2, atol=1e-12)
    pts = np.random.default_rng(0).normal(size=(7, 3))
    lhs = real_spherical_harmonics(l, pts @ q1.T)
    assert np.allclose(lhs, real_spherical_harmonics(l, pts) @ d1.T, atol=1e-12)
    if improper:  # inversion acts as parity (-1)^l
        assert np.allclose(wigner_d_real(l, -np.eye(3)), (-1) ** l * np.eye(2 * l + 1))


def test_p_shell_is_y_z_x():
    q = random_orthogonal(3)
    perm = [1, 2, 0]  # (y, z, x) components of a vector
    assert np.allclose(wigner_d_real(1, q), q[np.ix_(perm, perm)], atol=1e-12)


@pytest.mark.parametrize("l", [1, 2, 3])
def test_our_frame_is_e3nn_in_permuted_coordinates(l):
    """D_ours(Q) = D_e3nn(A Q A^T) with A = E3NN_FRAME (e3nn 0.6 is y-polar)."""
    q = random_orthogonal(4)
    a = E3NN_FRAME
    d_e3nn = o3.Irrep(l, (-1) ** l).D_from_matrix(torch.tensor(a @ q @ a.T)).numpy()
    assert np.allclose(d_e3nn, wigner_d_real(l, q), atol=1e-5)


@pytest.mark.parametrize("improper", [False, True])
def test_spin_rotation_rotates_pauli_vector(improper):
    q = random_orthogonal(5, improper)
    u = spin_rotation(q)
    proper = q * np.linalg.det(q)  # spin is an axial vector
    assert np.allclose(u @ u.conj().T, np.eye(2))
    for a in range(3):
        rotated = sum(proper[b, a] * PAULI[b] for b in range(3))
        assert np.allclose(u @ PAULI[a] @ u.conj().T, rotated, atol=1e-12)


def test_spin_rotation_by_pi_and_2pi_about_z():
    rz = Rotation.from_rotvec([0, 0, np.pi]).as_matrix()
    assert np.allclose(spin_rotation(rz), np.diag([-1j, 1j]))
    assert np.allclose(spin_rotation(np.eye(3)), np.eye(2))


def test_orbital_labels_follow_the_stated_order():
    """Labels name the real harmonics in the order the module docstring states."""
    te = Basis.from_dftio({"Te": "3s2p2d"})["Te"]
    labels = te.orbital_labels()
    assert len(labels) == te.norb == 19
    assert labels[:6] == ["s1", "s2", "s3", "p1y", "p1z", "p1x"]
    assert labels[9:14] == ["d1xy", "d1yz", "d1z2", "d1xz", "d1x2-y2"]
    assert te.shell_labels() == ["s1", "s2", "s3", "p1", "p2", "d1", "d2"]
