"""ping() and latency over a real socket: the pong is read as it arrives, not after HOLD."""

from __future__ import annotations

import statistics
import sysconfig
import threading
import time
from typing import Callable, List

import wsthread
from conftest import ServerFactory
from wsthread.client import ClientConnection
from wsthread.connection.messages import HOLD

ROUNDS = 15
# The real round trip on loopback, with room for a busy machine; a free-threaded
# build runs this Python about twice as slowly (2.6 ms seen there at a load of 1,000).
BOUND = 0.005 if sysconfig.get_config_var("Py_GIL_DISABLED") else 0.002


def timed_ping(ws: ClientConnection) -> float:
    """Seconds from ``ping()`` to its pong being seen; checks ``latency`` agrees."""
    start = time.monotonic()
    assert ws.ping().wait(5)
    elapsed = time.monotonic() - start
    assert ws.latency is not None and ws.latency <= elapsed
    return elapsed


def check(rounds: List[float], latencies: List[float]) -> None:
    """The best round is the real round trip; none waits anywhere near HOLD."""
    assert min(latencies) <= BOUND, latencies
    assert statistics.median(rounds) < HOLD / 5, rounds


def run_rounds(step: Callable[[], ClientConnection]) -> None:
    """Run ``step`` (which leaves a connection in the case under test) ROUNDS times."""
    rounds: List[float] = []
    latencies: List[float] = []
    for _ in range(ROUNDS):
        ws = step()
        rounds.append(timed_ping(ws))
        assert ws.latency is not None
        latencies.append(ws.latency)
    check(rounds, latencies)


def test_ping_right_after_connect(make_server: ServerFactory) -> None:
    """connect(); ping().wait(): the health check sees the loopback round trip."""
    server = make_server()
    opened: List[ClientConnection] = []

    def step() -> ClientConnection:
        ws = wsthread.connect(f"ws://127.0.0.1:{server.port}/")
        opened.append(ws)
        return ws

    try:
        run_rounds(step)
    finally:
        for ws in opened:
            ws.close()


def test_ping_right_after_recv(make_server: ServerFactory) -> None:
    """After recv() returned (the reader thread holding off): the pong is still read at once."""
    server = make_server()
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:

        def step() -> ClientConnection:
            ws.send("hello")
            assert ws.recv(timeout=5) == "hello"
            return ws

        time.sleep(HOLD * 2)  # let the reader thread start, so it is the one holding off
        run_rounds(step)


def test_ping_while_another_thread_waits_in_recv(make_server: ServerFactory) -> None:
    """A thread reading in recv() reads the pong itself; the round trip stays short."""
    server = make_server()
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        received: List[object] = []
        reading = threading.Thread(target=lambda: received.append(ws.recv(timeout=10)))
        reading.start()
        time.sleep(0.05)
        try:
            run_rounds(lambda: ws)
        finally:
            ws.send("done")
            reading.join(10)
        assert received == ["done"]


def test_server_side_ping_after_recv(make_server: ServerFactory) -> None:
    """A handler that pings between two recv() calls gets its pong promptly too."""
    results: List[float] = []

    def handler(ws: wsthread.ServerConnection) -> None:
        for message in ws:
            start = time.monotonic()
            assert ws.ping().wait(5)
            results.append(time.monotonic() - start)
            assert ws.latency is not None
            results.append(ws.latency)
            ws.send(message)

    server = make_server(handler)
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        for _ in range(ROUNDS):
            ws.send("x")
            assert ws.recv(timeout=5) == "x"
    check(results[0::2], results[1::2])
