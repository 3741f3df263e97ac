"""Stress: broadcasts racing connects and closes, and clients reconnecting to a dropping server.

Part of the thread-safety stress suite (``pytest -m stress``, run by .ci/run
with ``PYTHON_GIL=0`` on the free-threaded build). Clients that stay
connected must get every broadcast exactly once and in each broadcaster's
order; clients that come and go may miss some but never get one twice, out
of order or torn; the server's registry and counters must end exact.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any, Dict, List

import pytest

import wsthread
from conftest import ServerFactory
from stresskit import (
    Collector,
    Rounds,
    assert_exact,
    assert_subsequence,
    check,
    run_threads,
    wait_for,
    wait_until_all_gone,
    whole,
)

pytestmark = pytest.mark.stress


def read_all(ws: Any, collector: Collector) -> None:
    """Collect every message until the connection closes (normally or not)."""
    try:
        for message in ws:
            collector.add(message)
    except wsthread.ConnectionClosed:
        pass


def test_broadcast_races_connect_and_close(make_server: ServerFactory) -> None:
    """4 threads broadcast 1,000 messages each while 4 others connect, read a little and close:
    the 5 clients connected throughout get all 4,000 once and in order, the others a clean
    subsequence, and the registry ends empty with exact counts."""
    server = make_server(lambda ws: [None for _ in ws], write_limit=None)
    url = f"ws://127.0.0.1:{server.port}/"
    broadcasters, per_broadcaster, churners = 4, 1000, 4
    stable = [wsthread.connect(url) for _ in range(5)]
    collectors = [Collector() for _ in stable]
    readers = [
        threading.Thread(target=read_all, args=(ws, collector), daemon=True)
        for ws, collector in zip(stable, collectors)
    ]
    for reader in readers:
        reader.start()
    assert wait_for(lambda: len(server.connections) == len(stable))
    done = threading.Event()
    churned: List[Dict[str, List[int]]] = []
    churn_lock = threading.Lock()
    queued = [0] * broadcasters

    def broadcast(index: int) -> None:
        for n in range(per_broadcaster):
            queued[index] += server.broadcast(whole(f"b{index}", n))
            if n % 10 == 0:
                time.sleep(0.001)  # let connects and closes land in between

    def churn() -> None:
        while not done.is_set():
            collector = Collector()
            with wsthread.connect(url) as ws:
                for _ in range(random.randrange(1, 30)):
                    try:
                        collector.add(ws.recv(timeout=0.01))
                    except TimeoutError:
                        pass
            with churn_lock:
                churned.append(collector.by_source())

    def broadcast_then_stop() -> None:
        try:
            run_threads([lambda i=i: broadcast(i) for i in range(broadcasters)])
        finally:
            done.set()

    run_threads([broadcast_then_stop] + [churn] * churners)
    expected = {f"b{i}": per_broadcaster for i in range(broadcasters)}
    total = broadcasters * per_broadcaster
    for number, collector in enumerate(collectors):
        assert wait_for(lambda collector=collector: len(collector) >= total)
        assert_exact(collector.by_source(), expected, f"stable client {number}: ")
    for got in churned:
        assert_subsequence(got, expected, "churning client: ")
    assert sum(queued) >= len(stable) * total
    for ws in stable:
        ws.close()
    connections = len(stable) + len(churned)
    stats = wait_until_all_gone(server, connections)
    assert stats["connections"]["opened"] == stats["connections"]["closed"] == connections
    assert server.broadcast("nobody") == 0


def test_reconnecting_clients_against_a_server_that_drops_them(make_server: ServerFactory) -> None:
    """16 clients in reconnect() loops; the server drops each connection (1011, abruptly) four
    times after 20 messages, then closes it with 1000: every client connected exactly five
    times, got every message of each connection, and the counters agree."""
    clients, drops, messages = 16, 4, 20
    visits: Dict[str, int] = {}
    visits_lock = threading.Lock()

    def handler(ws: wsthread.ServerConnection) -> None:
        name = ws.recv(timeout=30)
        assert isinstance(name, str)
        with visits_lock:
            visit = visits[name] = visits.get(name, 0) + 1
        for n in range(messages):
            ws.send(whole(f"{name}.{visit}", n))
        assert ws.recv(timeout=30) == "got them"  # nothing left in flight
        if visit <= drops:
            ws.fail(1011, "dropped on purpose")
        else:
            ws.close()

    server = make_server(handler)
    connections = [0] * clients

    def client(index: int) -> None:
        url = f"ws://127.0.0.1:{server.port}/"
        for ws in wsthread.reconnect(url, min_delay=0.01, max_delay=0.05):
            connections[index] += 1
            visit = connections[index]
            ws.send(f"c{index}")
            collector = Collector()
            for _ in range(messages):
                collector.add(ws.recv(timeout=30))
            assert_exact(collector.by_source(), {f"c{index}.{visit}": messages})
            ws.send("got them")
            try:
                for message in ws:
                    raise AssertionError(f"unexpected {check(message)}")
            except wsthread.ConnectionClosedError:
                continue
            assert ws.close_code == 1000

    run_threads([lambda i=i: client(i) for i in range(clients)])
    assert connections == [drops + 1] * clients
    assert visits == {f"c{i}": drops + 1 for i in range(clients)}
    total = clients * (drops + 1)
    stats = wait_until_all_gone(server, total)
    assert stats["connections"]["opened"] == stats["connections"]["closed"] == total
    assert stats["traffic"]["messages_sent"] == total * messages


def test_publish_races_subscribe_unsubscribe_and_close(make_server: ServerFactory) -> None:
    """4 threads publish 1,000 messages each to one topic while 4 others connect, subscribe,
    unsubscribe and close: the 4 subscribers that stay get all 4,000 once and in order,
    the others a clean subsequence; at the end the topic has no subscriber left."""

    def handler(ws: wsthread.ServerConnection) -> None:
        for message in ws:
            if message == "subscribe":
                assert ws.subscribe("news")
                ws.send("subscribed")
            elif message == "unsubscribe":
                assert ws.unsubscribe("news")
                ws.send("unsubscribed")

    server = make_server(handler, write_limit=None)
    url = f"ws://127.0.0.1:{server.port}/"
    publishers, per_publisher, churners = 4, 1000, 4
    stable = [wsthread.connect(url) for _ in range(4)]
    for ws in stable:
        ws.send("subscribe")
        assert ws.recv(timeout=30) == "subscribed"
    collectors = [Collector() for _ in stable]
    readers = [
        threading.Thread(target=read_all, args=(ws, collector), daemon=True)
        for ws, collector in zip(stable, collectors)
    ]
    for reader in readers:
        reader.start()
    done = threading.Event()
    churned: List[Dict[str, List[int]]] = []
    churn_lock = threading.Lock()

    def publish(index: int) -> None:
        for n in range(per_publisher):
            server.publish("news", whole(f"p{index}", n))
            if n % 10 == 0:
                time.sleep(0.001)

    def churn() -> None:
        for number in Rounds(10_000):
            if done.is_set():
                return
            collector = Collector()
            with wsthread.connect(url) as ws:
                ws.send("subscribe")
                leave = number % 2 == 0  # half unsubscribe first, half just close
                while True:
                    message = ws.recv(timeout=30)
                    if message == "subscribed":
                        if not leave:
                            break
                        ws.send("unsubscribe")
                    elif message == "unsubscribed":
                        break
                    else:
                        collector.add(message)
            with churn_lock:
                churned.append(collector.by_source())

    def publish_then_stop() -> None:
        try:
            run_threads([lambda i=i: publish(i) for i in range(publishers)])
        finally:
            done.set()

    run_threads([publish_then_stop] + [churn] * churners)
    expected = {f"p{i}": per_publisher for i in range(publishers)}
    total = publishers * per_publisher
    for number, collector in enumerate(collectors):
        assert wait_for(lambda collector=collector: len(collector) >= total)
        assert_exact(collector.by_source(), expected, f"subscriber {number}: ")
    for got in churned:
        assert_subsequence(got, expected, "churning subscriber: ")
    for ws in stable:
        ws.close()
    connections = len(stable) + len(churned)
    stats = wait_until_all_gone(server, connections)
    assert stats["connections"]["opened"] == stats["connections"]["closed"] == connections
    assert server.publish("news", "nobody left") == 0
