"""Helper threads shared by many connections: write pump, reader starter, keepalive (their own).

A thread per connection for every small chore would cost memory on every
idle connection, so the chores that do not need one are done by a few
helper threads, each serving many connections:

* :class:`WritePump` finishes the writes that a socket could not take at
  once (a broadcast never waits for a client);
* :class:`ReaderStarter` starts a connection's reader thread when nobody has
  read its socket for a moment;
* :class:`Keepalive` pings connections and gives up on those that stop
  answering.

They share one life cycle, written once in :class:`HelperThread`: the thread
starts when there is work, and ends when it has had nothing to do for a
moment, so an idle process holds none of them. :func:`shared` keeps the one
instance that a process needs of each (the write pump, the reader starter,
a client's keepalive for given settings).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import socket
import threading
import time
from collections import deque
from typing import (
    Any,
    Callable,
    Deque,
    Dict,
    Hashable,
    List,
    Optional,
    Protocol,
    Tuple,
    TypeVar,
)

from ..runtime import futexes
from ..runtime.forks import after_fork_in_child
from .transport import wait_any_writable

__all__ = [
    "HelperThread",
    "WritePump",
    "ReaderStarter",
    "Keepalive",
    "KEEPALIVE_SLICES",
    "Pumped",
    "Pinged",
    "shared",
    "start_thread",
]

logger = logging.getLogger("wsthread")

_stack_size_lock = threading.Lock()


def start_thread(thread: threading.Thread, stack_size: Optional[int]) -> None:
    """Start ``thread`` with a stack of ``stack_size`` bytes (``None``: the default).

    ``threading.stack_size()`` is process-wide; it is set only around this
    thread's creation and put back at once, but a thread that another part
    of the program starts at that very moment gets the same size.

    The kernel's futex hash is grown first if the process's threads have
    outgrown it (:func:`wsthread.runtime.futexes.make_room`).
    """
    futexes.make_room(threading.active_count() + 1)
    if stack_size is None:
        thread.start()
        return
    with _stack_size_lock:
        previous = threading.stack_size(stack_size)
        try:
            thread.start()
        finally:
            threading.stack_size(previous)


_T = TypeVar("_T")

_shared: Dict[Tuple[Any, ...], Any] = {}
_shared_lock = threading.Lock()


def shared(factory: Callable[..., _T], *args: Hashable) -> _T:
    """The process-wide instance of ``factory(*args)``: made on first use, then reused.

    One registry for every helper of which a process needs only one (per
    set of arguments), such as ``shared(WritePump)`` or
    ``shared(Keepalive, 20, 20)``.
    """
    key = (factory,) + args
    # Without the lock when it exists: this runs on every connection's thread,
    # after reads and for gathered frames, and with the GIL off a lock taken
    # that often by that many threads makes them queue for it (each hand-over
    # waits for the scheduler). A dict lookup is atomic with or without it.
    instance = _shared.get(key)
    if instance is not None:
        return instance  # type: ignore[no-any-return]
    with _shared_lock:
        instance = _shared.get(key)
        if instance is None:
            instance = _shared[key] = factory(*args)
        return instance


def _forget_shared() -> None:
    """In a forked child: the helpers' threads stayed in the parent; start afresh."""
    global _shared_lock
    _shared.clear()
    _shared_lock = threading.Lock()  # the parent may have held it at the fork


after_fork_in_child(_forget_shared)


class HelperThread:
    """A daemon thread that runs while it has work and ends when it has none.

    Subclasses say whether there is work (:meth:`_has_work`, called with
    :attr:`_condition` held) and do one round of it (:meth:`_step`, called
    without). Call :meth:`_wake` (with :attr:`_condition` held) after adding
    work: it starts the thread if it is not running, or wakes it. With
    nothing to do, the thread waits ``linger`` seconds for more, then ends;
    :meth:`stop` ends it for good.

    Args:
        name: the thread's name.
        linger: seconds to wait for work before ending.
    """

    def __init__(self, name: str, linger: float = 0.0) -> None:
        self.name = name
        self.linger = linger
        self._condition = threading.Condition(threading.Lock())
        self._thread: Optional[threading.Thread] = None
        self._stopping = False

    def _has_work(self) -> bool:
        raise NotImplementedError

    def _step(self) -> None:
        raise NotImplementedError

    def _wake(self) -> None:
        """Start the thread, or wake it; the caller holds :attr:`_condition`."""
        if self._stopping:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        else:
            self._condition.notify()

    def stop(self) -> None:
        """End the thread and wait for it (unless called from it)."""
        with self._condition:
            self._stopping = True
            thread = self._thread
            self._condition.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            with self._condition:
                if not self._stopping and not self._has_work() and self.linger > 0:
                    self._condition.wait(self.linger)
                if self._stopping or not self._has_work():
                    self._thread = None
                    return
            try:
                self._step()
            except Exception:  # a bug; never let it pass silently, nor kill the thread
                logger.exception("%s failed", self.name)


class Pumped(Protocol):
    """What the :class:`WritePump` needs from a connection's writer."""

    def pump(self, now: float) -> bool:
        """Send what the socket takes now; ``True`` once nothing is left to send."""

    def pump_socket(self) -> Optional[socket.socket]:
        """The socket to wait on, or ``None`` if it is closed."""


