"""The receive budget: bytes received and not yet read, bounded across connections."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from sys import getsizeof
from typing import Any, List, Optional

import pytest

import wsthread
from conftest import ServerFactory, wait_until
from wsthread.connection.budget import GRANULE, BudgetShare, ReceiveBudget
from wsthread.connection.messages import MessageQueue
from wsthread.connection.threads import shared
from wsthread.options import DEFAULT_RECEIVE_BUDGET, default_receive_budget

ROOT = Path(__file__).resolve().parent.parent


def reader_turn_in_thread(queue: MessageQueue) -> threading.Event:
    """Run ``queue.reader_turn()`` on a thread; the event is set when it returns."""
    done = threading.Event()

    def run() -> None:
        queue.reader_turn()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done


def test_default_budget_is_a_sane_fraction() -> None:
    """1/16 of the memory, at most 64 MiB, at least 1 MiB."""
    assert default_receive_budget() == DEFAULT_RECEIVE_BUDGET
    assert 2**20 <= DEFAULT_RECEIVE_BUDGET <= 64 * 2**20


def test_a_share_reports_in_steps_and_wakes_the_paused_when_it_frees_room() -> None:
    """BudgetShare: stale() past a step or when emptied; update() adds, or frees and wakes."""
    budget = ReceiveBudget(3 * GRANULE)
    share, other = BudgetShare(budget), BudgetShare(budget)
    assert not share.stale(GRANULE - 1) and share.stale(GRANULE)
    assert share.update(2 * GRANULE) == [] and budget.used == 2 * GRANULE
    assert other.update(GRANULE) == [] and budget.exhausted
    paused = MessageQueue(None, budget=budget)
    assert budget.pause(paused)  # its reader waits for room
    assert not share.stale(GRANULE + 1)  # off by less than a step
    assert share.stale(0)  # emptied: always reported
    assert share.update(GRANULE) == [paused]  # room again: wake its reader
    assert budget.used == 2 * GRANULE and budget.peak == 3 * GRANULE
    assert share.update(0) == [] and other.update(0) == [] and budget.used == 0
    assert not share.stale(0)  # nothing counted, nothing held


def test_queue_counts_its_bytes_in_the_budget() -> None:
    """put() adds a message's size, get() removes it, close() forgets the rest.

    A queue reports to the shared budget in steps of 16 KiB and when it
    empties, so small messages cost the budget nothing.
    """
    budget = ReceiveBudget(10**7)
    queue = MessageQueue(None, budget=budget)
    queue.put(b"tiny")
    assert budget.used == 0  # under the step: not reported
    assert queue.get(timeout=0) == b"tiny"
    big, text = b"x" * 100000, "y" * 50000
    queue.put(big)
    queue.put(text)
    assert queue.backlog_bytes == budget.used == getsizeof(big) + getsizeof(text)
    assert queue.get(timeout=0) == big
    assert budget.used == getsizeof(text)
    queue.set_partial(30000)
    assert budget.used == getsizeof(text) + 30000
    queue.set_partial(25000)  # off by less than a step: not reported yet
    assert budget.used == getsizeof(text) + 30000
    queue.set_partial(0)
    assert queue.get(timeout=0) == text
    assert budget.used == 0  # empty: reported exactly
    queue.put(big)
    queue.close()
    assert budget.used == 0  # the connection is over: its leftovers no longer count
    assert queue.get(timeout=0) == big  # but they stay readable
    assert budget.used == 0


def test_reader_pauses_when_the_budget_is_spent_and_resumes_when_another_queue_drains() -> None:
    """The budget is shared: taking a message from one queue lets another's reader go on."""
    budget = ReceiveBudget(50000)
    first = MessageQueue(None, budget=budget)
    second = MessageQueue(None, budget=budget)
    first.put(b"a" * 60000)  # over the budget on its own
    assert budget.exhausted
    time.sleep(0.06)  # past HOLD: the reader would take its turn at once
    done = reader_turn_in_thread(second)
    assert wait_until(lambda: second.paused, 5)
    assert not done.wait(0.2)  # paused, not reading
    assert first.get(timeout=0) == b"a" * 60000
    assert done.wait(5)  # woken at once by the take on the other queue
    assert not second.paused


