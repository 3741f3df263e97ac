"""Property-based tests of the sans-I/O parsers (hypothesis).

Whatever bytes arrive, and however the network cuts them into chunks, the
parsers may only produce their events or the library's own errors
(:class:`ProtocolError`, :class:`InvalidHandshake` and their subclasses, or
``ValueError`` where that is the documented contract) -- never ``IndexError``,
``struct.error``, ``UnicodeDecodeError`` or a hang. Serialising then parsing
gives back exactly what went in, and one chunk or many give the same result.

The examples are derandomised (the same on every run, no example database)
and bounded so the file takes seconds; set ``WSTHREAD_HYPOTHESIS_EXAMPLES``
to run more of them locally.
"""

from __future__ import annotations

import os
import re
import struct
import sys
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_ok
from wsthread.exceptions import (
    InvalidHandshake,
    InvalidRequest,
    InvalidResponse,
    ProtocolError,
)
from wsthread.sansio.deflate import (
    Deflate,
    DeflateParameters,
    PerMessageDeflate,
    accept_client,
    negotiate_server,
    parse_extensions,
)
from wsthread.sansio.frames import (
    LARGE_FRAME,
    Frame,
    FrameParser,
    Opcode,
    is_valid_close_code,
    parse_close,
    serialize_close,
    serialize_frame,
)
from wsthread.sansio.handshake import (
    Headers,
    Request,
    RequestParser,
    Response,
    ResponseParser,
    validate_request,
    validate_response,
)
from wsthread.sansio.protocol import Event, Message, Protocol, Side

EXAMPLES = int(os.environ.get("WSTHREAD_HYPOTHESIS_EXAMPLES", "150"))

# Derandomised, no example database, no deadline (a loaded 2-core CI machine
# must not turn a slow example into a failure: the pytest timeout catches hangs).
bounded = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

pytestmark = pytest.mark.timeout(120)

MASK = b"\x37\xfa\x21\x3d"


# -- helpers -------------------------------------------------------------------


def cut(data: bytes, points: Sequence[int]) -> List[bytes]:
    """Cut ``data`` at ``points`` (any integers; taken modulo the length)."""
    if not data:
        return [data]
    edges = sorted({0, len(data), *(point % (len(data) + 1) for point in points)})
    return [data[a:b] for a, b in zip(edges, edges[1:])]


split_points = st.lists(st.integers(min_value=0, max_value=10**6), max_size=12)


def outcome(run: Callable[[], Any]) -> Tuple[str, Any]:
    """Run ``run``; return ("ok", result) or ("error", (type, message))."""
    try:
        return "ok", run()
    except (ProtocolError, InvalidHandshake) as exc:
        return "error", (type(exc), str(exc))


@st.composite
def frame_bytes(draw: st.DrawFn, masked: bool) -> bytes:
    """A few frames, mostly well-formed, some with bad bits, odd lengths or junk."""
    out = bytearray()
    for _ in range(draw(st.integers(0, 5))):
        opcode = draw(st.sampled_from([0, 1, 1, 2, 2, 8, 9, 10, 3, 0xB]))
        fin = draw(st.booleans())
        rsv = draw(st.sampled_from([0, 0, 0, 0, 0x40, 0x20, 0x10]))
        kind = draw(st.sampled_from(["text", "binary", "close"]))
        if kind == "text":
            payload = draw(st.text(max_size=40)).encode("utf-8")
        elif kind == "close":
            payload = struct.pack("!H", draw(st.integers(0, 5000))) + draw(
                st.text(max_size=10)
            ).encode("utf-8")
        else:
            payload = draw(st.binary(max_size=300))
        length = len(payload)
        form = draw(st.sampled_from(["minimal", "minimal", "16", "64"]))
        mask_bit = 0x80 if masked else 0
        if draw(st.integers(0, 19)) == 0:
            mask_bit ^= 0x80  # the wrong masking now and then
        out.append((0x80 if fin else 0) | rsv | opcode)
        if form == "minimal" and length < 126:
            out.append(mask_bit | length)
        elif form != "64" and length < 65536:
            out.append(mask_bit | 126)
            out += struct.pack("!H", length)
        else:
            out.append(mask_bit | 127)
            out += struct.pack("!Q", length)
        if mask_bit:
            key = draw(st.binary(min_size=4, max_size=4))
            out += key
            out += bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        else:
            out += payload
    tail = draw(st.sampled_from(["none", "none", "junk", "truncate"]))
    if tail == "junk":
        out += draw(st.binary(max_size=16))
    elif tail == "truncate" and out:
        del out[draw(st.integers(0, len(out) - 1)) :]
    return bytes(out)


