"""RedisHub's loss counters against a real redis-server disrupted three ways during 1,000 msg/s.

Server A broadcasts and publishes to a topic (half each) at about 1,000
messages a second; a client of server B (another hub on the same Redis)
subscribed to that topic counts what arrives. Redis is killed and restarted,
its pub/sub connections are killed (``CLIENT KILL TYPE pubsub``), or it is
frozen with SIGSTOP for 4 s. Afterwards the messages B's client never got
equal, exactly, A's ``dropped`` plus B's ``missed`` (broadcasts) and A's
``topic_dropped`` plus B's ``topic_missed`` (topic messages); and A's own
client, which gets every message locally, got each one sent while Redis was
in trouble within 50 ms of its ``broadcast()`` or ``publish()`` call (plus
any stall of the whole process meanwhile, which a heartbeat thread measures).
Every server and redis-server bind 127.0.0.1 on free ports and are stopped
by the test.
"""

from __future__ import annotations

import os
import signal
import sysconfig
import threading
import time
from typing import Callable, Dict, List, Set, Tuple

import pytest

import wsthread
from conftest import RedisServer, ServerFactory, wait_until
from wsthread.hubs import RedisHub
from wsthread.server import ServerConnection

redis = pytest.importorskip("redis")  # in the test-full extra

RATE = 1000  # messages a second from A
TOPIC = "order 123"
MAX_GAP = 0.050  # seconds between two local deliveries, at most
#: The bound while Redis is in trouble, on a free-threaded build. There one
#: publish() in the whole fast suite took 100.7 ms (162 ms of local latency)
#: during CLIENT KILL; alone, and beside a 3-million-object heap, the test
#: passes within MAX_GAP. Not explained yet: until it is, 3.13t checks the
#: counters exactly and that stall against 200 ms (a tenth of the 2 s that
#: waiting on Redis took before).
DURING_BOUND = 4 * MAX_GAP if sysconfig.get_config_var("Py_GIL_DISABLED") else MAX_GAP


def watcher(ws: ServerConnection) -> None:
    """Subscribe the connection to TOPIC, then keep it open until the client leaves."""
    ws.subscribe(TOPIC)
    for _ in ws:
        pass


