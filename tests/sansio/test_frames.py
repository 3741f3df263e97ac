"""Frame parsing and serialising, masking and close payloads (RFC 6455 §5), no sockets."""

from __future__ import annotations

import struct
import tracemalloc
from typing import List, Optional

import pytest

from wsthread.exceptions import InvalidUTF8, PayloadTooBig, ProtocolError
from wsthread.sansio import frames
from wsthread.sansio.frames import (
    CONTROL_OPCODES,
    DATA_OPCODES,
    CloseCode,
    Frame,
    FrameParser,
    Opcode,
    apply_mask,
    is_valid_close_code,
    parse_close,
    serialize_close,
    serialize_frame,
)

MASK = bytes.fromhex("37fa213d")
MIB = 2**20


def parse_all(
    data: bytes,
    expect_masked: bool,
    chunk: Optional[int] = None,
    allowed_rsv1: bool = False,
) -> List[Frame]:
    """Feed ``data`` (whole, or in chunks of ``chunk`` bytes) and collect every frame."""
    parser = FrameParser(expect_masked=expect_masked, allowed_rsv1=allowed_rsv1)
    frames: List[Frame] = []
    pieces = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        parser.feed(piece)
        while (frame := parser.next_frame()) is not None:
            frames.append(frame)
    assert parser.buffered == 0
    return frames


