"""The connection state machine: messages, control frames, limits, the close handshake."""

from __future__ import annotations

import itertools
import struct
from typing import Callable, Iterator, List, Optional, Tuple

import pytest

from wsthread.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidUTF8,
    PayloadTooBig,
    ProtocolError,
)
from wsthread.sansio.frames import (
    Frame,
    FrameParser,
    Opcode,
    apply_mask,
    parse_close,
    serialize_frame,
)
from wsthread.sansio.protocol import (
    CloseReceived,
    Event,
    Message,
    Ping,
    Pong,
    Protocol,
    Side,
    State,
)

MASK = b"\x00\x11\x22\x33"


def pair(max_size: Optional[int] = 2**20) -> Tuple[Protocol, Protocol]:
    """A server and a client protocol; the client masks with MASK."""
    server = Protocol(Side.SERVER, max_size=max_size)
    client = Protocol(Side.CLIENT, max_size=max_size, mask_key=lambda: MASK)
    return server, client


def client_frame(opcode: Opcode, payload: bytes, fin: bool = True, rsv1: bool = False) -> bytes:
    """A masked frame as a client would send it."""
    return serialize_frame(Frame(opcode, payload, fin, rsv1), mask=MASK)


def server_frame(opcode: Opcode, payload: bytes, fin: bool = True) -> bytes:
    """An unmasked frame as a server would send it."""
    return serialize_frame(Frame(opcode, payload, fin))


def frames_of(data: bytes, expect_masked: bool) -> List[Frame]:
    """Parse every frame in ``data``, which must hold whole frames only."""
    parser = FrameParser(expect_masked=expect_masked)
    parser.feed(data)
    frames: List[Frame] = []
    while (frame := parser.next_frame()) is not None:
        frames.append(frame)
    assert parser.buffered == 0
    return frames


def feed_bytewise(protocol: Protocol, data: bytes) -> List[Event]:
    """Feed ``data`` one byte at a time and collect the events."""
    events: List[Event] = []
    for index in range(len(data)):
        events += protocol.receive_data(data[index : index + 1])
    return events


def assert_failed(protocol: Protocol, code: int, expect_masked: bool = False) -> None:
    """Assert ``protocol`` failed with ``code``, owes a close frame with it, and stops."""
    assert protocol.failure is not None
    assert protocol.failure.code == code
    assert protocol.state is State.CLOSING
    assert not protocol.should_close_transport  # the close frame is not written yet
    output = protocol.data_to_send()
    (frame,) = frames_of(output, expect_masked=expect_masked)
    assert frame.opcode is Opcode.CLOSE
    assert parse_close(frame.payload)[0] == code
    assert len(frame.payload) <= 125
    assert protocol.close_sent is not None and protocol.close_sent[0] == code
    assert protocol.should_close_transport
    assert protocol.receiving_done
    assert protocol.data_to_send() == b""  # owed once only
    assert protocol.receive_data(client_frame(Opcode.TEXT, b"ignored")) == []
    error = protocol.close_exception()
    assert isinstance(error, ConnectionClosedError)
    assert error.code == 1006 and error.sent_code == code


# -- messages -------------------------------------------------------------------------------


def test_initial_state() -> None:
    """A new protocol is OPEN, owes nothing and keeps the transport."""
    for protocol in pair():
        assert protocol.state is State.OPEN
        assert protocol.data_to_send() == b""
        assert not protocol.should_close_transport
        assert not protocol.receiving_done
        assert protocol.close_rcvd is None and protocol.close_sent is None


def test_text_and_binary_messages() -> None:
    """Text arrives as str, binary as bytes."""
    server, client = pair()
    events = server.receive_data(client.send_text("héllo") + client.send_binary(b"\x00\xff"))
    assert events == [Message("héllo"), Message(b"\x00\xff")]
    assert server.state is State.OPEN
    assert server.data_to_send() == b""


def test_empty_messages() -> None:
    """Empty text and binary messages arrive as "" and b""."""
    server, client = pair()
    events = server.receive_data(client.send_text("") + client.send_binary(b""))
    assert events == [Message(""), Message(b"")]


def test_send_text_accepts_utf8_bytes() -> None:
    """send_text takes already-encoded UTF-8 bytes too."""
    server, client = pair()
    assert server.receive_data(client.send_text("€".encode())) == [Message("€")]


def test_server_to_client_messages() -> None:
    """A server's unmasked frames arrive at the client."""
    server, client = pair()
    events = client.receive_data(server.send_text("κόσμε") + server.send_binary(b"\x01"))
    assert events == [Message("κόσμε"), Message(b"\x01")]


def test_rfc_fragmented_hello_on_client() -> None:
    """The RFC's unmasked "Hel" + "lo" arrives at a client as "Hello"."""
    _, client = pair()
    assert client.receive_data(bytes.fromhex("010348656c80026c6f")) == [Message("Hello")]


def test_server_frames_are_unmasked() -> None:
    """A server sends unmasked frames, which a client parser accepts."""
    server, _ = pair()
    wire = server.send_text("abc") + server.send_binary(b"d") + server.send_ping(b"p")
    assert frames_of(wire, expect_masked=False) == [
        Frame(Opcode.TEXT, b"abc"),
        Frame(Opcode.BINARY, b"d"),
        Frame(Opcode.PING, b"p"),
    ]


