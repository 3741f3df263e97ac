"""Frame parsing and serialising, masking and close payloads (RFC 6455 §5), no sockets."""

from __future__ import annotations

import ast
import struct
from pathlib import Path
from typing import List, Optional

import pytest

from wsthread.exceptions import InvalidUTF8, PayloadTooBig, ProtocolError
from wsthread.sansio.frames import (
    Frame,
    FrameParser,
    Opcode,
    apply_mask,
    parse_close,
    serialize_close,
    serialize_frame,
)
from wsthread.sansio.utf8 import Utf8Decoder


def parse_all(data: bytes, expect_masked: bool, chunk: Optional[int] = None) -> List[Frame]:
    """Feed ``data`` (whole, or in chunks) and collect every frame."""
    parser = FrameParser(expect_masked=expect_masked)
    frames: List[Frame] = []
    pieces = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        parser.feed(piece)
        while (frame := parser.next_frame()) is not None:
            frames.append(frame)
    return frames


# -- RFC 6455 §5.7 examples, byte for byte --------------------------------------


def test_rfc_unmasked_text() -> None:
    """An unmasked "Hello" is 81 05 48 65 6c 6c 6f."""
    assert serialize_frame(Frame(Opcode.TEXT, b"Hello")) == bytes.fromhex("810548656c6c6f")


def test_rfc_masked_text() -> None:
    """A masked "Hello" with key 37 fa 21 3d matches the RFC's bytes and parses back."""
    wire = bytes.fromhex("818537fa213d7f9f4d5158")
    assert serialize_frame(Frame(Opcode.TEXT, b"Hello"), mask=bytes.fromhex("37fa213d")) == wire
    assert parse_all(wire, expect_masked=True) == [Frame(Opcode.TEXT, b"Hello")]


def test_rfc_fragmented_text() -> None:
    """The RFC's two-fragment "Hel" + "lo" parses into two frames."""
    wire = bytes.fromhex("010348656c") + bytes.fromhex("80026c6f")
    assert parse_all(wire, expect_masked=False) == [
        Frame(Opcode.TEXT, b"Hel", fin=False),
        Frame(Opcode.CONTINUATION, b"lo"),
    ]


def test_rfc_ping() -> None:
    """An unmasked ping "Hello" is 89 05 48 65 6c 6c 6f."""
    assert serialize_frame(Frame(Opcode.PING, b"Hello")) == bytes.fromhex("890548656c6c6f")


