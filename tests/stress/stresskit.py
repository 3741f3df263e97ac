"""Helpers of the thread-safety stress suite (tests/stress): numbered messages, threads, bounds.

Every message names its source and its number, and its body is derived
from both, so a check tells a message that arrived whole and once from one
that was cut, torn, interleaved with another, lost or duplicated. The
threads of a test are joined within a bound, so a deadlock fails the test instead of hanging
it. Each test also stops starting new rounds after :data:`ROUND_SECONDS`,
so that the suite's time is bounded on a slow machine as well as its
iterations on a fast one.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple, Union

__all__ = [
    "BOUND",
    "ROUND_SECONDS",
    "Collector",
    "Rounds",
    "check",
    "make",
    "whole",
    "run_threads",
    "assert_exact",
    "assert_subsequence",
    "wait_for",
    "wait_until_all_gone",
]

# A deadlock bound, not a speed target: a loaded 2-core machine still passes.
BOUND = 90.0

#: Seconds after which a test starts no new round (it always finishes the
#: current one and runs at least one); WSTHREAD_STRESS_SECONDS overrides it.
ROUND_SECONDS = float(os.environ.get("WSTHREAD_STRESS_SECONDS", "8"))

Message = Union[str, bytes]


def body(source: str, n: int) -> str:
    """The text of message ``n`` of ``source``: 0 to ~70 KB, content from both.

    Sources whose name starts with ``big`` send 16 to 64 KB each (for the
    receive budget, which counts in steps of 16 KiB).
    """
    if source.startswith("big"):
        size = 16_384 + (n * 7919) % 49_152
    else:
        size = 70_000 if n % 97 == 96 else (n * 53) % 2500
    seed = f"{source}.{n}."
    return f"{source}:{n}:" + (seed * (size // len(seed) + 1))[:size]


def make(source: str, n: int) -> Union[Message, List[Message]]:
    """Message ``n`` of ``source``: text, binary, or (one in 11) three fragments."""
    text = body(source, n)
    if n % 11 == 5:
        third = max(1, len(text) // 3)
        return [text[:third], text[third : 2 * third], text[2 * third :]]
    return text.encode() if n % 2 else text


def whole(source: str, n: int) -> Message:
    """Message ``n`` of ``source`` as one text or binary message (for broadcasts)."""
    text = body(source, n)
    return text.encode() if n % 2 else text


def check(message: Message) -> Tuple[str, int]:
    """The source and number of a received message, after checking it is whole and untorn."""
    text = message.decode() if isinstance(message, bytes) else message
    source, n, _ = text.split(":", 2)
    assert text == body(source, int(n)), f"message {source}:{n} is torn or cut"
    return source, int(n)


class Collector:
    """The messages one receiver got, as (source, number), appended under a lock."""

    def __init__(self) -> None:
        self.items: List[Tuple[str, int]] = []
        self._lock = threading.Lock()

    def add(self, message: Message) -> None:
        """Check ``message`` and record it."""
        item = check(message)
        with self._lock:
            self.items.append(item)

    def __len__(self) -> int:
        with self._lock:
            return len(self.items)

    def by_source(self) -> Dict[str, List[int]]:
        """The numbers received from each source, in arrival order."""
        with self._lock:
            items = list(self.items)
        grouped: Dict[str, List[int]] = collections.defaultdict(list)
        for source, n in items:
            grouped[source].append(n)
        return grouped


def assert_exact(got: Dict[str, List[int]], expected: Dict[str, int], who: str = "") -> None:
    """Each source's messages 0..n-1 arrived exactly once and in order, and no others."""
    for source, count in expected.items():
        numbers = got.get(source, [])
        if numbers != list(range(count)):
            duplicated = len(numbers) - len(set(numbers))
            missing = count - len(set(numbers) & set(range(count)))
            raise AssertionError(
                f"{who}{source}: {len(numbers)} received for {count} sent "
                f"({missing} lost, {duplicated} duplicated, in order: {numbers == sorted(numbers)})"
            )
    extra = set(got) - set(expected)
    assert not extra, f"{who}messages from unexpected sources {sorted(extra)}"


def assert_subsequence(got: Dict[str, List[int]], expected: Dict[str, int], who: str = "") -> None:
    """Each source's messages arrived at most once, in order, and were all really sent."""
    for source, numbers in got.items():
        assert source in expected, f"{who}message from unexpected source {source}"
        assert numbers == sorted(set(numbers)), f"{who}{source}: duplicated or out of order"
        assert not numbers or numbers[-1] < expected[source], f"{who}{source}: never sent"


def run_threads(targets: Sequence[Callable[[], None]], bound: float = BOUND) -> None:
    """Run one thread per target, join all within ``bound``; re-raise the first error."""
    errors: List[BaseException] = []
    lock = threading.Lock()

    def wrap(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # reported by the caller
                with lock:
                    errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t), daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + bound
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = sum(thread.is_alive() for thread in threads)
    assert not stuck, f"{stuck} threads still running after {bound} s: a deadlock"
    if errors:
        raise errors[0]


class Rounds:
    """Up to ``limit`` rounds, none started after :data:`ROUND_SECONDS`; counts those run."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.done = 0
        self._deadline = time.monotonic() + ROUND_SECONDS

    def __iter__(self) -> Iterator[int]:
        for number in range(self.limit):
            if number and time.monotonic() > self._deadline:
                return
            yield number
            self.done += 1


def wait_for(predicate: Callable[[], bool], timeout: float = BOUND) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return predicate()
        time.sleep(0.01)
    return True


def wait_until_all_gone(server: Any, count: int) -> Dict[str, Any]:
    """Wait until ``server`` counted ``count`` closes and holds no connection; its ``stats()``.

    A connection's close is counted when its handler is done, a moment
    before the server forgets it: both must have happened.
    """

    def gone() -> bool:
        now = server.stats()["connections"]
        return now["closed"] >= count and now["open"] == now["opening"] == 0

    assert wait_for(gone), f"connections left behind: {server.stats()['connections']}"
    assert server.connections == []
    return dict(server.stats())
