"""Shift-invert eigenvalues equal dense ones (real DFT operators, SOC and not)."""

import numpy as np
import pytest
import scipy.linalg as sl

from ase_moireh.factorize import mkl_library
from ase_moireh.solve import shift_invert_eigh
from shared_data import converted

needs_mkl = pytest.mark.skipif(
    mkl_library() is None, reason="PARDISO needs Intel MKL (pip install mkl, in the test extra)"
)


@pytest.mark.parametrize("case", ["bl1x1_soc_s22", "tw2179_nosoc"])
@pytest.mark.parametrize("k", [(0.0, 0.0, 0.0), (0.1234, 0.3071, 0.0)])
@pytest.mark.parametrize("solver", ["superlu", pytest.param("pardiso", marks=needs_mkl)])
def test_shift_invert_matches_dense(case, k, solver):
    s = converted(case)
    hk, sk = s.tight_binding.pair(k)
    dense = sl.eigh(hk.toarray(), sk.toarray(), eigvals_only=True)
    sigma = s.fermi_level + 0.01
    nev = 12
    found = shift_invert_eigh(hk, sk, sigma, nev, solver=solver)
    nearest = np.sort(dense[np.argsort(np.abs(dense - sigma))[:nev]])
    assert np.abs(found - nearest).max() < 1e-8


def test_unknown_solver_is_refused():
    import scipy.sparse as sp

    from ase_moireh.factorize import factorize

    with pytest.raises(ValueError, match="unknown solver"):
        factorize(sp.identity(3, format="csr"), "mumps")