def pattern(length: int) -> bytes:
    """A payload of ``length`` bytes that is not all the same byte."""
    return (bytes(range(251)) * (length // 251 + 1))[:length]


def header_error(
    header: bytes,
    expect_masked: bool = True,
    allowed_rsv1: bool = False,
    max_length: Optional[int] = MIB,
) -> ProtocolError:
    """Feed only ``header`` (no payload) and return the ProtocolError it raises."""
    parser = FrameParser(expect_masked=expect_masked, allowed_rsv1=allowed_rsv1)
    parser.feed(header)
    with pytest.raises(ProtocolError) as info:
        parser.next_frame(max_length)
    return info.value


def masked_header(first: int, length_byte: int, extended: bytes = b"") -> bytes:
    """A complete masked header: two bytes, the extended length, then a mask key."""
    return bytes([first, 0x80 | length_byte]) + extended + MASK


# -- RFC 6455 §5.7 examples, byte for byte --------------------------------------------


@pytest.mark.parametrize(
    "frame, mask, wire",
    [
        (Frame(Opcode.TEXT, b"Hello"), None, "810548656c6c6f"),
        (Frame(Opcode.TEXT, b"Hello"), MASK, "818537fa213d7f9f4d5158"),
        (Frame(Opcode.PING, b"Hello"), None, "890548656c6c6f"),
        (Frame(Opcode.PONG, b"Hello"), MASK, "8a8537fa213d7f9f4d5158"),
    ],
    ids=["unmasked-text", "masked-text", "unmasked-ping", "masked-pong"],
)
def test_rfc_single_frames(frame: Frame, mask: Optional[bytes], wire: str) -> None:
    """The single frames of RFC 6455 §5.7 ("Hello", key 37 fa 21 3d), byte for byte, both ways."""
    assert serialize_frame(frame, mask=mask) == bytes.fromhex(wire)
    assert parse_all(bytes.fromhex(wire), expect_masked=mask is not None) == [frame]


def test_rfc_fragmented_unmasked_text() -> None:
    """The two-fragment "Hel" + "lo" is 01 03 48 65 6c / 80 02 6c 6f and parses back."""
    first = Frame(Opcode.TEXT, b"Hel", fin=False)
    second = Frame(Opcode.CONTINUATION, b"lo")
    assert serialize_frame(first) == bytes.fromhex("010348656c")
    assert serialize_frame(second) == bytes.fromhex("80026c6f")
    wire = bytes.fromhex("010348656c80026c6f")
    assert parse_all(wire, expect_masked=False) == [first, second]


def test_rfc_256_byte_binary() -> None:
    """256 bytes of unmasked binary start 82 7e 01 00."""
    payload = pattern(256)
    wire = serialize_frame(Frame(Opcode.BINARY, payload))
    assert wire == bytes.fromhex("827e0100") + payload
    assert parse_all(wire, expect_masked=False) == [Frame(Opcode.BINARY, payload)]


def test_rfc_64kib_binary() -> None:
    """64 KiB of unmasked binary start 82 7f 00 00 00 00 00 01 00 00."""
    payload = pattern(65536)
    wire = serialize_frame(Frame(Opcode.BINARY, payload))
    assert wire == bytes.fromhex("827f0000000000010000") + payload
    assert parse_all(wire, expect_masked=False) == [Frame(Opcode.BINARY, payload)]


# -- length encodings and round trips ----------------------------------------------------

LENGTHS = [
    (0, "00", ""),
    (1, "01", ""),
    (125, "7d", ""),
    (126, "7e", "007e"),
    (127, "7e", "007f"),
    (65535, "7e", "ffff"),
    (65536, "7f", "0000000000010000"),
    (MIB, "7f", "0000000000100000"),
    (MIB + 3, "7f", "0000000000100003"),
]


@pytest.mark.parametrize("mask", [None, MASK], ids=["unmasked", "masked"])
@pytest.mark.parametrize("opcode", sorted(DATA_OPCODES))
@pytest.mark.parametrize("length, length_byte, extended", LENGTHS)
def test_length_encoding(
    opcode: Opcode, length: int, length_byte: str, extended: str, mask: Optional[bytes]
) -> None:
    """7-, 16- and 64-bit lengths give the exact header bytes, and parse back.

    Masked, the MASK bit is set, the key follows the length and the payload
    is masked with it (these frames are not final, to vary the first byte).
    """
    payload = pattern(length)
    fin = mask is None
    frame = Frame(opcode, payload, fin=fin)
    wire = serialize_frame(frame, mask=mask)
    second = bytes([(0x80 if mask else 0) | int(length_byte, 16)])
    header = bytes([(0x80 if fin else 0) | opcode]) + second + bytes.fromhex(extended)
    header += mask or b""
    assert wire[: len(header)] == header
    assert wire[len(header) :] == (payload if mask is None else apply_mask(payload, mask))
    assert parse_all(wire, expect_masked=mask is not None) == [frame]


@pytest.mark.parametrize("opcode", sorted(CONTROL_OPCODES))
@pytest.mark.parametrize("length", [0, 1, 2, 124, 125])
@pytest.mark.parametrize("mask", [None, MASK, b"\x00\x00\x00\x00"])
def test_control_frame_round_trip(opcode: Opcode, length: int, mask: Optional[bytes]) -> None:
    """Control frames up to 125 bytes round-trip, masked or not."""
    frame = Frame(opcode, pattern(length))
    wire = serialize_frame(frame, mask=mask)
    assert wire[0] == 0x80 | opcode
    assert wire[1] == (0x80 if mask is not None else 0) | length
    assert parse_all(wire, expect_masked=mask is not None) == [frame]
    assert parse_all(wire, expect_masked=mask is not None, chunk=1) == [frame]


@pytest.mark.parametrize("opcode", list(Opcode))
@pytest.mark.parametrize("masked", [False, True])
def test_round_trip_every_opcode(opcode: Opcode, masked: bool) -> None:
    """Every opcode survives a round trip, parsed whole or byte by byte."""
    frame = Frame(opcode, b"payload \x00\xff")
    wire = serialize_frame(frame, mask=MASK if masked else None)
    assert parse_all(wire, expect_masked=masked) == [frame]
    assert parse_all(wire, expect_masked=masked, chunk=1) == [frame]


@pytest.mark.parametrize("fin", [False, True])
@pytest.mark.parametrize("opcode", sorted(DATA_OPCODES))
def test_fin_bit(opcode: Opcode, fin: bool) -> None:
    """FIN is bit 0x80 of the first byte and survives parsing."""
    wire = serialize_frame(Frame(opcode, b"x", fin=fin))
    assert wire[0] == (0x80 if fin else 0) | opcode
    assert parse_all(wire, expect_masked=False) == [Frame(opcode, b"x", fin=fin)]


@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION])
def test_rsv1_serialized_and_parsed_when_allowed(opcode: Opcode) -> None:
    """RSV1 is bit 0x40 and parses back when an extension allows it."""
    frame = Frame(opcode, b"z", fin=True, rsv1=True)
    wire = serialize_frame(frame, mask=MASK)
    assert wire[0] == 0xC0 | opcode
    assert parse_all(wire, expect_masked=True, allowed_rsv1=True) == [frame]


