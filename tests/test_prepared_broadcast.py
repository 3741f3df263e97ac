"""Broadcasts framed once and written directly, over real sockets: order, limits, TLS, buffers."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from typing import Any, Dict, List, Optional

import pytest

import wsthread
from conftest import ServerFactory, raw_websocket, stalled_client, wait_until
from wsthread.sansio.frames import Frame, FrameParser, Opcode

WAIT = 30


def idle_handler(ws: wsthread.ServerConnection) -> None:
    """Keep the connection open, reading (and dropping) whatever the client sends."""
    for _ in ws:
        pass


def body(number: int) -> str:
    """A broadcast of about 80 bytes that compresses well, carrying its number."""
    return f'{{"n": {number:05d}, "kind": "order changed", "status": "shipped", "pad": "xxxxxx"}}'


SETTINGS: Dict[str, Any] = {
    "plain": None,
    "deflate, no context takeover": wsthread.Deflate(server_no_context_takeover=True),
    "deflate, context takeover": "deflate",
}


def read_all(client: Any, count: int, into: List[Any]) -> None:
    """Append ``count`` messages of ``client`` to ``into``."""
    for _ in range(count):
        into.append(client.recv(timeout=WAIT))


def broadcast_and_check(server: wsthread.WebSocketServer, clients: List[Any], count: int) -> None:
    """Broadcast ``count`` messages from two threads in turn; every client gets all, in order."""
    received: List[List[Any]] = [[] for _ in clients]
    readers = [
        threading.Thread(target=read_all, args=(client, count, into))
        for client, into in zip(clients, received)
    ]
    for reader in readers:
        reader.start()
    for number in range(count):
        assert server.broadcast(body(number)) == len(clients)
    for reader in readers:
        reader.join(WAIT)
    expected = [body(number) for number in range(count)]
    for index, messages in enumerate(received):
        assert messages == expected, f"client {index} lost or reordered broadcasts"


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_many_clients_get_every_broadcast_in_order(
    make_server: ServerFactory, setting: str
) -> None:
    """30 clients get 300 broadcasts each, in order, compressed or not, with or without takeover."""
    # No keepalive pings: the first comes at a random point of the interval, and
    # its 6 bytes would make one connection's byte count differ from the others.
    server = make_server(idle_handler, compression=SETTINGS[setting], ping_interval=None)
    uri = f"ws://127.0.0.1:{server.port}/"
    clients = [wsthread.connect(uri) for _ in range(30)]
    try:
        assert wait_until(lambda: len(server.connections) == 30)
        broadcast_and_check(server, clients, 300)
        sent = {connection.stats()["bytes_sent"] for connection in server.connections}
        if setting == "deflate, no context takeover":
            assert len(sent) == 1  # the same frames, byte for byte, on every connection
            assert sent.pop() < 300 * len(body(0))
        elif setting == "plain":
            assert sent == {300 * (2 + len(body(0)))}
    finally:
        for client in clients:
            client.close()


def test_tls_clients_get_every_broadcast_in_order(
    make_server: ServerFactory, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    """Over TLS the prepared (plaintext) frames are encrypted per connection by its transport."""
    server = make_server(
        idle_handler,
        ssl=server_ssl,
        compression=wsthread.Deflate(server_no_context_takeover=True),
    )
    uri = f"wss://localhost:{server.port}/"
    clients = [wsthread.connect(uri, ssl=client_ssl) for _ in range(10)]
    plain = [wsthread.connect(uri, ssl=client_ssl, compression=None) for _ in range(5)]
    try:
        assert wait_until(lambda: len(server.connections) == 15)
        broadcast_and_check(server, clients + plain, 200)
    finally:
        for client in clients + plain:
            client.close()


def read_frames(sock: socket.socket, parser: FrameParser, until: int) -> List[Frame]:
    """Read and parse frames from a raw client socket until ``until`` data messages ended."""
    frames: List[Frame] = []
    ended = 0
    while ended < until:
        data = sock.recv(65536)
        assert data, "the server closed the connection"
        parser.feed(data)
        while (frame := parser.next_frame()) is not None:
            frames.append(frame)
            if frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION) and frame.fin:
                ended += 1
    return frames


def test_a_broadcast_racing_a_fragmented_send_never_lands_inside_it(
    make_server: ServerFactory,
) -> None:
    """A handler sends fragmented messages while broadcasts fly: their frames never interleave."""
    messages, pieces, broadcasts = 20, 20, 400
    started = threading.Event()

    def fragmenting(ws: wsthread.ServerConnection) -> None:
        ws.recv(timeout=WAIT)
        started.set()

        def slow_pieces(number: int) -> Any:
            for piece in range(pieces):
                time.sleep(0.0005)  # hold the writer lock while broadcasts arrive
                yield b"F%02d-%02d;" % (number, piece)

        for number in range(messages):
            ws.send(slow_pieces(number))
        for _ in ws:
            pass

    server = make_server(fragmenting, compression=None)
    sock, _ = raw_websocket(server.port)
    sock.settimeout(WAIT)
    try:
        assert wait_until(lambda: len(server.connections) == 1)
        sock.sendall(b"\x81\x82abcd" + bytes(c ^ k for c, k in zip(b"go", b"abcd")))
        assert started.wait(WAIT)
        for number in range(broadcasts):
            server.broadcast(b"B%04d" % number)
            if number % 20 == 0:
                time.sleep(0.001)
        frames = read_frames(sock, FrameParser(expect_masked=False), messages + broadcasts)
    finally:
        sock.close()
    whole: List[bytes] = []
    open_message: Optional[bytearray] = None
    for frame in frames:
        if frame.opcode is Opcode.CONTINUATION:
            assert open_message is not None, "a continuation with no message open"
            open_message += frame.payload
        else:
            assert open_message is None, f"{frame!r} landed inside a fragmented message"
            open_message = bytearray(frame.payload)
        if frame.fin:
            whole.append(bytes(open_message))
            open_message = None
    fragmented = [m for m in whole if m.startswith(b"F")]
    assert fragmented == [
        b"".join(b"F%02d-%02d;" % (n, p) for p in range(pieces)) for n in range(messages)
    ]
    assert [m for m in whole if m.startswith(b"B")] == [b"B%04d" % n for n in range(broadcasts)]
    assert any(len(f.payload) == 7 and not f.fin for f in frames)  # it was sent in pieces


def test_a_stalled_client_is_closed_with_1013_and_the_others_get_everything(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Past write_limit the stalled client is closed with 1013; 20 others get every message."""
    server = make_server(idle_handler, compression=None, write_limit=128 * 1024, write_timeout=10)
    uri = f"ws://127.0.0.1:{server.port}/"
    healthy = [wsthread.connect(uri, compression=None) for _ in range(20)]
    stalled = stalled_client(server.port)
    caplog.set_level(logging.WARNING, logger="wsthread")
    try:
        assert wait_until(lambda: len(server.connections) == 21)
        received: List[List[Any]] = [[] for _ in healthy]
        readers = [
            threading.Thread(target=read_all, args=(client, 400, into))
            for client, into in zip(healthy, received)
        ]
        for reader in readers:
            reader.start()
        # 400 x 8 KiB = 3.2 MiB, far past what the stalled one's sockets hold
        taken = [server.broadcast(n.to_bytes(4, "big") + bytes(8188)) for n in range(400)]
        for reader in readers:
            reader.join(WAIT)
        for index, messages in enumerate(received):
            numbers = [int.from_bytes(m[:4], "big") for m in messages]
            assert numbers == list(range(400)), f"client {index} lost or reordered messages"
        assert taken[0] == 21 and taken[-1] == 20  # the stalled one dropped out on the way
        assert wait_until(lambda: len(server.connections) == 20)
        assert any(
            "too slow" in r.getMessage() and "1013" in r.getMessage() for r in caplog.records
        )
        # What the stalled client finds once it reads: its messages in order, then the end.
        stalled.settimeout(WAIT)
        parser = FrameParser(expect_masked=False)
        frames: List[Frame] = []
        while data := stalled.recv(65536):
            parser.feed(data)
            while (frame := parser.next_frame()) is not None:
                frames.append(frame)
        numbers = [
            int.from_bytes(f.payload[:4], "big") for f in frames if f.opcode is Opcode.BINARY
        ]
        assert numbers == list(range(len(numbers))) and len(numbers) < 400
        closes = [f for f in frames if f.opcode is Opcode.CLOSE]
        assert all(f.payload[:2] == (1013).to_bytes(2, "big") for f in closes)
    finally:
        stalled.close()
        for client in healthy:
            client.close()


