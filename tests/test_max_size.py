"""max_size bounds the message once inflated, over real sockets, with deflate on both ways."""

from __future__ import annotations

import os
import socket
import threading
import zlib
from typing import Iterator, List, Optional

import pytest

import wsthread
from conftest import ServerFactory, parse_frames, read_head
from wsthread.sansio.deflate import compressed_bound
from wsthread.sansio.frames import Frame, Opcode, parse_close, serialize_frame
from wsthread.sansio.handshake import accept_key
from wsthread.server import ServerConnection

LIMIT = 2**20  # the default max_size


def length_handler(ws: ServerConnection) -> None:
    """Answer every message with its length."""
    for message in ws:
        ws.send(str(len(message)))


def test_incompressible_message_of_max_size_is_accepted_by_the_server(
    make_server: ServerFactory,
) -> None:
    """2**20 random bytes from a deflate client: 1,048,897 bytes on the wire, accepted."""
    server = make_server(length_handler)
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        assert "permessage-deflate" in str(ws.response.headers.get("Sec-WebSocket-Extensions"))
        ws.send(os.urandom(LIMIT))
        assert ws.recv(timeout=10) == str(LIMIT)


def test_incompressible_message_over_max_size_is_refused_by_the_server(
    make_server: ServerFactory,
) -> None:
    """One byte more: the server fails the connection with 1009, saying why."""
    server = make_server(length_handler)
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        ws.send(os.urandom(LIMIT + 1))
        with pytest.raises(wsthread.ConnectionClosedError) as caught:
            ws.recv(timeout=10)
    assert caught.value.code == 1009
    assert f"max_size={LIMIT}" in caught.value.reason


def test_server_max_size_is_the_inflated_size(make_server: ServerFactory) -> None:
    """A highly compressible message over max_size is refused although its frame is small."""
    server = make_server(length_handler, max_size=10_000)
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        ws.send(b"x" * 10_000)
        assert ws.recv(timeout=10) == "10000"
        ws.send(b"x" * 10_001)
        with pytest.raises(wsthread.ConnectionClosedError) as caught:
            ws.recv(timeout=10)
    assert caught.value.code == 1009


def expanding_deflate(data: bytes, chunk: int = 256) -> bytes:
    """Compress ``data`` with a sync flush every ``chunk`` bytes, as a message's payload.

    A valid DEFLATE stream that is longer than ``data`` for random bytes
    (about 4% with 256-byte chunks), as some servers' compressors produce.
    """
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    pieces: List[bytes] = []
    for start in range(0, len(data), chunk):
        pieces.append(compressor.compress(data[start : start + chunk]))
        pieces.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    payload = b"".join(pieces)
    assert payload.endswith(b"\x00\x00\xff\xff")
    return payload[:-4]


class ExpandingServer:
    """A one-connection server by hand: accepts deflate, sends one compressed frame.

    Then it reads what the client answers until the client closes, and keeps
    the frames it received.
    """

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received: List[Frame] = []
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            sock, _ = self.listener.accept()
            with sock:
                sock.settimeout(10)
                head = read_head(sock).decode("latin-1")
                key = next(
                    line.split(":", 1)[1].strip()
                    for line in head.split("\r\n")
                    if line.lower().startswith("sec-websocket-key:")
                )
                sock.sendall(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Extensions: permessage-deflate\r\n"
                    + f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n".encode()
                )
                sock.sendall(serialize_frame(Frame(Opcode.BINARY, self.payload, rsv1=True)))
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
                    if any(
                        f.opcode is Opcode.CLOSE for f in parse_frames(data, expect_masked=True)
                    ):
                        break
                self.received = parse_frames(data, expect_masked=True, allowed_rsv1=True)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def join(self) -> None:
        self.thread.join(10)
        self.listener.close()
        assert self.error is None, self.error


@pytest.fixture
def message() -> Iterator[bytes]:
    """2**20 + 1 random bytes: the test takes what it needs."""
    yield os.urandom(LIMIT + 1)


def test_client_accepts_an_expanded_message_of_max_size(message: bytes) -> None:
    """A server whose compressor adds about 4%: the client takes 2**20 bytes all the same."""
    data = message[:LIMIT]
    payload = expanding_deflate(data)
    assert len(payload) > LIMIT + 30_000  # refused before max_size bounded the inflated size
    assert len(payload) <= compressed_bound(LIMIT)
    server = ExpandingServer(payload)
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/", close_timeout=2) as ws:
        assert ws.recv(timeout=10) == data
    server.join()


def test_client_refuses_an_expanded_message_over_max_size(message: bytes) -> None:
    """One byte more: the client sends 1009, and its exception says the reason it sent."""
    server = ExpandingServer(expanding_deflate(message))
    uri = f"ws://127.0.0.1:{server.port}/"
    with (
        wsthread.connect(uri, close_timeout=2) as ws,
        pytest.raises(wsthread.ConnectionClosedError) as caught,
    ):
        ws.recv(timeout=10)
    server.join()
    error = caught.value
    assert error.sent_code == 1009
    assert f"max_size={LIMIT}" in error.sent_reason
    assert f"sent 1009 ({error.sent_reason})" in str(error)
    closes = [frame for frame in server.received if frame.opcode is Opcode.CLOSE]
    assert [parse_close(frame.payload)[0] for frame in closes] == [1009]