def test_masked_one_mib_round_trip() -> None:
    """A masked 1 MiB frame round-trips byte for byte."""
    payload = pattern(MIB)
    wire = serialize_frame(Frame(Opcode.BINARY, payload), mask=b"\xde\xad\xbe\xef")
    assert wire[:14] == bytes.fromhex("82ff0000000000100000deadbeef")
    assert parse_all(wire, expect_masked=True, chunk=4096) == [Frame(Opcode.BINARY, payload)]


# -- chunking -----------------------------------------------------------------------------

STREAM = [
    Frame(Opcode.TEXT, b"a" * 300, fin=False),
    Frame(Opcode.PING, b"p"),
    Frame(Opcode.CONTINUATION, b""),
    Frame(Opcode.CONTINUATION, pattern(70000), fin=False),
    Frame(Opcode.PONG, b""),
    Frame(Opcode.CONTINUATION, b"end"),
    Frame(Opcode.BINARY, b""),
    Frame(Opcode.BINARY, pattern(125)),
    Frame(Opcode.BINARY, pattern(126)),
    Frame(Opcode.CLOSE, b"\x03\xe8bye"),
]


@pytest.mark.parametrize("masked", [False, True])
def test_one_chunk_and_byte_by_byte_give_identical_frames(masked: bool) -> None:
    """A stream parsed in one chunk or one byte at a time gives the same frames."""
    wire = b"".join(serialize_frame(f, mask=MASK if masked else None) for f in STREAM)
    whole = parse_all(wire, expect_masked=masked)
    assert whole == STREAM
    assert parse_all(wire, expect_masked=masked, chunk=1) == whole


@pytest.mark.parametrize("chunk", [2, 3, 7, 13, 125, 1000, 65536, 10**6])
def test_any_chunk_size_gives_identical_frames(chunk: int) -> None:
    """A stream parses identically whatever the chunk size."""
    wire = b"".join(serialize_frame(f, mask=MASK) for f in STREAM)
    assert parse_all(wire, expect_masked=True, chunk=chunk) == STREAM


def test_next_frame_returns_none_until_complete() -> None:
    """next_frame() gives None while the frame is incomplete, and buffered counts bytes."""
    wire = serialize_frame(Frame(Opcode.BINARY, b"abcdef"), mask=MASK)
    parser = FrameParser(expect_masked=True)
    for index in range(len(wire) - 1):
        parser.feed(wire[index : index + 1])
        assert parser.next_frame() is None
        assert parser.buffered == index + 1
    parser.feed(wire[-1:])
    assert parser.next_frame() == Frame(Opcode.BINARY, b"abcdef")
    assert parser.buffered == 0
    assert parser.next_frame() is None


def test_several_frames_in_one_feed_keep_the_remainder() -> None:
    """Frames come out one per call; an incomplete trailing frame stays buffered."""
    first = serialize_frame(Frame(Opcode.TEXT, b"one"))
    second = serialize_frame(Frame(Opcode.TEXT, b"two"))
    parser = FrameParser(expect_masked=False)
    parser.feed(first + second + second[:3])
    assert parser.next_frame() == Frame(Opcode.TEXT, b"one")
    assert parser.next_frame() == Frame(Opcode.TEXT, b"two")
    assert parser.next_frame() is None
    assert parser.buffered == 3
    parser.feed(second[3:])
    assert parser.next_frame() == Frame(Opcode.TEXT, b"two")


def test_frame_defaults_and_repr() -> None:
    """A Frame defaults to fin=True and no reserved bits; its repr names the opcode."""
    frame = Frame(Opcode.TEXT)
    assert frame == Frame(Opcode.TEXT, b"", True, False, False, False)
    assert "TEXT" in repr(frame)
    assert "..." in repr(Frame(Opcode.BINARY, b"x" * 100))


