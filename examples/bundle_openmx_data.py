"""Write the bundled OpenMX data files of H0 (``ase_moireh/data/openmx/``).

The zeroth-step Hamiltonian (:mod:`ase_moireh.h0`) needs, per species, the whole ``.pao``
file (basis radial functions, the valence density, and every PAO as a seed of the
neutral-atom projectors) and the ``.vps`` file (projectors, local part, partial core).
They are shipped as the original files of the shared runs (DFT_DATA19: Mo7.0, Te7.0,
Mo_PBE19, Te_PBE19), xz-compressed: 0.52 MB, the size of a compact .npz of the arrays
actually used (0.51 MB; the numbers are printed to 15 digits and hardly compress), read
by the same readers as any DATA.PATH, so the bundle is OpenMX's input byte for byte::

    python examples/bundle_openmx_data.py [DATA_PATH]   # default ../shared/data/openmx/DFT_DATA
"""

from __future__ import annotations

import lzma
import sys
from pathlib import Path

from ase_moireh.data import bundled_openmx_data_path
from ase_moireh.files import atomic_file
from ase_moireh.io.openmx_input import DEFAULT_SPECIES


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else root.parent / "shared/data/openmx/DFT_DATA"
    out = bundled_openmx_data_path()
    for basis, vps, _ in DEFAULT_SPECIES.values():
        pao = basis.split("-")[0]
        for sub, name in (("PAO", f"{pao}.pao"), ("VPS", f"{vps}.vps")):
            raw = (data / sub / name).read_bytes()
            target = out / sub / f"{name}.xz"
            with atomic_file(target) as tmp:
                tmp.write_bytes(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME))
            print(f"wrote {target} ({target.stat().st_size} bytes, from {len(raw)})")


if __name__ == "__main__":
    main()
