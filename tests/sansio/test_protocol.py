"""The connection state machine: messages, control frames, limits, the close handshake."""

from __future__ import annotations

from typing import Tuple

import pytest

from wsthread.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from wsthread.sansio.frames import Frame, FrameParser, Opcode, serialize_frame
from wsthread.sansio.protocol import (
    CloseReceived,
    Message,
    Ping,
    Pong,
    Protocol,
    Side,
    State,
)

MASK = b"\x00\x11\x22\x33"


def pair(max_size: int = 2**20) -> Tuple[Protocol, Protocol]:
    """A server and a client protocol."""
    return Protocol(Side.SERVER, max_size=max_size), Protocol(
        Side.CLIENT, max_size=max_size, mask_key=lambda: MASK
    )


def client_frame(opcode: Opcode, payload: bytes, fin: bool = True) -> bytes:
    """A masked frame as a client would send it."""
    return serialize_frame(Frame(opcode, payload, fin), mask=MASK)


def test_text_and_binary_messages() -> None:
    """Text arrives as str, binary as bytes."""
    server, client = pair()
    events = server.receive_data(client.send_text("héllo") + client.send_binary(b"\x00\xff"))
    assert events == [Message("héllo"), Message(b"\x00\xff")]
    assert server.state is State.OPEN


def test_client_masks_with_its_key() -> None:
    """The client masks every frame with the key it is given."""
    _, client = pair()
    wire = client.send_text("abc")
    assert wire[1] & 0x80 and wire[2:6] == MASK
    parser = FrameParser(expect_masked=True)
    parser.feed(wire)
    assert parser.next_frame() == Frame(Opcode.TEXT, b"abc")


def test_fragments_with_interleaved_ping() -> None:
    """A ping between fragments is answered; the message is assembled."""
    server, _ = pair()
    events = server.receive_data(
        client_frame(Opcode.TEXT, b"frag", fin=False)
        + client_frame(Opcode.PING, b"are you there")
        + client_frame(Opcode.CONTINUATION, b"ment")
    )
    assert events == [Ping(b"are you there"), Message("fragment")]
    assert server.data_to_send() == serialize_frame(Frame(Opcode.PONG, b"are you there"))


def test_pong_event() -> None:
    """A pong is reported and owes nothing."""
    server, _ = pair()
    assert server.receive_data(client_frame(Opcode.PONG, b"x")) == [Pong(b"x")]
    assert server.data_to_send() == b""


def test_many_fragments_assemble() -> None:
    """A 4 MiB message in 65,536 fragments of 64 bytes is assembled exactly."""
    server, _ = pair(max_size=2**23)
    chunk = bytes(range(64))
    frames = [client_frame(Opcode.BINARY, chunk, fin=False)]
    frames += [client_frame(Opcode.CONTINUATION, chunk, fin=False)] * 65534
    frames.append(client_frame(Opcode.CONTINUATION, chunk))
    wire = b"".join(frames)
    events = []
    for i in range(0, len(wire), 65536):
        events += server.receive_data(wire[i : i + 65536])
    assert events == [Message(chunk * 65536)]


def failed(server: Protocol, code: int) -> None:
    """Assert the protocol failed with ``code`` and owes a close frame with it."""
    assert server.failure is not None and server.failure.code == code
    output = server.data_to_send()
    assert output[0] == 0x88 and int.from_bytes(output[2:4], "big") == code
    assert server.should_close_transport
    assert server.receive_data(client_frame(Opcode.TEXT, b"ignored")) == []


def test_continuation_without_start() -> None:
    """A continuation frame with no message started fails with 1002."""
    server, _ = pair()
    server.receive_data(client_frame(Opcode.CONTINUATION, b"x"))
    failed(server, 1002)


def test_new_message_inside_fragmented_one() -> None:
    """A new text frame while a message is unfinished fails with 1002."""
    server, _ = pair()
    server.receive_data(
        client_frame(Opcode.TEXT, b"a", fin=False) + client_frame(Opcode.TEXT, b"b")
    )
    failed(server, 1002)