def test_opcode_sets() -> None:
    """Data and control opcodes are the RFC's, and split at 0x8."""
    assert {int(op) for op in DATA_OPCODES} == {0x0, 0x1, 0x2}
    assert {int(op) for op in CONTROL_OPCODES} == {0x8, 0x9, 0xA}


# -- masking ------------------------------------------------------------------------------


def test_apply_mask_known_vector() -> None:
    """ "Hello" masked with 37 fa 21 3d is 7f 9f 4d 51 58 (RFC 6455 §5.7)."""
    assert apply_mask(b"Hello", MASK) == bytes.fromhex("7f9f4d5158")
    assert apply_mask(bytes.fromhex("7f9f4d5158"), MASK) == b"Hello"


@pytest.mark.parametrize("length", [0, 1, 2, 3, 4, 5, 7, 8, 9, 255, 256, 1000, 65537])
@pytest.mark.parametrize(
    "mask", [MASK, b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x9a\x00\xff\x13"]
)
def test_apply_mask_matches_bytewise_xor_and_is_an_involution(length: int, mask: bytes) -> None:
    """Masking equals a byte-by-byte XOR with the key repeated, and undoes itself."""
    data = pattern(length)
    expected = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    masked = apply_mask(data, mask)
    assert masked == expected
    assert len(masked) == length
    assert apply_mask(masked, mask) == data


def test_apply_mask_keeps_leading_and_trailing_zero_bytes() -> None:
    """Zero bytes at either end survive masking (no integer-conversion truncation)."""
    data = b"\x00\x00abc\x00\x00"
    zero = b"\x00\x00\x00\x00"
    assert apply_mask(data, zero) == data
    assert apply_mask(apply_mask(data, MASK), MASK) == data


def test_apply_mask_accepts_memoryviews() -> None:
    """apply_mask takes memoryviews as well as bytes and returns bytes."""
    data = bytearray(b"Hello")
    result = apply_mask(memoryview(data), memoryview(MASK))
    assert isinstance(result, bytes)
    assert result == bytes.fromhex("7f9f4d5158")


# -- rules checked from the header alone ----------------------------------------------------


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
@pytest.mark.parametrize("masked", [True, False])
def test_reserved_opcodes_fail_from_header(opcode: int, masked: bool) -> None:
    """Reserved opcodes 3-7 and 0xB-0xF fail with 1002 before any payload."""
    header = bytes([0x80 | opcode, (0x80 if masked else 0) | 5]) + (MASK if masked else b"")
    error = header_error(header, expect_masked=masked)
    assert type(error) is ProtocolError
    assert error.code == 1002


@pytest.mark.parametrize("bits", [0x20, 0x10, 0x30, 0x70])
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY, Opcode.PING])
def test_rsv2_rsv3_fail_from_header(bits: int, opcode: Opcode) -> None:
    """RSV2 or RSV3 set fails with 1002, even when RSV1 is allowed."""
    error = header_error(masked_header(0x80 | bits | opcode, 5), allowed_rsv1=True)
    assert type(error) is ProtocolError
    assert error.code == 1002


@pytest.mark.parametrize("opcode", sorted(DATA_OPCODES))
def test_rsv1_without_extension_fails_from_header(opcode: Opcode) -> None:
    """RSV1 on a data frame without allowed_rsv1 fails with 1002."""
    error = header_error(masked_header(0xC0 | opcode, 5))
    assert type(error) is ProtocolError
    assert error.code == 1002


@pytest.mark.parametrize("opcode", sorted(DATA_OPCODES))
def test_rsv1_accepted_on_data_frames_with_extension(opcode: Opcode) -> None:
    """RSV1 on a data frame is accepted with allowed_rsv1=True."""
    parser = FrameParser(expect_masked=True, allowed_rsv1=True)
    parser.feed(masked_header(0xC0 | opcode, 0))
    assert parser.next_frame() == Frame(opcode, b"", fin=True, rsv1=True)


@pytest.mark.parametrize("opcode", sorted(CONTROL_OPCODES))
@pytest.mark.parametrize("allowed_rsv1", [False, True])
def test_rsv1_rejected_on_control_frames(opcode: Opcode, allowed_rsv1: bool) -> None:
    """RSV1 on a control frame fails with 1002, with or without an extension."""
    error = header_error(masked_header(0xC0 | opcode, 5), allowed_rsv1=allowed_rsv1)
    assert error.code == 1002


