"""Server counters (``server.stats()``) and the rate-limited logging of repeated events."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, List

import pytest

import wsthread
from conftest import UPGRADE_REQUEST, ServerFactory, raw_handshake, wait_until
from wsthread.stats import LogLimiter, ServerCounters


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Lines(logging.Handler):
    """Collect formatted records."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: List[str] = []
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(record.getMessage())


@pytest.fixture
def lines() -> Any:
    """Capture everything the wsthread logger writes, at every level."""
    handler = Lines()
    log = logging.getLogger("wsthread")
    old_level = log.level
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    yield handler
    log.removeHandler(handler)
    log.setLevel(old_level)


def test_limiter_logs_first_event_then_one_summary(lines: Lines) -> None:
    """1,000 events of one kind in a window: the first line, then one summary with the count."""
    clock = FakeClock()
    limiter = LogLimiter(logging.getLogger("wsthread"), interval=10, clock=clock)
    for index in range(1000):
        limiter.log("rejected handshake: 503", logging.WARNING, "rejected %d", index)
        clock.now += 0.001
    assert lines.lines == ["rejected 0"]
    limiter.flush()  # the window has not ended yet
    assert len(lines.lines) == 1
    clock.now += 10
    limiter.flush()
    assert lines.lines[1] == "rejected handshake: 503 ... and 999 more in the last 11 s"
    assert lines.records[1].levelno == logging.WARNING
    limiter.flush()
    assert len(lines.lines) == 2  # written once


def test_limiter_next_event_after_the_window_writes_the_summary_first(lines: Lines) -> None:
    """Without a flush, the next event of the kind writes the summary, then itself."""
    clock = FakeClock()
    limiter = LogLimiter(logging.getLogger("wsthread"), interval=10, clock=clock)
    assert limiter.log("k", logging.INFO, "one")
    assert not limiter.log("k", logging.INFO, "two")
    clock.now += 10
    assert limiter.log("k", logging.INFO, "three")
    assert lines.lines == ["one", "k ... and 1 more in the last 10 s", "three"]


def test_limiter_kinds_are_independent(lines: Lines) -> None:
    """A flood of one kind does not hide the first event of another."""
    limiter = LogLimiter(logging.getLogger("wsthread"), interval=10, clock=FakeClock())
    for _ in range(5):
        limiter.log("a", logging.INFO, "a")
        limiter.log("b", logging.INFO, "b")
    assert lines.lines == ["a", "b"]
    limiter.flush(everything=True)
    assert sorted(lines.lines[2:]) == [
        "a ... and 4 more in the last 0 s",
        "b ... and 4 more in the last 0 s",
    ]


def test_limiter_skips_disabled_levels(lines: Lines) -> None:
    """An event below the logger's level costs no window and no line."""
    log = logging.getLogger("wsthread.quiet-test")
    log.setLevel(logging.WARNING)
    limiter = LogLimiter(log, interval=10, clock=FakeClock())
    assert not limiter.log("k", logging.DEBUG, "hidden")
    limiter.flush(everything=True)
    assert lines.lines == []


def test_counters_snapshot_is_json_ready() -> None:
    """Counters come out as fresh dicts with string keys."""
    counters = ServerCounters()
    counters.opened()
    counters.closed(1000)
    counters.closed(None)
    counters.rejected(503)
    counters.failed("tls")
    counters.accept_error("EMFILE")
    snapshot = counters.snapshot()
    assert json.loads(json.dumps(snapshot)) == snapshot
    assert snapshot["closes"] == {"1000": 1, "1006": 1}
    assert snapshot["rejections"] == {"503": 1}
    snapshot["rejections"]["503"] = 7
    assert counters.snapshot()["rejections"] == {"503": 1}


def test_stats_count_opens_closes_and_http(make_server: ServerFactory) -> None:
    """Opens, closes by code, rejections by status and process_request answers are counted."""

    def process_request(connection: Any, request: Any) -> Any:
        if request.path == "/health":
            return wsthread.http_response(200, b"ok\n")
        return None

    server = make_server(process_request=process_request)
    for _ in range(3):
        with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:
            ws.send("x")
            assert ws.recv(timeout=5) == "x"
    raw_handshake(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    raw_handshake(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # no upgrade: 426
    assert wait_until(lambda: server.stats()["connections"]["closed"] == 3)
    stats = server.stats()
    assert stats["connections"] == {"opened": 3, "closed": 3, "open": 0, "opening": 0}
    assert stats["closes"] == {"1000": 3}
    assert stats["http_responses"] == {"200": 1}
    assert stats["rejections"] == {"426": 1}
    assert stats["buffered"] == {"received": 0, "to_send": 0}


def test_stats_buffered_counts_unread_messages(make_server: ServerFactory) -> None:
    """Messages a busy handler has not read yet show in buffered.received."""
    release = threading.Event()

    def busy(ws: Any) -> None:
        release.wait(10)
        for message in ws:
            ws.send(message)

    server = make_server(busy)
    try:
        with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:
            for _ in range(4):
                ws.send(b"y" * 10000)
            assert wait_until(lambda: server.stats()["buffered"]["received"] >= 40000)
            assert server.stats()["connections"]["open"] == 1
            release.set()
            for _ in range(4):
                assert ws.recv(timeout=5) == b"y" * 10000
            assert wait_until(lambda: server.stats()["buffered"]["received"] == 0)
    finally:
        release.set()


def test_rejection_burst_logs_at_most_five_lines(make_server: ServerFactory, lines: Lines) -> None:
    """1,000 handshakes refused with 503 write <= 5 log lines; the counters show all 1,000."""
    release = threading.Event()
    server = make_server(lambda ws: release.wait(30), max_connections=1)
    try:
        holder = wsthread.connect(f"ws://127.0.0.1:{server.port}/")
        assert wait_until(lambda: server.stats()["connections"]["open"] == 1)
        del lines.lines[:]
        answers: List[bytes] = []
        answers_lock = threading.Lock()

        def attacker(count: int) -> None:
            for _ in range(count):
                answer = raw_handshake(server.port, UPGRADE_REQUEST + b"\r\n", timeout=30)
                with answers_lock:
                    answers.append(answer[:12])

        started = time.monotonic()
        attackers = [threading.Thread(target=attacker, args=(125,)) for _ in range(8)]
        for thread in attackers:
            thread.start()
        for thread in attackers:
            thread.join()
        elapsed = time.monotonic() - started
        assert answers == [b"HTTP/1.1 503"] * 1000
        assert wait_until(lambda: server.stats()["rejections"].get("503") == 1000)
        rejection_lines = [line for line in lines.lines if "503" in line]
        print(f"\n1,000 rejections in {elapsed:.2f} s: {len(lines.lines)} log lines: {lines.lines}")
        assert 1 <= len(rejection_lines) <= 5, rejection_lines
        assert len(lines.lines) <= 5, lines.lines
        release.set()
        holder.close()
        server.shutdown()
        # The summary is written at the latest on shutdown, with the full count.
        summary = [line for line in lines.lines if "more in the last" in line]
        assert len(summary) == 1 and "and 999 more" in summary[0], lines.lines
        assert server.stats()["rejections"] == {"503": 1000}
    finally:
        release.set()