def test_invalid_utf8_fails_at_the_bad_fragment() -> None:
    """Invalid UTF-8 fails with 1007 when its fragment arrives, before the message ends."""
    server, _ = pair()
    events = server.receive_data(
        client_frame(Opcode.TEXT, "κόσμε".encode(), fin=False)
        + client_frame(Opcode.CONTINUATION, b"\xf4\x90\x80\x80", fin=False)
    )
    assert events == []
    failed(server, 1007)


def test_max_size_over_fragments_fails_from_header() -> None:
    """Fragments adding up past max_size fail with 1009 at the over-limit header."""
    server, _ = pair(max_size=100)
    server.receive_data(client_frame(Opcode.BINARY, b"a" * 60, fin=False))
    assert server.failure is None
    header_only = client_frame(Opcode.CONTINUATION, b"b" * 41)[:6]
    server.receive_data(header_only)
    failed(server, 1009)


def test_message_exactly_max_size_is_fine() -> None:
    """A message of exactly max_size bytes is accepted."""
    server, _ = pair(max_size=100)
    assert server.receive_data(client_frame(Opcode.BINARY, b"a" * 100)) == [Message(b"a" * 100)]


def test_peer_initiated_close_on_server() -> None:
    """The peer closes: event, echo with the same code, CLOSED, server drops TCP."""
    server, client = pair()
    events = server.receive_data(client.send_close(1001, "going"))
    assert events == [CloseReceived(1001, "going")]
    assert server.state is State.CLOSING
    assert server.data_to_send() == serialize_frame(Frame(Opcode.CLOSE, b"\x03\xe9"))
    assert server.state is State.CLOSED
    assert server.should_close_transport
    error = server.close_exception()
    assert isinstance(error, ConnectionClosedOK) and error.code == 1001


def test_server_initiated_close_on_client() -> None:
    """The server closes: the client echoes, then waits for the server to drop TCP."""
    server, client = pair()
    events = client.receive_data(server.send_close(1000, "bye"))
    assert events == [CloseReceived(1000, "bye")]
    echo = client.data_to_send()
    assert client.state is State.CLOSED and not client.should_close_transport
    assert server.receive_data(echo) == [CloseReceived(1000, "")]
    assert server.state is State.CLOSED and server.should_close_transport
    client.receive_eof()
    assert client.should_close_transport


def test_empty_close_is_echoed_empty() -> None:
    """A close frame without a code (1005) is answered with an empty close frame."""
    server, _ = pair()
    assert server.receive_data(client_frame(Opcode.CLOSE, b"")) == [CloseReceived(1005, "")]
    assert server.data_to_send() == b"\x88\x00"
    assert isinstance(server.close_exception(), ConnectionClosedOK)


def test_data_after_close_is_ignored() -> None:
    """Frames after a close frame are not processed."""
    server, client = pair()
    events = server.receive_data(client.send_close() + client_frame(Opcode.TEXT, b"late"))
    assert events == [CloseReceived(1000, "")]


def test_cannot_send_after_close() -> None:
    """Every send after close_sent raises ConnectionClosed."""
    server, _ = pair()
    server.send_close()
    for send in (
        lambda: server.send_text("x"),
        lambda: server.send_binary(b"x"),
        lambda: server.send_ping(),
        lambda: server.send_close(),
    ):
        with pytest.raises(ConnectionClosed):
            send()


def test_pongs_not_sent_after_close() -> None:
    """A ping arriving after this side sent its close is not answered."""
    server, _ = pair()
    server.send_close()
    server.receive_data(client_frame(Opcode.PING, b"x"))
    assert server.data_to_send() == b""


def test_abnormal_closure_code() -> None:
    """Without any close frame, the closure is 1006 and an error."""
    server, _ = pair()
    server.receive_eof()
    assert server.state is State.CLOSED
    error = server.close_exception()
    assert isinstance(error, ConnectionClosedError) and error.code == 1006


def test_error_close_code_is_an_error() -> None:
    """A close with 1002 from the peer gives ConnectionClosedError."""
    server, client = pair()
    server.receive_data(client.send_close(1002, "broken"))
    server.data_to_send()
    assert isinstance(server.close_exception(), ConnectionClosedError)


def test_control_payload_limit() -> None:
    """Pings over 125 bytes are refused locally."""
    server, _ = pair()
    with pytest.raises(ValueError):
        server.send_ping(b"x" * 126)