@pytest.mark.parametrize("opcode", list(Opcode))
def test_server_refuses_unmasked_frame(opcode: Opcode) -> None:
    """A server (expect_masked=True) refuses an unmasked frame with 1002."""
    error = header_error(bytes([0x80 | opcode, 5]), expect_masked=True)
    assert type(error) is ProtocolError
    assert error.code == 1002


@pytest.mark.parametrize("opcode", list(Opcode))
def test_client_refuses_masked_frame(opcode: Opcode) -> None:
    """A client (expect_masked=False) refuses a masked frame with 1002."""
    error = header_error(masked_header(0x80 | opcode, 5), expect_masked=False)
    assert type(error) is ProtocolError
    assert error.code == 1002


@pytest.mark.parametrize("opcode", sorted(CONTROL_OPCODES))
def test_fragmented_control_frame_fails_from_header(opcode: Opcode) -> None:
    """A control frame with FIN clear fails with 1002."""
    error = header_error(masked_header(opcode, 5))
    assert type(error) is ProtocolError
    assert error.code == 1002


@pytest.mark.parametrize("opcode", sorted(CONTROL_OPCODES))
@pytest.mark.parametrize(
    "length_byte, extended",
    [(126, struct.pack("!H", 126)), (126, struct.pack("!H", 65535)), (127, struct.pack("!Q", 126))],
)
def test_long_control_frame_fails_from_header(
    opcode: Opcode, length_byte: int, extended: bytes
) -> None:
    """A control frame announcing more than 125 bytes fails with 1002 before its payload."""
    error = header_error(masked_header(0x80 | opcode, length_byte, extended), max_length=None)
    assert type(error) is ProtocolError
    assert error.code == 1002


@pytest.mark.parametrize("length", [2**63, 2**64 - 1, 2**63 + 5])
def test_64_bit_length_with_msb_set(length: int) -> None:
    """A 64-bit length with its most significant bit set fails with 1002."""
    error = header_error(masked_header(0x82, 127, struct.pack("!Q", length)), max_length=None)
    assert type(error) is ProtocolError
    assert error.code == 1002


def test_huge_frame_refused_from_14_header_bytes() -> None:
    """A masked header announcing 2**62 bytes raises PayloadTooBig (1009) from 14 bytes."""
    header = masked_header(0x82, 127, struct.pack("!Q", 2**62))
    assert len(header) == 14
    error = header_error(header, max_length=MIB)
    assert isinstance(error, PayloadTooBig)
    assert error.code == 1009


def test_huge_frame_refused_from_10_header_bytes_on_client() -> None:
    """An unmasked header announcing 2**62 bytes raises PayloadTooBig from 10 bytes."""
    header = b"\x82\x7f" + struct.pack("!Q", 2**62)
    assert len(header) == 10
    error = header_error(header, expect_masked=False, max_length=MIB)
    assert isinstance(error, PayloadTooBig)
    assert error.code == 1009


def test_huge_frame_header_fed_in_pieces() -> None:
    """The size check waits for the whole header, then fires before any payload."""
    header = masked_header(0x82, 127, struct.pack("!Q", 2**62))
    parser = FrameParser(expect_masked=True)
    for index in range(len(header) - 1):
        parser.feed(header[index : index + 1])
        assert parser.next_frame(MIB) is None
    parser.feed(header[-1:])
    with pytest.raises(PayloadTooBig) as info:
        parser.next_frame(MIB)
    assert info.value.code == 1009


@pytest.mark.parametrize(
    "length, length_byte, extended",
    [
        (100, 100, b""),
        (1000, 126, struct.pack("!H", 1000)),
        (100000, 127, struct.pack("!Q", 100000)),
    ],
)
def test_max_length_boundary(length: int, length_byte: int, extended: bytes) -> None:
    """A frame of exactly max_length is accepted; one byte less of limit refuses it."""
    header = masked_header(0x82, length_byte, extended)
    parser = FrameParser(expect_masked=True)
    parser.feed(header)
    assert parser.next_frame(length) is None  # waits for the payload
    parser.feed(bytes(length))
    frame = parser.next_frame(length)
    assert frame is not None and len(frame.payload) == length
    error = header_error(header, max_length=length - 1)
    assert isinstance(error, PayloadTooBig)


