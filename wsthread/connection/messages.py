"""The bounded queue of received messages and the turn to read: used by every connection thread.

:class:`MessageQueue` sits between whoever reads the socket (the
connection's reader thread, or an application thread waiting in
``recv()``) and the application. It holds no socket and starts no thread,
so it is tested on its own with threads and barriers
(``tests/test_messages.py``). What it holds counts in a shared receive
budget, kept in :mod:`wsthread.connection.budget` (whose names are re-exported here,
where they were first defined).
"""

from __future__ import annotations

import codecs
import threading
import time
from collections import deque
from sys import getsizeof
from typing import Callable, Deque, Iterator, List, Optional, Union

from ..runtime.deadline import Deadline
from ..sansio.protocol import Fragment
from .budget import GRANULE, BudgetedQueue, BudgetShare, ReceiveBudget

__all__ = [
    "MessageQueue",
    "Receiver",
    "QueueClosed",
    "Data",
    "Item",
    "HOLD",
    "NO_DEADLINE",
]

Data = Union[str, bytes]
"""A message: ``str`` for text, ``bytes`` for binary."""

Item = Union[Data, Fragment]
"""What the queue holds: a whole message, or one piece of a fragmented one."""

NO_DEADLINE = Deadline(None)
"""Shared: a :class:`Deadline` without a timeout never changes."""


class QueueClosed(Exception):
    """Raised by :meth:`MessageQueue.get` once the queue is closed and empty."""


# Who may read the socket and feed the protocol: one thread at a time.
_FREE = 0  # nobody: the next to want it takes it
_READER = 1  # the connection's reader thread
_APP_READING = 2  # an application thread, inside recv()

# How long the reader thread leaves the socket to an application thread that
# returned from recv(), expecting it to call recv() again soon.
HOLD = 0.05


def _footprint(item: Item) -> int:
    """The memory a queued item holds: a message, or a piece of one and its wrapper."""
    if type(item) is Fragment:
        return getsizeof(item) + getsizeof(item.data)
    return getsizeof(item)


