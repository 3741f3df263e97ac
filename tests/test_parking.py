"""Parking of idle reads (wsthread/parking.py): unit tests on socket pairs, then a real server."""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import List

import pytest

import wsthread
from conftest import ServerFactory, raw_websocket, wait_until
from wsthread.connection import parking
from wsthread.connection.transport import Transport
from wsthread.server import ServerConnection

pytestmark = pytest.mark.skipif(not parking.available(), reason="parking needs epoll (Linux)")


def test_wait_returns_once_data_arrives() -> None:
    """A parked wait returns True when its socket becomes readable, and leaves the lot."""
    lot = parking.Parking()
    a, b = socket.socketpair()
    with a, b:
        result: List[bool] = []
        thread = threading.Thread(target=lambda: result.append(lot.wait(a)))
        thread.start()
        assert wait_until(lambda: lot.parked == 1)
        b.sendall(b"x")
        thread.join(10)
        assert result == [True]
        assert lot.parked == 0 and lot.waking == 0
        assert a.recv(1) == b"x"


def test_wait_times_out_and_leaves_the_lot() -> None:
    """A parked wait with a timeout returns False when nothing arrives, and unregisters."""
    lot = parking.Parking()
    a, b = socket.socketpair()
    with a, b:
        began = time.monotonic()
        assert lot.wait(a, 0.2) is False
        assert time.monotonic() - began >= 0.19
        assert lot.parked == 0
        b.sendall(b"x")  # no stale registration wakes anything now
        assert lot.wait(a, 5) is True


def test_eof_wakes_a_parked_wait() -> None:
    """The peer closing (EOF) wakes a parked wait, and shutdown() on our side does too."""
    lot = parking.Parking()
    for ours in (False, True):
        a, b = socket.socketpair()
        with a, b:
            result: List[bool] = []
            thread = threading.Thread(target=lambda: result.append(lot.wait(a)))  # noqa: B023
            thread.start()
            assert wait_until(lambda: lot.parked == 1)
            if ours:
                a.shutdown(socket.SHUT_RDWR)
            else:
                b.close()
            thread.join(10)
            assert result == [True]
            assert a.recv(1) == b""


def test_many_readable_at_once_are_let_in_a_few_at_a_time() -> None:
    """Sixty sockets ending together: every waiter returns, never more than ``admit`` waking."""
    lot = parking.Parking(admit=2)
    pairs = [socket.socketpair() for _ in range(60)]
    results: List[bool] = []
    results_lock = threading.Lock()
    most_waking = [0]
    stop = threading.Event()

    def park(sock: socket.socket) -> None:
        woke = lot.wait(sock, 30)
        with results_lock:
            results.append(woke)

    def sample() -> None:
        while not stop.is_set():
            most_waking[0] = max(most_waking[0], lot.waking)

    threads = [threading.Thread(target=park, args=(a,)) for a, _ in pairs]
    for thread in threads:
        thread.start()
    assert wait_until(lambda: lot.parked == 60)
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        for _, b in pairs:
            b.close()
        for thread in threads:
            thread.join(30)
    finally:
        stop.set()
        sampler.join()
        for a, b in pairs:
            a.close()
            b.close()
    assert results == [True] * 60
    assert lot.parked == 0 and lot.waking == 0
    assert 1 <= most_waking[0] <= 2


def test_a_socket_closed_under_its_parked_reader_wakes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Closed without a shutdown (no epoll event): the parking thread's sweep wakes the reader."""
    monkeypatch.setattr(parking, "_SWEEP", 0.2)
    lot = parking.Parking()
    a, b = socket.socketpair()
    with b:
        result: List[bool] = []
        thread = threading.Thread(target=lambda: result.append(lot.wait(a)))
        thread.start()
        assert wait_until(lambda: lot.parked == 1)
        a.close()
        thread.join(10)
        assert result == [True]
        assert lot.parked == 0 and lot.waking == 0


def test_a_reused_descriptor_wakes_the_reader_parked_on_its_closed_socket() -> None:
    """A descriptor closed under a parked reader and parked again by a new socket: the old wakes."""
    lot = parking.Parking()
    a, b = socket.socketpair()
    result: List[bool] = []
    thread = threading.Thread(target=lambda: result.append(lot.wait(a)))
    thread.start()
    assert wait_until(lambda: lot.parked == 1)
    fd = a.fileno()
    a.close()
    c, d = socket.socketpair()  # c takes the lowest free descriptor: a's
    with b, c, d:
        assert c.fileno() == fd
        assert lot.wait(c, 0.1) is False  # parks on the same descriptor
        thread.join(10)
        assert result == [True]