def test_max_length_none_means_no_limit() -> None:
    """Without max_length a large announced length just waits for its payload."""
    parser = FrameParser(expect_masked=True)
    parser.feed(masked_header(0x82, 127, struct.pack("!Q", 2**62)))
    assert parser.next_frame(None) is None


@pytest.mark.parametrize("opcode", sorted(CONTROL_OPCODES))
def test_max_length_does_not_apply_to_control_frames(opcode: Opcode) -> None:
    """A control frame is capped at 125 bytes, not at the data max_length."""
    parser = FrameParser(expect_masked=True)
    parser.feed(serialize_frame(Frame(opcode, b"\x03\xe8" + b"x" * 100), mask=MASK))
    frame = parser.next_frame(max_length=0)
    assert frame is not None and frame.opcode is opcode


def test_payload_too_big_is_a_protocol_error() -> None:
    """PayloadTooBig and InvalidUTF8 are ProtocolErrors with their own close codes."""
    assert issubclass(PayloadTooBig, ProtocolError)
    assert issubclass(InvalidUTF8, ProtocolError)
    assert PayloadTooBig("x").code == 1009
    assert InvalidUTF8("x").code == 1007
    assert ProtocolError("x").code == 1002


# -- close payloads -------------------------------------------------------------------------

VALID_CODES = [
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
]
INVALID_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


def test_parse_close_empty_means_no_status() -> None:
    """An empty close payload means 1005 with no reason."""
    assert parse_close(b"") == (1005, "")
    assert parse_close(b"") == (CloseCode.NO_STATUS_RCVD, "")


def test_parse_close_one_byte_fails() -> None:
    """A one-byte close payload fails with 1002."""
    with pytest.raises(ProtocolError) as info:
        parse_close(b"\x03")
    assert type(info.value) is ProtocolError
    assert info.value.code == 1002


@pytest.mark.parametrize("code", VALID_CODES)
@pytest.mark.parametrize("reason", ["", "bye", "κόσμε ✓ 😀"])
def test_parse_close_valid_codes(code: int, reason: str) -> None:
    """Codes that may be sent are accepted, with their UTF-8 reason."""
    assert parse_close(struct.pack("!H", code) + reason.encode()) == (code, reason)
    assert is_valid_close_code(code)


@pytest.mark.parametrize("code", INVALID_CODES)
@pytest.mark.parametrize("reason", [b"", b"why"])
def test_parse_close_invalid_codes(code: int, reason: bytes) -> None:
    """Codes that may not be sent fail with 1002."""
    with pytest.raises(ProtocolError) as info:
        parse_close(struct.pack("!H", code) + reason)
    assert type(info.value) is ProtocolError
    assert info.value.code == 1002
    assert not is_valid_close_code(code)


@pytest.mark.parametrize(
    "reason",
    [b"\xff", b"ok\x80", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"\xf4\x90\x80\x80"],
)
def test_parse_close_invalid_utf8_reason(reason: bytes) -> None:
    """A close reason that is not UTF-8 fails with InvalidUTF8 (1007)."""
    with pytest.raises(InvalidUTF8) as info:
        parse_close(b"\x03\xe8" + reason)
    assert info.value.code == 1007


@pytest.mark.parametrize("code", VALID_CODES)
def test_serialize_close_round_trip(code: int) -> None:
    """serialize_close packs the code big-endian, then the reason, and parses back."""
    data = serialize_close(code, "é")
    assert data == struct.pack("!H", code) + "é".encode()
    assert parse_close(data) == (code, "é")


def test_serialize_close_1000_bytes() -> None:
    """Code 1000 with reason "bye" is 03 e8 62 79 65."""
    assert serialize_close(1000, "bye") == bytes.fromhex("03e8627965")
    assert serialize_close(1000) == b"\x03\xe8"


def test_serialize_close_no_status_is_empty() -> None:
    """Code 1005 serialises to an empty payload."""
    assert serialize_close(1005) == b""
    assert serialize_close(CloseCode.NO_STATUS_RCVD) == b""