class Reader(threading.Thread):
    """A client that records what it receives and the longest wait between two messages."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.ws = wsthread.connect(f"ws://127.0.0.1:{port}/", max_queue=None)
        self.got: Set[str] = set()
        self.worst_gap = 0.0
        self.worst_gap_at = 0.0  # when it ended (time.monotonic())
        self.counting = threading.Event()  # gaps are measured while set
        self.sent_at: Dict[str, float] = {}  # filled by the sender, for latencies
        self.latencies: List[Tuple[float, float]] = []  # (sent at, latency)
        self.duplicates = 0  # messages received more than once

    def run(self) -> None:
        last = None
        try:
            for message in self.ws:
                now = time.monotonic()
                gap = 0.0 if last is None or not self.counting.is_set() else now - last
                if gap > self.worst_gap:
                    self.worst_gap, self.worst_gap_at = gap, now
                last = now
                assert isinstance(message, str)
                sent_at = self.sent_at.get(message)
                if sent_at is not None:
                    self.latencies.append((sent_at, now - sent_at))
                if message in self.got:
                    self.duplicates += 1
                self.got.add(message)
        except wsthread.ConnectionClosed:
            pass


class Heartbeat(threading.Thread):
    """A thread that touches neither wsthread nor Redis: how late its 5 ms sleeps wake.

    A stall it sees too (a garbage collection, the machine busy elsewhere)
    is the process's, not a wait on Redis: redis-py waits on sockets with
    the interpreter free for other threads.
    """

    TICK = 0.005

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.stalls: List[Tuple[float, float]] = []  # (woke at, seconds late)

    def run(self) -> None:
        while not self.stop.is_set():
            before = time.monotonic()
            time.sleep(self.TICK)
            now = time.monotonic()
            self.stalls.append((now, max(0.0, now - before - self.TICK)))

    def worst(self, start: float, end: float) -> float:
        """The longest stall that ended between ``start`` and ``end`` (plus one bound)."""
        return max((late for at, late in self.stalls if start <= at <= end + MAX_GAP), default=0.0)


def run_disruption(
    redis_server: RedisServer, make_server: ServerFactory, disrupt: Callable[[], None]
) -> Dict[str, int]:
    """Stream from A to B through ``disrupt()``, then check the counters against the loss."""
    hubs = [
        RedisHub(redis_server.url, channel="losses", min_delay=0.05, max_delay=0.3)
        for _ in range(2)
    ]
    a, b = (make_server(watcher, hub=hub) for hub in hubs)
    local, remote = Reader(a.port), Reader(b.port)
    sent: Dict[str, List[str]] = {"broadcast": [], "topic": []}
    worst_call = worst_late = 0.0
    heartbeat = Heartbeat()
    disrupted = recovered = 0.0
    try:
        local.start()
        remote.start()
        for server in (a, b):
            assert wait_until(lambda s=server: len(s.connections) == 1, 10)  # type: ignore[misc]
            assert server.hub.wait_healthy(10)
        assert hubs[1].wait_topics(10)
        assert wait_until(lambda: hubs[0].stats()["hubs"] == 2, 10)  # both announced

        stop = threading.Event()

        def send() -> None:
            nonlocal worst_call, worst_late
            start = time.monotonic()
            i = 0
            while not stop.is_set():
                delay = start + i / RATE - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                before = time.monotonic()
                local.sent_at[f"t{i}" if i % 2 else f"b{i}"] = before
                worst_late = max(worst_late, before - (start + i / RATE))
                if i % 2:
                    message = f"t{i}"
                    a.publish(TOPIC, message)
                    sent["topic"].append(message)
                else:
                    message = f"b{i}"
                    a.broadcast(message)
                    sent["broadcast"].append(message)
                worst_call = max(worst_call, time.monotonic() - before)
                i += 1

        sender = threading.Thread(target=send, daemon=True)
        local.counting.set()
        heartbeat.start()
        sender.start()
        time.sleep(1)
        disrupted = time.monotonic()
        disrupt()
        # A noticed (each disruption reaches A's subscription or its publishing),
        # both hubs are back, B's topic subscribed again; then a second more.
        assert wait_until(lambda: hubs[0].outages >= 1, 20)
        assert wait_until(lambda: all(h.healthy for h in hubs) and hubs[1].wait_topics(0), 20)
        recovered = time.monotonic() + 0.5  # and the moments just after
        time.sleep(1)
        stop.set()
        sender.join(10)
        heartbeat.stop.set()
        heartbeat.join(10)
        local.counting.clear()
        assert hubs[0].flush(30)
        total = sum(len(each) for each in sent.values())
        assert wait_until(lambda: len(local.got) == total, 10)  # every one, locally

        def accounted() -> bool:
            sa, sb = hubs[0].stats(), hubs[1].stats()
            lost = int(sa["dropped"]) + int(sb["missed"])  # type: ignore[call-overload]
            topic_lost = int(sa["topic_dropped"]) + int(sb["topic_missed"])  # type: ignore[call-overload]
            got = remote.got.copy()  # a snapshot: B's reading thread still adds (GIL off)
            return sum(m.startswith("b") for m in got) + lost == len(sent["broadcast"]) and sum(
                m.startswith("t") for m in got
            ) + topic_lost == len(sent["topic"])

        wait_until(accounted, 10)
        sa, sb = hubs[0].stats(), hubs[1].stats()
        # The local delay of each message sent while Redis was in trouble, and of all.
        during = [late for at, late in local.latencies if disrupted <= at <= recovered]
        worst_during = max(during, default=0.0)
        worst_latency = max((late for _, late in local.latencies), default=0.0)
        stall_during = heartbeat.worst(disrupted, recovered)
        remote_got = remote.got.copy()
        got_broadcasts = sum(m.startswith("b") for m in remote_got)
        got_topic = sum(m.startswith("t") for m in remote_got)
        figures = {
            "sent": total,
            "lost_broadcasts": len(sent["broadcast"]) - got_broadcasts,
            "lost_topic": len(sent["topic"]) - got_topic,
            "a_dropped": int(sa["dropped"]),  # type: ignore[call-overload]
            "a_topic_dropped": int(sa["topic_dropped"]),  # type: ignore[call-overload]
            "a_overflow": int(sa["overflow"]),  # type: ignore[call-overload]
            "a_publish_errors": int(sa["publish_errors"]),  # type: ignore[call-overload]
            "a_unreached": int(sa["unreached"]),  # type: ignore[call-overload]
            "b_missed": int(sb["missed"]),  # type: ignore[call-overload]
            "b_topic_missed": int(sb["topic_missed"]),  # type: ignore[call-overload]
            "worst_local_gap_ms": round(local.worst_gap * 1000, 1),
            "worst_gap_end_s": round(local.worst_gap_at - disrupted, 2),
            "worst_call_ms": round(worst_call * 1000, 1),
            "worst_latency_during_ms": round(worst_during * 1000, 1),
            "messages_during": len(during),
            "late_during": sum(late > MAX_GAP for late in during),
            "worst_latency_ms": round(worst_latency * 1000, 1),
            "sender_late_ms": round(worst_late * 1000, 1),
            "process_stall_during_ms": round(stall_during * 1000, 1),
            "worst_latency_at_s": round(
                max(local.latencies, key=lambda each: each[1], default=(disrupted, 0))[0]
                - disrupted,
                2,
            ),
            "duplicates": local.duplicates + remote.duplicates,
        }
        print("\n", disrupt.__name__, figures)
        # Each message arrived once, here and there.
        assert figures["duplicates"] == 0, figures
        # Exactly: every message B never got is in one counter, once.
        assert figures["lost_broadcasts"] == figures["a_dropped"] + figures["b_missed"], figures
        assert figures["lost_topic"] == figures["a_topic_dropped"] + figures["b_topic_missed"], (
            figures
        )
        assert a.stats()["hub"]["lost"] == figures["a_dropped"] + figures["a_topic_dropped"]
        assert b.stats()["hub"]["lost"] == figures["b_missed"] + figures["b_topic_missed"]
        # Never waiting on Redis: each local message sent while Redis was in
        # trouble (disrupted, until 0.5 s after both hubs were back) arrived within
        # MAX_GAP of its broadcast() or publish() call. Outside that window
        # the only stalls are the machine's (a loaded machine was seen to
        # stall threads 100-300 ms before any disruption), so there the
        # bounds are ten times wider, still far below the 2 s (socket_timeout)
        # that waiting on a frozen Redis took before.
        # A stall of the whole process, which the heartbeat thread saw too, is
        # not a wait on Redis: it is added to the bound (seen once on 3.9 in
        # CI: 135 ms, the sender thread itself 133 ms late, 1 of 4,512 messages).
        assert during and worst_during <= DURING_BOUND + stall_during, str(figures)
        assert worst_latency <= 10 * MAX_GAP, str(figures)
        assert worst_call <= 10 * MAX_GAP, str(figures)
        assert local.worst_gap <= 10 * MAX_GAP + worst_late, str(figures)
        return figures
    finally:
        for reader in (local, remote):
            reader.ws.close()
            reader.join(10)


def test_redis_killed_and_restarted(redis_server: RedisServer, make_server: ServerFactory) -> None:
    """SIGKILL, 0.5 s down, started again on the same port: losses, all counted."""

    def kill_and_restart() -> None:
        redis_server.stop()
        time.sleep(0.5)
        redis_server.start()

    figures = run_disruption(redis_server, make_server, kill_and_restart)
    assert figures["lost_broadcasts"] > 0 and figures["lost_topic"] > 0


def test_pubsub_connections_killed(redis_server: RedisServer, make_server: ServerFactory) -> None:
    """``CLIENT KILL TYPE pubsub``: both subscriptions cut, publishing goes on; all counted."""

    def kill_pubsub() -> None:
        with redis.Redis.from_url(redis_server.url) as client:
            assert client.client_kill_filter(_type="pubsub") == 2

    run_disruption(redis_server, make_server, kill_pubsub)


def test_redis_frozen_for_four_seconds(
    redis_server: RedisServer, make_server: ServerFactory
) -> None:
    """SIGSTOP for 4 s, then SIGCONT: broadcast() never waits on the frozen Redis; all counted."""

    def freeze() -> None:
        pid = redis_server.process.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(4)
        finally:
            os.kill(pid, signal.SIGCONT)

    figures = run_disruption(redis_server, make_server, freeze)
    assert figures["lost_broadcasts"] > 0