@pytest.mark.parametrize(
    "length, header",
    [
        (0, "8200"),
        (125, "827d"),
        (126, "827e007e"),
        (256, "827e0100"),
        (65535, "827effff"),
        (65536, "827f0000000000010000"),
        (2**20, "827f0000000000100000"),
    ],
)
def test_length_encodings(length: int, header: str) -> None:
    """7-, 16- and 64-bit lengths are encoded as the RFC says, and parse back."""
    payload = bytes(range(256)) * (length // 256) + bytes(length % 256)
    wire = serialize_frame(Frame(Opcode.BINARY, payload))
    assert wire[: len(header) // 2] == bytes.fromhex(header)
    assert parse_all(wire, expect_masked=False) == [Frame(Opcode.BINARY, payload)]


@pytest.mark.parametrize("opcode", list(Opcode))
def test_round_trip_every_opcode_masked(opcode: Opcode) -> None:
    """Every opcode survives a masked round trip, parsed whole or byte by byte."""
    fin = True
    frame = Frame(opcode, b"payload", fin)
    wire = serialize_frame(frame, mask=b"\x01\x02\x03\x04")
    assert parse_all(wire, expect_masked=True) == [frame]
    assert parse_all(wire, expect_masked=True, chunk=1) == [frame]


def test_stream_in_any_chunking_gives_same_frames() -> None:
    """A stream of mixed frames parses identically whatever the chunk size."""
    frames = [
        Frame(Opcode.TEXT, b"a" * 300, fin=False),
        Frame(Opcode.PING, b"p"),
        Frame(Opcode.CONTINUATION, b"b" * 70000),
        Frame(Opcode.BINARY, b""),
    ]
    wire = b"".join(serialize_frame(f, mask=b"abcd") for f in frames)
    for chunk in (None, 1, 7, 1000, 65536):
        assert parse_all(wire, expect_masked=True, chunk=chunk) == frames


def test_apply_mask() -> None:
    """Masking is an involution and matches a byte-by-byte XOR."""
    data = bytes(range(256)) * 3 + b"xyz"
    mask = b"\x9a\x00\xff\x13"
    expected = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    assert apply_mask(data, mask) == expected
    assert apply_mask(expected, mask) == data
    assert apply_mask(b"", mask) == b""


# -- rules checked from the header alone ------------------------------------------


def header_error(data: bytes, expect_masked: bool = True, **kwargs: object) -> ProtocolError:
    """Feed only header bytes and return the error they raise."""
    parser = FrameParser(expect_masked=expect_masked, **kwargs)  # type: ignore[arg-type]
    parser.feed(data)
    with pytest.raises(ProtocolError) as info:
        parser.next_frame(2**20)
    return info.value


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes(opcode: int) -> None:
    """Reserved opcodes fail with 1002."""
    assert header_error(bytes([0x80 | opcode, 0x80]) + b"mask").code == 1002


@pytest.mark.parametrize("bits", [0x20, 0x10])
def test_rsv2_rsv3(bits: int) -> None:
    """RSV2 or RSV3 set fails with 1002."""
    assert header_error(bytes([0x81 | bits, 0x80]) + b"mask").code == 1002


def test_rsv1_needs_an_extension() -> None:
    """RSV1 fails without an extension, passes on data frames with one, never on control."""
    assert header_error(bytes([0xC1, 0x80]) + b"mask").code == 1002
    parser = FrameParser(expect_masked=True, allowed_rsv1=True)
    parser.feed(bytes([0xC1, 0x80]) + b"mask")
    frame = parser.next_frame()
    assert frame is not None and frame.rsv1
    assert header_error(bytes([0xC9, 0x80]) + b"mask", allowed_rsv1=True).code == 1002


def test_masking_direction() -> None:
    """A server refuses unmasked frames; a client refuses masked ones."""
    assert header_error(b"\x81\x00", expect_masked=True).code == 1002
    assert header_error(b"\x81\x80mask", expect_masked=False).code == 1002


def test_control_frame_rules() -> None:
    """Fragmented control frames and control payloads over 125 bytes fail with 1002."""
    assert header_error(b"\x09\x80mask").code == 1002
    assert header_error(b"\x89\xfe\x00\x7emask").code == 1002


def test_64_bit_length_with_msb_set() -> None:
    """A 64-bit length with its most significant bit set fails with 1002."""
    assert header_error(b"\x82\xff" + struct.pack("!Q", 2**63) + b"mask").code == 1002


def test_huge_frame_refused_from_header_alone() -> None:
    """A header announcing 2**62 bytes raises PayloadTooBig (1009) from 14 bytes."""
    error = header_error(b"\x82\xff" + struct.pack("!Q", 2**62) + b"mask")
    assert isinstance(error, PayloadTooBig) and error.code == 1009


def test_partial_header_waits() -> None:
    """An incomplete header returns None and buffers nothing else."""
    parser = FrameParser(expect_masked=True)
    parser.feed(b"\x82\xff\x00")
    assert parser.next_frame() is None
    assert parser.buffered == 3


# -- close payloads -----------------------------------------------------------------


def test_close_payload_empty_and_reason() -> None:
    """Empty means 1005; a code and UTF-8 reason round-trip."""
    assert parse_close(b"") == (1005, "")
    assert parse_close(serialize_close(1000, "bye ✓")) == (1000, "bye ✓")
    assert serialize_close(1005) == b""


@pytest.mark.parametrize(
    "code",
    [
        1000,
        1001,
        1002,
        1003,
        1007,
        1008,
        1009,
        1010,
        1011,
        1012,
        1013,
        1014,
        3000,
        3999,
        4000,
        4999,
    ],
)
def test_valid_close_codes(code: int) -> None:
    """Codes that may be sent are accepted."""
    assert parse_close(struct.pack("!H", code)) == (code, "")


@pytest.mark.parametrize(
    "code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
)
def test_invalid_close_codes(code: int) -> None:
    """Codes that may not be sent fail with 1002."""
    with pytest.raises(ProtocolError) as info:
        parse_close(struct.pack("!H", code))
    assert info.value.code == 1002


def test_one_byte_close_payload() -> None:
    """A one-byte close payload fails with 1002."""
    with pytest.raises(ProtocolError):
        parse_close(b"\x03")


def test_close_reason_must_be_utf8() -> None:
    """A close reason that is not UTF-8 fails with 1007."""
    with pytest.raises(InvalidUTF8) as info:
        parse_close(b"\x03\xe8\xff")
    assert info.value.code == 1007


def test_close_reason_too_long() -> None:
    """A reason that does not fit in a control frame is refused locally."""
    with pytest.raises(ValueError):
        serialize_close(1000, "x" * 124)


# -- UTF-8 ------------------------------------------------------------------------


def test_utf8_fails_fast_on_invalid_prefix() -> None:
    """Invalid UTF-8 is reported at the first impossible byte, before the end."""
    decoder = Utf8Decoder()
    assert decoder.decode("κόσμε".encode()) == "κόσμε"
    with pytest.raises(InvalidUTF8):
        decoder.decode(b"\xf4\x90")


def test_utf8_fails_fast_on_surrogate_prefix() -> None:
    """An encoded surrogate (ED A0..) is rejected after two bytes, not three."""
    with pytest.raises(InvalidUTF8):
        Utf8Decoder().decode(b"\xed\xa0")


def test_utf8_split_character_and_truncation() -> None:
    """A character split across pieces decodes; one cut short at the end fails."""
    decoder = Utf8Decoder()
    assert decoder.decode(b"\xe2\x82") == ""
    assert decoder.decode(b"\xac", final=True) == "€"
    with pytest.raises(InvalidUTF8):
        Utf8Decoder().decode(b"\xe2\x82", final=True)


# -- purity -------------------------------------------------------------------------

FORBIDDEN = {
    "socket",
    "ssl",
    "threading",
    "select",
    "selectors",
    "time",
    "asyncio",
    "socketserver",
    "_thread",
}


def test_sansio_core_imports_no_io() -> None:
    """No module under wsthread/sansio imports sockets, TLS, threads or clocks."""
    package = Path(__file__).resolve().parents[2] / "wsthread" / "sansio"
    offenders = []
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: List[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert len(list(package.glob("*.py"))) >= 5
    assert not offenders, offenders