def test_serialize_close_longest_reason_fits() -> None:
    """A 123-byte reason fills a 125-byte control payload exactly."""
    assert len(serialize_close(1000, "x" * 123)) == 125
    assert len(serialize_close(1000, "é" * 61 + "x")) == 125


@pytest.mark.parametrize("reason", ["x" * 124, "é" * 62, "€" * 42, "x" * 1000])
def test_serialize_close_reason_too_long(reason: str) -> None:
    """A reason over 123 UTF-8 bytes is refused with ValueError."""
    with pytest.raises(ValueError):
        serialize_close(1000, reason)


def test_close_frame_round_trip_through_parser() -> None:
    """A close frame built from serialize_close parses back to its code and reason."""
    wire = serialize_frame(Frame(Opcode.CLOSE, serialize_close(4001, "done")), mask=MASK)
    (frame,) = parse_all(wire, expect_masked=True)
    assert parse_close(frame.payload) == (4001, "done")


# -- frame_header, and the parser's view of a frame still arriving -----------------------


@pytest.mark.parametrize("length", [0, 125, 126, 65535, 65536])
@pytest.mark.parametrize("mask", [None, MASK])
def test_frame_header_is_what_serialize_frame_puts_before_the_payload(
    length: int, mask: Optional[bytes]
) -> None:
    """frame_header() gives the bytes of serialize_frame() before the payload, key included."""
    frame = Frame(Opcode.BINARY, bytes(length), fin=False, rsv1=True)
    header = frames.frame_header(Opcode.BINARY, length, fin=False, rsv1=True, mask=mask)
    wire = serialize_frame(frame, mask)
    assert wire[: len(header)] == header
    assert len(wire) == len(header) + length
    assert frames.serialize_frame_parts(frame, mask)[0] == header


def test_buffered_counts_bytes_left_after_each_frame() -> None:
    """buffered is what remains after the frames taken, and what feed() added."""
    one, four = Frame(Opcode.TEXT, b"one"), Frame(Opcode.TEXT, b"four")
    wire = serialize_frame(one) + serialize_frame(four)
    parser = FrameParser(expect_masked=False)
    parser.feed(wire)
    assert parser.buffered == len(wire)
    assert parser.next_frame() == one
    assert parser.buffered == 6
    assert parser.next_frame() == four
    assert parser.buffered == 0
    assert parser.next_frame() is None


def test_pending_frame_and_payload_follow_a_frame_arriving_in_pieces() -> None:
    """The header decoded by next_frame() describes the frame still arriving, unmasked."""
    payload = b"abcdefghij"
    wire = serialize_frame(Frame(Opcode.TEXT, payload, fin=False), mask=MASK)
    parser = FrameParser(expect_masked=True)
    parser.feed(wire[:1])
    assert parser.next_frame() is None
    assert not parser.in_payload
    assert parser.pending_frame() is None
    parser.feed(wire[1:9])  # the header (6 bytes) and 3 bytes of payload
    assert parser.next_frame() is None
    assert parser.in_payload
    assert parser.pending_frame() == (Opcode.TEXT, False, 3)
    assert parser.pending_payload() == b"abc"
    parser.feed(wire[9:13])
    assert parser.pending_frame() is None  # feed() forgets it until next_frame() looks again
    assert parser.next_frame() is None
    assert parser.pending_frame() == (Opcode.TEXT, False, 7)
    assert parser.pending_payload(3) == b"defg"
    parser.feed(wire[13:])
    assert parser.next_frame() == Frame(Opcode.TEXT, payload, fin=False)
    assert parser.pending_frame() is None
    assert parser.pending_payload() == b""


def test_pending_frame_ignores_a_control_frame() -> None:
    """A ping still arriving is no data frame in progress."""
    wire = serialize_frame(Frame(Opcode.PING, b"hello"), mask=MASK)
    parser = FrameParser(expect_masked=True)
    parser.feed(wire[:-2])
    assert parser.next_frame() is None
    assert parser.in_payload
    assert parser.pending_frame() is None
    assert parser.pending_payload() == b""


# -- large frames arriving in pieces ---------------------------------------------------------