def test_transport_quiet_makes_the_next_read_park_at_once() -> None:
    """After a wake from parking the reader calls quiet, the next read skips the kernel wait."""
    a, b = socket.socketpair()
    with a, b:
        transport = Transport(a)
        lot = parking.Parking.instance()
        before = lot.parked
        result: List[bytes] = []
        thread = threading.Thread(target=lambda: result.append(transport.recv(100)))
        thread.start()
        assert wait_until(lambda: lot.parked > before, 10)
        b.sendall(b"pong")
        thread.join(10)
        assert result == [b"pong"]
        # From now on a read that blocks in the kernel waits 60 s there before it parks.
        a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 60, 0))
        transport.quiet()
        thread = threading.Thread(target=lambda: result.append(transport.recv(100)))
        thread.start()
        assert wait_until(lambda: lot.parked > before, 10)  # parked at once
        b.sendall(b"data")
        thread.join(10)
        assert result == [b"pong", b"data"]
        # Not quiet: the next read waits in the kernel, unparked.
        thread = threading.Thread(target=lambda: result.append(transport.recv(100)))
        thread.start()
        time.sleep(0.5)
        assert lot.parked == before
        b.sendall(b"more")
        thread.join(10)
        assert result == [b"pong", b"data", b"more"]


def test_transport_read_parks_when_idle_and_still_gets_the_data() -> None:
    """Transport.recv() with no timeout parks after IDLE seconds and returns the bytes that come."""
    a, b = socket.socketpair()
    with a, b:
        transport = Transport(a)
        before = parking.Parking.instance().parked
        result: List[bytes] = []
        thread = threading.Thread(target=lambda: result.append(transport.recv(100)))
        thread.start()
        assert wait_until(lambda: parking.Parking.instance().parked > before, 10)
        b.sendall(b"hello")
        thread.join(10)
        assert result == [b"hello"]
        # A timed read parks past IDLE too, and still times out on time.
        began = time.monotonic()
        with pytest.raises(socket.timeout):
            transport.recv(100, parking.IDLE + 0.3)
        assert time.monotonic() - began >= parking.IDLE + 0.25


def test_idle_server_connection_parks_and_still_echoes(make_server: ServerFactory) -> None:
    """A handler idle in recv() parks; a message sent later is still echoed."""
    server = make_server(compression=None)
    before = parking.Parking.instance().parked
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/", compression=None) as client:
        # The server's handler and the client's reader thread both park.
        assert wait_until(lambda: parking.Parking.instance().parked >= before + 1, 10)
        client.send("still there?")
        assert client.recv(timeout=10) == "still there?"


def test_idle_connections_dropped_at_once_all_end(make_server: ServerFactory) -> None:
    """Two hundred parked connections dropped together: every handler ends, nothing stays open."""
    ended: List[int] = []
    lock = threading.Lock()

    def handler(ws: ServerConnection) -> None:
        try:
            for message in ws:
                ws.send(message)
        finally:
            with lock:
                ended.append(1)

    server = make_server(handler, compression=None, max_connections=None)
    before = parking.Parking.instance().parked
    sockets = [raw_websocket(server.port)[0] for _ in range(200)]
    try:
        assert wait_until(lambda: len(server.connections) == 200, 20)
        assert wait_until(lambda: parking.Parking.instance().parked >= before + 200, 20)
    finally:
        for sock in sockets:
            sock.close()
    assert wait_until(lambda: len(ended) == 200 and not server.connections, 60), (
        len(ended),
        len(server.connections),
    )


def test_a_pong_on_an_idle_connection_parks_its_reader_again_at_once(
    make_server: ServerFactory,
) -> None:
    """A pong wakes a parked handler, which parks again without waiting in the kernel first.

    The server-side socket's kernel wait is made 60 s long once the
    handler has parked, so a read that went back to the kernel would keep
    the connection unparked for the whole test. A message, by contrast,
    keeps the old rule: the handler waits in the kernel for what may follow.
    """
    connections: List[ServerConnection] = []

    def handler(ws: ServerConnection) -> None:
        connections.append(ws)
        for message in ws:
            ws.send(message)

    server = make_server(handler, compression=None)
    lot = parking.Parking.instance()
    before = lot.parked
    sock, _ = raw_websocket(server.port)
    with sock:
        assert wait_until(lambda: lot.parked == before + 1, 10)
        connections[0].socket.setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 60, 0)
        )
        woken = lot.woken
        sock.sendall(b"\x8a\x80\x00\x00\x00\x00")  # an unsolicited pong, zero mask key
        assert wait_until(lambda: lot.woken > woken, 10)
        assert wait_until(lambda: lot.parked == before + 1, 10)  # parked again at once
        sock.sendall(b"\x81\x82\x00\x00\x00\x00hi")  # a text message
        assert sock.recv(100) == b"\x81\x02hi"
        time.sleep(0.5)
        assert lot.parked == before  # waiting in the kernel for what may follow