def wire(masked: bool) -> st.SearchStrategy[bytes]:
    """Bytes off the wire: plain noise, or frame-shaped data."""
    return st.one_of(st.binary(max_size=200), frame_bytes(masked))


def parse_frames(
    chunks: Sequence[bytes],
    *,
    expect_masked: bool,
    allowed_rsv1: bool,
    max_length: Optional[int],
) -> Tuple[List[Frame], Optional[Tuple[type, str]], int]:
    """Feed ``chunks`` to a FrameParser; return frames, the error if any, bytes left
    (-1 after an error)."""
    parser = FrameParser(expect_masked=expect_masked, allowed_rsv1=allowed_rsv1)
    frames: List[Frame] = []
    for chunk in chunks:
        parser.feed(chunk)
        try:
            while True:
                frame = parser.next_frame(max_length)
                if frame is None:
                    break
                frames.append(frame)
        except ProtocolError as exc:
            # Where the error stops reading depends on the chunks: no byte count.
            return frames, (type(exc), str(exc)), -1
    return frames, None, parser.buffered


# -- the frame parser ------------------------------------------------------------


@bounded
@given(
    data=st.data(),
    masked=st.booleans(),
    allowed_rsv1=st.booleans(),
    max_length=st.one_of(st.none(), st.integers(0, 400)),
    points=split_points,
)
def test_frame_parser_any_bytes_any_split(
    data: st.DataObject,
    masked: bool,
    allowed_rsv1: bool,
    max_length: Optional[int],
    points: List[int],
) -> None:
    """Frames or ProtocolError only; one chunk, any split and byte by byte agree."""
    raw = data.draw(wire(masked))
    options = dict(expect_masked=masked, allowed_rsv1=allowed_rsv1, max_length=max_length)
    whole = parse_frames([raw], **options)  # type: ignore[arg-type]
    assert parse_frames(cut(raw, points), **options) == whole  # type: ignore[arg-type]
    bytewise = [raw[i : i + 1] for i in range(len(raw))]
    assert parse_frames(bytewise, **options) == whole  # type: ignore[arg-type]
    frames, error, _ = whole
    for frame in frames:
        assert isinstance(frame.opcode, Opcode)
        if frame.opcode >= 8:
            assert frame.fin and len(frame.payload) <= 125
        elif max_length is not None:
            assert len(frame.payload) <= max_length


@st.composite
def valid_frames(draw: st.DrawFn) -> Frame:
    """A frame the parser must accept (with RSV1 allowed on data frames)."""
    opcode = draw(st.sampled_from(list(Opcode)))
    if opcode >= 8:
        return Frame(opcode, draw(st.binary(max_size=125)))
    size = draw(st.sampled_from([10, 125, 126, 300, 65535, 65536, 70000]))
    payload = draw(st.binary(max_size=size))
    return Frame(opcode, payload, draw(st.booleans()), draw(st.booleans()))


@bounded
@given(
    frames=st.lists(valid_frames(), max_size=4), masks=st.lists(st.binary(min_size=4, max_size=4))
)
def test_frame_round_trip(frames: List[Frame], masks: List[bytes]) -> None:
    """serialize_frame then FrameParser gives the same frames, masked or not."""
    for masked in (False, True):
        keys = iter(masks)
        raw = b"".join(
            serialize_frame(frame, next(keys, MASK) if masked else None) for frame in frames
        )
        parsed, error, left = parse_frames(
            [raw], expect_masked=masked, allowed_rsv1=True, max_length=None
        )
        assert error is None and left == 0
        assert parsed == frames