def large_wire(length: int, masked: bool = True, opcode: Opcode = Opcode.BINARY) -> bytes:
    """A frame of ``length`` bytes of pattern(), then a small text frame after it."""
    mask = MASK if masked else None
    return serialize_frame(Frame(opcode, pattern(length)), mask=mask) + serialize_frame(
        Frame(Opcode.TEXT, b"next"), mask=mask
    )


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("chunk", [1000, 4093, 65536])
def test_a_large_frame_in_pieces_keeps_what_follows_it(masked: bool, chunk: int) -> None:
    """A large frame gathered piece by piece comes out whole, and the frame after it too."""
    length = frames.LARGE_FRAME * 3 + 5
    wire = large_wire(length, masked)
    assert parse_all(wire, expect_masked=masked, chunk=chunk) == [
        Frame(Opcode.BINARY, pattern(length)),
        Frame(Opcode.TEXT, b"next"),
    ]


def test_a_large_frame_is_not_gathered_in_the_buffer() -> None:
    """The parser's buffer never grows to a large frame's size; buffered counts what is held."""
    length = MIB
    wire = large_wire(length)
    parser = FrameParser(expect_masked=True)
    header = 14  # 2 bytes, a 64-bit length, the key
    frame_end = header + length
    for start in range(0, frame_end - 1, 65536):
        piece = wire[start : min(start + 65536, frame_end - 1)]
        parser.feed(piece)
        assert parser.next_frame() is None
        assert parser.buffered == start + len(piece)
        assert len(parser._buffer) < 65536  # private, but it is the point of the test
    parser.feed(wire[frame_end - 1 :])
    frame = parser.next_frame()
    assert frame == Frame(Opcode.BINARY, pattern(length))
    assert parser.last_mask(frame) == MASK
    assert parser.buffered == len(wire) - frame_end
    assert parser.next_frame() == Frame(Opcode.TEXT, b"next")
    assert parser.buffered == 0


def test_pending_payload_of_a_large_text_frame_comes_unmasked_from_any_offset() -> None:
    """pending_frame() and pending_payload(skip) describe a large frame like a small one."""
    text = ("é" * frames.LARGE_FRAME).encode()
    wire = serialize_frame(Frame(Opcode.TEXT, text, fin=False), mask=MASK)
    parser = FrameParser(expect_masked=True)
    received = 0
    for start, end in [(0, 5000), (5000, 5003), (5003, 70001), (70001, 100000)]:
        parser.feed(wire[start:end])
        assert parser.pending_frame() is None  # until next_frame() looks
        assert parser.next_frame() is None
        payload_end = end - 14
        assert parser.pending_frame() == (Opcode.TEXT, False, payload_end)
        assert parser.pending_payload(received) == text[received:payload_end]
        assert parser.pending_payload(0) == text[:payload_end]
        received = payload_end
    parser.feed(wire[100000:])
    assert parser.next_frame() == Frame(Opcode.TEXT, text, fin=False)
    assert parser.pending_frame() is None


def test_a_large_frame_over_the_limit_is_still_refused_from_its_header() -> None:
    """Gathering starts only after the header's checks: 1009 before any payload."""
    wire = large_wire(MIB + 1)
    parser = FrameParser(expect_masked=True)
    parser.feed(wire[:20])
    with pytest.raises(PayloadTooBig):
        parser.next_frame(MIB)


def test_a_large_frame_in_tiny_pieces_holds_about_its_size() -> None:
    """Read by read, a frame that arrives in tiny pieces costs about its size, not more."""
    length = 4 * frames.LARGE_FRAME
    wire = serialize_frame(Frame(Opcode.BINARY, pattern(length)), mask=MASK)
    parser = FrameParser(expect_masked=True)
    pieces = [wire[i : min(i + 2, len(wire) - 1)] for i in range(0, len(wire) - 1, 2)]
    tracemalloc.start()
    try:
        for piece in pieces:
            parser.feed(piece)
            assert parser.next_frame() is None
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 1.5 * length, held  # a bytes object per 2-byte read would be about 20x
    parser.feed(wire[-1:])
    assert parser.next_frame() == Frame(Opcode.BINARY, pattern(length))
