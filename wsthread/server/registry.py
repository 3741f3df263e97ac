"""A server's open connections and connection threads: any thread reads it; shutdown empties it.

:class:`Registry` is what a :class:`~wsthread.server.WebSocketServer`
knows about its connections, always under the server's state lock:

* the open connections (what ``server.connections`` and broadcasts see),
  and how many handshakes are between the ``max_connections`` check and
  their 101 (:meth:`Registry.reserve`, :meth:`Registry.register`);
* every connection thread, with its socket while it has no open
  WebSocket (still in the opening handshake, or serving plain HTTP);
* the figures of :meth:`Registry.stats`, the server's ``stats()``;
* the shutdown sequence, :meth:`Registry.close_all`: every open connection
  closed with 1001 at once, the other threads woken (and asked to close
  with 1001 a WebSocket they open all the same), all of them awaited.

Who calls it: the accept thread (:meth:`~Registry.add_thread`), each
connection thread (its slot, its connection, leaving), and any thread
(snapshots, ``stats()``, shutdown).

One process-wide fact is kept here too: which connection is open on which
thread, whatever server opened it. A thread of this server may end up
running another server's WebSocket (a :mod:`wsthread.wsgi` middleware
inside ``serve(wsgi=app)`` takes the connection over on the same thread);
shutdown closes that one with 1001 too, rather than shutting its socket down.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import weakref
from typing import Any, Callable, Dict, Generic, List, Optional, Set, TypeVar

from ..connection.connection import Connection
from ..exceptions import ServiceUnavailable
from ..runtime.deadline import Deadline
from .stats import TRAFFIC_KEYS, ServerCounters, backpressure

__all__ = ["Registry", "open_on", "asked_to_close", "close_together", "AFTER_DROP"]

logger = logging.getLogger("wsthread")

#: The kind of connection a registry holds (the server's ``C``).
C = TypeVar("C", bound=Connection)

# The connection open on each thread, whichever server opened it (see the module docstring).
_open_on_thread: weakref.WeakKeyDictionary[threading.Thread, Connection] = (
    weakref.WeakKeyDictionary()
)
# The threads a server shutting down asked to close whatever WebSocket they open next.
_asked_to_close: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
_open_on_thread_lock = threading.Lock()


def open_on(thread: threading.Thread) -> Optional[Connection]:
    """The WebSocket connection open on ``thread`` (by any server of this process), if any."""
    with _open_on_thread_lock:
        return _open_on_thread.get(thread)


def asked_to_close() -> bool:
    """Whether a server shutting down asked the calling thread to close its WebSocket with 1001.

    A thread still in the opening handshake when its server's shutdown runs
    may yet send a 101 (its socket is only shut down for reading, see
    :meth:`Registry.close_all`): the connection then closes with 1001 at
    once. This covers a :mod:`wsthread.wsgi` middleware's WebSocket opening
    on a thread of a server that is shutting down, too.
    """
    with _open_on_thread_lock:
        return threading.current_thread() in _asked_to_close


#: How long a shutdown still waits for the connections it dropped at its
#: deadline (their threads wake to the end of the stream and finish), and
#: for the connection threads if the deadline has passed.
AFTER_DROP = 1.0


def close_together(
    connections: List[Connection], code: int, reason: str, deadline: Deadline
) -> None:
    """Close every connection with ``code`` at once; wait for all, at most until ``deadline``.

    The close frames go out first, one connection after the other from
    this thread, without waiting for any peer (:meth:`Connection._close_begin
    <wsthread.connection.connection.Connection._close_begin>`). A connection
    whose writer is busy (a send under way) is tried again every few
    milliseconds. Then every closing handshake is awaited against the one
    ``deadline``, and a connection not closed by then (its peer silent, or a
    send blocked on a stalled peer) has its TCP connection dropped, and is
    awaited :data:`AFTER_DROP` seconds more.

    So a thousand slow peers take one ``close_timeout``, not a thousand,
    and no thread is started for them: with the GIL off and more busy
    threads than cores, every thread start waits for the scheduler, and a
    hundred of them took seconds. A failure is logged and does not stop
    the others.
    """
    begun: List[Connection] = []
    busy = list(connections)
    while busy:
        still_busy: List[Connection] = []
        for each in busy:
            try:
                (begun if each._close_begin(code, reason) else still_busy).append(each)
            except Exception:
                logger.exception("error while closing %r", each)
        busy = still_busy
        if not busy or deadline.remaining() == 0:
            break
        time.sleep(0.002)
    dropped = []
    for each in busy + begun:  # the busy ones are past the deadline: dropped at once
        try:
            if not each._close_wait(deadline.remaining()):
                dropped.append(each)
        except Exception:
            logger.exception("error while closing %r", each)
    after = Deadline(AFTER_DROP)
    for each in dropped:  # their readers wake to the end of the stream
        try:
            each._close_wait(after.remaining())
        except Exception:
            logger.exception("error while closing %r", each)


class Registry(Generic[C]):
    """The server's open connections, the handshakes under way and the connection threads.

    Every method takes the server's state lock, which it is given.

    Args:
        lock: the server's state lock.
        closing: tells whether the server is shutting down (handshakes then
            get 503).
        counters: the server's counters; a connection's traffic is added
            to them when it is forgotten.
        on_forget: called with each connection :meth:`forget` is given
            (outside the lock): the server's topics let it go.
    """

    def __init__(
        self,
        lock: threading.RLock,
        closing: Callable[[], bool],
        counters: ServerCounters,
        on_forget: Optional[Callable[[C], None]] = None,
    ) -> None:
        self.lock = lock
        self._closing = closing
        self._counters = counters
        self._on_forget = on_forget
        self.connections: Dict[C, threading.Thread] = {}  # and its thread
        self.opening = 0  # handshakes past the max_connections check, not yet registered
        # Every connection thread, from accept to close, with its socket while
        # it has no open connection (None once its connection is open).
        self.threads: Dict[threading.Thread, Optional[socket.socket]] = {}
        # The threads this server started (the others, from serve_socket() and
        # serve_upgrade(), are the caller's and go on after their connection).
        self._started_here: Set[threading.Thread] = set()
        self._left = threading.Condition(lock)  # a thread left the registry

    def snapshot(self) -> List[C]:
        """The open connections, as a list of their own."""
        with self.lock:
            return list(self.connections)

    def is_open(self, connection: C) -> bool:
        """Whether ``connection`` is open: registered, and not forgotten yet."""
        with self.lock:
            return connection in self.connections

    # -- a connection's life ---------------------------------------------------

    def reserve(self, limit: Optional[int]) -> bool:
        """Count a handshake against ``limit``, or refuse it with 503; ``True`` if counted."""
        with self.lock:
            if self._closing():
                raise ServiceUnavailable("the server is shutting down")
            if limit is not None and len(self.connections) + self.opening >= limit:
                raise ServiceUnavailable(
                    f"the server is full ({limit} connections): try again later"
                )
            self.opening += 1
        return True

    def unreserve(self) -> None:
        """Give back the slot of a handshake that did not open."""
        with self.lock:
            self.opening -= 1

    def register(self, connection: C) -> None:
        """The reserved slot of an opening handshake becomes its open connection.

        Called on the connection's thread: from now on, shutdown closes the
        connection with 1001 rather than shutting its socket down.
        """
        thread = threading.current_thread()
        with self.lock:
            self.opening -= 1
            self.connections[connection] = thread
            if thread in self.threads:
                self.threads[thread] = None
        with _open_on_thread_lock:
            _open_on_thread[thread] = connection

    def forget(self, connection: C) -> None:
        """The connection ended: it leaves the open ones, its traffic goes to the counters."""
        with self.lock:  # one step, so that stats() counts its traffic once
            thread = self.connections.pop(connection, None)
            if thread is not None:
                self._counters.add_traffic(connection.stats())
        if thread is not None:
            with _open_on_thread_lock:
                if _open_on_thread.get(thread) is connection:
                    del _open_on_thread[thread]
        if self._on_forget is not None:
            self._on_forget(connection)

    def add_thread(
        self, thread: threading.Thread, sock: socket.socket, started_here: bool = False
    ) -> None:
        """Track ``thread`` serving ``sock``; ``started_here``: a thread the server started."""
        with self.lock:
            self.threads[thread] = sock
            if started_here:
                self._started_here.add(thread)

    def remove_thread(self, thread: threading.Thread) -> None:
        """``thread`` is done with its connection (it may go on, if the server did not start it)."""
        with self.lock:
            self.threads.pop(thread, None)
            self._started_here.discard(thread)
            self._left.notify_all()
        with _open_on_thread_lock:
            _asked_to_close.discard(thread)

    # -- figures ---------------------------------------------------------------

    def stats(self) -> Dict[str, Any]:
        """The server's ``stats()``: its counters, plus what the open connections hold now.

        One pass over the open connections; see
        :meth:`WebSocketServer.stats() <wsthread.WebSocketServer.stats>` for the keys.
        """
        with self.lock:
            stats = self._counters.snapshot()
            connections = list(self.connections)
            opening = self.opening
        stats["connections"]["open"] = len(connections)
        stats["connections"]["opening"] = opening
        stats["buffered"] = {
            "received": sum(connection.received_bytes for connection in connections),
            "to_send": sum(connection.transport.unsent for connection in connections),
        }
        traffic = stats["traffic"]
        queued = 0
        latencies = []
        for connection in connections:
            each = connection.stats()
            for key in TRAFFIC_KEYS:
                traffic[key] += each[key]
            queued += each["queued"]
            if each["latency"] is not None:
                latencies.append(each["latency"])
        stats["queued"] = queued
        stats["backpressure"] = backpressure(connections)
        stats["latency"] = {
            "max": max(latencies) if latencies else None,
            "mean": sum(latencies) / len(latencies) if latencies else None,
        }
        return stats

    # -- shutdown --------------------------------------------------------------

    def close_all(
        self, code: int, reason: str, deadline: Deadline, log: logging.Logger = logger
    ) -> None:
        """Close every open connection with ``code``, wake the other threads and wait for them.

        The open connections, and those another server opened on one of
        this server's threads (see the module docstring), are closed
        together (:func:`close_together`). Threads with no open connection (a
        client that sent nothing yet, a browser's idle preconnect, a kept-alive
        HTTP connection) are woken first, by shutting their socket down for
        reading, instead of waiting for their ``open_timeout``; one that opens
        a WebSocket all the same (its 101 was on its way) closes it with 1001
        (:func:`asked_to_close`). Then every thread is awaited.
        """
        me = threading.current_thread()
        with self.lock:
            closing: List[Connection] = list(self.connections)
            threads = list(self.threads.items())
            started_here = set(self._started_here)  # before any of them leaves
        waking = [(t, s) for t, s in threads if s is not None and t is not me and t.is_alive()]
        with _open_on_thread_lock:
            for thread, _ in waking:
                _asked_to_close.add(thread)  # a 101 sent from now on is followed by a 1001
                guest = _open_on_thread.get(thread)
                if guest is not None:
                    closing.append(guest)
        for thread, sock in waking:
            with self.lock:
                still = self.threads.get(thread) is sock
            if still and open_on(thread) is None:
                try:
                    # For reading only: a thread waiting for a request wakes up
                    # (end of stream), one about to send its 101 still can.
                    sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass
        close_together(closing, code, reason, deadline)
        if deadline.remaining() == 0:
            deadline = Deadline(AFTER_DROP)  # threads of dropped connections are finishing
        self.wait_for_threads([thread for thread, _ in threads], deadline, log, started_here)

    def wait_for_threads(
        self,
        threads: List[threading.Thread],
        deadline: Deadline,
        log: logging.Logger = logger,
        started_here: Optional[Set[threading.Thread]] = None,
    ) -> None:
        """Wait until each of ``threads`` left the registry (and ended, if started here).

        A thread of ``serve_socket()`` or ``serve_upgrade()`` belongs to the
        caller and lives on: it is awaited only until it is done with its
        connection. One still there at ``deadline`` is logged.
        ``started_here`` is which of them this server started, as seen when
        ``threads`` was taken (by default, now): a thread leaves that set
        when it leaves the registry, a moment before it ends.
        """
        me = threading.current_thread()
        if started_here is None:
            with self.lock:
                started_here = set(self._started_here)
        for thread in threads:
            if thread is me:
                continue
            with self._left:
                while thread in self.threads and deadline.remaining() != 0:
                    self._left.wait(deadline.remaining())
                done = thread not in self.threads
            if thread in started_here:
                thread.join(deadline.remaining())
                done = not thread.is_alive()
            if not done:
                log.warning("%s is still running after shutdown", thread.name)
