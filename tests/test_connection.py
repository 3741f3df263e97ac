"""The keepalive's view of a peer (connection._Liveness), on fakes: no sockets, no threads."""

from __future__ import annotations

from typing import List, Optional, Tuple

from wsthread.connection.connection import _Liveness


class FakeReader:
    """How many bytes the peer sent so far."""

    bytes_received = 0


class FakeMessages:
    """Whether reading is paused (back-pressure)."""

    paused = False


class FakePings:
    """Records what the liveness asks of the pings."""

    def __init__(self) -> None:
        self.postponed: List[Tuple[float, Optional[float]]] = []
        self.ticks: List[float] = []

    def postpone_deadline(self, now: float, timeout: Optional[float]) -> None:
        self.postponed.append((now, timeout))

    def tick(self, now: float, interval: float, timeout: Optional[float]) -> None:
        self.ticks.append(now)


def liveness() -> Tuple[_Liveness, FakeReader, FakeMessages, FakePings]:
    reader, messages, pings = FakeReader(), FakeMessages(), FakePings()
    return _Liveness(reader, messages, pings), reader, messages, pings  # type: ignore[arg-type]


def test_a_silent_peer_is_never_postponed() -> None:
    """No bytes, reading not paused: the ping schedule runs, the pong deadline stands."""
    view, _, _, pings = liveness()
    for now in (1.0, 2.0, 3.0):
        view.tick(now, 1.0, 5.0)
    assert pings.ticks == [1.0, 2.0, 3.0]
    assert pings.postponed == []


def test_bytes_received_postpone_the_deadline_for_ping_timeout() -> None:
    """A peer that sent bytes is alive for ping_timeout seconds after the tick that saw them."""
    view, reader, _, pings = liveness()
    reader.bytes_received = 100
    view.tick(10.0, 1.0, 5.0)
    view.tick(14.0, 1.0, 5.0)  # nothing new, but within 5 s of 10.0
    view.tick(15.0, 1.0, 5.0)  # 5 s after: no longer
    assert pings.postponed == [(10.0, 5.0), (14.0, 5.0)]
    assert pings.ticks == [10.0, 14.0, 15.0]


def test_a_paused_reading_keeps_the_peer_alive() -> None:
    """While its reading is paused (back-pressure), the peer is not blamed for a late pong."""
    view, _, messages, pings = liveness()
    messages.paused = True
    view.tick(20.0, 1.0, 5.0)
    view.tick(30.0, 1.0, 5.0)
    assert pings.postponed == [(20.0, 5.0), (30.0, 5.0)]


def test_no_ping_timeout_means_no_postponing() -> None:
    """With ping_timeout None there is no deadline to move; the schedule still runs."""
    view, reader, _, pings = liveness()
    reader.bytes_received = 1
    view.tick(1.0, 1.0, None)
    assert pings.postponed == []
    assert pings.ticks == [1.0]
