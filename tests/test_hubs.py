"""RedisHub against a real redis-server: types, once-only delivery, order, outages."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, Iterator, List, Tuple, Union

import pytest
from websockets.sync.client import connect

import wsthread
from conftest import RedisServer, reap, run_ok
from wsthread.hubs import LocalHub, RedisHub, decode_payload, encode_payload

Message = Union[str, bytes]


class Inbox:
    """A fake ``deliver``: records every message, in order, and lets a test wait for them."""

    def __init__(self) -> None:
        self.messages: List[Message] = []
        self._condition = threading.Condition()

    def __call__(self, message: Message) -> None:
        with self._condition:
            self.messages.append(message)
            self._condition.notify_all()

    def wait_for(self, count: int, timeout: float = 10) -> List[Message]:
        """Wait until at least ``count`` messages arrived; return them all."""
        with self._condition:
            arrived = self._condition.wait_for(lambda: len(self.messages) >= count, timeout)
            assert arrived, f"{len(self.messages)} of {count} messages arrived: {self.messages}"
            return list(self.messages)


def from_publisher(messages: List[Message], tag: str) -> List[Message]:
    """The messages (text or binary) that start with ``tag``, in order."""
    return [
        m
        for m in messages
        if (m.startswith(tag) if isinstance(m, str) else m.startswith(tag.encode()))
    ]


@pytest.fixture
def hubs(redis_server: RedisServer) -> Iterator[List[Any]]:
    """Three attached hubs on one Redis channel, each with its own Inbox; closed afterwards."""
    made: List[Any] = []
    for _ in range(3):
        hub = RedisHub(redis_server.url, channel="test", min_delay=0.05, max_delay=0.5)
        inbox = Inbox()
        hub.attach(inbox)
        made.append((hub, inbox))
    for hub, _ in made:
        assert hub.wait_healthy(10)
    yield made
    for hub, _ in made:
        hub.close()


def test_payload_round_trip_keeps_the_type() -> None:
    """Text (any Unicode, empty) and binary (any bytes) decode to exactly what was encoded."""
    origin = os.urandom(16)
    samples: List[Message] = ["", "héllo ☃ \U0001f600", "x" * 100_000, b"", b"\x00\xff", bytes(256)]
    for message in samples:
        got_origin, decoded = decode_payload(encode_payload(message, origin))
        assert got_origin == origin
        assert decoded == message and type(decoded) is type(message)
    with pytest.raises(ValueError):
        decode_payload(b"\x02t" + origin + b"future format")
    with pytest.raises(ValueError):
        decode_payload(b"\x01t" + origin + b"\xff not utf-8")
    with pytest.raises(TypeError):
        encode_payload(42, origin)  # type: ignore[arg-type]


def test_redis_is_imported_only_by_a_redis_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """wsthread and wsthread.hubs import without redis; RedisHub says how to get it."""
    code = "import sys, wsthread, wsthread.hubs, wsthread.workers; print('redis' in sys.modules)"
    result = run_ok([sys.executable, "-c", code], timeout=60)
    assert result.stdout.strip() == "False"
    monkeypatch.setitem(sys.modules, "redis", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'wsthread\[redis\]'"):
        RedisHub("redis://127.0.0.1:1/0")


def test_local_hub_reaches_every_attached_server() -> None:
    """LocalHub, the reference implementation: every attached deliver gets each message."""
    hub = LocalHub()
    inboxes = [Inbox(), Inbox()]
    for inbox in inboxes:
        hub.attach(inbox)
    hub.publish("a")
    hub.publish(b"b")
    assert [inbox.messages for inbox in inboxes] == [["a", b"b"], ["a", b"b"]]
    hub.close()
    hub.publish("after close")
    assert inboxes[0].messages == ["a", b"b"]


def test_every_hub_gets_every_message_once_in_order(hubs: List[Any]) -> None:
    """Each message reaches each hub once (the publisher's too), types kept, order per publisher."""
    per_publisher = 50
    expected = {}
    for index, (hub, _) in enumerate(hubs):
        sent: List[Message] = []
        for i in range(per_publisher):
            message: Message = f"{index}:{i} ☃" if i % 2 == 0 else f"{index}:{i}".encode() + b"\xff"
            hub.publish(message)
            sent.append(message)
        expected[index] = sent
    for hub, inbox in hubs:
        got = inbox.wait_for(3 * per_publisher)
        for index, sent in expected.items():
            # Exactly once each, in order, with the right type.
            assert from_publisher(got, f"{index}:") == sent
        assert len(got) == 3 * per_publisher
        assert hub.flush(10)  # the counters are the publishing thread's
        assert hub.published == per_publisher and hub.dropped == 0
        assert hub.received == 2 * per_publisher


def test_publishing_delivers_locally_before_returning(hubs: List[Any]) -> None:
    """The publisher's own connections get the message at once, not via the Redis round trip."""
    hub, inbox = hubs[0]
    hub.publish("mine")
    assert inbox.messages == ["mine"]
    for _, other in hubs[1:]:
        assert other.wait_for(1) == ["mine"]


def test_outage_keeps_local_delivery_counts_drops_and_recovers(
    redis_server: RedisServer, hubs: List[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Redis killed: local delivery goes on, drops are counted, logged once; back: resumes."""
    (a, inbox_a), (b, inbox_b), _ = hubs
    a.publish("before")
    inbox_b.wait_for(1)
    caplog.set_level(logging.WARNING, logger="wsthread")

    redis_server.stop()
    for i in range(5):
        a.publish(f"during {i}")  # the first may fail on the wire, the rest are skipped
    assert inbox_a.messages == ["before"] + [f"during {i}" for i in range(5)]
    assert a.flush(10)
    # The first may have been handed to Redis as it died (a publish error,
    # counted by b as missed once the next message arrives); the rest dropped.
    assert a.dropped + a.stats()["publish_errors"] == 5 and not a.healthy
    # The others notice through their subscriptions (a hub has no event for
    # "unhealthy": poll, bounded).
    deadline = time.monotonic() + 10
    while any(hub.healthy for hub, _ in hubs):
        assert time.monotonic() < deadline, "a hub did not notice that Redis is gone"
        time.sleep(0.01)

    redis_server.start()
    for hub, _ in hubs:
        assert hub.wait_healthy(15)
    a.publish("after")
    assert inbox_b.wait_for(2) == ["before", "after"]  # nothing from the outage, nothing twice
    b.publish(b"from b after")
    assert inbox_a.wait_for(8)[-1] == b"from b after"

    lost = [r for r in caplog.records if "unreachable" in r.getMessage()]
    back = [r for r in caplog.records if "reachable again" in r.getMessage()]
    # One "unreachable" line per hub (three hubs), not one per failed attempt or message.
    assert len(lost) == 3, [r.getMessage() for r in caplog.records]
    assert len(back) == 3
    # Only a's line names messages not sent: the 5, less any that went out before
    # it noticed the outage.
    unsent = [
        int(found.group(1))
        for found in (
            re.search(r"; (\d+) message\(s\) were not sent", r.getMessage()) for r in back
        )
        if found is not None
    ]
    assert len([n for n in unsent if n]) == 1 and 1 <= max(unsent) <= 5, unsent
    assert a.outages == 1 and a.stats()["dropped"] + b.stats()["missed"] == 5
    assert b.stats()["missed"] == a.stats()["publish_errors"]


def test_hub_started_while_redis_is_down(redis_server: RedisServer) -> None:
    """A hub whose Redis is not up yet delivers locally, then connects once Redis starts."""
    redis_server.stop()
    hub = RedisHub(redis_server.url, channel="late", min_delay=0.05, max_delay=0.3)
    inbox = Inbox()
    hub.attach(inbox)
    try:
        assert hub.wait_healthy(0.3) is False
        hub.publish("alone")
        assert inbox.messages == ["alone"] and hub.flush(10) and hub.dropped == 1
        redis_server.start()
        assert hub.wait_healthy(15)
        other = RedisHub(redis_server.url, channel="late")
        other_inbox = Inbox()
        other.attach(other_inbox)
        try:
            assert other.wait_healthy(10)
            hub.publish("together")
            assert other_inbox.wait_for(1) == ["together"]
        finally:
            other.close()
    finally:
        hub.close()


def test_foreign_payloads_are_ignored(redis_server: RedisServer, hubs: List[Any]) -> None:
    """Messages on the channel that are not hub payloads are skipped, not delivered."""
    import redis

    hub, inbox = hubs[0]
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.publish("test", b"hello from someone else")
    finally:
        client.close()
    hubs[1][0].publish("real")
    assert inbox.wait_for(1) == ["real"]
    assert hub.stats()["invalid"] == 1


def test_attach_once_close_idempotent(redis_server: RedisServer) -> None:
    """A hub serves one server; close() twice is harmless and ends the thread."""
    hub = RedisHub(redis_server.url)
    with pytest.raises(RuntimeError):
        hub.publish("not attached")
    hub.attach(Inbox())
    with pytest.raises(RuntimeError):
        hub.attach(Inbox())
    assert hub.wait_healthy(10)
    thread = hub._thread
    hub.close()
    hub.close()
    assert thread is not None and not thread.is_alive()
    assert not hub.healthy


def test_delivery_errors_do_not_stop_the_subscriber(hubs: List[Any]) -> None:
    """A deliver that raises is logged; later messages still arrive."""
    failures: queue.Queue[Message] = queue.Queue()
    broken = RedisHub(hubs[0][0].url, channel="test")

    def deliver(message: Message) -> None:
        failures.put(message)
        if message == "boom":
            raise RuntimeError("handler bug")

    broken.attach(deliver)
    try:
        assert broken.wait_healthy(10)
        hubs[0][0].publish("boom")
        hubs[0][0].publish("fine")
        assert failures.get(timeout=10) == "boom"
        assert failures.get(timeout=10) == "fine"
    finally:
        broken.close()


# -- three server processes sharing one Redis ---------------------------------

SERVER_PROGRAM = """
import json, signal, sys
import wsthread
from wsthread.hubs import RedisHub

hub = RedisHub(sys.argv[1], channel="scaleout-test", min_delay=0.05, max_delay=0.5)

def handler(ws):
    for message in ws:
        ws.server.broadcast(message)

def health(connection, request):
    if request.path != "/health":
        return None
    body = json.dumps(hub.stats()).encode()
    status = 200 if hub.healthy else 503
    return wsthread.http_response(status, body, content_type="application/json")

def on_sigterm(signum, frame):
    raise KeyboardInterrupt

signal.signal(signal.SIGTERM, on_sigterm)
with wsthread.serve(handler, "127.0.0.1", 0, hub=hub, process_request=health,
                    close_timeout=2) as server:
    hub.wait_healthy(10)
    print(server.port, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
"""


def health(port: int) -> Tuple[int, Dict[str, Any]]:
    """GET /health from a server process: the status and the hub's stats."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_health(ports: List[int], status: int, timeout: float = 20) -> None:
    """Poll every server's /health until each answers ``status`` (bounded)."""
    deadline = time.monotonic() + timeout
    for port in ports:
        while health(port)[0] != status:
            assert time.monotonic() < deadline, f"port {port} never answered {status}"
            time.sleep(0.05)  # polling another process's state


@pytest.mark.slow
def test_three_processes_thirty_clients_and_a_redis_outage(redis_server: RedisServer) -> None:
    """Every broadcast reaches all 30 clients on 3 processes once, in order per publisher;
    with Redis killed each process still broadcasts locally; with it back, across again."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", SERVER_PROGRAM, redis_server.url],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        ports = []
        for process in processes:
            assert process.stdout is not None
            ports.append(int(process.stdout.readline()))
        wait_health(ports, 200)
        with contextlib.ExitStack() as stack:
            # clients[k]: the 10 clients of server k; clients[k][0] also publishes.
            clients = [
                [stack.enter_context(connect(f"ws://127.0.0.1:{port}/")) for _ in range(10)]
                for port in ports
            ]
            # Phase 1: 3 publishers x 20 messages, text and binary, interleaved.
            sent: Dict[int, List[Message]] = {k: [] for k in range(3)}
            for i in range(20):
                for k in range(3):
                    message: Message = f"{k}/{i} ✓" if i % 2 else f"{k}/{i}".encode() + b"\x80"
                    clients[k][0].send(message)
                    sent[k].append(message)
            for group in clients:
                for ws in group:
                    got = [ws.recv(timeout=20) for _ in range(60)]
                    for k in range(3):
                        assert from_publisher(got, f"{k}/") == sent[k]

            # Phase 2: Redis gone. Local broadcast still works in every process.
            redis_server.stop()
            wait_health(ports, 503)
            for k in range(3):
                clients[k][0].send(f"during {k}")
            for k, group in enumerate(clients):
                for ws in group:
                    assert ws.recv(timeout=20) == f"during {k}"

            # Phase 3: Redis back on the same port: across processes again.
            redis_server.start()
            wait_health(ports, 200)
            for k in range(3):
                clients[k][0].send(f"after {k}")
            for group in clients:
                for ws in group:
                    # Nothing from the outage crossed over, nothing twice.
                    assert sorted(ws.recv(timeout=20) for _ in range(3)) == [
                        "after 0",
                        "after 1",
                        "after 2",
                    ]
            for port in ports:
                status, stats = health(port)
                assert status == 200 and stats["dropped"] == 1 and stats["outages"] == 1
                assert stats["received"] == 2 * 20 + 2
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                assert process.wait(timeout=20) == 0
            finally:
                reap(process)


# -- the chat example across processes ----------------------------------------


def chat_events(
    ws: Any, wanted: Callable[[Dict[str, Any]], bool], count: int
) -> List[Dict[str, Any]]:
    """Read chat events until ``count`` of them match ``wanted``; return those."""
    found: List[Dict[str, Any]] = []
    while len(found) < count:
        event = json.loads(ws.recv(timeout=20))
        if wanted(event):
            found.append(event)
    return found


@pytest.mark.slow
def test_chat_example_across_workers_and_processes(redis_server: RedisServer) -> None:
    """Chat with --redis: 2 workers on one port plus another process; everyone sees everything."""
    from test_examples import example, ws_url

    workers = example("chat/server.py", "--redis", redis_server.url, "--workers", "2")
    single = example("chat/server.py", "--redis", redis_server.url)
    with workers as on_workers, single as on_single, contextlib.ExitStack() as stack:
        alice = stack.enter_context(wsthread.connect(ws_url(on_single.urls[0], "/ws?name=alice")))
        assert json.loads(alice.recv(timeout=20))["you"] == "alice"
        others = [
            stack.enter_context(wsthread.connect(ws_url(on_workers.urls[0], "/ws?name=p")))
            for _ in range(8)
        ]
        names = [chat_events(ws, lambda e: e["type"] == "welcome", 1)[0]["you"] for ws in others]
        # Names are unique across all three processes (kept in Redis).
        assert sorted(names) == sorted(["p"] + [f"p-{n}" for n in range(2, 9)])
        joins = chat_events(alice, lambda e: e["type"] == "join", 9)  # herself, then the 8
        assert sorted(joins[-1]["people"]) == sorted(["alice", *names])

        alice.send("hello from the single process")
        for ws in others:
            said = chat_events(ws, lambda e: e["type"] == "message", 1)[0]
            assert said["name"] == "alice" and said["text"] == "hello from the single process"
        for name, ws in zip(names, others):
            ws.send(f"{name} here")
        said = chat_events(alice, lambda e: e["type"] == "message", 9)  # her own first
        assert sorted(e["text"] for e in said[1:]) == sorted(f"{name} here" for name in names)
        for ws in others:
            got = chat_events(ws, lambda e: e["type"] == "message", 8)
            assert sorted(e["text"] for e in got) == sorted(f"{name} here" for name in names)
        stack.close()
        on_workers.interrupt()
        on_single.interrupt()
