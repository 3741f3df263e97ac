"""A connection's pings and keepalive: sent by any thread or the keepalive one, acked by the reader.

:class:`Pings` remembers the pings a connection sent until their pongs
arrive, measures the round trip, and runs the keepalive schedule that the
process's :class:`~wsthread.connection.threads.Keepalive` thread drives with
:meth:`Pings.tick`. Its state is guarded by the connection's writer lock,
which is held anyway to send a ping; the keepalive's pong deadline also by
:attr:`Pings.schedule_lock`, since the keepalive thread moves it without
the writer lock (which a long send may hold).
"""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from ..exceptions import ConnectionClosed
from ..sansio.frames import CloseCode
from ..sansio.protocol import Protocol, State
from .writer import Writer

__all__ = ["Pings", "KEEPALIVE_JITTER"]

#: Keepalive pings come every ``interval`` less up to this fraction of it, at random.
KEEPALIVE_JITTER = 0.1


class Pings:
    """The pings a connection waits on, its latency and its keepalive schedule.

    Args:
        writer: the connection's writer (its lock guards this object too).
        protocol: the connection's protocol.
        logger: the connection's logger.
        fail: gives up on the connection (``fail(code, reason)``), never blocking.
        awaiting: told, under the writer lock, when the first ping starts
            waiting for its pong (``True``) and when none waits any more
            (``False``): the receiving side then reads at once rather than
            holding off (``MessageQueue.expect_pong``).
    """

    def __init__(
        self,
        writer: Writer,
        protocol: Protocol,
        logger: Any,
        fail: Callable[[int, str], None],
        awaiting: Optional[Callable[[bool], None]] = None,
    ) -> None:
        self.writer = writer
        self.protocol = protocol
        self.logger = logger
        self._fail = fail
        self._awaiting = awaiting
        self._waiters: Dict[bytes, threading.Event] = {}
        self._sent_at: Dict[bytes, float] = {}  # when each ping went out
        self.latency: Optional[float] = None
        """The round trip, in seconds, of the last ping answered; ``None`` before."""
        # The keepalive schedule.
        self._next_ping: Optional[float] = None
        self.schedule_lock = threading.Lock()
        """Guards the pong deadline and the ping it waits for; taken inside the writer lock."""
        self._pong_deadline: Optional[float] = None
        self._keepalive_payload: Optional[bytes] = None

    def send(self, payload: bytes) -> threading.Event:
        """Send a ping with ``payload``; the event is set by its pong (or the end).

        Raises:
            ValueError: a ping with this payload is still waiting for its pong.
            ConnectionClosed: the connection is closed or closing.
        """
        waiter = threading.Event()
        with self.writer:
            if payload in self._waiters:
                raise ValueError("a ping with this payload is already waiting for its pong")
            frame = self.protocol.send_ping(payload)
            self._expect(payload, waiter)
            self.writer.write(frame)
        return waiter

    @property
    def waiting(self) -> bool:
        """Whether a ping waits for its pong."""
        return bool(self._waiters)

    def _expect(self, payload: bytes, waiter: threading.Event) -> None:
        """Wait for the pong to ``payload``, from now; the writer lock is held."""
        if not self._waiters and self._awaiting is not None:
            self._awaiting(True)
        self._waiters[payload] = waiter
        self._sent_at[payload] = time.monotonic()

    def acknowledge(self, payload: bytes) -> None:
        """A pong arrived: it answers its ping and every earlier one (on the reading thread)."""
        now = time.monotonic()
        with self.writer:
            if payload not in self._waiters:
                return
            if payload == self._keepalive_payload:
                with self.schedule_lock:  # not between postpone_deadline's test and its move
                    self._pong_deadline = None
                    self._keepalive_payload = None
            sent = self._sent_at.get(payload)
            if sent is not None:
                self.latency = now - sent
            acknowledged: List[bytes] = []
            for key, waiter in self._waiters.items():
                acknowledged.append(key)
                waiter.set()
                if key == payload:
                    break
            for key in acknowledged:
                del self._waiters[key]
                self._sent_at.pop(key, None)
            if not self._waiters and self._awaiting is not None:
                self._awaiting(False)

    def wake_all(self) -> None:
        """The connection ended: set every waiting ping's event."""
        # Not under the writer lock: a writer may be blocked on the socket the
        # connection has just shut down. list() copies the dict in one step.
        for waiter in list(self._waiters.values()):
            waiter.set()

    def postpone_deadline(self, now: float, timeout: Optional[float]) -> None:
        """Give an unanswered keepalive ping ``timeout`` more seconds from ``now``.

        For a connection whose reading is paused (back-pressure): its pong
        may be waiting unread, and the peer is not to blame. Atomic with
        :meth:`acknowledge`: a deadline the pong has just cleared stays cleared.
        """
        if timeout is None:
            return
        with self.schedule_lock:
            if self._pong_deadline is not None and now >= self._pong_deadline:
                self._pong_deadline = now + timeout

    def tick(self, now: float, interval: float, timeout: Optional[float]) -> None:
        """Send a keepalive ping when due; fail with 1011 if the last one went unanswered.

        Called by the :class:`~wsthread.connection.threads.Keepalive` thread; never blocks.
        """
        if self.writer.closed or self.protocol.state is not State.OPEN:
            return
        deadline = self._pong_deadline
        if deadline is not None and now >= deadline:
            if timeout is not None and self.writer.transport.readable():
                # Bytes wait unread (the pong, maybe): this side is behind
                # (thousands of threads woken together), not the peer.
                self.postpone_deadline(now, timeout)
                return
            self.logger.info("no pong within %s seconds: closing with 1011", timeout)
            self._fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            return
        if self._next_ping is None:
            # The first ping at a random point of the interval's second half:
            # connections opened together (a deploy, a reconnect wave) do not
            # ping together, and none pings just after it opened.
            self._next_ping = now + interval * (0.5 + 0.5 * random.random())
            return
        if now < self._next_ping or self._keepalive_payload is not None:
            return
        # A little jitter each time keeps them apart (never later than interval).
        self._next_ping = now + interval * (1 - KEEPALIVE_JITTER * random.random())
        # Never wait behind a long send: a busy writer will try again next time.
        writer = self.writer
        if not writer.lock.acquire(blocking=False):
            return
        try:
            payload = os.urandom(4)
            frame = self.protocol.send_ping(payload)
            self._expect(payload, threading.Event())
            with self.schedule_lock:
                self._keepalive_payload = payload
                if timeout is not None:
                    self._pong_deadline = now + timeout
            writer.write(frame, wait=False)
        except ConnectionClosed:
            pass
        finally:
            writer.release()
