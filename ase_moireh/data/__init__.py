"""Files shipped with the package: the bundled models, the MoTe2 radial functions of the
exact overlap, the OpenMX basis and pseudopotential files of H0, the demo's OpenMX run
and the DFT reference bands of the 21.79 deg SOC cell. One place knows where they are."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

#: model file per spin treatment (SOC: the paper's setting)
BUNDLED_MODELS = {True: "mote2_soc.pt", False: "mote2_nosoc.pt"}


def _path(*parts: str) -> Path:
    return Path(str(files("ase_moireh").joinpath("data", *parts)))


def bundled_model_path(soc: bool = True) -> Path:
    """The MoTe2 model shipped with the package (``examples/train_corpus.py`` makes it)."""
    return _path("models", BUNDLED_MODELS[soc])


def bundled_radials_path() -> Path:
    """Radial functions of Mo7.0-s3p2d1 / Te7.0-s3p2d2 (``examples/bundle_radials.py``)."""
    return _path("pao", "mote2_pbe19.npz")


def bundled_openmx_data_path() -> Path:
    """An OpenMX DATA.PATH (``PAO/``, ``VPS/``, files xz-compressed) holding Mo7.0.pao,
    Te7.0.pao, Mo_PBE19.vps and Te_PBE19.vps of DFT_DATA19, the files of the shared runs
    and the corpus: what the zeroth-step H0 needs (``examples/bundle_openmx_data.py``)."""
    return _path("openmx")


def demo_scfout_path() -> Path:
    """A real OpenMX run (SOC bilayer MoTe2, 6 atoms) with its printed eigenvalues."""
    return _path("bl1x1_soc_s00.scfout.xz")


#: the demo's few-degree cell (step 4): (n, m) of ``twisted_bilayer``, 9.43 deg, 222 atoms
DEMO_TWIST = (4, 3)
#: k-points of the demo's Gamma-M-K-Gamma path through a twisted cell
TWISTED_PATH_POINTS = 40
#: DFT bands of the shared 21.79 deg SOC run near its gap (``examples/bundle_reference.py``)
REFERENCE_BANDS = _path("reference", "tw2179_soc_bands.npz")
