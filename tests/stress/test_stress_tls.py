"""Stress: many wss connections, each written from several threads both ways and closed mid-send.

wsthread drives TLS through one ``ssl.SSLObject`` and its memory BIOs per
connection, under one lock; CPython's ``ssl`` module has had crashes on
free-threaded builds when one SSL object is used from several threads at
once. This test gives every connection three sending threads on each side
and a reader on each side at the same time, then closes the connection
while its client-side senders are still going. Part of the stress suite
(``pytest -m stress``; .ci/run runs it with ``PYTHON_GIL=0`` on 3.13t).
"""

from __future__ import annotations

import queue
import random
import ssl
import threading
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

pytestmark = pytest.mark.stress

CONNECTIONS, SENDERS, MESSAGES = 12, 3, 100


def send_all(ws: Any, source: str, count: int) -> None:
    """Send ``count`` numbered messages of ``source``."""
    for n in range(count):
        ws.send(make(source, n))


def test_wss_connections_with_concurrent_sends_and_closes(
    make_server: ServerFactory, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    """12 wss connections at once; on each, 3 threads per side send 100 messages while both
    sides read, then 3 client threads send until another closes: every message whole, once
    and in order, and every TLS connection ends with 1000."""
    finished: queue.Queue[Tuple[Dict[str, List[int]], Dict[str, Any]]] = queue.Queue()

    def handler(ws: wsthread.ServerConnection) -> None:
        name = ws.recv(timeout=BOUND)
        senders = [
            threading.Thread(target=send_all, args=(ws, f"{name}.s{i}", MESSAGES), daemon=True)
            for i in range(SENDERS)
        ]
        for thread in senders:
            thread.start()
        collector = Collector()
        for message in ws:
            collector.add(message)
        for thread in senders:
            thread.join(BOUND)
        finished.put((collector.by_source(), ws.stats()))

    server = make_server(handler, ssl=server_ssl)
    url = f"wss://localhost:{server.port}/"

    def connection(index: int, number: int) -> None:
        name = f"n{number}.{index}"
        with wsthread.connect(url, ssl=client_ssl, open_timeout=BOUND) as ws:
            ws.send(name)
            collector = Collector()
            reader = threading.Thread(target=lambda: [collector.add(m) for m in ws], daemon=True)
            reader.start()
            run_threads(
                [lambda i=i: send_all(ws, f"{name}.c{i}", MESSAGES) for i in range(SENDERS)]
            )
            assert wait_for(lambda: len(collector) >= SENDERS * MESSAGES)
            # Then sends racing the close: the count of those that returned is exact.
            sent = [0] * SENDERS
            target = random.randrange(20, 200)

            def keep_sending(i: int) -> None:
                n = 0
                while True:
                    try:
                        ws.send(make(f"{name}.d{i}", n))
                    except wsthread.ConnectionClosed:
                        return
                    n += 1
                    sent[i] = n

            def closer() -> None:
                wait_for(lambda: sum(sent) >= target)
                ws.close()

            run_threads([lambda i=i: keep_sending(i) for i in range(SENDERS)] + [closer] * 2)
            reader.join(BOUND)
            assert not reader.is_alive()
        assert ws.close_code == 1000
        assert_exact(
            collector.by_source(), {f"{name}.s{i}": MESSAGES for i in range(SENDERS)}, "client: "
        )
        results[name] = sent

    results: Dict[str, List[int]] = {}
    rounds = Rounds(5)
    for number in rounds:
        run_threads([lambda i=i, n=number: connection(i, n) for i in range(CONNECTIONS)])
    assert len(results) == CONNECTIONS * rounds.done
    for _ in results:
        got, stats = finished.get(timeout=BOUND)
        name = next(iter(got)).rsplit(".", 1)[0]
        expected = {f"{name}.c{i}": MESSAGES for i in range(SENDERS)}
        expected.update({f"{name}.d{i}": results[name][i] for i in range(SENDERS)})
        assert_exact(got, expected, "server: ")
        assert stats["messages_received"] == sum(expected.values()) + 1  # and the name
        assert stats["messages_sent"] == SENDERS * MESSAGES
    stats = wait_until_all_gone(server, len(results))
    assert stats["connections"]["opened"] == stats["connections"]["closed"] == len(results)
    assert stats["failures"] == {}
