"""Write the bundled radial functions (``ase_moireh/data/pao/mote2_pbe19.npz``).

They are the PAO radial functions of the basis the shared OpenMX runs used
(Mo7.0-s3p2d1, Te7.0-s3p2d2 from DFT_DATA19), so ``bundled_overlap()`` reproduces the
overlap OpenMX wrote without any OpenMX file on the user's machine::

    python examples/bundle_radials.py [DATA_PATH]   # default ../shared/data/openmx/DFT_DATA
"""

from __future__ import annotations

import sys
from pathlib import Path

from ase_moireh.data import bundled_radials_path
from ase_moireh.io.openmx_input import DEFAULT_SPECIES
from ase_moireh.overlap import TwoCentreOverlap


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else root.parent / "shared/data/openmx/DFT_DATA"
    basis = {symbol: spec[0] for symbol, spec in DEFAULT_SPECIES.items()}
    source = TwoCentreOverlap.from_pao_folder(data, basis)
    source.save(bundled_radials_path())
    print(f"wrote {bundled_radials_path()} ({basis})")


if __name__ == "__main__":
    main()
