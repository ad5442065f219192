#!/usr/bin/env python3
"""A stand-in ``openmx`` that replays a recorded run (tests of ``moireh dataset run``).

Called as ``fake_openmx.py INPUT`` in a run folder, like OpenMX. It replays the SCF
lines of a recorded 6-atom SOC run (``openmx_soc_6atoms.std``) to standard output and
writes that run's ``openmx.scfout`` and ``openmx.out`` (from the packaged .scfout.xz,
whose appended text is openmx.out). What it plays is read, one line per invocation, from
``scenario`` in the folder (``converge`` if absent):

* ``converge``: the recording as it is (28 SCF steps, NormRD 4.7e-9);
* ``stall``: the recording cut to 10 steps, ending normally but unconverged;
* ``crash``: 5 steps, then exit code 1 without finishing;
* ``electrons``: as ``converge`` but 613 of 644 electrons (OpenMX's NC bug).

Like OpenMX, it stops after ``scf.maxIter`` steps when the input sets fewer than the
recording holds (``scf.maxIter 1``: the zeroth step).

Every invocation appends the input file name and its ``scf.restart`` setting to
``invocations`` so tests can check the staging.
"""

import lzma
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECORDING = HERE / "openmx_soc_6atoms.std"
SCFOUT = HERE.parents[1] / "ase_moireh" / "data" / "bl1x1_soc_s00.scfout.xz"
MARK = "******************* MD= 1  SCF="


def main() -> int:
    name = sys.argv[-1]
    text = Path(name).read_text()
    restart = re.search(r"(?im)^\s*scf\.restart\s+(\S+)", text)
    with open("invocations", "a") as log:
        log.write(f"{name} {restart.group(1) if restart else 'off'}\n")
    plan = Path("scenario")
    lines = plan.read_text().split() if plan.exists() else []
    scenario = lines.pop(0) if lines else "converge"
    plan.write_text("\n".join(lines))
    steps = RECORDING.read_text().split(MARK)[1:]
    if scenario in ("stall", "crash"):
        steps = steps[: 10 if scenario == "stall" else 5]
    max_iter = re.search(r"(?im)^\s*scf\.maxIter\s+(\d+)", text)
    if max_iter:
        steps = steps[: int(max_iter.group(1))]
    for step in steps:
        if scenario == "electrons":
            step = step.replace(
                "total=    92.00000 ideal(neutral)=    92.00000",
                "total=   613.00000 ideal(neutral)=   644.00000",
            )
        sys.stdout.write(MARK + step)
    if scenario == "crash":
        return 1
    raw = lzma.decompress(SCFOUT.read_bytes())
    Path("openmx.scfout").write_bytes(raw)
    Path("openmx.out").write_text("see openmx.scfout: its appended text is openmx.out\n")
    Path("openmx_rst").mkdir(exist_ok=True)
    sys.stdout.write("\nThe calculation was normally finished.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