def test_huge_announced_length_is_refused_from_the_header_alone() -> None:
    """A header announcing 2**62 bytes fails at once with 1009; MSB set fails with 1002."""
    parser = FrameParser(expect_masked=True)
    parser.feed(bytes([0x82, 0xFF]) + struct.pack("!Q", 2**62) + MASK)
    with pytest.raises(ProtocolError) as info:
        parser.next_frame(2**20)
    assert info.value.code == 1009
    parser = FrameParser(expect_masked=True)
    parser.feed(bytes([0x82, 0xFF]) + struct.pack("!Q", 2**63 + 5) + MASK)
    with pytest.raises(ProtocolError) as info:
        parser.next_frame(None)
    assert info.value.code == 1002


# -- the close frame ----------------------------------------------------------------


@bounded
@given(payload=st.binary(max_size=130))
def test_parse_close_any_payload(payload: bytes) -> None:
    """parse_close gives a valid code and a str, or a ProtocolError."""
    kind, result = outcome(lambda: parse_close(payload))
    if kind == "ok":
        code, reason = result
        assert isinstance(reason, str)
        assert code == 1005 and payload == b"" or is_valid_close_code(code)
    else:
        assert (
            len(payload) == 1
            or not is_valid_close_code(struct.unpack("!H", payload[:2])[0])
            or (result[0].__name__ == "InvalidUTF8")
        )


close_codes = st.one_of(
    st.sampled_from([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014]),
    st.integers(3000, 4999),
)


@bounded
@given(code=close_codes, reason=st.text(max_size=123))
def test_close_round_trip(code: int, reason: str) -> None:
    """serialize_close then parse_close is exact; too long a reason is a ValueError."""
    if len(reason.encode("utf-8")) > 123:
        with pytest.raises(ValueError):
            serialize_close(code, reason)
        return
    assert parse_close(serialize_close(code, reason)) == (code, reason)


@bounded
@given(code=st.integers(0, 70000).filter(lambda c: c != 1005 and not is_valid_close_code(c)))
def test_unsendable_close_codes_are_refused(code: int) -> None:
    """serialize_close refuses codes that may not be on the wire (ValueError)."""
    with pytest.raises((ValueError, OverflowError)):
        serialize_close(code)


# -- the protocol: message assembly -------------------------------------------------


def drive(
    chunks: Sequence[bytes],
    side: Side,
    max_size: Optional[int],
    deflate: Optional[DeflateParameters],
) -> Tuple[List[Event], Any, Any, bytes]:
    """Feed ``chunks`` to a fresh Protocol; return events, failure, close_rcvd, output."""
    codec = None if deflate is None else PerMessageDeflate(deflate, is_server=side is Side.SERVER)
    protocol = Protocol(side, max_size=max_size, deflate=codec, mask_key=lambda: MASK)
    events: List[Event] = []
    for chunk in chunks:
        events += protocol.receive_data(chunk)  # never raises: failures are state
    failure = protocol.failure
    failure_info = None if failure is None else (type(failure), failure.code, str(failure))
    return events, failure_info, protocol.close_rcvd, protocol.data_to_send()