MANY = 1280  # broadcasts of 8 KiB: 10 MiB


def test_buffered_amount_grows_for_a_stalled_peer_and_returns_to_0_once_drained(
    make_server: ServerFactory,
) -> None:
    """buffered_amount and stats()["backpressure"] follow a peer that stops, then reads again."""
    limit = 9 * 1024 * 1024
    server = make_server(idle_handler, compression=None, write_limit=limit)
    sock, _ = raw_websocket(server.port, receive_buffer=4096)
    sock.settimeout(WAIT)
    try:
        assert wait_until(lambda: len(server.connections) == 1)
        (connection,) = server.connections
        assert connection.buffered_amount == 0
        assert server.stats()["backpressure"] == {"buffered_amount": 0, "over_half_write_limit": 0}
        # 10 MiB: the kernel holds at most its 4 MiB send buffer (tcp_wmem) and the
        # client's 4 KiB; the rest, over half of the limit, waits for this peer.
        for number in range(MANY):
            assert server.broadcast(number.to_bytes(4, "big") + bytes(8188)) == 1
        pressure = server.stats()["backpressure"]
        waiting = connection.buffered_amount
        assert limit > pressure["buffered_amount"] >= waiting > limit // 2
        assert pressure["over_half_write_limit"] == 1
        frames = read_frames(sock, FrameParser(expect_masked=False), MANY)
        numbers = [int.from_bytes(f.payload[:4], "big") for f in frames]
        assert numbers == list(range(MANY))
        assert wait_until(lambda: connection.buffered_amount == 0)
        assert server.stats()["backpressure"] == {"buffered_amount": 0, "over_half_write_limit": 0}
    finally:
        sock.close()


