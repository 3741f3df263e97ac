"""Parking for idle sockets: one process-wide epoll thread that wakes idle readers a few at a time.

Runs on two kinds of thread: any thread that reads a connection's socket
(in :meth:`Parking.wait`, called by the transport), and the parking thread
``wsthread-parking``, which exists while at least one socket is parked.

Why: a thread blocked in ``recv()`` wakes as soon as its socket has data or
ends, and then needs the GIL. When thousands of idle connections end at
once (a deploy, a load balancer's failover, a network blip), thousands of
threads wake together; each one waiting for the GIL wakes up again every
switch interval (5 ms) to ask for it, so the process spends its CPU handing
the GIL around: 5,000 dropped connections took 25-30 s and about 48 s of
CPU to wind down here, a raw thread-per-connection echo with no library at
all included, against about 1 s with a switch interval of 0.1 s.

So a read that has waited :data:`IDLE` seconds in the kernel parks instead::

    reading thread                      parking thread
    recv() ... IDLE s, nothing
    wait(sock): register with epoll
      blocks on its own lock  ------->  epoll: the socket is readable
                                        (data, EOF or error)
                                        wakes it if fewer than ADMIT parked
                                        threads are waking right now,
                                        else queues it
    back in Python: lets the next        <-- the next queued thread
    queued thread in; recv() again

A parked thread costs no CPU, and at most :data:`ADMIT` of them compete for
the GIL at a time, however many sockets end together. A busy connection
never parks: its reads find data well within ``IDLE`` seconds, and take
the usual single ``recv()`` system call.

Nothing but its socket wakes a parked thread: there is no timer per
thread. A socket closed under its parked reader vanishes from epoll
without an event; the parking thread looks for such sockets every
:data:`_SWEEP` seconds, and at once when a new socket parks on the same
descriptor number. (Each parked thread used to recheck on its own every
15-45 s: at 20,000 idle connections, over 600 wakes a second, each one a
turn at the GIL.)

Linux only (``select.epoll``); elsewhere :func:`available` is false and
reads block in ``recv()`` as before.
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import threading
import time
from collections import deque
from typing import Deque, Dict, Optional

from ..runtime.deadline import Deadline
from ..runtime.forks import after_fork_in_child

__all__ = ["IDLE", "ADMIT", "Parking", "available", "park_after_idle", "prepare"]

logger = logging.getLogger("wsthread")

#: Seconds a read waits in the kernel before it parks.
IDLE = 0.5
#: How many parked threads may be waking (competing for the GIL) at once.
ADMIT = 2
# The parking thread looks for sockets closed under their parked reader
# this often (such a socket vanishes from epoll without an event).
_SWEEP = 5.0
# The parking thread ends after this long with nothing parked.
_LINGER = 1.0

_EPOLL = getattr(select, "epoll", None)
_EVENTS = (
    getattr(select, "EPOLLIN", 1)
    | getattr(select, "EPOLLRDHUP", 0x2000)
    | getattr(select, "EPOLLHUP", 0x10)
    | getattr(select, "EPOLLERR", 0x8)
)


def available() -> bool:
    """Whether this platform can park sockets (it has ``select.epoll``)."""
    return _EPOLL is not None


def prepare() -> None:
    """Make the process's parking lot now, while a descriptor for its epoll set is surely free.

    A server calls this when it is created. Made lazily instead, the lot
    would be made by the first read to idle, and at the open-files limit
    that read would take the descriptor the accept thread frees for a moment
    to answer a client with 503 (see :mod:`wsthread.runtime.fdlimit`): the reserve
    would be lost, and clients arriving at the limit would wait unanswered.
    """
    if available():
        try:
            Parking.instance()
        except OSError:  # already at the limit: reads wait in poll() instead
            pass


def park_after_idle(sock: socket.socket) -> bool:
    """Make blocking reads on ``sock`` give up after :data:`IDLE` seconds, so they can park.

    Sets ``SO_RCVTIMEO``: a blocking ``recv()`` then raises
    ``BlockingIOError`` after ``IDLE`` seconds without data, and the caller
    calls :meth:`Parking.wait`. Returns ``False`` (and changes nothing) where
    parking is not available. Only for a socket in blocking mode: a socket
    with a Python timeout never blocks in the kernel.
    """
    if not available():
        return False
    seconds = int(IDLE)
    microseconds = int((IDLE - seconds) * 1_000_000)
    try:
        sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", seconds, microseconds)
        )
    except (OSError, struct.error):
        return False
    return True


class _Slot:
    """One parked thread: its socket, the lock it blocks on, and why it was woken."""

    __slots__ = ("sock", "fd", "lock", "admitted", "ready", "closed")

    def __init__(self, sock: socket.socket, fd: int) -> None:
        self.sock = sock
        self.fd = fd
        self.lock = threading.Lock()
        self.lock.acquire()
        self.admitted = False  # woken by the parking thread, counted in ADMIT
        self.ready = False  # its socket became readable
        self.closed = False  # its socket was found closed under it


class Parking:
    """The process-wide parking lot: an epoll set, the parked threads, and the thread that watches.

    Use :meth:`instance`; every method is thread-safe.
    """

    _instance: Optional[Parking] = None
    _instance_lock = threading.Lock()

    @classmethod
    def instance(cls) -> Parking:
        """The process's parking lot, made on first use."""
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    @classmethod
    def _forget_after_fork(cls) -> None:
        """In a forked child: the parking thread did not survive; start afresh on first use."""
        cls._instance_lock = threading.Lock()
        cls._instance = None

    def __init__(self, admit: int = ADMIT) -> None:
        if _EPOLL is None:
            raise OSError("parking needs select.epoll")
        self._admit = admit
        self._epoll = _EPOLL()
        self._lock = threading.Lock()
        self._parked: Dict[int, _Slot] = {}  # by file descriptor, while in the epoll set
        self._waiting: Deque[_Slot] = deque()  # readable, not yet let in
        self._waking = 0  # let in, not yet back in Python
        self._woken = 0  # let in, ever
        self._thread: Optional[threading.Thread] = None
        self._next_sweep = time.monotonic() + _SWEEP

    @property
    def parked(self) -> int:
        """How many threads are parked now, readable or not (for tests and statistics)."""
        with self._lock:
            return len(self._parked) + len(self._waiting)

    @property
    def woken(self) -> int:
        """How many parked threads the parking thread has let in so far (tests, statistics)."""
        with self._lock:
            return self._woken

    @property
    def waking(self) -> int:
        """How many parked threads were let in and are not back in Python yet (<= ``admit``)."""
        with self._lock:
            return self._waking

    def wait(self, sock: socket.socket, timeout: Optional[float] = None) -> bool:
        """Block until ``sock`` is readable (data, EOF or an error): ``True``; ``False`` on timeout.

        The caller then reads the socket. A readable socket may wait here
        a little longer than it would in ``recv()``: only :data:`ADMIT`
        parked threads wake at a time.
        """
        fd = sock.fileno()
        if fd < 0:
            return True  # closed: let the caller's read raise
        slot = _Slot(sock, fd)
        with self._lock:
            try:
                self._epoll.register(fd, _EVENTS)
            except OSError:
                return True  # let the caller's read find out what is wrong
            stale = self._parked.get(fd)
            if stale is not None:
                # This descriptor was closed under a parked reader and is now
                # this socket's (the kernel forgot the old registration).
                self._wake_closed(stale)
            self._parked[fd] = slot
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="wsthread-parking", daemon=True
                )
                self._thread.start()
        remaining = Deadline(timeout).remaining()
        slot.lock.acquire(timeout=-1 if remaining is None else remaining)
        with self._lock:
            if slot.admitted:
                self._waking -= 1
                self._let_in()
                return True
            if slot.closed:
                return True  # closed under us: the read will say so
            if slot.ready:
                self._waiting.remove(slot)  # readable at the deadline: read without waiting
                return True
            self._forget(slot)  # the deadline
            return False

    def _forget(self, slot: _Slot) -> None:
        """Take a parked slot out of the epoll set; the lock is held."""
        if self._parked.get(slot.fd) is slot:
            del self._parked[slot.fd]
            try:
                self._epoll.unregister(slot.fd)
            except (OSError, ValueError):
                pass  # closed meanwhile: the kernel forgot it already

    def _wake_closed(self, slot: _Slot) -> None:
        """Wake a parked thread whose socket was closed under it; the lock is held."""
        if self._parked.get(slot.fd) is slot:
            del self._parked[slot.fd]
        slot.closed = True
        slot.lock.release()

    def _sweep(self) -> None:
        """Wake every parked thread whose socket was closed under it; the lock is held."""
        for slot in [each for each in self._parked.values() if each.sock.fileno() < 0]:
            self._wake_closed(slot)

    def _let_in(self) -> None:
        """Wake queued threads while fewer than ``admit`` are waking; the lock is held."""
        while self._waiting and self._waking < self._admit:
            slot = self._waiting.popleft()
            slot.admitted = True
            self._waking += 1
            self._woken += 1
            slot.lock.release()

    def _run(self) -> None:
        """The parking thread: wait for parked sockets to become readable, queue their threads.

        Every :data:`_SWEEP` seconds it also wakes the threads whose sockets
        were closed under them.
        """
        while True:
            try:
                events = self._epoll.poll(_LINGER)
            except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                continue
            with self._lock:
                for fd, _mask in events:
                    slot = self._parked.pop(fd, None)
                    if slot is None:
                        continue
                    try:
                        self._epoll.unregister(fd)
                    except (OSError, ValueError):
                        pass
                    slot.ready = True
                    self._waiting.append(slot)
                self._let_in()
                now = time.monotonic()
                if now >= self._next_sweep:
                    self._next_sweep = now + _SWEEP
                    self._sweep()
                if not events and not self._parked:
                    self._thread = None
                    return


after_fork_in_child(Parking._forget_after_fork)
