"""Parking of idle reads (wsthread/parking.py): unit tests on socket pairs, then a real server."""

from __future__ import annotations

import socket
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
