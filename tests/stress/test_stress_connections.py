"""Stress: one connection used by many threads, and a server's counters, registry and budget.

Run with ``pytest -m stress tests/stress`` (left out of the default runs),
and on a free-threaded build with ``PYTHON_GIL=0``, where nothing but
wsthread's locks keeps two threads apart. Every test repeats rounds (see
``stresskit.Rounds``) and checks exact counts: each message sent arrived
once, whole and in order, and each counter equals what the test counted
itself.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from typing import Any, Dict, List, Tuple

import pytest

import wsthread
from conftest import ServerFactory
from stresskit import (
    BOUND,
    Collector,
    Rounds,
    assert_exact,
    make,
    run_threads,
    wait_for,
    wait_until_all_gone,
)
from wsthread.connection.budget import ReceiveBudget
from wsthread.connection.threads import shared

pytestmark = pytest.mark.stress

SENDERS = 8


def send_until_closed(ws: Any, source: str, sent: List[int], index: int) -> None:
    """Send numbered messages of ``source`` until ``ws`` closes; ``sent[index]`` counts successes.

    Each thread writes only its own slot of ``sent``.
    """
    n = 0
    while True:
        try:
            ws.send(make(source, n))
        except wsthread.ConnectionClosed:
            return
        n += 1
        sent[index] = n


def test_threads_sending_on_a_client_connection_while_it_closes(make_server: ServerFactory) -> None:
    """8 threads send on one client connection while 3 others close it: every send that
    returned arrived once, whole and in order; the connection counted each exactly once."""
    finished: queue.Queue[Tuple[Collector, Dict[str, Any]]] = queue.Queue()

    def record(ws: wsthread.ServerConnection) -> None:
        collector = Collector()
        for message in ws:
            collector.add(message)
        finished.put((collector, ws.stats()))

    server = make_server(record)
    rounds = Rounds(40)
    for number in rounds:
        ws = wsthread.connect(f"ws://127.0.0.1:{server.port}/")
        sent = [0] * SENDERS
        target = random.randrange(50, 400)

        def closer(ws: Any = ws, sent: List[int] = sent, target: int = target) -> None:
            wait_for(lambda: sum(sent) >= target)
            ws.close()

        run_threads(
            [
                lambda i=i, ws=ws, sent=sent: send_until_closed(ws, f"t{i}", sent, i)
                for i in range(SENDERS)
            ]
            + [closer] * 3
        )
        collector, server_side = finished.get(timeout=BOUND)
        assert_exact(
            collector.by_source(),
            {f"t{i}": sent[i] for i in range(SENDERS)},
            f"round {number}: ",
        )
        assert sum(sent) >= target, "the close came before the senders got going"
        assert ws.close_code == 1000
        assert ws.stats()["messages_sent"] == sum(sent)
        assert server_side["messages_received"] == sum(sent)
    assert rounds.done >= 1


def test_threads_sending_on_a_server_connection_while_it_closes(make_server: ServerFactory) -> None:
    """The same on the server side: 8 handler-side threads send while 3 close the connection."""
    finished: queue.Queue[Tuple[List[int], Dict[str, Any]]] = queue.Queue()

    def push(ws: wsthread.ServerConnection) -> None:
        sent = [0] * SENDERS
        target = random.randrange(50, 400)

        def closer() -> None:
            wait_for(lambda: sum(sent) >= target)
            ws.close()

        run_threads(
            [lambda i=i: send_until_closed(ws, f"s{i}", sent, i) for i in range(SENDERS)]
            + [closer] * 3
        )
        finished.put((sent, ws.stats()))

    server = make_server(push)
    rounds = Rounds(40)
    for number in rounds:
        collector = Collector()
        with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:
            for message in ws:
                collector.add(message)
        sent, server_side = finished.get(timeout=BOUND)
        assert_exact(
            collector.by_source(), {f"s{i}": sent[i] for i in range(SENDERS)}, f"round {number}: "
        )
        assert ws.close_code == 1000
        assert server_side["messages_sent"] == sum(sent)
        assert ws.stats()["messages_received"] == sum(sent)
    assert rounds.done >= 1


def test_stats_read_while_counters_move(make_server: ServerFactory) -> None:
    """12 clients connect, echo 20 messages and close, again and again, while 3 threads read
    server.stats(): no counter ever goes down, and at the end each equals the clients' own count."""
    server = make_server()
    clients, messages = 12, 20
    connections = [0] * clients
    stop = threading.Event()
    snapshots = [0]

    def client(index: int) -> None:
        rounds = Rounds(40)
        for number in rounds:
            with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:
                for n in range(messages):
                    ws.send(make(f"c{index}.{number}", n))
                collector = Collector()
                for _ in range(messages):
                    collector.add(ws.recv(timeout=BOUND))
                assert_exact(collector.by_source(), {f"c{index}.{number}": messages})
            assert ws.stats()["messages_sent"] == messages
            assert ws.stats()["messages_received"] == messages
            connections[index] += 1

    def watch() -> None:
        last: Dict[str, int] = {}
        while not stop.is_set():
            stats = server.stats()
            now = {
                "opened": stats["connections"]["opened"],
                "closed": stats["connections"]["closed"],
                "1000": stats["closes"].get("1000", 0),
                **stats["traffic"],
            }
            for key, value in now.items():
                assert value >= last.get(key, 0), f"{key} went down: {last[key]} -> {value}"
            assert now["opened"] >= now["closed"]
            assert 0 <= stats["connections"]["open"] <= clients
            last = now
            snapshots[0] += 1

    def clients_then_stop() -> None:
        try:
            run_threads([lambda i=i: client(i) for i in range(clients)])
        finally:
            stop.set()

    run_threads([clients_then_stop, watch, watch, watch])
    total = sum(connections)
    stats = wait_until_all_gone(server, total)
    assert stats["connections"] == {"open": 0, "opening": 0, "opened": total, "closed": total}
    assert stats["closes"] == {"1000": total}
    assert stats["traffic"]["messages_received"] == total * messages
    assert stats["traffic"]["messages_sent"] == total * messages
    assert snapshots[0] > 0


