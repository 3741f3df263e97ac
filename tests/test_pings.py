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