class MessageQueue:
    """Received messages, and the right to read the socket, shared by two kinds of thread.

    The messages: a bounded queue between whoever reads the socket and the
    application. ``put`` blocks while the queue is full, which stops the
    reader thread and so pushes back on the peer through TCP flow control;
    :meth:`stop_waiting` releases it for good once the connection is closing.

    The right to read (a token): handing every message from the reader
    thread to the application thread costs a thread switch. So an
    application thread that waits in :meth:`get` with nothing queued reads
    the socket itself, through the ``read`` function it passes, when nobody
    else is reading. The reader thread reads only when no application
    thread does: it asks for its turn with :meth:`reader_turn`, which waits
    while an application thread is reading, or has just returned a message
    and is expected back within ``HOLD`` seconds. Past that, the reader
    thread takes over, so pings are answered and a close is noticed even
    while the application is busy elsewhere or never reads. While a ping
    of this side's waits for its pong (:meth:`expect_pong`), it takes over
    at once.
    """

    def __init__(
        self,
        max_size: Optional[int],
        reader_first: bool = False,
        budget: Optional[ReceiveBudget] = None,
    ) -> None:
        self.max_size = max_size
        self._items: Deque[Item] = deque()
        self._bytes = 0  # the memory the queued messages take (sys.getsizeof)
        self._partial = 0  # bytes of messages still arriving (see set_partial)
        # What this queue counts in the budget: None without a budget, or once closed.
        self._share = None if budget is None else BudgetShare(budget)
        self._waiting_for_room = False  # the reader thread, paused by the budget
        lock = threading.Lock()
        # The lock itself, for the hot paths of put() and get(): "with lock"
        # is one C call, "with condition" two Python ones around it.
        self._mutex = lock
        self._condition = threading.Condition(lock)  # getters, and a blocked put
        self._reader_wakeup = threading.Condition(lock)  # the reader thread's turn
        self._closed = False
        self._not_waiting = False
        self._getters_waiting = 0
        self._putters_waiting = 0  # the reader thread, blocked on a full queue
        self._drain_waiting = False  # the reader thread, in wait_drained()
        self._taken = 0  # how many messages the application has taken
        self._token = _READER if reader_first else _FREE
        self._held_since = 0.0
        self._reader_waits_untimed = False
        self._ending = False  # an application thread read the end of the stream
        self._pong_awaited = False  # a ping waits for its pong: no holding off

    def reader_first(self) -> None:
        """Give the first turn to the reader thread: it has received bytes to process already."""
        with self._condition:
            self._token = _READER

    def put(self, item: Item, block: bool = True) -> bool:
        """Add a message; the reader thread waits while the queue is full.

        An application thread reading for itself passes ``block=False``: it
        is the consumer, and reads only when the queue is empty. Once
        :meth:`stop_waiting` was called, a full queue drops the message
        instead; returns whether the message was kept.
        """
        with self._mutex:
            if block and self.max_size is not None:
                while len(self._items) >= self.max_size and not self._closed:
                    if self._not_waiting:
                        return False
                    self._putters_waiting += 1
                    try:
                        self._condition.wait()
                    finally:
                        self._putters_waiting -= 1
            self._items.append(item)
            self._bytes += getsizeof(item) if type(item) is not Fragment else _footprint(item)
            share = self._share
            if share is not None and self._bytes - share.counted >= GRANULE:
                share.update(self._bytes + self._partial)  # more held: nobody to wake
            if self._getters_waiting:
                self._condition.notify_all()
            return True

    def get(
        self,
        timeout: Optional[float] = None,
        read: Optional[Callable[[Optional[float]], bool]] = None,
    ) -> Item:
        """Take the oldest message, reading the socket with ``read`` if it is free.

        ``read(timeout)`` reads once and feeds the protocol; it returns
        ``False`` when the connection is ending, which is then left to the
        reader thread.

        Raises:
            TimeoutError: nothing arrived within ``timeout`` seconds.
            QueueClosed: the queue is closed and empty.
        """
        deadline = NO_DEADLINE if timeout is None else Deadline(timeout)
        to_wake: List[BudgetedQueue] = []
        with self._mutex:
            while True:
                if self._items:
                    item = self._items.popleft()
                    self._bytes -= (
                        getsizeof(item) if type(item) is not Fragment else _footprint(item)
                    )
                    share = self._share
                    if share is not None and share.counted:
                        held = self._bytes + self._partial
                        if not held or share.counted - held >= GRANULE:
                            to_wake = share.update(held)
                    self._taken += 1
                    self._held_since = time.monotonic()
                    if self._putters_waiting or self._drain_waiting:
                        self._condition.notify_all()
                    elif self._waiting_for_room:
                        self._reader_wakeup.notify()
                    break
                if self._closed:
                    raise QueueClosed
                if read is not None and self._token == _FREE and not self._ending:
                    self._read_for_self(read, deadline)
                    continue
                remaining = deadline.remaining()
                if remaining == 0:
                    raise TimeoutError(f"no message within {timeout} seconds")
                self._getters_waiting += 1
                self._condition.notify_all()  # wait_drained() watches for a waiting getter
                try:
                    self._condition.wait(remaining)
                finally:
                    self._getters_waiting -= 1
                    if self._reader_waits_untimed:
                        # The reader thread may have deferred to this getter.
                        self._reader_wakeup.notify()
        for queue in to_wake:  # other connections' readers, paused by the budget
            queue.wake_reader()
        return item

    def _read_for_self(self, read: Callable[[Optional[float]], bool], deadline: Deadline) -> None:
        """Read the socket on the calling application thread; the lock is held on entry.

        A KeyboardInterrupt (the main thread's ``recv()``) may come out of
        any call here: the lock is held again and the turn given back
        whichever call it interrupts (the bytes read are the reader's to
        keep, see ``Reader._process``).
        """
        self._token = _APP_READING
        ended = False
        try:
            self._condition.release()
            ended = not read(None if deadline.expires is None else deadline.remaining())
        finally:
            try:
                self._condition.acquire()
            finally:
                self._token = _FREE
            if ended:  # the end of the stream: the reader thread finishes the job
                self._ending = True
                self._reader_wakeup.notify()
            else:
                if not self._items:  # else get() takes one at once, and notes the time
                    self._held_since = time.monotonic()
                if self._reader_waits_untimed:
                    self._reader_wakeup.notify()  # to start its hold timer
            if self._getters_waiting:
                self._condition.notify_all()

    def reader_turn(self) -> bool:
        """Wait until the reader thread may read; ``False`` if an application thread read the end.

        The reader thread waits while an application thread reads, and for
        ``HOLD`` seconds after an application thread last took a message
        or read, since it is likely to call :meth:`get` again.
        """
        with self._condition:
            while True:
                if self._ending:
                    self._token = _READER
                    return False
                if self._token == _FREE and not self._getters_waiting:
                    left = 0.0 if self._pong_awaited else self._held_since + HOLD - time.monotonic()
                    if left <= 0:
                        if self._has_room():
                            break
                        self._wait_for_room()
                        continue
                    self._reader_wakeup.wait(left)
                    continue
                # An application thread reads, or is about to take the turn.
                self._reader_waits_untimed = True
                try:
                    self._reader_wakeup.wait()
                finally:
                    self._reader_waits_untimed = False
            self._token = _READER
            return True

    def _has_room(self) -> bool:
        """Whether the reader thread may read: the budget is not spent, or the end is near."""
        share = self._share
        return share is None or not share.budget.exhausted or self._not_waiting or self._closed

    def _wait_for_room(self) -> None:
        """Pause the reader thread until the budget has room; the lock is held."""
        assert self._share is not None
        budget = self._share.budget
        if not budget.pause(self):
            return
        self._waiting_for_room = True
        try:
            # Woken by wake_reader() (room in the budget), a take from this
            # queue, a getter (which then reads for itself), or the end. The
            # timeout is a safety net only.
            self._reader_wakeup.wait(1.0)
        finally:
            self._waiting_for_room = False
            budget.forget(self)

    def wake_reader(self) -> None:
        """The budget has room again: a reader thread paused for it looks again."""
        with self._condition:
            if self._waiting_for_room:
                self._reader_wakeup.notify()

    def set_partial(self, size: int) -> None:
        """Count ``size`` bytes of messages still arriving (the protocol's buffer) in the budget.

        Called by whoever reads, after a read that changed it.
        """
        share = self._share
        if size == self._partial or share is None:
            return
        with self._condition:
            self._partial = size
            held = self._bytes + size
            if not share.stale(held):
                return
            to_wake = share.update(held)
        for queue in to_wake:
            queue.wake_reader()

    @property
    def paused(self) -> bool:
        """Whether the reader thread waits for room (budget) or for a full queue to drain.

        While it does, the peer's frames (pongs included) are not read: a
        keepalive should not hold that against the peer.
        """
        return self._waiting_for_room or self._putters_waiting > 0

    def reader_delay(self) -> Optional[float]:
        """Seconds until the reader thread should take over; ``None`` while an app thread reads.

        For a connection whose reader thread is not running yet: ``0`` or
        less means start it now.
        """
        with self._condition:
            if self._ending:
                return 0.0
            if self._token != _FREE or self._getters_waiting:
                return None  # an application thread reads, or is about to
            if self._pong_awaited:
                return 0.0
            return self._held_since + HOLD - time.monotonic()

    @property
    def pong_awaited(self) -> bool:
        """Whether a ping waits for its pong (see :meth:`expect_pong`)."""
        return self._pong_awaited

    def expect_pong(self, waiting: bool) -> None:
        """Note whether a ping this side sent waits for its pong.

        While one does, the reader thread does not hold off for ``HOLD``
        seconds after an application thread's ``recv()`` returned: a pong
        that arrives while nobody reads is read as it arrives, so
        ``ping().wait()`` and ``latency`` see the real round trip. Called by
        the connection's pings, under the writer lock.
        """
        with self._condition:
            self._pong_awaited = waiting
            if waiting:
                self._reader_wakeup.notify()  # a reader thread holding off looks again

    def reader_done(self) -> None:
        """The reader thread finished one read: the socket is free again."""
        with self._condition:
            self._token = _FREE
            if self._getters_waiting:
                self._condition.notify_all()

    def wait_drained(self, timeout: Optional[float], idle: float = 0.5) -> bool:
        """Wait until the application has taken every message and asks for more.

        "Asks for more" (a caller waiting in :meth:`get`) matters: it means
        the application has finished with the last message, for example sent
        its reply. Waiting stops early when the application takes nothing
        for ``idle`` seconds (it is busy elsewhere, or never reads), when
        :meth:`stop_waiting` is called, or after ``timeout``. Returns whether
        the queue was drained.
        """
        deadline = Deadline(timeout)

        def drained() -> bool:
            return (
                (not self._items and self._getters_waiting > 0) or self._not_waiting or self._closed
            )

        with self._condition:
            self._drain_waiting = True
            try:
                while not drained():
                    taken = self._taken
                    remaining = deadline.remaining()
                    step = idle if remaining is None else min(idle, remaining)
                    self._condition.wait_for(drained, step)
                    if self._taken == taken or deadline.remaining() == 0:
                        break
                return drained()
            finally:
                self._drain_waiting = False

    @property
    def backlog(self) -> int:
        """How many messages wait for the application."""
        return len(self._items)

    @property
    def backlog_bytes(self) -> int:
        """The memory, in bytes, that the messages waiting for the application take."""
        return self._bytes

    @property
    def empty(self) -> bool:
        """Whether no message is waiting."""
        return not self._items

    def close(self) -> None:
        """No more messages will come; wake every waiter.

        The messages still queued stay readable, but no longer count in the
        budget: no more bytes will come, and a handler that has returned may
        never take them (they go with the connection object).
        """
        to_wake: List[BudgetedQueue] = []
        with self._condition:
            self._closed = True
            if self._share is not None:
                to_wake = self._share.update(0)
                self._share = None
                self._partial = 0
            self._condition.notify_all()
            self._reader_wakeup.notify_all()
        for queue in to_wake:
            queue.wake_reader()

    def stop_waiting(self) -> None:
        """Never block :meth:`put` again, nor hold the reader back (the connection is closing).

        Messages already queued stay readable; new ones beyond ``max_size``
        are dropped, so memory stays bounded and the reader keeps reading.
        """
        with self._condition:
            self._not_waiting = True
            self._held_since = 0.0  # the application is done: the reader reads at once
            self._condition.notify_all()
            self._reader_wakeup.notify_all()


