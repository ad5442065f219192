"""Corrupted .scfout files never crash with a traceback and never leave output behind."""

import lzma

import numpy as np
import pytest

from ase_moireh.io.openmx import ScfoutError, parse_scfout, read_scfout
from ase_moireh.workflows.convert import convert_files
from shared_data import scfout_path


@pytest.fixture(scope="module")
def raw() -> bytes:
    return lzma.open(scfout_path("bl1x1_nosoc_s00")).read()


@pytest.fixture(scope="module")
def binary_end(raw) -> int:
    """Where the binary part ends and OpenMX's appended text begins."""
    end = len(raw) - len(parse_scfout(raw).text.encode("latin-1"))
    assert raw[end:].lstrip().startswith(b"*")  # openmx.out starts with its banner
    return end


def outcome(data: bytes) -> str:
    """'ok' or 'error'; any other exception fails the test with its traceback."""
    try:
        read_scfout(data)
    except ScfoutError as err:
        assert str(err).startswith("<bytes>: ") and "\n" not in str(err)
        return "error"
    return "ok"


def test_truncation_anywhere_in_the_binary_part_is_an_error(raw, binary_end):
    rng = np.random.default_rng(0)
    cuts = {0, 1, 23, 24, 27, 28, binary_end - 1, binary_end - 256, binary_end - 300}
    cuts |= set(rng.integers(0, binary_end, size=150).tolist())
    assert all(outcome(raw[:cut]) == "error" for cut in sorted(cuts))
    assert outcome(raw[:binary_end]) == "ok"  # the .out text is optional


#: header fields that fix the layout: atomnum, SpinP_switch + 4 version, TCpyCell, order_max
LAYOUT_BYTES = [*range(0, 8), *range(20, 28)]


def test_flipped_layout_header_bits_are_always_errors(raw):
    for pos in LAYOUT_BYTES:
        for bit in range(8):
            data = bytearray(raw)
            data[pos] ^= 1 << bit
            assert outcome(bytes(data)) == "error", (pos, bit)


@pytest.mark.slow
def test_flipped_bytes_elsewhere_never_crash(raw):
    """Cell tables, neighbour lists, orbital counts: error or a complete clean read."""
    rng = np.random.default_rng(3)
    results = []
    for pos in [*range(8, 20), *rng.integers(28, 20_000, size=200).tolist()]:
        for mask in (0x01, 0x80, 0xFF):
            data = bytearray(raw)
            data[pos] ^= mask
            results.append(outcome(bytes(data)))  # any other exception fails here
    # sizes and indices are checked: many flips are caught, and values pass as values
    assert 50 < results.count("error") < len(results)


def test_random_bytes_and_text(raw):
    rng = np.random.default_rng(1)
    for size in (0, 3, 28, 1000, 100_000):
        assert outcome(rng.bytes(size)) == "error"
    assert outcome(b"<Definition.of.Atomic.Species\n" * 100) == "error"
    h = parse_scfout(raw).hamiltonian[0]
    start = raw.find(h[1000:1004].tobytes())  # inside the H array, on a float64 boundary
    assert start > 0 and len(h) > 1000 + 512
    body = bytearray(raw)
    body[start : start + 4096] = rng.normal(size=512).tobytes()  # other finite values
    assert outcome(bytes(body)) == "ok"
    body[start : start + 8] = np.array([np.nan]).tobytes()
    with pytest.raises(ScfoutError, match="non-finite numbers in H"):
        read_scfout(bytes(body))
    assert outcome(b"\xfd7zXZ\x00" + rng.bytes(500)) == "error"  # broken xz stream


def test_failed_conversions_leave_no_output(raw, tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "in"
    for n, cut in enumerate(rng.integers(0, len(raw) // 2, size=6)):
        (folder / f"cut{n}").mkdir(parents=True)
        (folder / f"cut{n}" / "x.scfout").write_bytes(raw[:cut])
    report = convert_files("openmx", [folder], tmp_path / "out", progress=False)
    assert len(report.failed) == 6 and not report.converted
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []
