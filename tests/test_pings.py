"""Pings and the keepalive schedule on a fake transport: pongs, deadlines, and their races."""

from __future__ import annotations

import threading
from typing import Any, List, Optional

from test_writer import WAIT, FakeTransport, make, opcodes_and_payloads

from wsthread.connection.pings import Pings
from wsthread.connection.writer import Writer
from wsthread.sansio.frames import Opcode


def ping_payloads(transport: FakeTransport) -> List[bytes]:
    """The payloads of the pings written so far."""
    sent = opcodes_and_payloads(bytes(transport.sent))
    return [payload for opcode, payload in sent if opcode == Opcode.PING]


def keepalive(writer: Writer, failures: List[Any]) -> Pings:
    def fail(code: int, reason: str) -> None:
        failures.append((code, reason))
        writer.fail(code, reason)

    return Pings(writer, writer.protocol, writer.logger, fail)


class NoticedLock:
    """A lock that sets ``contended`` when a thread has to wait for it."""

    def __init__(self, contended: threading.Event) -> None:
        self._lock = threading.Lock()
        self.contended = contended

    def __enter__(self) -> None:
        if not self._lock.acquire(blocking=False):
            self.contended.set()
            self._lock.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()


def test_an_unanswered_keepalive_ping_closes_with_1011_and_a_pong_clears_it() -> None:
    """tick(): a ping when due; its pong in time keeps the connection, none closes it."""
    transport = FakeTransport()
    writer = make(transport)
    failures: List[Any] = []
    pings = keepalive(writer, failures)
    pings.tick(0.0, 1.0, 5.0)  # arms the schedule
    pings.tick(1.0, 1.0, 5.0)  # due: a ping, answer by 6.0
    [payload] = ping_payloads(transport)
    pings.acknowledge(payload)
    assert pings.latency is not None
    pings.tick(6.5, 1.0, 5.0)  # past the old deadline, but answered: a new ping
    assert not failures and len(ping_payloads(transport)) == 2
    pings.tick(12.0, 1.0, 5.0)  # that one went unanswered
    assert failures == [(1011, "keepalive ping timeout")]
    transport.close()


def test_postponing_never_brings_back_a_deadline_the_pong_cleared() -> None:
    """A pong acknowledged while postpone_deadline() decides waits for it: no late 1011."""
    transport = FakeTransport()
    writer = make(transport)
    failures: List[Any] = []
    pings = keepalive(writer, failures)
    pings.tick(0.0, 100.0, 5.0)
    pings.tick(100.0, 100.0, 5.0)  # a ping, answer by 105.0; next one at 200.0
    [payload] = ping_payloads(transport)
    moved = threading.Event()  # the pong's thread waits for the lock, or is done
    pings.schedule_lock = NoticedLock(moved)  # type: ignore[assignment]
    pong: Optional[threading.Thread] = None

    class Now(float):
        """The keepalive's clock; the pong arrives while postpone_deadline() compares it."""

        def __ge__(self, other: object) -> bool:
            nonlocal pong
            if pong is None:
                pong = threading.Thread(target=lambda: (pings.acknowledge(payload), moved.set()))
                pong.start()
                assert moved.wait(WAIT)
            return float(self) >= other  # type: ignore[operator]

    pings.postpone_deadline(Now(106.0), 5.0)  # the connection's reading was paused
    assert pong is not None
    pong.join(WAIT)
    pings.tick(150.0, 100.0, 5.0)  # the pong came: nothing is overdue
    assert not failures and writer.protocol.close_sent is None
    transport.close()


def test_awaiting_is_told_when_the_first_ping_waits_and_when_none_does() -> None:
    """awaiting(True) at the first ping sent, (False) once every ping is answered."""
    transport = FakeTransport()
    writer = make(transport)
    told: List[bool] = []
    pings = Pings(writer, writer.protocol, writer.logger, writer.fail, awaiting=told.append)
    pings.send(b"one")
    pings.send(b"two")
    assert told == [True] and pings.waiting
    pings.acknowledge(b"one")
    assert told == [True] and pings.waiting
    pings.acknowledge(b"two")
    assert told == [True, False] and not pings.waiting
    pings.tick(0.0, 1.0, 5.0)
    pings.tick(1.0, 1.0, 5.0)  # a keepalive ping waits too
    assert told == [True, False, True]
    transport.close()


def test_an_overdue_pong_waiting_unread_postpones_instead_of_closing() -> None:
    """Bytes wait on the socket at the deadline: this side is behind, the peer is not dead."""

    class Readable(FakeTransport):
        def readable(self) -> bool:
            return True

    transport = Readable()
    writer = make(transport)
    failures: List[Any] = []
    pings = keepalive(writer, failures)
    pings.tick(0.0, 1.0, 5.0)
    pings.tick(1.0, 1.0, 5.0)  # a ping, answer by 6.0
    pings.tick(7.0, 1.0, 5.0)  # overdue, but bytes wait unread: 5 s more
    assert failures == []
    transport.readable = lambda: False  # type: ignore[method-assign]
    pings.tick(11.0, 1.0, 5.0)
    assert failures == []
    pings.tick(12.5, 1.0, 5.0)
    assert failures == [(1011, "keepalive ping timeout")]
    transport.close()


def test_keepalive_pings_are_spread_over_the_interval() -> None:
    """Connections that start together ping at random points of their first interval's end half."""
    count, interval = 200, 10.0
    transport = FakeTransport()
    writer = make(transport)
    schedules = [keepalive(writer, []) for _ in range(count)]
    for pings in schedules:
        pings.tick(0.0, interval, None)
    first: List[float] = []
    for step in range(1, 101):  # ticks of 0.1 s over one interval
        now = step * interval / 100
        for pings in schedules:
            if not pings.waiting:
                pings.tick(now, interval, None)
                if pings.waiting:  # it sent its ping now
                    first.append(now)
    assert len(first) == count  # each pinged once in its first interval
    assert min(first) >= interval / 2  # none just after it opened
    per_second = [sum(1 for t in first if s <= t < s + 1) for s in range(int(interval))]
    assert max(per_second) < count / 3, per_second  # about count / 5 a second, not one burst
    transport.close()


def test_keepalive_looks_at_its_connections_in_slices() -> None:
    """One round of Keepalive is cut into slices at different moments, not one burst."""
    from wsthread.connection.threads import KEEPALIVE_SLICES, Keepalive

    class Watched:
        def __init__(self) -> None:
            self.ticks: List[float] = []

        def keepalive_tick(self, now: float, interval: float, timeout: Optional[float]) -> bool:
            self.ticks.append(now)
            return True

    keeper = Keepalive(0.4, None)  # a tick of 0.1 s
    watched = [Watched() for _ in range(100)]
    for connection in watched:
        keeper.add(connection)
    try:
        deadline = threading.Event()
        deadline.wait(0.5)
    finally:
        keeper.stop()
    firsts = {connection.ticks[0] for connection in watched if connection.ticks}
    assert len(firsts) >= KEEPALIVE_SLICES // 2, len(firsts)
    assert all(len(connection.ticks) >= 2 for connection in watched)  # each looked at every round