def test_client_masks_with_the_injected_key() -> None:
    """The client masks every frame with the key it is given."""
    _, client = pair()
    wire = client.send_text("abc")
    assert wire[:6] == bytes([0x81, 0x83]) + MASK
    assert wire[6:] == apply_mask(b"abc", MASK)
    assert frames_of(wire, expect_masked=True) == [Frame(Opcode.TEXT, b"abc")]


def test_client_takes_a_fresh_key_for_every_frame() -> None:
    """The client calls mask_key once per frame, control frames included."""
    keys: Iterator[bytes] = (struct.pack("!I", n) for n in itertools.count(1))
    client = Protocol(Side.CLIENT, mask_key=lambda: next(keys))
    sends: List[Callable[[], bytes]] = [
        lambda: client.send_text("a"),
        lambda: client.send_binary(b"b", fin=False),
        lambda: client.send_continuation(b"c", fin=True),
        lambda: client.send_ping(b"d"),
        lambda: client.send_pong(b"e"),
        lambda: client.send_close(1000),
    ]
    for number, send in enumerate(sends, start=1):
        wire = send()
        assert wire[1] & 0x80
        assert wire[2:6] == struct.pack("!I", number)
        assert len(frames_of(wire, expect_masked=True)) == 1


def test_client_default_mask_is_random_bytes() -> None:
    """Without mask_key, the client still masks with a 4-byte key."""
    client = Protocol(Side.CLIENT)
    wire = client.send_binary(b"x" * 10)
    assert wire[1] == 0x80 | 10
    assert frames_of(wire, expect_masked=True) == [Frame(Opcode.BINARY, b"x" * 10)]


def test_client_all_frames_parse_as_masked() -> None:
    """Every kind of frame a client sends parses with expect_masked=True."""
    _, client = pair()
    wire = (
        client.send_text("t", fin=False)
        + client.send_continuation(b"u", fin=True)
        + client.send_ping(b"p")
        + client.send_pong(b"q")
        + client.send_close(1001, "bye")
    )
    assert frames_of(wire, expect_masked=True) == [
        Frame(Opcode.TEXT, b"t", fin=False),
        Frame(Opcode.CONTINUATION, b"u"),
        Frame(Opcode.PING, b"p"),
        Frame(Opcode.PONG, b"q"),
        Frame(Opcode.CLOSE, b"\x03\xe9bye"),
    ]


def test_fragmented_send_and_receive() -> None:
    """send_text/send_continuation fragments are reassembled into one message."""
    server, client = pair()
    wire = (
        client.send_text("ab", fin=False)
        + client.send_continuation(b"cd", fin=False)
        + client.send_continuation(b"ef", fin=True)
    )
    assert server.receive_data(wire) == [Message("abcdef")]


def test_fragmented_binary_with_empty_fragments() -> None:
    """Empty fragments anywhere in a message are fine."""
    server, _ = pair()
    wire = (
        client_frame(Opcode.BINARY, b"", fin=False)
        + client_frame(Opcode.CONTINUATION, b"x", fin=False)
        + client_frame(Opcode.CONTINUATION, b"", fin=False)
        + client_frame(Opcode.CONTINUATION, b"")
    )
    assert server.receive_data(wire) == [Message(b"x")]


def test_character_split_across_fragments() -> None:
    """A multi-byte character split between fragments decodes whole."""
    server, _ = pair()
    data = "a😀b".encode()
    wire = (
        client_frame(Opcode.TEXT, data[:2], fin=False)
        + client_frame(Opcode.CONTINUATION, data[2:4], fin=False)
        + client_frame(Opcode.CONTINUATION, data[4:])
    )
    assert server.receive_data(wire) == [Message("a😀b")]


def test_messages_after_a_fragmented_message() -> None:
    """Fragment state resets: the next message is separate."""
    server, _ = pair()
    wire = (
        client_frame(Opcode.TEXT, b"one", fin=False)
        + client_frame(Opcode.CONTINUATION, b"two")
        + client_frame(Opcode.BINARY, b"three")
        + client_frame(Opcode.TEXT, b"four", fin=False)
        + client_frame(Opcode.CONTINUATION, b"five")
    )
    assert server.receive_data(wire) == [
        Message("onetwo"),
        Message(b"three"),
        Message("fourfive"),
    ]


def test_fragments_with_interleaved_ping() -> None:
    """A ping between fragments gives a Ping event and a pong; the message is assembled."""
    server, _ = pair()
    events = server.receive_data(
        client_frame(Opcode.TEXT, b"frag", fin=False)
        + client_frame(Opcode.PING, b"are you there")
        + client_frame(Opcode.CONTINUATION, b"ment")
    )
    assert events == [Ping(b"are you there"), Message("fragment")]
    assert server.data_to_send() == server_frame(Opcode.PONG, b"are you there")
    assert server.data_to_send() == b""