class _Converter:
    """Turn the pieces of one message into the type ``recv_streaming(decode=...)`` asks for."""

    def __init__(self, decode: Optional[bool]) -> None:
        self.decode = decode
        self._decoder: Optional[codecs.IncrementalDecoder] = None

    def __call__(self, piece: Data, final: bool) -> Data:
        if self.decode is None:
            return piece
        if not self.decode:
            return piece.encode("utf-8") if isinstance(piece, str) else piece
        if isinstance(piece, str):
            return piece
        if self._decoder is None:
            self._decoder = codecs.getincrementaldecoder("utf-8")()
        return self._decoder.decode(piece, final)


class Receiver:
    """Hands messages to ``recv()`` and ``recv_streaming()``, one receiver at a time.

    Runs on the application threads that receive. Fragmented messages come
    out of the queue piece by piece: :meth:`recv` joins them (keeping the
    pieces across a timeout), :meth:`stream` hands them on.

    Args:
        take: takes the next item, waiting until the deadline
            (``take(deadline, timeout)``; ``timeout`` is for the message of
            the ``TimeoutError`` it raises).
    """

    def __init__(self, take: Callable[[Deadline, Optional[float]], Item]) -> None:
        self._take = take
        self._lock = threading.Lock()
        self._parts: List[Data] = []  # pieces of a message a timed-out recv() began
        self._skip_rest = False  # an abandoned stream(): drop the rest of its message
        # The thread that last advanced an unfinished stream() (which holds the lock).
        self._streaming_thread: Optional[int] = None

    def _check_no_open_stream(self) -> None:
        """Refuse to wait for the lock that this thread's own unfinished stream() holds.

        Waiting would never end: the stream only lets go of the lock when
        this thread iterates it to the end or closes it.

        Raises:
            RuntimeError: this thread holds an unfinished ``recv_streaming()`` iterator.
        """
        if self._streaming_thread == threading.get_ident():
            raise RuntimeError(
                "this thread has a recv_streaming() iterator that is not finished: "
                "iterate it to the end or call its close() before receiving again"
            )

    def recv(self, timeout: Optional[float], decode: Optional[bool]) -> Data:
        """The next whole message (see ``Connection.recv``)."""
        if self._streaming_thread is not None:
            self._check_no_open_stream()
        lock = self._lock
        if timeout is None:  # the common case: as little as possible per message
            deadline = NO_DEADLINE
            lock.acquire()
        else:
            deadline = Deadline(timeout)
            if not lock.acquire(True, timeout):
                raise TimeoutError(f"no message within {timeout} seconds")
        try:
            if self._parts or self._skip_rest:
                message = self._recv_rest(deadline, timeout)
            else:
                item = self._take(deadline, timeout)
                if type(item) is Fragment:
                    message = self._assemble(item, deadline, timeout)
                else:
                    message = item  # type: ignore[assignment]
        finally:
            lock.release()
        if decode is None:
            return message
        if decode:
            return message if isinstance(message, str) else message.decode("utf-8")
        return message.encode("utf-8") if isinstance(message, str) else message

    def stream(self, decode: Optional[bool]) -> Iterator[Data]:
        """The next message, piece by piece (see ``Connection.recv_streaming``).

        The lock is held from the first piece until the message's last piece
        has been taken from the queue; it is let go before that piece is
        handed over, so an iterator kept after its last piece blocks nobody.
        """
        self._check_no_open_stream()
        self._lock.acquire()
        finished = False
        try:
            self._streaming_thread = threading.get_ident()
            deadline = NO_DEADLINE
            if self._skip_rest:
                self._skip_fragments(deadline, None)
            convert = _Converter(decode)
            pending, self._parts = self._parts, []
            for piece in pending:  # what a timed-out recv() had begun
                yield convert(piece, False)
                self._streaming_thread = threading.get_ident()
            item = self._take(deadline, None)
            while True:
                if type(item) is not Fragment:
                    assert not pending, "a whole message inside a fragmented one"
                    finished = True
                    last = convert(item, True)  # type: ignore[arg-type]
                    break
                if item.fin:
                    finished = True
                    last = convert(item.data, True)
                    break
                yield convert(item.data, False)
                self._streaming_thread = threading.get_ident()
                item = self._take(deadline, None)
        finally:
            if not finished:
                self._skip_rest = True
            self._streaming_thread = None
            self._lock.release()
        yield last  # the whole message is taken: the lock is free already

    def _assemble(
        self, item: Optional[Fragment], deadline: Deadline, timeout: Optional[float]
    ) -> Data:
        """Join a fragmented message; its pieces so far stay in ``_parts`` if time runs out."""
        parts = self._parts
        while True:
            if item is not None:
                parts.append(item.data)
                if item.fin:
                    break
            taken = self._take(deadline, timeout)
            assert type(taken) is Fragment, "a whole message inside a fragmented one"
            item = taken
        self._parts = []
        return "".join(parts) if isinstance(parts[0], str) else b"".join(parts)  # type: ignore[arg-type]

    def _recv_rest(self, deadline: Deadline, timeout: Optional[float]) -> Data:
        """recv() after a timeout or an abandoned stream: finish or skip that message first."""
        if self._skip_rest:
            self._skip_fragments(deadline, timeout)
        if self._parts:
            return self._assemble(None, deadline, timeout)
        item = self._take(deadline, timeout)
        if type(item) is Fragment:
            return self._assemble(item, deadline, timeout)
        return item  # type: ignore[return-value]

    def _skip_fragments(self, deadline: Deadline, timeout: Optional[float]) -> None:
        """Drop the rest of a message whose streaming reader gave up on it."""
        self._parts = []
        while True:
            item = self._take(deadline, timeout)
            if type(item) is not Fragment or item.fin:
                break
        self._skip_rest = False