def test_buffered_amount_counts_broadcasts_queued_behind_a_busy_writer(
    make_server: ServerFactory,
) -> None:
    """Broadcasts queued while another thread holds the writer count too, then go out."""
    server = make_server(idle_handler, compression=None)
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/", compression=None) as client:
        assert wait_until(lambda: len(server.connections) == 1)
        (connection,) = server.connections
        with connection.writer:  # as a send() in progress on another thread
            assert server.broadcast(b"a" * 1000) == 1
            assert server.broadcast(b"b" * 1000) == 1
            assert connection.buffered_amount == 2000
        assert client.recv(timeout=WAIT) == b"a" * 1000
        assert client.recv(timeout=WAIT) == b"b" * 1000
        assert wait_until(lambda: connection.buffered_amount == 0)


def test_buffered_amount_read_from_many_threads_while_broadcasts_fly(
    make_server: ServerFactory,
) -> None:
    """4 threads read buffered_amount and stats() in 2,000 broadcasts: never negative, then 0."""
    server = make_server(idle_handler, compression=None)
    stop = threading.Event()
    errors: List[BaseException] = []
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/", compression=None) as client:
        assert wait_until(lambda: len(server.connections) == 1)
        (connection,) = server.connections

        def watch() -> None:
            try:
                while not stop.is_set():
                    assert connection.buffered_amount >= 0
                    pressure = server.stats()["backpressure"]
                    assert pressure["buffered_amount"] >= 0
                    assert pressure["over_half_write_limit"] in (0, 1)
            except BaseException as exc:  # reported below
                errors.append(exc)

        watchers = [threading.Thread(target=watch) for _ in range(4)]
        for watcher in watchers:
            watcher.start()
        received: List[Any] = []
        reader = threading.Thread(target=read_all, args=(client, 2000, received))
        reader.start()
        for number in range(2000):
            server.broadcast(b"%05d" % number + bytes(500))
        reader.join(WAIT)
        stop.set()
        for watcher in watchers:
            watcher.join(WAIT)
        assert not errors, errors
        assert [m[:5] for m in received] == [b"%05d" % n for n in range(2000)]
        assert wait_until(lambda: connection.buffered_amount == 0)