def test_several_pings_interleaved_are_answered_in_order() -> None:
    """Pings between fragments are answered in the order they arrived."""
    server, _ = pair()
    events = server.receive_data(
        client_frame(Opcode.BINARY, b"1", fin=False)
        + client_frame(Opcode.PING, b"a")
        + client_frame(Opcode.CONTINUATION, b"2", fin=False)
        + client_frame(Opcode.PONG, b"unsolicited")
        + client_frame(Opcode.PING, b"b")
        + client_frame(Opcode.PING, b"")
        + client_frame(Opcode.CONTINUATION, b"3")
    )
    assert events == [Ping(b"a"), Pong(b"unsolicited"), Ping(b"b"), Ping(b""), Message(b"123")]
    assert frames_of(server.data_to_send(), expect_masked=False) == [
        Frame(Opcode.PONG, b"a"),
        Frame(Opcode.PONG, b"b"),
        Frame(Opcode.PONG, b""),
    ]


def test_client_answers_ping_with_masked_pong() -> None:
    """A client's automatic pong is masked and echoes the ping's payload."""
    server, client = pair()
    assert client.receive_data(server.send_ping(b"hi")) == [Ping(b"hi")]
    output = client.data_to_send()
    assert output == serialize_frame(Frame(Opcode.PONG, b"hi"), mask=MASK)


def test_pong_event_owes_nothing() -> None:
    """A pong is reported and owes nothing."""
    server, _ = pair()
    assert server.receive_data(client_frame(Opcode.PONG, b"x")) == [Pong(b"x")]
    assert server.data_to_send() == b""


def test_byte_by_byte_gives_the_same_events() -> None:
    """Feeding one byte at a time gives the same events as one chunk."""
    wire = (
        client_frame(Opcode.TEXT, "κό".encode(), fin=False)
        + client_frame(Opcode.PING, b"p")
        + client_frame(Opcode.CONTINUATION, "σμε".encode())
        + client_frame(Opcode.BINARY, bytes(300))
        + client_frame(Opcode.CLOSE, b"\x03\xe8")
    )
    whole, _ = pair()
    bytewise, _ = pair()
    expected = [Ping(b"p"), Message("κόσμε"), Message(bytes(300)), CloseReceived(1000, "")]
    assert whole.receive_data(wire) == expected
    assert feed_bytewise(bytewise, wire) == expected
    assert whole.data_to_send() == bytewise.data_to_send()


def test_many_small_fragments_linear_parsing() -> None:
    """A 4 MiB message in 65,536 fragments of 64 bytes, fed in 64 KiB chunks, is exact."""
    server, _ = pair(max_size=2**23)
    chunk = bytes(range(64))
    middle = client_frame(Opcode.CONTINUATION, chunk, fin=False)
    wire = b"".join(
        [client_frame(Opcode.BINARY, chunk, fin=False)]
        + [middle] * 65534
        + [client_frame(Opcode.CONTINUATION, chunk)]
    )
    events: List[Event] = []
    for index in range(0, len(wire), 65536):
        events += server.receive_data(wire[index : index + 65536])
    assert events == [Message(chunk * 65536)]
    assert server.failure is None


# -- fragmentation errors ---------------------------------------------------------------------


def test_continuation_without_start() -> None:
    """A continuation frame with no message started fails with 1002."""
    server, _ = pair()
    assert server.receive_data(client_frame(Opcode.CONTINUATION, b"x")) == []
    assert_failed(server, 1002)


def test_continuation_after_a_finished_message() -> None:
    """A continuation after a message's final frame fails with 1002."""
    server, _ = pair()
    events = server.receive_data(
        client_frame(Opcode.TEXT, b"done") + client_frame(Opcode.CONTINUATION, b"more")
    )
    assert events == [Message("done")]
    assert_failed(server, 1002)


@pytest.mark.parametrize("first", [Opcode.TEXT, Opcode.BINARY])
@pytest.mark.parametrize("second", [Opcode.TEXT, Opcode.BINARY])
def test_new_message_inside_fragmented_one(first: Opcode, second: Opcode) -> None:
    """A new text or binary frame while a message is unfinished fails with 1002."""
    server, _ = pair()
    events = server.receive_data(client_frame(first, b"a", fin=False) + client_frame(second, b"b"))
    assert events == []
    assert_failed(server, 1002)


def test_client_fails_on_masked_frame_and_masks_its_close() -> None:
    """A client that receives a masked frame fails with 1002 in a masked close frame."""
    _, client = pair()
    client.receive_data(client_frame(Opcode.TEXT, b"masked"))
    assert client.failure is not None and client.failure.code == 1002
    output = client.data_to_send()
    assert output[1] & 0x80 and output[2:6] == MASK
    (frame,) = frames_of(output, expect_masked=True)
    assert parse_close(frame.payload)[0] == 1002
    assert client.should_close_transport


def test_server_fails_on_unmasked_frame() -> None:
    """A server that receives an unmasked frame fails with 1002."""
    server, _ = pair()
    server.receive_data(server_frame(Opcode.TEXT, b"plain"))
    assert_failed(server, 1002)


