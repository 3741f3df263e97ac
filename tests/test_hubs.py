"""RedisHub against a real redis-server: types, once-only delivery, order, outages."""

from __future__ import annotations

import logging
import os
import queue
import threading
from typing import Any, Iterator, List, Union

import pytest

from conftest import RedisServer
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
            prefix = f"{index}:"
            mine = [
                m for m in got
                if (m.startswith(prefix) if isinstance(m, str) else m.startswith(prefix.encode()))
            ]
            assert mine == sent  # exactly once each, in order, with the right type
        assert len(got) == 3 * per_publisher
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
    assert a.dropped == 5 and not a.healthy

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
    assert a.outages == 1 and a.stats()["dropped"] == 5


def test_hub_started_while_redis_is_down(redis_server: RedisServer) -> None:
    """A hub whose Redis is not up yet delivers locally, then connects once Redis starts."""
    redis_server.stop()
    hub = RedisHub(redis_server.url, channel="late", min_delay=0.05, max_delay=0.3)
    inbox = Inbox()
    hub.attach(inbox)
    try:
        assert hub.wait_healthy(0.3) is False
        hub.publish("alone")
        assert inbox.messages == ["alone"] and hub.dropped == 1
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
