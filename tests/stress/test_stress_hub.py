"""Stress: two servers joined by Redis hubs, broadcasting from many threads through an outage.

A real ``redis-server`` on a free port (the ``redis_server`` fixture) joins
two servers of this process, each with its own :class:`wsthread.hubs.RedisHub`
on one channel, as two processes would be. Their subscriber threads deliver
while broadcasting threads of both servers publish; then Redis is killed and
started again, and the hubs reconnect. Part of the stress suite
(``pytest -m stress``; .ci/run runs it with ``PYTHON_GIL=0`` on 3.13t).
"""

from __future__ import annotations

import threading
from typing import Any, Dict, List

import pytest

import wsthread
from conftest import RedisServer, ServerFactory
from stresskit import BOUND, Collector, run_threads, wait_for, whole

pytestmark = pytest.mark.stress

THREADS = 3  # broadcasting threads per server
PHASES = {"up": 150, "down": 40, "back": 150}  # messages per thread in each phase


def read_all(ws: Any, collector: Collector) -> None:
    """Collect every message until the connection closes."""
    for message in ws:
        collector.add(message)


def test_hub_subscribers_and_reconnect_under_concurrent_broadcasts(
    make_server: ServerFactory, redis_server: RedisServer
) -> None:
    """3 threads per server broadcast while Redis is up, down, then back: each client gets
    its own server's messages all, and the other's exactly those sent while Redis was up,
    once and in order; the hubs' counters account for every message."""
    from wsthread.hubs import RedisHub

    hubs = [
        RedisHub(redis_server.url, "stress", min_delay=0.02, max_delay=0.1, ping_interval=0.5)
        for _ in range(2)
    ]
    servers = [
        make_server(lambda ws: [None for _ in ws], hub=hub, write_limit=None) for hub in hubs
    ]
    assert all(hub.wait_healthy(BOUND) for hub in hubs)
    clients = [
        wsthread.connect(f"ws://127.0.0.1:{server.port}/") for server in servers for _ in range(3)
    ]
    collectors = [Collector() for _ in clients]
    readers = [
        threading.Thread(target=read_all, args=(ws, collector), daemon=True)
        for ws, collector in zip(clients, collectors)
    ]
    for reader in readers:
        reader.start()
    assert all(wait_for(lambda s=s: len(s.connections) == 3) for s in servers)
    next_number = {(s, t): 0 for s in range(2) for t in range(THREADS)}
    received_while_up: Dict[str, List[int]] = {}

    def broadcast(server: int, thread: int, count: int, reaches_the_other: bool) -> None:
        source = f"s{server}t{thread}"
        for _ in range(count):
            n = next_number[(server, thread)]
            servers[server].broadcast(whole(source, n))
            if reaches_the_other:
                received_while_up.setdefault(source, []).append(n)
            next_number[(server, thread)] = n + 1

    def phase(name: str, reaches_the_other: bool) -> None:
        run_threads(
            [
                lambda s=s, t=t: broadcast(s, t, PHASES[name], reaches_the_other)
                for s in range(2)
                for t in range(THREADS)
            ]
        )

    phase("up", True)
    # broadcast() only queues for the hub's publishing thread: let it send
    # everything of this phase before Redis goes.
    assert all(hub.flush(BOUND) for hub in hubs)
    redis_server.stop()
    assert wait_for(lambda: not any(hub.healthy for hub in hubs))
    phase("down", False)
    redis_server.start()
    assert all(hub.wait_healthy(BOUND) for hub in hubs)
    phase("back", True)

    total = sum(PHASES.values())
    for index, collector in enumerate(collectors):
        mine = 0 if index < 3 else 1
        expected = {f"s{mine}t{t}": list(range(total)) for t in range(THREADS)}
        for t in range(THREADS):
            expected[f"s{1 - mine}t{t}"] = received_while_up[f"s{1 - mine}t{t}"]
        count = sum(len(numbers) for numbers in expected.values())
        assert wait_for(lambda collector=collector, count=count: len(collector) >= count)
        assert collector.by_source() == expected, f"client {index}"
    across = THREADS * (PHASES["up"] + PHASES["back"])
    assert all(hub.flush(BOUND) for hub in hubs)  # the counters are its thread's
    for hub in hubs:
        assert hub.published == across
        assert hub.dropped == THREADS * PHASES["down"]
        assert hub.received == across
        assert hub.outages == 1
    for ws in clients:
        ws.close()