@pytest.mark.parametrize(
    "wire",
    [
        bytes([0x83, 0x80]) + MASK,  # reserved opcode
        bytes([0xA1, 0x80]) + MASK,  # RSV2
        bytes([0xC1, 0x80]) + MASK,  # RSV1 without an extension
        bytes([0x09, 0x80]) + MASK,  # fragmented ping
        bytes([0x89, 0xFE, 0x00, 0x7E]) + MASK,  # 126-byte ping
        bytes([0x88, 0x81]) + MASK + b"\x03",  # one-byte close payload
        client_frame(Opcode.CLOSE, struct.pack("!H", 1006)),  # close code not for the wire
        client_frame(Opcode.CLOSE, struct.pack("!H", 999)),
    ],
)
def test_framing_errors_fail_with_1002(wire: bytes) -> None:
    """Framing violations and bad close payloads fail the connection with 1002."""
    server, _ = pair()
    assert server.receive_data(wire) == []
    assert_failed(server, 1002)


def test_control_frame_too_long_fails_from_header() -> None:
    """A ping announcing 126 bytes fails with 1002 before its payload arrives."""
    server, _ = pair()
    server.receive_data(bytes([0x89, 0xFE, 0x00, 0x7E]) + MASK)
    assert_failed(server, 1002)


# -- UTF-8 --------------------------------------------------------------------------------------


def test_invalid_utf8_single_frame() -> None:
    """A single-frame text message that is not UTF-8 fails with 1007."""
    server, _ = pair()
    assert server.receive_data(client_frame(Opcode.TEXT, b"\xff")) == []
    assert isinstance(server.failure, InvalidUTF8)
    assert_failed(server, 1007)