@bounded
@given(
    data=st.data(),
    side=st.sampled_from(list(Side)),
    max_size=st.one_of(st.none(), st.integers(0, 500)),
    deflate=st.booleans(),
    points=split_points,
)
def test_protocol_any_bytes_any_split(
    data: st.DataObject,
    side: Side,
    max_size: Optional[int],
    deflate: bool,
    points: List[int],
) -> None:
    """receive_data never raises; one chunk, any split and byte by byte agree."""
    raw = data.draw(wire(masked=side is Side.SERVER))
    params = DeflateParameters() if deflate else None
    whole = drive([raw], side, max_size, params)
    assert drive(cut(raw, points), side, max_size, params) == whole
    assert drive([raw[i : i + 1] for i in range(len(raw))], side, max_size, params) == whole
    events, failure, _, _ = whole
    for event in events:
        if isinstance(event, Message) and max_size is not None:
            size = (
                len(event.data.encode("utf-8")) if isinstance(event.data, str) else len(event.data)
            )
            assert size <= max_size
    if failure is not None:
        assert failure[1] in (1002, 1007, 1009)


@st.composite
def large_frames(draw: st.DrawFn, masked: bool) -> bytes:
    """Frames of about LARGE_FRAME bytes and more, some fragmented, some bad UTF-8, with pings."""
    out = bytearray()
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["text", "bad text", "binary", "ping"]))
        opcode = {"text": 1, "bad text": 1, "binary": 2, "ping": 9}[kind]
        if kind == "ping":
            payload = b"p"
        else:
            size = draw(st.integers(LARGE_FRAME - 8, 2 * LARGE_FRAME + 8))
            if kind == "binary":
                payload = (draw(st.binary(min_size=7, max_size=7)) * (size // 7 + 1))[:size]
            else:
                payload = ("é€" * (size // 5 + 1)).encode("utf-8")[:size]  # may end mid-character
                if kind == "bad text":
                    where = draw(st.integers(0, len(payload) - 1))
                    payload = payload[:where] + b"\xff" + payload[where + 1 :]
            if draw(st.booleans()):
                opcode = 0  # a continuation: valid after an unfinished message, else 1002
        fin = kind == "ping" or draw(st.booleans())
        key = draw(st.binary(min_size=4, max_size=4)) if masked else None
        out += serialize_frame(Frame(Opcode(opcode), payload, fin), mask=key)
    if draw(st.booleans()):
        del out[draw(st.integers(0, len(out) - 1)) :]  # cut short: the rest never came
    return bytes(out)


@settings(bounded, max_examples=max(10, EXAMPLES // 5))
@given(
    data=st.data(),
    side=st.sampled_from(list(Side)),
    max_size=st.one_of(st.none(), st.integers(LARGE_FRAME - 100, 3 * LARGE_FRAME)),
    points=split_points,
)
def test_large_frames_any_split(
    data: st.DataObject, side: Side, max_size: Optional[int], points: List[int]
) -> None:
    """Frames gathered piece by piece (LARGE_FRAME and more): one chunk and any split agree."""
    raw = data.draw(large_frames(masked=side is Side.SERVER))
    whole = drive([raw], side, max_size, None)
    assert drive(cut(raw, points), side, max_size, None) == whole
    pieces = [raw[i : i + 4093] for i in range(0, len(raw), 4093)]
    assert drive(pieces, side, max_size, None) == whole


Piece = Union[str, bytes]
messages = st.lists(
    st.one_of(
        st.lists(st.text(max_size=60), min_size=1, max_size=4),
        st.lists(st.binary(max_size=200), min_size=1, max_size=4),
    ),
    max_size=6,
)
deflate_parameters = st.builds(
    DeflateParameters,
    st.booleans(),
    st.booleans(),
    st.integers(9, 15),
    st.integers(9, 15),
)


@bounded
@given(
    message_list=messages,
    deflate=st.one_of(st.none(), deflate_parameters),
    points=split_points,
    client_to_server=st.booleans(),
)
def test_message_round_trip(
    message_list: List[List[Piece]],
    deflate: Optional[DeflateParameters],
    points: List[int],
    client_to_server: bool,
) -> None:
    """Messages sent whole or in fragments, compressed or not, arrive exactly, in order."""
    sender_side, receiver_side = (
        (Side.CLIENT, Side.SERVER) if client_to_server else (Side.SERVER, Side.CLIENT)
    )

    def codec(side: Side) -> Optional[PerMessageDeflate]:
        return (
            None if deflate is None else PerMessageDeflate(deflate, is_server=side is Side.SERVER)
        )

    sender = Protocol(sender_side, max_size=None, deflate=codec(sender_side), mask_key=lambda: MASK)
    receiver = Protocol(receiver_side, max_size=None, deflate=codec(receiver_side))
    raw = bytearray()
    expected: List[Piece] = []
    for pieces in message_list:
        encoded = [p.encode("utf-8") if isinstance(p, str) else p for p in pieces]
        start = sender.send_text if isinstance(pieces[0], str) else sender.send_binary
        if len(pieces) == 1:
            raw += start(encoded[0])
        else:
            raw += start(encoded[0], fin=False)
            for piece in encoded[1:-1]:
                raw += sender.send_continuation(piece, fin=False)
            raw += sender.send_continuation(encoded[-1], fin=True)
        expected.append("".join(pieces) if isinstance(pieces[0], str) else b"".join(pieces))  # type: ignore[arg-type]
    events: List[Event] = []
    for chunk in cut(bytes(raw), points):
        events += receiver.receive_data(chunk)
    assert receiver.failure is None
    assert events == [Message(m) for m in expected]


def test_65536_one_byte_fragments_make_one_message() -> None:
    """A message of 65,536 one-byte fragments is assembled, every byte in place."""
    sender = Protocol(Side.CLIENT, mask_key=lambda: MASK)
    receiver = Protocol(Side.SERVER, max_size=2**20)
    payload = bytes(range(256)) * 256
    raw = [sender.send_binary(payload[:1], fin=False)]
    raw += [sender.send_continuation(payload[i : i + 1], fin=False) for i in range(1, len(payload))]
    raw.append(sender.send_continuation(b"", fin=True))
    events = receiver.receive_data(b"".join(raw))
    assert events == [Message(payload)]


# -- permessage-deflate -------------------------------------------------------------------


@bounded
@given(values=st.lists(st.text(max_size=80), max_size=3))
def test_extension_header_parser_any_text(values: List[str]) -> None:
    """parse_extensions gives names and parameters or ValueError; negotiation gives 400s."""
    try:
        extensions = parse_extensions(values)
    except ValueError:
        extensions = None
    if extensions is not None:
        for name, parameters in extensions:
            assert name and isinstance(parameters, list)
    kind, result = outcome(lambda: negotiate_server(values))
    assert kind == "ok" or result[0] is InvalidRequest
    kind, result = outcome(lambda: accept_client(values))
    assert kind == "ok" or result[0] is InvalidResponse


extension_tokens = st.sampled_from(
    [
        "permessage-deflate",
        "x-webkit-deflate-frame",
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
        "=",
        ";",
        ",",
        '"',
        "\\",
        " ",
        "8",
        "9",
        "15",
        "16",
        "010",
        '"12"',
        "",
    ]
)


@bounded
@given(parts=st.lists(extension_tokens, max_size=14))
def test_extension_header_parser_grammar_shaped(parts: List[str]) -> None:
    """Header values built from the grammar's own pieces: results or the library's errors."""
    value = "".join(parts)
    for run, allowed in (
        (lambda: negotiate_server([value]), InvalidRequest),
        (lambda: accept_client([value]), InvalidResponse),
    ):
        kind, result = outcome(run)
        assert kind == "ok" or result[0] is allowed


@bounded
@given(params=deflate_parameters)
def test_extension_parameters_round_trip(params: DeflateParameters) -> None:
    """The header a server writes is read back by the client as the same parameters,
    and the same header offered to a server is agreed unchanged."""
    header = params.header()
    assert accept_client([header]) == params
    agreed = negotiate_server(
        [header], Deflate(server_max_window_bits=15, client_max_window_bits=15)
    )
    assert agreed is not None and agreed[1] == params


@bounded
@given(
    chunks=st.lists(st.binary(max_size=100), max_size=4),
    max_length=st.one_of(st.none(), st.integers(0, 300)),
)
def test_decompress_any_bytes(chunks: List[bytes], max_length: Optional[int]) -> None:
    """Inflating arbitrary bytes gives bounded output or a ProtocolError."""
    codec = PerMessageDeflate(DeflateParameters(), is_server=True)
    for index, chunk in enumerate(chunks):
        try:
            output = codec.decompress(chunk, fin=index == len(chunks) - 1, max_length=max_length)
        except ProtocolError as exc:
            assert exc.code in (1002, 1009)
            return
        assert max_length is None or len(output) <= max_length


@bounded
@given(message_list=st.lists(st.binary(max_size=300), min_size=1, max_size=4))
def test_inflate_messages_compressed_with_a_final_block(message_list: List[bytes]) -> None:
    """RFC 7692 §7.2.3.4: a peer may end each message with a BFINAL block; the next
    message then starts a new DEFLATE stream and must still be read."""
    receiver = Protocol(
        Side.SERVER, max_size=None, deflate=PerMessageDeflate(DeflateParameters(), is_server=True)
    )
    raw = b""
    for message in message_list:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        payload = compressor.compress(message) + compressor.flush(zlib.Z_FINISH)
        raw += serialize_frame(Frame(Opcode.BINARY, payload, True, True), MASK)
    events = receiver.receive_data(raw)
    assert receiver.failure is None
    assert events == [Message(m) for m in message_list]


# -- the HTTP handshake ----------------------------------------------------------------------


def parse_http(parser_class: type, chunks: Sequence[bytes], **limits: int) -> Tuple[str, Any]:
    """Feed ``chunks`` until a head comes out; the result or the library's error."""
    parser = parser_class(**limits)

    def run() -> Any:
        head = None
        for chunk in chunks:
            if head is None:
                head = parser.feed(chunk)
            else:
                parser.feed(chunk)  # after the head: kept as trailing data
        return None if head is None else (head, parser.trailing_data)

    return outcome(run)


def parse_http_any_split(
    parser_class: type, raw: bytes, points: Sequence[int], limits: Dict[str, int]
) -> Tuple[str, Any]:
    """Parse ``raw`` in one chunk, cut at ``points`` and byte by byte: all three agree.

    Returns the outcome, as :func:`parse_http` gives it.
    """
    whole = parse_http(parser_class, [raw], **limits)
    assert parse_http(parser_class, cut(raw, points), **limits) == whole
    assert parse_http(parser_class, [raw[i : i + 1] for i in range(len(raw))], **limits) == whole
    return whole


header_lines = st.sampled_from(
    [
        b"Host: example.com\r\n",
        b"Upgrade: websocket\r\n",
        b"Connection: keep-alive, Upgrade\r\n",
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        b"Sec-WebSocket-Key: \xff\xfe==\r\n",
        b"Sec-WebSocket-Version: 13\r\n",
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
        b"Sec-WebSocket-Protocol: chat, superchat\r\n",
        b'Cookie: a=1; b="x\\"y"; \xe9=\xff\r\n',
        b"Origin: http://example.com\r\n",
        b" folded\r\n",
        b"bad header\r\n",
        b"X: \x01\r\n",
        b"Lone: lf\n",
        b"\r\n",
    ]
)


@st.composite
def http_heads(draw: st.DrawFn, response: bool) -> bytes:
    """HTTP heads assembled from plausible and broken pieces, or plain noise."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.binary(max_size=300))
    if response:
        start = draw(
            st.sampled_from(
                [
                    b"HTTP/1.1 101 Switching Protocols",
                    b"HTTP/1.1 404 Not Found",
                    b"HTTP/1.1 \xb2\xb2\xb2 X",
                    b"HTTP/1.0 200",
                    b"HTTP/9 101 x",
                    b"ICY 200 OK",
                    b"HTTP/1.1 1011 x",
                ]
            )
        )
    else:
        start = draw(
            st.sampled_from(
                [
                    b"GET / HTTP/1.1",
                    b"GET /chat?room=1 HTTP/1.1",
                    b"POST / HTTP/1.1",
                    b"GET / HTTP/1.0",
                    b"GET  HTTP/1.1",
                    b"G\x00T / HTTP/1.1",
                    b"\x16\x03\x01\x02\x00",
                    b"GET / HTTP/1.1 x",
                ]
            )
        )
    lines = draw(st.lists(header_lines, max_size=10))
    end = draw(st.sampled_from([b"\r\n", b"\r\n", b"", b"\n"]))
    return start + b"\r\n" + b"".join(lines) + end + draw(st.binary(max_size=8))


http_limits = st.fixed_dictionaries(
    {
        "max_line": st.integers(10, 80),
        "max_headers": st.integers(1, 12),
        "max_header_bytes": st.integers(20, 400),
    }
)

# The request and response tests below are alike on purpose: the common part
# is parse_http_any_split; each then checks what only its own side's result
# can carry (a Request that validates or gets a 4xx, a Response's status).


@bounded
@given(data=st.data(), points=split_points, limits=st.one_of(st.just({}), http_limits))
def test_request_parser_any_bytes_any_split(
    data: st.DataObject,
    points: List[int],
    limits: dict,  # type: ignore[type-arg]
) -> None:
    """A Request or an InvalidHandshake; one chunk, any split and byte by byte agree."""
    kind, result = parse_http_any_split(
        RequestParser, data.draw(http_heads(response=False)), points, limits
    )
    if kind == "ok" and result is not None:
        request, _ = result
        assert isinstance(request, Request)
        # Everything a handler might look at is readable, and validation
        # either passes or answers with an HTTP status.
        _ = request.path, request.query, request.cookies
        kind, detail = outcome(lambda: validate_request(request))
        assert kind == "ok" or 400 <= int(detail[0]("x").status) < 500


@bounded
@given(data=st.data(), points=split_points, limits=st.one_of(st.just({}), http_limits))
def test_response_parser_any_bytes_any_split(
    data: st.DataObject,
    points: List[int],
    limits: dict,  # type: ignore[type-arg]
) -> None:
    """A Response or an InvalidResponse; one chunk, any split and byte by byte agree."""
    kind, result = parse_http_any_split(
        ResponseParser, data.draw(http_heads(response=True)), points, limits
    )
    if kind == "error":
        assert issubclass(result[0], InvalidResponse)
    elif result is not None:
        response, _ = result
        assert isinstance(response, Response) and 100 <= response.status <= 999
        kind, _ = outcome(
            lambda: validate_response(response, "dGhlIHNhbXBsZSBub25jZQ==", subprotocols=["chat"])
        )


header_names = st.from_regex(r"\A[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,12}\Z")
header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=30,
).map(lambda v: v.strip(" \t"))


@bounded
@given(
    method=st.sampled_from(["GET", "POST", "OPTIONS"]),
    target=st.from_regex(r"\A/[!-~]{0,30}\Z"),
    headers=st.lists(st.tuples(header_names, header_values), max_size=8),
    trailing=st.binary(max_size=20),
    points=split_points,
)
def test_request_round_trip(
    method: str,
    target: str,
    headers: List[Tuple[str, str]],
    trailing: bytes,
    points: List[int],
) -> None:
    """Request.serialize then RequestParser is exact, trailing bytes included."""
    request = Request(method, target, "HTTP/1.1", Headers(headers))
    raw = request.serialize() + trailing
    kind, result = parse_http(RequestParser, cut(raw, points))
    assert kind == "ok" and result is not None
    parsed, rest = result
    assert (parsed.method, parsed.target, parsed.version) == (method, target, "HTTP/1.1")
    assert parsed.headers.items() == headers
    # Bytes after the head, however they were cut, are all kept for the frame parser.
    assert rest == raw[len(request.serialize()) :] or trailing.startswith(rest)


@bounded
@given(
    status=st.integers(100, 599),
    reason=st.from_regex(r"\A[ -~]{0,20}\Z").map(str.strip),
    headers=st.lists(st.tuples(header_names, header_values), max_size=8),
    points=split_points,
)
def test_response_round_trip(
    status: int, reason: str, headers: List[Tuple[str, str]], points: List[int]
) -> None:
    """Response.serialize then ResponseParser is exact."""
    response = Response(status, reason, Headers(headers))
    kind, result = parse_http(ResponseParser, cut(response.serialize(), points))
    assert kind == "ok" and result is not None
    parsed, _ = result
    assert (parsed.status, parsed.reason) == (status, reason)
    assert parsed.headers.items() == headers


def test_line_of_exactly_max_line_bytes_is_accepted_however_it_is_cut() -> None:
    """A line of max_line bytes is within the limit, even when the CR arrives before the LF."""
    line = b"GET /" + b"a" * 15 + b" HTTP/1.1"  # 29 bytes
    raw = line + b"\r\nHost: x\r\n\r\n"
    for chunks in ([raw], [line + b"\r", b"\nHost: x\r\n\r\n"]):
        kind, result = parse_http(RequestParser, chunks, max_line=len(line))
        assert kind == "ok" and result is not None, result


def test_status_of_non_ascii_digits_is_an_invalid_response() -> None:
    """'²²²' passes str.isdigit() but is no HTTP status: InvalidResponse, not ValueError."""
    with pytest.raises(InvalidResponse):
        ResponseParser().feed(b"HTTP/1.1 \xb2\xb2\xb2 OK\r\n\r\n")


def test_overlong_line_gets_the_same_answer_however_it_is_cut() -> None:
    """An over-long line ending in a bare LF is a 414 in one chunk as well as in two."""
    raw = b"GET /" + b"a" * 40 + b" HTTP/1.1\nHost: x\r\n\r\n"
    whole = parse_http(RequestParser, [raw], max_line=20)
    assert whole == parse_http(RequestParser, [raw[:30], raw[30:]], max_line=20)
    assert whole[0] == "error" and whole[1][1] == "request line too long"


# -- the coverage-guided fuzzer, a short bounded pass ------------------------------------------

# A fixed seed and a fixed number of inputs: CI replays the same pass every time,
# so a red run is reproducible and never down to the fuzzer's luck of the day.
# Long, random runs are for people (fuzzing/README.md); what they find goes into
# fuzzing/corpus, which this pass starts from.
FUZZ_SEED = 20261201
FUZZ_RUNS = 40_000
FUZZ_SECONDS = 120  # a bound only: 40,000 inputs take about 20 s


@pytest.mark.slow
@pytest.mark.timeout(FUZZ_SECONDS + 100)
def test_fuzz_harness_short_pass(tmp_path: Path) -> None:
    """fuzzing/fuzz_parsers.py runs 40,000 inputs from the seed corpus without a crash."""
    pytest.importorskip("atheris", reason="atheris has no wheel for this Python")
    root = Path(__file__).resolve().parent.parent
    seeds = root / "fuzzing" / "corpus"
    assert len(list(seeds.iterdir())) >= 8
    scratch = tmp_path / "corpus"
    scratch.mkdir()
    result = run_ok(
        [
            sys.executable,
            root / "fuzzing" / "fuzz_parsers.py",
            f"-seed={FUZZ_SEED}",
            f"-runs={FUZZ_RUNS}",
            f"-max_total_time={FUZZ_SECONDS}",
            "-timeout=10",
            "-rss_limit_mb=1024",
            "-print_final_stats=1",
            scratch,
            seeds,
        ],
        cwd=tmp_path,
        timeout=FUZZ_SECONDS + 90,
    )
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*"))
    match = re.search(r"stat::number_of_executed_units:\s*(\d+)", result.stderr)
    assert match is not None, result.stderr[-2000:]
    executions = int(match.group(1))
    print(f"fuzzing: {executions} executions, seed {FUZZ_SEED}, no crash")
    assert executions >= FUZZ_RUNS