def test_a_waiting_getter_reads_even_when_the_budget_is_spent() -> None:
    """An application waiting in recv() reads its own socket: nobody waits for ever."""
    budget = ReceiveBudget(20000)
    sleeper = MessageQueue(None, budget=budget)
    sleeper.put(b"z" * 100000)  # a handler that does not read holds the whole budget
    assert budget.exhausted
    active = MessageQueue(None, budget=budget)

    def read(timeout: Optional[float]) -> bool:
        active.put(b"fresh", block=False)
        return True

    assert active.get(timeout=5, read=read) == b"fresh"


def test_stop_waiting_lets_the_reader_read_past_the_budget() -> None:
    """A closing connection must read the close frame whatever the budget says."""
    budget = ReceiveBudget(20000)
    queue = MessageQueue(None, budget=budget)
    queue.put(b"q" * 100000)
    time.sleep(0.06)
    done = reader_turn_in_thread(queue)
    assert wait_until(lambda: queue.paused, 5)
    queue.stop_waiting()
    assert done.wait(5)


def test_busy_handler_is_not_closed_by_keepalive_while_reading_is_paused(
    make_server: ServerFactory,
) -> None:
    """Pongs unread behind a full queue never make the keepalive close the connection."""
    received: List[Any] = []
    release = threading.Event()

    def handler(ws: Any) -> None:
        release.wait(10)
        for _ in range(50):
            received.append(ws.recv(timeout=10))

    server = make_server(handler, ping_interval=0.1, ping_timeout=0.2, max_queue=2)
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/", ping_interval=None) as ws:
        for number in range(50):
            ws.send(f"{number} " + "x" * 50000)
        time.sleep(1.5)  # many keepalive periods while the server reads nothing
        assert not ws.closed
        release.set()
        assert wait_until(lambda: len(received) == 50, 10)
    assert [int(str(message).split()[0]) for message in received] == list(range(50))


@pytest.mark.parametrize("compression", ["deflate", None])
def test_client_stops_reading_past_its_budget_and_loses_nothing(
    make_server: ServerFactory, compression: Optional[str]
) -> None:
    """A client that does not read holds about its budget, then gets every message in order.

    With compression, 18 KB on the wire inflate to these 4 MB: the protocol
    hands them out in batches, so the budget holds there too.
    """
    limit = 2**20 + (17 if compression else 0)  # a budget of its own for each case

    def handler(ws: Any) -> None:
        for number in range(40):
            ws.send(f"{number:04d}" + "m" * 100000)
        ws.recv(timeout=30)

    server = make_server(handler, write_timeout=30)
    budget = shared(ReceiveBudget, limit)
    with wsthread.connect(
        f"ws://127.0.0.1:{server.port}/",
        receive_budget=limit,
        max_queue=None,
        compression=compression,
    ) as ws:
        assert wait_until(lambda: budget.exhausted, 10)
        time.sleep(0.5)
        held = budget.used
        # At most one read beyond the limit, and never all 4 MB.
        assert limit <= held <= limit + 200000, held
        assert ws.received_bytes < 40 * 100000
        numbers = [int(str(ws.recv(timeout=10))[:4]) for _ in range(40)]
        assert numbers == list(range(40))
        ws.send("done")
    assert budget.peak <= limit + 200000


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_flood_to_sleeping_handlers_stays_within_150_mb(tmp_path: Path) -> None:
    """100 connections x 40 messages of ~1 MiB to handlers that wait, defaults: RSS +<=150 MB.

    Both while the handlers do not read and over the whole run, the reading
    included (the handlers drop each message once checked: what they keep
    is theirs, see ``benchmarks/unread.py --keep-last``).
    """
    output = tmp_path / "unread.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "unread.py"), "--json", str(output)],
        capture_output=True,
        text=True,
        timeout=540,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(output.read_text())
    assert figures["handlers_ok"] == 100 and figures["clients_ok"] == 100, figures["problems"]
    assert figures["peak_growth_while_unread_mb"] <= 150, figures
    assert figures["peak_growth_whole_run_mb"] <= 150, figures
    assert figures["budget_peak_mb"] <= figures["budget_limit_mb"] * 1.2, figures
