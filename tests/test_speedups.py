"""Masking: the C accelerator and the pure-Python fallback, against each other and a reference.

Both paths run in every test run: the C function is imported directly from
``wsthread._speedups`` (it must be there whenever a C compiler and Python's
headers are, since ``pip install -e .`` builds it), the Python one is
``frames._apply_mask_python``, and one subprocess runs the frame tests with
``WSTHREAD_NO_SPEEDUPS=1`` to check that the variable really switches the
library to the pure path.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Callable, List, Union

import pytest

from conftest import run_ok
from wsthread.sansio import frames

ROOT = Path(__file__).resolve().parents[1]

Mask = Callable[[Union[bytes, bytearray, memoryview], Union[bytes, bytearray, memoryview]], bytes]


def can_build_extensions() -> bool:
    """Whether this Python has a C compiler and its headers (so the build should have worked)."""
    # The build uses $CC when it is set, as setuptools does, else Python's own compiler.
    compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    include = sysconfig.get_paths().get("include", "")
    return shutil.which(compiler) is not None and os.path.exists(os.path.join(include, "Python.h"))


def c_apply_mask() -> Mask:
    """The C function; a failure if it should have been built, a skip if it could not be."""
    try:
        from wsthread._speedups import apply_mask
    except ImportError:
        if can_build_extensions():
            pytest.fail(
                "wsthread._speedups is missing though a C compiler and Python.h are here: "
                "reinstall with pip install -e . (and read the build output)"
            )
        pytest.skip("no C compiler or Python headers: the extension cannot be built here")
    return apply_mask


def reference_mask(data: bytes, mask: bytes) -> bytes:
    """The definition of RFC 6455 §5.3, one byte at a time."""
    return bytes(byte ^ mask[index % 4] for index, byte in enumerate(data))


IMPLEMENTATIONS = ["python", "c"]


@pytest.fixture(params=IMPLEMENTATIONS)
def apply_mask(request: pytest.FixtureRequest) -> Mask:
    """Each implementation in turn."""
    if request.param == "c":
        return c_apply_mask()
    return frames._apply_mask_python


LENGTHS: List[int] = [
    *range(0, 65),
    125,
    126,
    4095,
    4096,
    4097,
    8192 + 3,
    65535,
    65536,  # where the C version starts releasing the GIL
    65536 + 7,
    2**20,
    2**20 + 1,
]


def test_rfc_example(apply_mask: Mask) -> None:
    """ "Hello" masked with 37 fa 21 3d is 7f 9f 4d 51 58 (RFC 6455 §5.7), and back."""
    mask = bytes.fromhex("37fa213d")
    assert apply_mask(b"Hello", mask) == bytes.fromhex("7f9f4d5158")
    assert apply_mask(bytes.fromhex("7f9f4d5158"), mask) == b"Hello"


def test_reference_on_every_short_length(apply_mask: Mask) -> None:
    """Lengths 0 to 64 (every tail of the 8-byte loop) match the byte-by-byte definition."""
    rng = random.Random(7)
    for length in range(65):
        data = rng.randbytes(length)
        mask = os.urandom(4)
        assert apply_mask(data, mask) == reference_mask(data, mask), length


@pytest.mark.parametrize("length", LENGTHS)
def test_c_and_python_agree(length: int) -> None:
    """On random data, the C and Python versions give identical bytes, and unmask again."""
    c_version = c_apply_mask()
    data = os.urandom(length)
    mask = os.urandom(4)
    masked = frames._apply_mask_python(data, mask)
    assert type(masked) is bytes
    assert len(masked) == length
    assert c_version(data, mask) == masked
    assert c_version(masked, mask) == data
    assert frames._apply_mask_python(masked, mask) == data
    if length <= 4096:
        assert masked == reference_mask(data, mask)


@pytest.mark.parametrize("length", [0, 1, 13, 4096 + 13, 70000])
def test_bytes_like_arguments(apply_mask: Mask, length: int) -> None:
    """bytearray, memoryview and memoryview slices at odd offsets work as data and mask."""
    mask = os.urandom(4)
    buffer = bytearray(os.urandom(length + 11))
    data = bytes(buffer[5 : 5 + length])
    expected = frames._apply_mask_python(data, mask)
    with memoryview(buffer) as view:
        assert apply_mask(view[5 : 5 + length], memoryview(bytearray(mask))) == expected
        assert apply_mask(bytearray(data), bytearray(mask)) == expected
        # A memoryview of another format is taken by its bytes.
        if length % 4 == 0 and length:
            words = memoryview(bytearray(data)).cast("I")
            assert apply_mask(words, mask) == expected


@pytest.mark.parametrize("mask", [b"", b"abc", b"abcde"])
def test_mask_of_wrong_length(apply_mask: Mask, mask: bytes) -> None:
    """A key that is not 4 bytes long is refused, not silently misused."""
    with pytest.raises(ValueError, match="4 bytes"):
        apply_mask(b"payload", mask)


def test_not_bytes(apply_mask: Mask) -> None:
    """A str is not bytes-like: TypeError from both."""
    with pytest.raises(TypeError):
        apply_mask("text", b"abcd")  # type: ignore[arg-type]


def test_library_uses_c_when_built() -> None:
    """Without the variable set, frames.apply_mask is the C function whenever it exists."""
    if os.environ.get("WSTHREAD_NO_SPEEDUPS"):
        pytest.skip("this run forces the pure-Python path")
    c_version = c_apply_mask()
    assert frames.apply_mask is c_version
    assert frames.SPEEDUPS is True


@pytest.mark.timeout(120)
def test_pure_python_path_in_a_subprocess() -> None:
    """WSTHREAD_NO_SPEEDUPS=1 selects the Python masking, and the frame tests pass with it."""
    env = dict(os.environ, WSTHREAD_NO_SPEEDUPS="1")
    check = run_ok(
        [
            sys.executable,
            "-c",
            "from wsthread.sansio import frames; "
            "assert frames.apply_mask is frames._apply_mask_python; "
            "assert frames.SPEEDUPS is False; print('pure')",
        ],
        env=env,
        timeout=60,
    )
    assert check.stdout.strip() == "pure", check.stderr
    frame_tests = ROOT / "tests" / "sansio" / "test_frames.py"
    tests = run_ok(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", frame_tests],
        env=env,
        cwd=ROOT,
        timeout=110,
    )
    assert " passed" in tests.stdout


@pytest.mark.parametrize("length", [0, 1, 125, 126, 1023, 1024, 1025, 4097, 70000])
def test_parser_unmasks_with_each_implementation(
    apply_mask: Mask, length: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The frame parser gives back the payload on either side of its small-payload cut-off."""
    monkeypatch.setattr(frames, "apply_mask", apply_mask)
    payload = os.urandom(length)
    wire = frames.serialize_frame(frames.Frame(frames.Opcode.BINARY, payload), os.urandom(4))
    for step in (len(wire), 1000):
        parser = frames.FrameParser(expect_masked=True)
        parsed = []
        for start in range(0, len(wire), step):
            parser.feed(wire[start : start + step])
            frame = parser.next_frame()
            if frame is not None:
                parsed.append(frame)
        assert parsed == [frames.Frame(frames.Opcode.BINARY, payload)]
        assert type(parsed[0]) is frames.Frame and type(parsed[0].payload) is bytes
