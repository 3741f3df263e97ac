"""wsthread.server.broadcast: local delivery, the hub's round trip and its errors, with fakes."""

from __future__ import annotations

import logging
from typing import Any, Callable, List, Optional, Tuple

import pytest

from wsthread.sansio.prepared import PreparedMessage
from wsthread.server.broadcast import Broadcaster


class FakeWriter:
    def __init__(self, takes: bool) -> None:
        self.takes = takes
        self.queued: List[Tuple[bool, bytes]] = []

    def send_prepared(self, message: PreparedMessage) -> bool:
        self.queued.append((message.text, message.payload))
        return self.takes


class FakeConnection:
    def __init__(self, takes: bool = True) -> None:
        self.writer = FakeWriter(takes)


class FakeHub:
    """Hands every published message straight back, as a hub with one server does."""

    def __init__(self, fail_close: bool = False) -> None:
        self.deliver: Optional[Callable[[Any], int]] = None
        self.published: List[Any] = []
        self.fail_close = fail_close

    def attach(self, deliver: Callable[[Any], int]) -> None:
        self.deliver = deliver

    def publish(self, message: Any) -> None:
        self.published.append(message)
        assert self.deliver is not None
        self.deliver(message)

    def close(self) -> None:
        if self.fail_close:
            raise RuntimeError("hub broke")


def test_local_delivery_encodes_once_and_counts_takers() -> None:
    """Text goes out as UTF-8 text, bytes-likes as binary; a full writer does not count."""
    connections = [FakeConnection(), FakeConnection(takes=False)]
    broadcaster = Broadcaster(lambda: connections)
    assert broadcaster.broadcast("hé") == 1
    assert broadcaster.broadcast(memoryview(b"\x00")) == 1
    assert connections[0].writer.queued == [(True, "hé".encode()), (False, b"\x00")]
    assert broadcaster.broadcast("only", [connections[1]]) == 0


def test_with_a_hub_the_message_comes_back_through_deliver() -> None:
    """A broadcast to everyone goes through the hub (returning 0); to a list, it stays local."""
    connection = FakeConnection()
    hub = FakeHub()
    broadcaster = Broadcaster(lambda: [connection], hub)
    broadcaster.attach()
    assert broadcaster.broadcast(bytearray(b"ab")) == 0
    assert hub.published == [b"ab"]
    assert connection.writer.queued == [(False, b"ab")]
    assert broadcaster.broadcast("direct", [connection]) == 1
    assert hub.published == [b"ab"]


def test_refuses_other_types_and_logs_a_failing_hub_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only str and bytes-likes are broadcast; a hub that fails to close is logged."""
    broadcaster = Broadcaster(lambda: [], FakeHub(fail_close=True))
    with pytest.raises(TypeError, match="cannot broadcast int"):
        broadcaster.broadcast(3)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="wsthread"):
        broadcaster.close(logging.getLogger("wsthread"))
    assert "closing the hub failed" in caplog.text