def test_invalid_utf8_fails_at_the_bad_fragment() -> None:
    """Invalid UTF-8 fails with 1007 when its fragment arrives, before the final one."""
    server, _ = pair()
    events = server.receive_data(
        client_frame(Opcode.TEXT, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", fin=False)
        + client_frame(Opcode.CONTINUATION, b"\xf4\x90\x80\x80", fin=False)
    )
    assert events == []
    assert_failed(server, 1007)


@pytest.mark.parametrize(
    "first, second",
    [(b"ok", b"\xc0\xaf"), (b"a\xed", b"\xa0\x80")],
    ids=["bad-second-fragment", "surrogate-split-across-fragments"],
)
def test_invalid_utf8_fails_before_the_message_would_end(first: bytes, second: bytes) -> None:
    """The bad fragment alone is enough, even a surrogate begun in the fragment before it."""
    server, _ = pair()
    server.receive_data(client_frame(Opcode.TEXT, first, fin=False))
    assert server.failure is None
    server.receive_data(client_frame(Opcode.CONTINUATION, second, fin=False))
    assert_failed(server, 1007)


def test_truncated_character_at_message_end_fails() -> None:
    """A character cut short by the final fragment fails with 1007."""
    server, _ = pair()
    server.receive_data(
        client_frame(Opcode.TEXT, b"\xe2\x82", fin=False) + client_frame(Opcode.CONTINUATION, b"")
    )
    assert_failed(server, 1007)


def test_invalid_utf8_in_binary_is_fine() -> None:
    """Binary messages are not checked for UTF-8."""
    server, _ = pair()
    assert server.receive_data(client_frame(Opcode.BINARY, b"\xff\xed\xa0")) == [
        Message(b"\xff\xed\xa0")
    ]


def test_invalid_utf8_close_reason_fails_with_1007() -> None:
    """A close frame whose reason is not UTF-8 fails with 1007."""
    server, _ = pair()
    assert server.receive_data(client_frame(Opcode.CLOSE, b"\x03\xe8\xff")) == []
    assert_failed(server, 1007)


def test_invalid_utf8_inside_one_frame_fails_before_the_frame_ends() -> None:
    """Autobahn 6.4.3: bad bytes in the middle of one text frame fail when they arrive."""
    server, _ = pair()
    wire = client_frame(
        Opcode.TEXT, b"\xce\xba\xe1\xbd\xb9\xcf\x83" + b"\xf4\x90\x80\x80" + b"x" * 100
    )
    # Header (2 + 4 mask bytes) and the valid start: nothing wrong yet.
    assert server.receive_data(wire[:13]) == []
    assert server.failure is None
    # The invalid 4-byte sequence arrives; the frame is far from complete.
    assert server.receive_data(wire[13:17]) == []
    assert isinstance(server.failure, InvalidUTF8)
    assert_failed(server, 1007)


def test_invalid_utf8_in_an_unfinished_continuation_frame_fails_early() -> None:
    """Autobahn 6.4.4: the same inside a continuation frame that never completes."""
    server, _ = pair()
    server.receive_data(client_frame(Opcode.TEXT, "κόσμε".encode(), fin=False))
    wire = client_frame(Opcode.CONTINUATION, b"ok\xed\xa0\x80" + b"y" * 1000, fin=True)
    # The header (2 bytes, a 16-bit length, the mask) and "ok": nothing wrong yet.
    assert server.receive_data(wire[:10]) == []
    assert server.failure is None
    # ED A0 is an encoded surrogate: refused after two bytes, the third not needed.
    assert server.receive_data(wire[10:12]) == []
    assert_failed(server, 1007)


def test_bad_byte_at_each_position_of_a_split_frame_fails_at_that_piece() -> None:
    """Whatever the split, the failure comes with the piece holding the bad byte."""
    text = "€ and ✓ and 😀 ".encode() * 4
    for position in range(len(text)):
        payload = text[:position] + b"\xff" + text[position + 1 :]
        wire = client_frame(Opcode.TEXT, payload)
        server, _ = pair()
        header = 6 if len(payload) < 126 else 8  # with the 4 mask bytes
        bad_index = header + position
        for start in range(0, len(wire), 7):
            server.receive_data(wire[start : start + 7])
            if start + 7 <= bad_index:
                assert server.failure is None, (position, start)
            else:
                assert isinstance(server.failure, InvalidUTF8), (position, start)
                break


def test_text_frame_in_pieces_decodes_the_same_whatever_the_split() -> None:
    """Valid text arriving in any pieces (characters split too) gives the same message."""
    text = "héllo wörld € 😀 " * 20
    wire = client_frame(Opcode.TEXT, text[:50].encode(), fin=False) + client_frame(
        Opcode.CONTINUATION, text[50:].encode()
    )
    for size in (1, 2, 3, 5, 64, 100):
        server, _ = pair()
        events: List[Event] = []
        for start in range(0, len(wire), size):
            events += server.receive_data(wire[start : start + size])
        assert events == [Message(text)], size
        assert server.failure is None
        # The next message starts clean.
        assert server.receive_data(client_frame(Opcode.TEXT, b"next")) == [Message("next")]


def test_binary_frame_in_pieces_is_not_checked_for_utf8() -> None:
    """A binary frame arriving in pieces with non-UTF-8 bytes is delivered whole."""
    server, _ = pair()
    payload = b"\xff\xfe" * 100
    events = feed_bytewise(server, client_frame(Opcode.BINARY, payload))
    assert events == [Message(payload)]


# -- max_size -------------------------------------------------------------------------------------


def test_message_exactly_max_size_is_fine() -> None:
    """A message of exactly max_size bytes is accepted, whole or fragmented."""
    server, _ = pair(max_size=100)
    assert server.receive_data(client_frame(Opcode.BINARY, b"a" * 100)) == [Message(b"a" * 100)]
    events = server.receive_data(
        client_frame(Opcode.TEXT, b"a" * 50, fin=False)
        + client_frame(Opcode.CONTINUATION, b"b" * 50)
    )
    assert events == [Message("a" * 50 + "b" * 50)]


def test_single_frame_over_max_size_fails_from_header() -> None:
    """One frame over max_size fails with 1009 from its header alone."""
    server, _ = pair(max_size=100)
    header_only = client_frame(Opcode.BINARY, b"x" * 101)[:6]
    assert server.receive_data(header_only) == []
    assert isinstance(server.failure, PayloadTooBig)
    assert_failed(server, 1009)


def test_max_size_over_fragments_fails_from_header() -> None:
    """Fragments adding up past max_size fail with 1009 at the over-limit header."""
    server, _ = pair(max_size=100)
    server.receive_data(client_frame(Opcode.BINARY, b"a" * 60, fin=False))
    server.receive_data(client_frame(Opcode.CONTINUATION, b"b" * 40, fin=False))
    assert server.failure is None
    header_only = client_frame(Opcode.CONTINUATION, b"c" * 1)[:6]
    server.receive_data(header_only)
    assert_failed(server, 1009)


def test_max_size_counts_text_in_bytes() -> None:
    """max_size counts UTF-8 bytes, not characters."""
    server, _ = pair(max_size=4)
    assert server.receive_data(client_frame(Opcode.TEXT, "€".encode())) == [Message("€")]
    server.receive_data(client_frame(Opcode.TEXT, "€€".encode()))
    assert_failed(server, 1009)


def test_max_size_resets_between_messages() -> None:
    """Each message gets the whole max_size."""
    server, _ = pair(max_size=10)
    wire = b"".join(client_frame(Opcode.BINARY, b"x" * 10) for _ in range(5))
    assert server.receive_data(wire) == [Message(b"x" * 10)] * 5
    assert server.failure is None


def test_control_frames_do_not_count_towards_max_size() -> None:
    """Pings in the middle of a message are not part of its size."""
    server, _ = pair(max_size=10)
    events = server.receive_data(
        client_frame(Opcode.BINARY, b"x" * 5, fin=False)
        + client_frame(Opcode.PING, b"p" * 100)
        + client_frame(Opcode.CONTINUATION, b"y" * 5)
    )
    assert events == [Ping(b"p" * 100), Message(b"xxxxxyyyyy")]


def test_max_size_none_means_unlimited() -> None:
    """With max_size=None, a large message is accepted."""
    server, _ = pair(max_size=None)
    payload = bytes(3 * 2**20)
    assert server.receive_data(client_frame(Opcode.BINARY, payload)) == [Message(payload)]


# -- the closing handshake ------------------------------------------------------------------------


def test_peer_initiated_close_on_server() -> None:
    """The peer closes: event, echo with the same code, CLOSED, server drops TCP."""
    server, client = pair()
    events = server.receive_data(client.send_close(1001, "going"))
    assert events == [CloseReceived(1001, "going")]
    assert server.state is State.CLOSING
    assert server.receiving_done
    assert not server.should_close_transport
    assert server.data_to_send() == server_frame(Opcode.CLOSE, b"\x03\xe9")
    assert server.state is State.CLOSED
    assert server.should_close_transport
    error = server.close_exception()
    assert isinstance(error, ConnectionClosedOK)
    assert (error.code, error.reason, error.sent_code) == (1001, "going", 1001)


def test_peer_initiated_close_on_client() -> None:
    """The server closes: the client echoes masked, then waits for the server to drop TCP."""
    server, client = pair()
    events = client.receive_data(server.send_close(1000, "bye"))
    assert events == [CloseReceived(1000, "bye")]
    echo = client.data_to_send()
    assert echo == serialize_frame(Frame(Opcode.CLOSE, b"\x03\xe8"), mask=MASK)
    assert client.state is State.CLOSED
    assert not client.should_close_transport
    assert server.receive_data(echo) == [CloseReceived(1000, "")]
    assert server.state is State.CLOSED and server.should_close_transport
    client.receive_eof()
    assert client.state is State.CLOSED
    assert client.should_close_transport
    assert isinstance(client.close_exception(), ConnectionClosedOK)


def test_locally_initiated_close_on_server() -> None:
    """Server sends close, the reply arrives: CLOSED, and the server drops TCP."""
    server, client = pair()
    server.receive_data(b"")
    sent = server.send_close(1000, "done")
    assert sent == server_frame(Opcode.CLOSE, b"\x03\xe8done")
    assert server.state is State.CLOSING
    assert not server.should_close_transport
    assert client.receive_data(sent) == [CloseReceived(1000, "done")]
    assert server.receive_data(client.data_to_send()) == [CloseReceived(1000, "")]
    assert server.state is State.CLOSED
    assert server.data_to_send() == b""  # no second close frame
    assert server.should_close_transport


def test_locally_initiated_close_on_client() -> None:
    """Client sends close, the reply arrives: CLOSED, but the client waits for EOF."""
    server, client = pair()
    sent = client.send_close(1001)
    assert client.state is State.CLOSING
    assert server.receive_data(sent) == [CloseReceived(1001, "")]
    assert client.receive_data(server.data_to_send()) == [CloseReceived(1001, "")]
    assert client.state is State.CLOSED
    assert client.data_to_send() == b""
    assert not client.should_close_transport
    client.receive_eof()
    assert client.should_close_transport


def test_empty_close_is_echoed_empty() -> None:
    """A close frame without a code (1005) is answered with an empty close frame."""
    server, _ = pair()
    assert server.receive_data(client_frame(Opcode.CLOSE, b"")) == [CloseReceived(1005, "")]
    assert server.data_to_send() == b"\x88\x00"
    assert isinstance(server.close_exception(), ConnectionClosedOK)


def test_send_close_1005_sends_an_empty_close_frame() -> None:
    """send_close(1005) sends a close frame without a payload."""
    server, _ = pair()
    assert server.send_close(1005) == b"\x88\x00"


def test_ping_then_close_answered_in_order() -> None:
    """A ping and a close in one read are answered with the pong, then the close."""
    server, _ = pair()
    events = server.receive_data(
        client_frame(Opcode.PING, b"p") + client_frame(Opcode.CLOSE, b"\x03\xe8")
    )
    assert events == [Ping(b"p"), CloseReceived(1000, "")]
    assert frames_of(server.data_to_send(), expect_masked=False) == [
        Frame(Opcode.PONG, b"p"),
        Frame(Opcode.CLOSE, b"\x03\xe8"),
    ]


def test_data_after_close_is_ignored() -> None:
    """Frames after a close frame, in the same read or later, are not processed."""
    server, client = pair()
    events = server.receive_data(
        client.send_close() + client_frame(Opcode.TEXT, b"late") + client_frame(Opcode.PING, b"")
    )
    assert events == [CloseReceived(1000, "")]
    assert server.receive_data(client_frame(Opcode.TEXT, b"later")) == []
    assert server.receive_data(b"\xff\xff garbage") == []
    assert server.failure is None
    assert server.data_to_send() == server_frame(Opcode.CLOSE, b"\x03\xe8")


def test_close_during_fragmented_message() -> None:
    """A close in the middle of a fragmented message is reported; the fragment is dropped."""
    server, _ = pair()
    events = server.receive_data(
        client_frame(Opcode.TEXT, b"part", fin=False) + client_frame(Opcode.CLOSE, b"\x03\xe9")
    )
    assert events == [CloseReceived(1001, "")]


def test_messages_still_received_after_sending_close() -> None:
    """After sending close, messages the peer sent before its close still arrive."""
    server, _ = pair()
    server.send_close()
    events = server.receive_data(
        client_frame(Opcode.TEXT, b"in flight") + client_frame(Opcode.CLOSE, b"\x03\xe8")
    )
    assert events == [Message("in flight"), CloseReceived(1000, "")]
    assert server.state is State.CLOSED


SENDS: List[Tuple[str, Callable[[Protocol], bytes]]] = [
    ("send_text", lambda protocol: protocol.send_text("x")),
    ("send_binary", lambda protocol: protocol.send_binary(b"x")),
    ("send_continuation", lambda protocol: protocol.send_continuation(b"x", fin=True)),
    ("send_ping", lambda protocol: protocol.send_ping()),
    ("send_pong", lambda protocol: protocol.send_pong()),
    ("send_close", lambda protocol: protocol.send_close()),
]


@pytest.mark.parametrize("side", [Side.SERVER, Side.CLIENT])
@pytest.mark.parametrize("send", [send for _, send in SENDS], ids=[name for name, _ in SENDS])
def test_cannot_send_after_close(side: Side, send: Callable[[Protocol], bytes]) -> None:
    """Every send after close_sent raises ConnectionClosed."""
    protocol = Protocol(side, mask_key=lambda: MASK)
    protocol.send_close()
    with pytest.raises(ConnectionClosed):
        send(protocol)


def test_cannot_send_after_echoing_close() -> None:
    """Once the automatic close reply is out, sends raise ConnectionClosedOK."""
    server, client = pair()
    server.receive_data(client.send_close(1000))
    server.data_to_send()
    with pytest.raises(ConnectionClosedOK):
        server.send_text("too late")


def test_cannot_send_after_eof() -> None:
    """After the peer dropped TCP, sends raise ConnectionClosedError (1006)."""
    server, _ = pair()
    server.receive_eof()
    with pytest.raises(ConnectionClosedError) as info:
        server.send_binary(b"x")
    assert info.value.code == 1006


def test_pongs_not_sent_after_close_sent() -> None:
    """A ping arriving after this side sent its close is not answered."""
    server, _ = pair()
    server.send_close()
    assert server.receive_data(client_frame(Opcode.PING, b"x")) == [Ping(b"x")]
    assert server.data_to_send() == b""


def test_pongs_owed_dropped_once_close_sent() -> None:
    """Pongs still owed when this side sends its close are never sent."""
    server, _ = pair()
    server.receive_data(client_frame(Opcode.PING, b"x"))
    server.send_close()
    assert server.data_to_send() == b""
    assert server.data_to_send() == b""


def test_receive_eof_closes() -> None:
    """receive_eof() makes the state CLOSED and the transport closable, on either side."""
    for protocol in pair():
        protocol.receive_eof()
        assert protocol.eof
        assert protocol.state is State.CLOSED
        assert protocol.should_close_transport
        assert protocol.receiving_done
        assert protocol.receive_data(client_frame(Opcode.TEXT, b"x")) == []


def test_receive_eof_after_sending_close() -> None:
    """EOF after our close but before the peer's gives CLOSED with 1006."""
    server, _ = pair()
    server.send_close(1000)
    server.receive_eof()
    assert server.state is State.CLOSED
    error = server.close_exception()
    assert isinstance(error, ConnectionClosedError)
    assert (error.code, error.sent_code) == (1006, 1000)


def test_failure_after_sending_close() -> None:
    """A protocol error after our close sends no second close frame but drops TCP."""
    server, _ = pair()
    server.send_close(1000)
    server.receive_data(client_frame(Opcode.CONTINUATION, b"x"))
    assert server.failure is not None
    assert server.data_to_send() == b""
    assert server.should_close_transport


def test_send_close_reason_too_long_sends_nothing() -> None:
    """A close reason over 123 bytes raises ValueError and leaves the connection open."""
    server, _ = pair()
    with pytest.raises(ValueError):
        server.send_close(1000, "x" * 124)
    assert server.close_sent is None
    assert server.state is State.OPEN
    assert server.send_close(1000, "x" * 123)[:4] == bytes([0x88, 125, 0x03, 0xE8])


@pytest.mark.parametrize("code", [1005, 1006, 1015])
def test_reserved_close_codes_never_reach_the_wire(code: int) -> None:
    """Codes 1005, 1006 and 1015 must never be put in a close frame (RFC 6455 §7.4.1)."""
    server, _ = pair()
    try:
        wire = server.send_close(code)
    except ValueError:
        assert server.close_sent is None
        return
    (frame,) = frames_of(wire, expect_masked=False)
    assert frame.payload == b""  # sent as "no status code", never as the code itself


# -- close_exception ------------------------------------------------------------------------------

OK_CODES = [1000, 1001, 1005]


def payload_for(code: int) -> bytes:
    """The close payload for ``code`` (empty for 1005)."""
    return b"" if code == 1005 else struct.pack("!H", code)


@pytest.mark.parametrize("code", OK_CODES)
@pytest.mark.parametrize("side", [Side.SERVER, Side.CLIENT])
def test_close_exception_ok_when_peer_initiates(code: int, side: Side) -> None:
    """A peer-initiated close with 1000, 1001 or none gives ConnectionClosedOK."""
    server, client = pair()
    local, remote = (server, client) if side is Side.SERVER else (client, server)
    closing = client_frame if side is Side.SERVER else server_frame
    local.receive_data(closing(Opcode.CLOSE, payload_for(code)))
    local.data_to_send()
    error = local.close_exception()
    assert isinstance(error, ConnectionClosedOK)
    assert (error.code, error.sent_code) == (code, code)
    assert remote.state is State.OPEN


@pytest.mark.parametrize("sent", OK_CODES)
@pytest.mark.parametrize("received", OK_CODES)
def test_close_exception_ok_when_we_initiate(sent: int, received: int) -> None:
    """We close with 1000/1001/none and the peer answers with any of them: OK."""
    server, _ = pair()
    server.send_close(sent)
    server.receive_data(client_frame(Opcode.CLOSE, payload_for(received)))
    error = server.close_exception()
    assert isinstance(error, ConnectionClosedOK)
    assert (error.code, error.sent_code) == (received, sent)


@pytest.mark.parametrize(
    "sent, received", [(1000, 1002), (1002, 1000), (1011, 1000), (1000, 1011), (1002, 1002)]
)
def test_close_exception_error_codes(sent: int, received: int) -> None:
    """A close handshake with an error code on either side gives ConnectionClosedError."""
    server, _ = pair()
    server.send_close(sent)
    server.receive_data(client_frame(Opcode.CLOSE, payload_for(received)))
    error = server.close_exception()
    assert isinstance(error, ConnectionClosedError)
    assert (error.code, error.sent_code) == (received, sent)


def test_close_exception_peer_sends_1002() -> None:
    """A close with 1002 from the peer gives ConnectionClosedError, reason kept."""
    server, client = pair()
    server.receive_data(client.send_close(1002, "broken"))
    server.data_to_send()
    error = server.close_exception()
    assert isinstance(error, ConnectionClosedError)
    assert (error.code, error.reason, error.sent_code) == (1002, "broken", 1002)


def test_close_exception_without_any_close() -> None:
    """Without any close frame, the closure is 1006 and an error."""
    server, _ = pair()
    server.receive_eof()
    assert server.state is State.CLOSED
    error = server.close_exception()
    assert isinstance(error, ConnectionClosedError)
    assert (error.code, error.reason, error.sent_code) == (1006, "", None)


def test_close_exception_peer_closed_but_not_answered() -> None:
    """A received close not yet answered is not a clean closure."""
    server, client = pair()
    server.receive_data(client.send_close(1000))
    assert isinstance(server.close_exception(), ConnectionClosedError)


# -- control frames sent locally ------------------------------------------------------------------


@pytest.mark.parametrize("side", [Side.SERVER, Side.CLIENT])
def test_control_payload_limit(side: Side) -> None:
    """Pings and pongs over 125 bytes are refused locally; 125 is fine."""
    protocol = Protocol(side, mask_key=lambda: MASK)
    for send in (protocol.send_ping, protocol.send_pong):
        with pytest.raises(ValueError):
            send(b"x" * 126)
        wire = send(b"x" * 125)
        (frame,) = frames_of(wire, expect_masked=side is Side.CLIENT)
        assert frame.payload == b"x" * 125
    assert protocol.state is State.OPEN


def test_unsolicited_pong_sent() -> None:
    """send_pong frames an unsolicited pong that the peer reports as Pong."""
    server, client = pair()
    assert server.receive_data(client.send_pong(b"beat")) == [Pong(b"beat")]


def test_ping_round_trip() -> None:
    """A client ping is answered by the server with a pong carrying the same data."""
    server, client = pair()
    assert server.receive_data(client.send_ping(b"123")) == [Ping(b"123")]
    assert client.receive_data(server.data_to_send()) == [Pong(b"123")]


def test_failure_reason_is_truncated_to_fit() -> None:
    """The close frame sent on failure always fits in a control frame."""
    server, _ = pair()
    server.failure = ProtocolError("é" * 200)
    output = server.data_to_send()
    (frame,) = frames_of(output, expect_masked=False)
    code, reason = parse_close(frame.payload)
    assert code == 1002
    assert len(frame.payload) <= 125
    assert "é" * 10 in reason


# -- large frames, gathered piece by piece ------------------------------------------------


def test_large_frames_give_the_same_events_however_they_are_cut() -> None:
    """Large text and binary frames, fragmented or not, parse alike in one chunk or in pieces."""
    big_text = ("κόσμε " * 20000).encode()  # 220,000 bytes, characters cut by any split
    wire = (
        client_frame(Opcode.TEXT, big_text[:100001], fin=False)
        + client_frame(Opcode.PING, b"p")
        + client_frame(Opcode.CONTINUATION, big_text[100001:])
        + client_frame(Opcode.BINARY, bytes(range(256)) * 300)
        + client_frame(Opcode.TEXT, b"small")
    )
    whole, _ = pair()
    expected = whole.receive_data(wire)
    assert [type(event).__name__ for event in expected] == ["Ping", "Message", "Message", "Message"]
    for size in (1000, 4093, 65536, 70000):
        server, _ = pair()
        events: List[Event] = []
        for start in range(0, len(wire), size):
            events += server.receive_data(wire[start : start + size])
            assert server.failure is None
        assert events == expected, size
        assert server.bytes_buffered == 0


def test_invalid_utf8_inside_a_large_frame_fails_when_it_arrives() -> None:
    """A bad byte 70,000 bytes into a 200,000-byte text frame fails with that piece."""
    payload = bytearray(b"a" * 200000)
    payload[70000] = 0xFF
    wire = client_frame(Opcode.TEXT, bytes(payload))
    server, _ = pair()
    header = 14  # 2 bytes, a 64-bit length, the mask
    for start in range(0, len(wire), 4096):
        assert server.receive_data(wire[start : start + 4096]) == []
        if start + 4096 > header + 70000:
            break
        assert server.failure is None
        assert server.bytes_buffered == start + 4096
    assert isinstance(server.failure, InvalidUTF8)
    assert_failed(server, 1007)
