"""send() and broadcast() refuse what they cannot send before any byte leaves, over real sockets."""

from __future__ import annotations

import logging
import queue
import socket
import threading
from typing import Any, Iterator, List, Tuple

import pytest

from conftest import ServerFactory, parse_frames, raw_websocket
from wsthread.sansio.frames import Frame, Opcode
from wsthread.server import ServerConnection, WebSocketServer

Held = Tuple[WebSocketServer, ServerConnection, socket.socket]


@pytest.fixture
def held(make_server: ServerFactory) -> Iterator[Held]:
    """A server whose handler hands its connection to the test and waits; a raw client on it."""
    handed: queue.Queue[ServerConnection] = queue.Queue()
    done = threading.Event()

    def handler(ws: ServerConnection) -> None:
        handed.put(ws)
        done.wait(10)

    server = make_server(handler, ping_interval=None, compression=None)
    sock, _ = raw_websocket(server.port)
    ws = handed.get(timeout=5)
    yield server, ws, sock
    done.set()
    sock.close()


def frames_until(sock: socket.socket, count: int) -> List[Frame]:
    """Read from the raw client until ``count`` whole frames have arrived."""
    data = b""
    while True:
        frames = parse_frames(data, expect_masked=False)
        if len(frames) >= count:
            return frames
        chunk = sock.recv(65536)
        assert chunk, f"closed after {frames}"
        data += chunk


def nothing_pending(sock: socket.socket) -> bytes:
    """Whatever the raw client can read without waiting (b"" when nothing arrived)."""
    sock.setblocking(False)
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return b""
    finally:
        sock.setblocking(True)
        sock.settimeout(5)


REFUSED: List[Tuple[object, str]] = [
    ({"a": 1}, "send_json"),
    ({"x", "y"}, "set"),
    (frozenset({"x"}), "frozenset"),
    (42, "int"),
    (1.5, "float"),
    (None, "None"),
    (object(), "object"),
    (["a", b"b"], "mixing str and bytes"),
    (("a", bytearray(b"b"), "c"), "mixing str and bytes"),
    ([{"a": 1}], "send_json"),
    ([1, 2, 3], "item 0 is int"),
]


@pytest.mark.parametrize(("message", "said"), REFUSED, ids=[repr(m)[:20] for m, _ in REFUSED])
def test_send_refuses_before_any_frame_and_the_connection_stays_usable(
    held: Held, message: Any, said: str
) -> None:
    """The TypeError names the problem; the peer gets no frame; the next send arrives alone."""
    _, ws, sock = held
    with pytest.raises(TypeError, match=said):
        ws.send(message)
    assert ws.protocol.close_sent is None and not ws.closed
    ws.send("next")
    frames = frames_until(sock, 1)
    assert [(frame.opcode, frame.payload, frame.fin) for frame in frames] == [
        (Opcode.TEXT, b"next", True)
    ]
    assert ws.stats()["messages_sent"] == 1


def test_a_list_of_one_kind_is_still_sent_as_fragments(
    held: Held,
) -> None:
    """The check accepts what worked before: a list of str, a tuple of bytes-likes."""
    _, ws, sock = held
    ws.send(["ab", "cd"])
    ws.send((b"ef", bytearray(b"gh"), memoryview(b"ij")))  # type: ignore[arg-type]
    frames = frames_until(sock, 7)
    assert [frame.opcode for frame in frames] == [
        Opcode.TEXT,
        Opcode.CONTINUATION,
        Opcode.CONTINUATION,
        Opcode.BINARY,
        Opcode.CONTINUATION,
        Opcode.CONTINUATION,
        Opcode.CONTINUATION,
    ]
    assert b"".join(frame.payload for frame in frames) == b"abcdefghij"


def test_a_generator_that_switches_type_fails_with_1011_and_says_so(
    held: Held,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A generator can only be checked as it goes: half a message out, then 1011, logged."""
    _, ws, sock = held

    def pieces() -> Iterator[object]:
        yield "first"
        yield b"second"

    with (
        caplog.at_level(logging.WARNING, logger="wsthread"),
        pytest.raises(TypeError, match="closed with 1011"),
    ):
        ws.send(pieces())  # type: ignore[arg-type]
    frames = frames_until(sock, 2)
    assert [frame.opcode for frame in frames] == [Opcode.TEXT, Opcode.CLOSE]
    assert frames[1].payload[:2] == (1011).to_bytes(2, "big")
    assert "closing with 1011" in caplog.text and "after 1 fragment" in caplog.text


def test_a_generator_whose_first_piece_is_bad_sends_nothing(
    held: Held,
) -> None:
    """Nothing went out yet: a TypeError, no close, and the next message arrives."""
    _, ws, sock = held
    with pytest.raises(TypeError, match="expected str or bytes-like"):
        ws.send(iter([3]))  # type: ignore[arg-type]
    assert nothing_pending(sock) == b""
    ws.send(b"fine")
    assert [(f.opcode, f.payload) for f in frames_until(sock, 1)] == [(Opcode.BINARY, b"fine")]


@pytest.mark.parametrize(
    ("message", "said"),
    [({"a": 1}, "broadcast_json"), (None, "None"), (7, "int"), (["a", "b"], "one str")],
)
def test_broadcast_refuses_the_same_and_sends_nothing(held: Held, message: Any, said: str) -> None:
    """broadcast() of a dict, None, a number or a list raises; the next broadcast arrives alone."""
    server, ws, sock = held
    with pytest.raises(TypeError, match=said):
        server.broadcast(message)
    assert ws.subscribe("news")
    json_said = said.replace("broadcast_json", "publish_json\\(topic, obj\\)")
    with pytest.raises(TypeError, match=json_said):
        server.publish("news", message)  # publish() refuses the same
    assert server.broadcast("after") == 1
    frames = frames_until(sock, 1)
    assert [(f.opcode, f.payload) for f in frames] == [(Opcode.TEXT, b"after")]
