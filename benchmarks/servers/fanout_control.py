"""What every fan-out server of the benchmark shares: the payload and the commands on stdin.

Imported by the ``*_fanout.py`` scripts beside it; their main thread (or
their event loop, for the asyncio servers) runs this code. The benchmark
(``benchmarks/fanout.py``) drives a server through its stdin, one command a
line, and reads one JSON line on stdout per command:

- ``count``: how many clients are connected and how many have subscribed to
  a topic: ``{"connections": N, "subscribed": M}``;
- ``flood N SIZE``: N broadcasts of SIZE bytes, as fast as the server can
  make them;
- ``paced N RATE SIZE``: N broadcasts, RATE a second;
- ``topics ROUNDS TOPICS SIZE``: ROUNDS times, one publish to each topic;
- ``stats``: the server's own counters, if it has any;
- ``quit``.

The three sending commands answer ``{"started_ns": T0, "ended_ns": T1}``
(``time.monotonic_ns()``, which on Linux is one clock for every process),
or ``{"error": "..."}`` when the server cannot do it. Each message starts
with its sequence number within the command, the ``monotonic_ns()`` at which
the server began to send it and its topic (``HEADER``), padded to SIZE.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

# sequence number, send time (ns), topic; network byte order.
HEADER = "!IQH"
HEADER_SIZE = 14


def make_payload(sequence: int, size: int, topic: int = 0) -> bytes:
    """One message: its header, stamped now, padded with zeros to ``size`` bytes."""
    import struct

    head = struct.pack(HEADER, sequence, time.monotonic_ns(), topic)
    return head + bytes(max(0, size - len(head)))


def reply(**fields: Any) -> None:
    """Answer the benchmark: one JSON line on stdout."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def read_commands() -> Iterator[List[str]]:
    """The commands on stdin, split into words, until ``quit`` or EOF."""
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            return
        yield words


class Subscriptions:
    """Topic membership kept by a server that has no topics of its own: a lock and a dict.

    ``add`` runs on the connections' threads (or the event loop); ``members``
    on the thread that publishes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: Dict[int, List[Any]] = {}
        self.count = 0

    def add(self, topic: int, member: Any) -> None:
        """Put ``member`` on ``topic``."""
        with self._lock:
            self._members.setdefault(topic, []).append(member)
            self.count += 1

    def discard(self, member: Any) -> None:
        """Take ``member`` off every topic (a connection that ended)."""
        with self._lock:
            for members in self._members.values():
                while member in members:
                    members.remove(member)
                    self.count -= 1

    def members(self, topic: int) -> List[Any]:
        """A copy of ``topic``'s members."""
        with self._lock:
            return list(self._members.get(topic, ()))


def parse_subscribe(message: Any) -> Optional[int]:
    """The topic of a client's ``subscribe N`` text message, or None for anything else."""
    if isinstance(message, str) and message.startswith("subscribe "):
        return int(message.split()[1])
    return None


def serve_commands(
    broadcast: Callable[[bytes], Any],
    count: Callable[[], Dict[str, int]],
    publish: Optional[Callable[[int, bytes], Any]] = None,
    stats: Callable[[], Dict[str, Any]] = dict,
    no_topics: str = "this server has no topic fan-out",
) -> None:
    """Run the benchmark's commands on this thread until ``quit``, for a threaded server."""
    for words in read_commands():
        command, numbers = words[0], [float(word) for word in words[1:]]
        if command == "count":
            reply(**count())
        elif command == "stats":
            reply(**stats())
        elif command == "flood":
            total, size = int(numbers[0]), int(numbers[1])
            started = time.monotonic_ns()
            for sequence in range(total):
                broadcast(make_payload(sequence, size))
            reply(started_ns=started, ended_ns=time.monotonic_ns())
        elif command == "paced":
            total, rate, size = int(numbers[0]), numbers[1], int(numbers[2])
            started = time.monotonic_ns()
            for sequence in range(total):
                delay = started / 1e9 + sequence / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                broadcast(make_payload(sequence, size))
            reply(started_ns=started, ended_ns=time.monotonic_ns())
        elif command == "topics":
            if publish is None:
                reply(error=no_topics)
                continue
            rounds, topics, size = int(numbers[0]), int(numbers[1]), int(numbers[2])
            started = time.monotonic_ns()
            for sequence in range(rounds):
                for topic in range(topics):
                    publish(topic, make_payload(sequence, size, topic))
            reply(started_ns=started, ended_ns=time.monotonic_ns())
        else:
            reply(error=f"unknown command {command!r}")


async def serve_commands_async(
    broadcast: Callable[[bytes], Any],
    count: Callable[[], Dict[str, int]],
    publish: Optional[Callable[[int, bytes], Any]] = None,
) -> None:
    """The same commands for an asyncio server, run on its event loop.

    A flood makes its broadcasts without yielding to the loop in between, as
    an application looping over ``broadcast()`` would; what the sockets do
    not take at once is written by the loop afterwards.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[Optional[str]] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read_stdin, daemon=True).start()
    while True:
        line = await lines.get()
        if line is None:
            return
        words = line.split()
        if not words:
            continue
        command, numbers = words[0], [float(word) for word in words[1:]]
        if command == "quit":
            return
        if command == "count":
            reply(**count())
        elif command == "stats":
            reply()
        elif command == "flood":
            total, size = int(numbers[0]), int(numbers[1])
            started = time.monotonic_ns()
            for sequence in range(total):
                broadcast(make_payload(sequence, size))
            reply(started_ns=started, ended_ns=time.monotonic_ns())
        elif command == "paced":
            total, rate, size = int(numbers[0]), numbers[1], int(numbers[2])
            started = time.monotonic_ns()
            for sequence in range(total):
                delay = started / 1e9 + sequence / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                broadcast(make_payload(sequence, size))
            reply(started_ns=started, ended_ns=time.monotonic_ns())
        elif command == "topics":
            if publish is None:
                reply(error="this server has no topic fan-out")
                continue
            rounds, topics, size = int(numbers[0]), int(numbers[1]), int(numbers[2])
            started = time.monotonic_ns()
            for sequence in range(rounds):
                for topic in range(topics):
                    publish(topic, make_payload(sequence, size, topic))
            reply(started_ns=started, ended_ns=time.monotonic_ns())
        else:
            reply(error=f"unknown command {command!r}")
