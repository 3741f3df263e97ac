"""wsthread.server.registry: slots, threads, stats() and the shutdown sequence, with fakes."""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

import pytest

from wsthread.exceptions import ServiceUnavailable
from wsthread.runtime.deadline import Deadline
from wsthread.server.registry import (
    AFTER_DROP,
    Registry,
    asked_to_close,
    close_together,
    open_on,
)
from wsthread.stats import ServerCounters


class FakeTransport:
    def __init__(self, unsent: int) -> None:
        self.unsent = unsent


class FakeConnection:
    """What the registry uses of a connection: closing, stats() and two buffer figures."""

    def __init__(
        self, sent: int = 0, latency: Optional[float] = None, busy_writer: int = 0
    ) -> None:
        self.received_bytes = 10
        self.transport = FakeTransport(3)
        self.buffered_amount = 3 + sent * 100
        self.writer = SimpleNamespace(write_limit=300)
        self.sent = sent
        self.latency = latency
        self.busy_writer = busy_writer
        self.closed_with: List[Any] = []
        self.begun_with: List[Any] = []
        self.waited: List[Optional[float]] = []

    def stats(self) -> Dict[str, Any]:
        return {
            "messages_received": 1,
            "bytes_received": 5,
            "messages_sent": self.sent,
            "bytes_sent": 7,
            "queued": 2,
            "latency": self.latency,
        }

    def _close_begin(self, code: int, reason: str) -> bool:
        """As a connection whose writer is free, unless ``busy_writer`` says for how many tries."""
        if self.busy_writer:
            self.busy_writer -= 1
            return False
        self.begun_with.append((code, reason, threading.current_thread()))
        return True

    def _close_wait(self, timeout: Optional[float]) -> bool:
        """Ended at once if begun; one never begun is dropped (and ends at the next look)."""
        self.waited.append(timeout)
        if self.begun_with:
            self.closed_with.append(self.begun_with[-1][:2])
            return True
        if self.closed_with:
            return True
        self.closed_with.append("dropped")
        return False


def make_registry(closing: bool = False) -> Registry:
    return Registry(threading.RLock(), lambda: closing, ServerCounters())


def open_connection(registry: Registry, connection: Any) -> None:
    """Reserve a slot and register ``connection`` on this thread, as a handshake does."""
    registry.reserve(None)
    registry.register(connection)


def connection_thread(registry: Registry, sock: socket.socket, body: Any) -> threading.Thread:
    """Start a thread of ``registry`` serving ``sock``: it runs ``body``, then leaves."""

    def run() -> None:
        try:
            body()
        finally:
            registry.remove_thread(threading.current_thread())

    thread = threading.Thread(target=run)
    registry.add_thread(thread, sock, started_here=True)
    thread.start()
    return thread


def test_reserve_refuses_beyond_the_limit_and_while_closing() -> None:
    """A full server or one shutting down answers 503; an unreserved slot is free again."""
    registry = make_registry()
    assert registry.reserve(1)
    with pytest.raises(ServiceUnavailable, match="full"):
        registry.reserve(1)
    registry.unreserve()
    assert registry.reserve(1)
    with pytest.raises(ServiceUnavailable, match="shutting down"):
        make_registry(closing=True).reserve(None)


def test_register_and_forget_count_traffic_once_and_track_the_thread() -> None:
    """A registered connection is open on this thread; forgetting it folds its traffic in once."""
    registry = make_registry()
    connection = FakeConnection(sent=4)
    open_connection(registry, connection)
    assert registry.snapshot() == [connection]
    assert registry.opening == 0
    assert open_on(threading.current_thread()) is connection
    registry.forget(connection)  # type: ignore[arg-type]
    registry.forget(connection)  # type: ignore[arg-type]
    assert open_on(threading.current_thread()) is None
    assert registry.stats()["traffic"]["messages_sent"] == 4


def test_stats_add_the_open_connections_to_the_counters() -> None:
    """Open connections count in open, buffered, traffic, queued and latency."""
    registry = make_registry()
    open_connection(registry, FakeConnection(sent=1, latency=0.5))
    open_connection(registry, FakeConnection(sent=2, latency=1.5))
    registry.reserve(None)
    stats = registry.stats()
    assert stats["connections"]["open"] == 2
    assert stats["connections"]["opening"] == 1
    assert stats["buffered"] == {"received": 20, "to_send": 6}
    assert stats["traffic"]["messages_sent"] == 3
    assert stats["queued"] == 4
    # 103 and 203 bytes waiting, against half of a 300-byte limit: one is slow.
    assert stats["backpressure"] == {"buffered_amount": 306, "over_half_write_limit": 1}
    assert stats["latency"] == {"max": 1.5, "mean": 1.0}
    assert make_registry().stats()["latency"] == {"max": None, "mean": None}


