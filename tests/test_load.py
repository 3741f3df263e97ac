"""Load without loss: 100 clients x 1,000 mixed messages echoed and verified byte for byte.

Marked slow. Each client sends its messages from one thread and checks the
echoes on another, at most ``WINDOW`` messages in flight: text and binary,
from a few bytes to 64 KiB, one in ten fragmented, a fifth of the clients
with permessage-deflate. Every echo is compared with what was sent at that
position, so a lost, reordered, duplicated or altered message fails the test;
the counts are printed (``-s``). Then the server still answers and its thread
count is back to its baseline.

Also here: a 20-second run of ``stress/soak.py`` that checks RSS and the
thread count stay bounded while connections churn.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Deque, Dict, List, Sequence, Union

import pytest

import wsthread
from conftest import ServerFactory, run_ok
from wsthread.exceptions import ConnectionClosed

CLIENTS = 100
MESSAGES = 1000
WINDOW = 16

pytestmark = pytest.mark.slow

Message = Union[str, bytes]
TEXT_POOL = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 éüß€ĳ漢字🙂"
_pool_rng = random.Random(6455)
# Messages are slices of these at random offsets: cheap to make, different every time.
TEXT = "".join(_pool_rng.choices(TEXT_POOL, k=200_000))
BINARY = _pool_rng.randbytes(200_000)


def message(client: int, index: int) -> Sequence[Message]:
    """The ``index``-th message of ``client``, as the fragments to send it in.

    The position is written at the start, which makes a mismatch readable.
    """
    rng = random.Random(client * 1_000_003 + index)
    roll = rng.random()
    size = rng.randint(0, 200) if roll < 0.75 else rng.randint(200, 4096) if roll < 0.98 else 65536
    offset = rng.randrange(len(BINARY) - size)
    label = f"{client}:{index}:"
    if rng.random() < 0.5:
        body: Message = label + TEXT[offset : offset + size]
    else:
        body = label.encode() + BINARY[offset : offset + size]
    if rng.random() < 0.1 and len(body) > 4:
        cuts = sorted(rng.sample(range(1, len(body)), min(len(body) - 1, rng.randint(1, 4))))
        edges = [0, *cuts, len(body)]
        return [body[a:b] for a, b in zip(edges, edges[1:])]
    return [body]


def whole(fragments: Sequence[Message]) -> Message:
    """The message the fragments make."""
    if isinstance(fragments[0], str):
        return "".join(fragments)  # type: ignore[arg-type]
    return b"".join(fragments)  # type: ignore[arg-type]


def run_client(port: int, client: int, report: Dict[int, Dict[str, int]]) -> None:
    """Send MESSAGES messages, verify every echo in order, record the counts."""
    counts = {"sent": 0, "verified": 0, "wrong": 0, "extra": 0}
    report[client] = counts
    compression = "deflate" if client % 5 == 0 else None
    ws = wsthread.connect(f"ws://127.0.0.1:{port}/", compression=compression, open_timeout=30)
    window = threading.Semaphore(WINDOW)
    in_flight: Deque[Message] = deque()  # what was sent, in order, not yet echoed
    failures: List[BaseException] = []

    def sender() -> None:
        try:
            for index in range(MESSAGES):
                if not window.acquire(timeout=60):
                    raise TimeoutError("no echo for 60 s")
                fragments = message(client, index)
                in_flight.append(whole(fragments))
                ws.send(fragments[0] if len(fragments) == 1 else fragments)
                counts["sent"] += 1
        except BaseException as exc:  # noqa: B036 - reported by the test
            failures.append(exc)

    thread = threading.Thread(target=sender)
    thread.start()
    try:
        for _ in range(MESSAGES):
            received = ws.recv(timeout=60)
            window.release()
            if received == in_flight.popleft():
                counts["verified"] += 1
            else:
                counts["wrong"] += 1
        try:
            ws.recv(timeout=0.2)
            counts["extra"] += 1
        except TimeoutError:
            pass
    finally:
        thread.join(60)
        ws.close()
    if failures:
        raise failures[0]


@pytest.mark.timeout(300)
def test_100_clients_1000_messages_each_no_loss(make_server: ServerFactory) -> None:
    """100,000 echoes, every one verified in order: none lost, reordered or duplicated."""
    baseline_before_server = threading.active_count()
    server = make_server(ping_interval=None)
    report: Dict[int, Dict[str, int]] = {}
    errors: List[str] = []

    def guarded(client: int) -> None:
        try:
            run_client(server.port, client, report)
        except (ConnectionClosed, OSError, TimeoutError) as exc:
            errors.append(f"client {client}: {exc!r}")

    started = time.monotonic()
    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(240)
    took = time.monotonic() - started
    verified = sum(counts["verified"] for counts in report.values())
    wrong = sum(counts["wrong"] for counts in report.values())
    extra = sum(counts["extra"] for counts in report.values())
    print(
        f"\nload: {CLIENTS} clients x {MESSAGES} messages: {verified} verified, "
        f"{wrong} wrong, {extra} extra, {len(errors)} client errors, in {took:.1f}s"
    )
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert (verified, wrong, extra) == (CLIENTS * MESSAGES, 0, 0)
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        ws.send("still serving")
        assert ws.recv(timeout=10) == "still serving"
    # The server's accept thread is the only one left besides the test's own.
    deadline = time.monotonic() + 10
    while threading.active_count() > baseline_before_server + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= baseline_before_server + 1


@pytest.mark.timeout(120)
def test_soak_20_seconds_stays_bounded() -> None:
    """stress/soak.py churns connections for 20 s: RSS and threads stay bounded, no errors."""
    script = Path(__file__).resolve().parent.parent / "stress" / "soak.py"
    result = run_ok([sys.executable, script, "--duration", "20", "--json"], timeout=100)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"\nsoak: {json.dumps(summary)}")
    assert summary["connections"] > 100
    assert summary["errors"] == 0
    assert summary["threads_end"] <= summary["threads_start"]
    # Churn must not grow memory: RSS warms up (allocator arenas, thread stacks), then
    # stays flat; a leak of a connection's objects would add tens of MB per 10,000.
    assert summary["rss_growth_second_half_mb"] < 30
