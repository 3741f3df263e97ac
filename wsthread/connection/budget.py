"""The receive budget: bytes received and not yet read, across connections; used by every reader.

A :class:`ReceiveBudget` is shared by the connections made with the same
``receive_budget=`` value (through :func:`wsthread.connection.threads.shared`). Each
:class:`~wsthread.connection.messages.MessageQueue` counts what it holds in it
through its own :class:`BudgetShare`, in steps of :data:`GRANULE` bytes,
so that small messages never touch the shared lock. Past the limit,
reader threads stop reading until an application takes a message
(see ``MessageQueue.reader_turn``).
"""

from __future__ import annotations

import threading
from typing import Dict, List, Protocol

__all__ = [
    "BudgetedQueue",
    "BudgetShare",
    "GRANULE",
    "ReceiveBudget",
]

#: A queue's count in the budget is brought up to date when it is this far
#: off, or when the queue empties: small messages then never touch the
#: shared budget, and each connection is off by less than this.
GRANULE = 16 * 1024


class BudgetedQueue(Protocol):
    """What the budget needs of a queue that shares it: a way to wake its paused reader.

    :class:`~wsthread.connection.messages.MessageQueue` is the one kind there
    is; the budget holds queues only to hand them back to the caller to wake.
    """

    def wake_reader(self) -> None:
        """Let the queue's reader, paused for lack of room, read again."""


class ReceiveBudget:
    """The bytes received and not yet read by the application, across many connections.

    Every :class:`~wsthread.connection.messages.MessageQueue` that shares a budget adds what it
    holds: the
    messages waiting for the application, and the message being assembled
    (see ``MessageQueue.set_partial``). Past ``limit`` bytes, the
    connections' reader threads stop reading (the peers' TCP windows fill
    and they wait); an application thread waiting in ``recv()`` still reads
    its own connection, so that nobody waits for ever. Reading resumes at
    once when an application takes a message and the total goes back under
    the limit.

    Thread-safe. Lock order: a queue's lock, then the budget's lock; the
    budget never takes a queue's lock while holding its own.
    """

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError(f"a receive budget must be positive, not {limit}")
        self.limit = limit
        self._used = 0
        self._peak = 0
        self._lock = threading.Lock()
        self._paused: Dict[BudgetedQueue, None] = {}  # queues whose reader waits for room

    # Read-only counters, alike on purpose (like those of hubs.RedisHub): a
    # documented property each, and nobody outside sets them.
    @property
    def used(self) -> int:
        """Bytes held now."""
        return self._used

    @property
    def peak(self) -> int:
        """The most bytes held at any moment so far."""
        return self._peak

    @property
    def exhausted(self) -> bool:
        """Whether the budget is spent: reader threads should not read."""
        with self._lock:
            return self._used >= self.limit

    def add(self, size: int) -> None:
        """Count ``size`` more bytes (negative: fewer)."""
        with self._lock:
            self._used += size
            if self._used > self._peak:
                self._peak = self._used

    def release(self, size: int) -> List[BudgetedQueue]:
        """Count ``size`` bytes fewer; return the paused queues to wake (there is room again).

        The caller wakes them with ``MessageQueue.wake_reader`` after
        letting go of its own queue's lock.
        """
        with self._lock:
            self._used -= size
            if not self._paused or self._used >= self.limit:
                return []
            paused = list(self._paused)
            self._paused.clear()
            return paused

    def pause(self, queue: BudgetedQueue) -> bool:
        """Note that ``queue``'s reader waits for room; ``False`` if there is room after all."""
        with self._lock:
            if self._used < self.limit:
                return False
            self._paused[queue] = None
            return True

    def forget(self, queue: BudgetedQueue) -> None:
        """``queue`` no longer waits for room."""
        with self._lock:
            self._paused.pop(queue, None)


class BudgetShare:
    """What one queue counts in a :class:`ReceiveBudget`, and how it brings that up to date.

    Its queue decides *when* (the tests on :attr:`counted` are inline on the
    queue's hot paths, where a call per message would cost); this does the
    arithmetic. Called under the queue's lock, which comes before the
    budget's in the lock order.
    """

    __slots__ = ("budget", "counted")

    def __init__(self, budget: ReceiveBudget) -> None:
        self.budget = budget
        self.counted = 0
        """The bytes this queue counts in the budget now."""

    def update(self, held: int) -> List[BudgetedQueue]:
        """Count ``held`` bytes from now on; return the paused queues to wake.

        The caller wakes them with ``MessageQueue.wake_reader`` after letting
        go of its own queue's lock.
        """
        change, self.counted = held - self.counted, held
        if change >= 0:
            self.budget.add(change)
            return []
        return self.budget.release(-change)

    def stale(self, held: int) -> bool:
        """Whether ``held`` is far enough from :attr:`counted` to report (or the queue emptied)."""
        counted = self.counted
        return abs(held - counted) >= GRANULE or (not held and counted != 0)