def test_registry_under_connect_disconnect_churn(make_server: ServerFactory) -> None:
    """12 threads connect and leave (cleanly or abruptly) against max_connections=6: never more
    than 6 open, each attempt either opened or got 503, and the counts match exactly."""
    limit, threads = 6, 12
    server = make_server(lambda ws: [None for _ in ws], max_connections=limit)
    opened = [0] * threads
    refused = [0] * threads
    stop = threading.Event()
    most = [0]

    def churn(index: int) -> None:
        for number in Rounds(150):
            try:
                ws = wsthread.connect(f"ws://127.0.0.1:{server.port}/", open_timeout=BOUND)
            except wsthread.InvalidStatus as exc:
                assert exc.status == 503, exc
                refused[index] += 1
                continue
            opened[index] += 1
            if number % 3 == 0:
                ws.fail(1011, "abrupt")  # no closing handshake wait
            else:
                ws.send("bye")
                ws.close()

    def watch() -> None:
        while not stop.is_set():
            open_now = len(server.connections)
            most[0] = max(most[0], open_now)
            assert open_now <= limit
            assert server.stats()["connections"]["open"] <= limit

    def churn_then_stop() -> None:
        try:
            run_threads([lambda i=i: churn(i) for i in range(threads)])
        finally:
            stop.set()

    run_threads([churn_then_stop, watch, watch])
    total = sum(opened)
    stats = wait_until_all_gone(server, total)
    assert stats["connections"] == {"open": 0, "opening": 0, "opened": total, "closed": total}
    assert sum(stats["closes"].values()) == total
    assert stats["rejections"].get("503", 0) == sum(refused)
    assert total > 0 and most[0] >= 1


def test_receive_budget_shared_by_many_connections(make_server: ServerFactory) -> None:
    """16 clients send 16-64 KB messages to slow handlers through one 256 KiB receive budget:
    every message arrives once and in order, nothing deadlocks, nothing stays counted."""
    clients, messages = 16, 40
    finished: queue.Queue[Tuple[Dict[str, List[int]], Dict[str, Any]]] = queue.Queue()

    def slow_reader(ws: wsthread.ServerConnection) -> None:
        collector = Collector()
        for n, message in enumerate(ws):
            collector.add(message)
            if n % 5 == 0:
                time.sleep(0.002)  # a handler that is slower than its client
        finished.put((collector.by_source(), ws.stats()))

    # An odd size: its budget is shared by this server's connections only.
    limit = 256 * 1024 + 7
    server = make_server(slow_reader, receive_budget=limit, max_queue=8)
    budget = shared(ReceiveBudget, limit)  # what every connection of the server counts in

    def client(index: int) -> None:
        for number in Rounds(6):
            with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:
                for n in range(messages):
                    ws.send(make(f"big{index}.{number}", n))

    run_threads([lambda i=i: client(i) for i in range(clients)])
    total = server.stats()["connections"]["opened"]
    results = [finished.get(timeout=BOUND) for _ in range(total)]
    for got, _ in results:
        (source,) = got
        assert_exact(got, {source: messages})
    assert all(stats["messages_received"] == messages for _, stats in results)
    assert wait_until_all_gone(server, total)["buffered"]["received"] == 0
    assert budget.used == 0, f"{budget.used} bytes still counted: a lost or doubled update"
    assert budget.peak >= limit, f"the budget was never spent (peak {budget.peak})"


def test_keepalive_pings_amid_traffic_and_churn(make_server: ServerFactory) -> None:
    """30 clients with 20 ms keepalive on both sides echo and close while the keepalive thread
    pings them all: every echo is exact, every connection sees pongs, every close is 1000."""
    server = make_server(ping_interval=0.02, ping_timeout=BOUND)
    clients, messages = 30, 30
    connections = [0] * clients

    def client(index: int) -> None:
        for number in Rounds(8):
            url = f"ws://127.0.0.1:{server.port}/"
            with wsthread.connect(url, ping_interval=0.02, ping_timeout=BOUND) as ws:
                collector = Collector()
                for n in range(messages):
                    ws.send(make(f"k{index}.{number}", n))
                    collector.add(ws.recv(timeout=BOUND))
                    if n % 10 == 0:
                        time.sleep(0.01)
                assert_exact(collector.by_source(), {f"k{index}.{number}": messages})
                assert wait_for(lambda ws=ws: ws.latency is not None), "no pong came back"
            assert ws.close_code == 1000
            connections[index] += 1

    run_threads([lambda i=i: client(i) for i in range(clients)])
    total = sum(connections)
    stats = wait_until_all_gone(server, total)
    assert stats["closes"] == {"1000": total}, stats["closes"]
    assert stats["traffic"]["messages_received"] == total * messages