class WritePump(HelperThread):
    """One thread that finishes the non-blocking writes sockets could not take at once.

    A writer whose transport still holds bytes after a broadcast asks the
    pump to :meth:`watch` it; the pump waits until one of the sockets can
    take more and calls each writer's ``pump()``, which writes and says
    whether it is done (it also gives up on a peer that takes nothing for
    ``write_timeout`` seconds). One pump serves the whole process:
    ``shared(WritePump)``.
    """

    def __init__(self, tick: float = 0.05) -> None:
        super().__init__("wsthread-write-pump")
        self._tick = tick
        # Each writer with how many times it was watched: a writer watched
        # again while the pump was finding it done stays watched.
        self._watched: Dict[Pumped, int] = {}

    def watch(self, writer: Pumped) -> None:
        """Finish ``writer``'s pending bytes in the background."""
        with self._condition:
            self._watched[writer] = self._watched.get(writer, 0) + 1
            self._wake()

    def _has_work(self) -> bool:
        return bool(self._watched)

    def _step(self) -> None:
        with self._condition:
            watched = list(self._watched.items())
        sockets = [s for s in (writer.pump_socket() for writer, _ in watched) if s is not None]
        try:
            wait_any_writable(sockets, self._tick)
        except (OSError, ValueError):  # a socket closed meanwhile: look again
            time.sleep(self._tick)
        now = time.monotonic()
        finished = []
        for writer, count in watched:
            try:
                done = writer.pump(now)
            except Exception:
                logger.exception("write pump failed for %r", writer)
                done = True
            if done:
                finished.append((writer, count))
        if finished:
            with self._condition:
                for writer, count in finished:
                    if self._watched.get(writer) == count:
                        del self._watched[writer]


class ReaderStarter(HelperThread):
    """One thread that calls functions at given times: it starts connections' reader threads.

    A connection asks it to look again a little later (:meth:`schedule`);
    if by then no application thread reads its socket, the connection starts
    its reader thread. One starter serves the whole process
    (``shared(ReaderStarter)``); its thread ends after half a second with
    nothing to do and comes back when needed.
    """

    def __init__(self, linger: float = 0.5) -> None:
        super().__init__("wsthread-start-readers", linger)
        self._heap: List[Tuple[float, int, Callable[[], None]]] = []
        self._counter = itertools.count()

    def schedule(self, when: float, callback: Callable[[], None]) -> None:
        """Call ``callback()`` on the starter thread at ``when`` (``time.monotonic()``)."""
        with self._condition:
            heapq.heappush(self._heap, (when, next(self._counter), callback))
            if self._thread is None or self._heap[0][2] is callback:
                self._wake()

    def _has_work(self) -> bool:
        return bool(self._heap)

    def _step(self) -> None:
        with self._condition:
            when = self._heap[0][0]
            now = time.monotonic()
            if when > now:
                self._condition.wait(when - now)
                return
            callback = heapq.heappop(self._heap)[2]
        try:
            callback()
        except Exception:
            logger.exception("could not start a reader thread (%r)", callback)


class Pinged(Protocol):
    """What :class:`Keepalive` needs from a connection."""

    def keepalive_tick(self, now: float, interval: float, timeout: Optional[float]) -> bool:
        """Ping when due; give up on the connection if the last ping went unanswered.

        Return ``False`` once the connection has ended: it is then dropped.
        """


#: Into how many slices :class:`Keepalive` cuts a round of its connections.
KEEPALIVE_SLICES = 10


class Keepalive(HelperThread):
    """One thread that pings many connections and closes those that stop answering.

    A server owns one for all its connections, and clients share one per
    setting (``shared(Keepalive, interval, timeout)``), so keepalive costs
    no thread per connection.

    Each connection is looked at once per tick (at most a second), but not
    all at the same moment: a round is cut into :data:`KEEPALIVE_SLICES`
    slices, one every tenth of a tick. With each connection's pings spread
    over the interval (:meth:`~wsthread.connection.pings.Pings.tick`
    jitters them), 20,000 connections get about a hundred pings at a time
    rather than all of them in one burst, whose pongs would then wake every
    connection's thread together.

    Args:
        interval: seconds between pings on an idle connection.
        timeout: seconds to wait for the pong before closing with 1011;
            ``None`` never closes.
    """

    def __init__(self, interval: float, timeout: Optional[float]) -> None:
        super().__init__("wsthread-keepalive")
        self.interval = interval
        self.timeout = timeout
        self._connections: Dict[Pinged, None] = {}
        step = min(interval, timeout) if timeout is not None else interval
        self._tick = max(0.01, min(1.0, step / 4))
        # The connections of this round not looked at yet, and a slice's size.
        self._round: Deque[Pinged] = deque()
        self._slice = 0

    def add(self, connection: Pinged) -> None:
        """Start watching ``connection``."""
        with self._condition:
            self._connections[connection] = None
            if self._thread is None:
                self._wake()

    def remove(self, connection: Pinged) -> None:
        """Stop watching ``connection``."""
        with self._condition:
            self._connections.pop(connection, None)

    def _has_work(self) -> bool:
        if not self._connections:
            self._round.clear()  # hold no connection while there is nothing to do
        return bool(self._connections)

    def _step(self) -> None:
        with self._condition:
            self._condition.wait(self._tick / KEEPALIVE_SLICES)
            if self._stopping:
                return
            round_ = self._round
            if not round_:  # a new round: the connections as they are now
                round_.extend(self._connections)
                self._slice = -(-len(round_) // KEEPALIVE_SLICES)
            # Taken out as they are looked at: a connection removed meanwhile
            # is held no longer than the rest of the round.
            connections = [round_.popleft() for _ in range(min(self._slice, len(round_)))]
        now = time.monotonic()
        for connection in connections:
            try:
                if not connection.keepalive_tick(now, self.interval, self.timeout):
                    # Ended. A client connection the peer closed stays registered
                    # until the application calls close(), which it may never do:
                    # forget it here, or the shared keepalive keeps it for ever.
                    self.remove(connection)
            except Exception:
                logger.exception("keepalive failed for %r", connection)