def test_close_together_begins_every_close_then_waits_against_one_deadline() -> None:
    """No thread per connection: each close begins on the caller's thread, then is awaited."""
    connections: List[Any] = [FakeConnection() for _ in range(3)]
    before = threading.active_count()
    close_together(connections, 1001, "bye", Deadline(10))
    assert threading.active_count() == before
    me = threading.current_thread()
    assert [each.begun_with for each in connections] == [[(1001, "bye", me)]] * 3
    assert [each.closed_with for each in connections] == [[(1001, "bye")]] * 3
    assert all(0 < each.waited[0] <= 10 for each in connections)


def test_close_together_retries_a_busy_writer_until_the_deadline() -> None:
    """A writer busy for a moment is tried again; one busy past the deadline is dropped."""
    moment = FakeConnection(busy_writer=2)  # free again on the third try
    stuck = FakeConnection(busy_writer=10**9)
    started = time.monotonic()
    close_together([moment, stuck], 1001, "bye", Deadline(0.2))
    assert 0.2 <= time.monotonic() - started < 5
    assert moment.begun_with[0][2] is threading.current_thread()
    assert moment.closed_with == [(1001, "bye")]
    assert stuck.begun_with == []
    assert stuck.closed_with == ["dropped"]
    # No time left: its TCP connection is dropped at once, then its end awaited a moment.
    assert stuck.waited[0] == 0 and 0 < stuck.waited[1] <= AFTER_DROP


def test_close_all_closes_open_connections_and_wakes_handshaking_threads() -> None:
    """Open connections get the close code; a thread in a handshake has its socket shut down."""
    registry = make_registry()
    connection = FakeConnection()
    registry.connections[connection] = threading.current_thread()  # type: ignore[index]
    ours, theirs = socket.socketpair()
    received: List[bytes] = []
    in_recv = threading.Event()

    asked: List[bool] = []

    def handshaking() -> None:
        in_recv.set()
        received.append(ours.recv(10))
        asked.append(asked_to_close())
        ours.sendall(b"a late 101")  # shut down for reading only: writing still works

    thread = connection_thread(registry, ours, handshaking)
    in_recv.wait(10)
    registry.close_all(1001, "shutting down", Deadline(10))
    assert connection.closed_with == [(1001, "shutting down")]
    assert received == [b""]  # woken by the shutdown, not by data
    assert asked == [True]  # a WebSocket it opened now would close with 1001 at once
    assert theirs.recv(100) == b"a late 101"
    assert not asked_to_close()  # only the threads that were woken
    assert not thread.is_alive()
    ours.close()
    theirs.close()


def test_close_all_joins_a_thread_that_left_the_registry_while_connections_closed() -> None:
    """A thread of ours that leaves the registry during the closes is still joined.

    It is in the shutdown's first look, and leaves (then takes a moment to
    end) while the open connections close: shutdown returns only once it
    has ended, as it does for one that leaves later.
    """
    registry = make_registry()
    ours, theirs = socket.socketpair()
    left = threading.Event()

    def woken_then_slow_to_end() -> None:
        ours.recv(10)  # until close_all shuts it down for reading
        registry.remove_thread(threading.current_thread())
        left.set()
        time.sleep(0.3)  # socketserver's own tidying, after it left

    thread = threading.Thread(target=woken_then_slow_to_end)
    registry.add_thread(thread, ours, started_here=True)
    thread.start()
    connection = FakeConnection()
    connection._close_wait = lambda timeout: left.wait(10)  # type: ignore[method-assign]
    registry.connections[connection] = threading.current_thread()  # type: ignore[index]
    registry.close_all(1001, "shutting down", Deadline(10))
    assert left.is_set()
    assert not thread.is_alive()
    ours.close()
    theirs.close()


def test_close_all_closes_another_servers_connection_on_our_thread() -> None:
    """A thread of ours running another registry's WebSocket: closed with 1001, socket kept."""
    ours, other = make_registry(), make_registry()
    sock, peer = socket.socketpair()
    guest = FakeConnection()
    registered = threading.Event()
    release = threading.Event()

    def serving_a_middleware() -> None:
        open_connection(other, guest)  # the middleware's server opens it
        registered.set()
        release.wait(10)
        other.forget(guest)  # type: ignore[arg-type]

    connection_thread(ours, sock, serving_a_middleware)
    registered.wait(10)

    def closed_means_done(timeout: Optional[float]) -> bool:
        guest.closed_with.append(guest.begun_with[-1][:2])
        release.set()
        return True

    guest._close_wait = closed_means_done  # type: ignore[method-assign]
    ours.close_all(1001, "server shutting down", Deadline(10))
    assert guest.closed_with == [(1001, "server shutting down")]
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(1)  # not shut down: no end of stream
    sock.close()
    peer.close()


def test_wait_for_threads_warns_about_a_thread_still_there(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A thread that has not left by the deadline is named in a warning."""
    registry = make_registry()
    thread = threading.Thread(name="still-serving")
    registry.add_thread(thread, socket.socket())
    with caplog.at_level(logging.WARNING, logger="wsthread"):
        registry.wait_for_threads([thread], Deadline(0))
    assert "still-serving is still running after shutdown" in caplog.text
