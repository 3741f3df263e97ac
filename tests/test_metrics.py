"""render_prometheus and examples/metrics.py: /metrics parsed by prometheus_client's own parser."""

from __future__ import annotations

import urllib.request
from typing import Any, Dict, List, Tuple

import pytest
from test_examples import example

import wsthread
from conftest import RedisServer, ServerFactory, stalled_client, wait_until
from wsthread.stats import PROMETHEUS_CONTENT_TYPE, render_prometheus

# In the test-full extra: the fast suite runs without it.
text_string_to_metric_families = pytest.importorskip(
    "prometheus_client.parser"
).text_string_to_metric_families

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def parse(text: str) -> Tuple[Dict[str, str], Samples]:
    """Each family's type, and each sample by (name, sorted labels), as prometheus_client reads."""
    types: Dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return types, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; a missing sample fails the test, naming what is there."""
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"no {key} in {sorted(samples)}"
    return samples[key]


def scrape(url: str) -> Tuple[str, str]:
    """GET ``url``: the Content-Type and the body."""
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.headers["Content-Type"], response.read().decode("utf-8")


def test_the_example_serves_metrics_with_a_redis_hub(redis_server: RedisServer) -> None:
    """Connections, messages, bytes, drops and the hub's losses, on the example's own port."""
    with example("metrics.py", "--redis", redis_server.url) as room:
        url = f"http://127.0.0.1:{room.port}/metrics"

        def now(name: str, **labels: str) -> float:
            return value(parse(scrape(url)[1])[1], name, **labels)

        assert wait_until(lambda: now("wsthread_hub_healthy") == 1, timeout=15)
        with wsthread.connect(room.urls[0]) as alice, wsthread.connect(room.urls[0]) as bob:
            # A connection joins the server's set just after its 101 is written: a
            # broadcast made before that does not reach it.
            assert wait_until(lambda: now("wsthread_connections_open") == 2)
            for text in ("one", "two", "three"):
                alice.send(text)
                assert bob.recv(timeout=5) == text and alice.recv(timeout=5) == text
            # The hub publishes to Redis right after delivering here: wait for the count.
            assert wait_until(lambda: now("wsthread_hub_published_total") == 3)
            content_type, text = scrape(url)
            assert content_type == PROMETHEUS_CONTENT_TYPE
            types, samples = parse(text)
            assert value(samples, "wsthread_connections_open") == 2
            assert value(samples, "wsthread_messages_total", direction="received") >= 3
            assert value(samples, "wsthread_messages_total", direction="sent") >= 6
            assert value(samples, "wsthread_bytes_total", direction="received") > 3 * 3
            assert value(samples, "wsthread_dropped_total") == 0
            assert value(samples, "wsthread_hub_dropped_total") == 0
            assert types["wsthread_messages"] == "counter"
            assert types["wsthread_connections_open"] == "gauge"

            redis_server.stop()  # an outage: the hub loses what is published meanwhile
            alice.send("lost to the others")
            assert alice.recv(timeout=5) == "lost to the others"  # local delivery goes on
            # Never handed to Redis (dropped), or handed and not confirmed (a
            # publish_errors): which, depends on whether the hub saw the outage first.
            assert wait_until(
                lambda: (
                    now("wsthread_hub_dropped_total") + now("wsthread_hub_publish_errors_total")
                    == 1
                )
            )
            assert now("wsthread_hub_healthy") == 0
        assert wait_until(lambda: now("wsthread_connections_closed_total") == 2)
        _, samples = parse(scrape(url)[1])
        assert value(samples, "wsthread_closes_total", code="1000") == 2
        assert value(samples, "wsthread_http_responses_total", status="200") >= 3
        room.interrupt()


def test_a_client_dropped_for_falling_behind_is_counted(make_server: ServerFactory) -> None:
    """A stalled client over write_limit gets 1013: dropped_total and closes_sent count it."""
    opened: List[wsthread.ServerConnection] = []

    def handler(ws: wsthread.ServerConnection) -> None:
        opened.append(ws)
        for _ in ws:
            pass

    server = make_server(handler, write_limit=64 * 1024, compression=None, close_timeout=0.5)
    stalled = stalled_client(server.port)
    try:
        assert wait_until(lambda: len(opened) == 1)
        payload = b"x" * 32 * 1024
        assert wait_until(lambda: server.broadcast(payload) == 0 and not server.connections)
        assert wait_until(lambda: server.stats()["connections"]["closed"] == 1)
    finally:
        stalled.close()
    _, samples = parse(render_prometheus(server))
    assert value(samples, "wsthread_dropped_total") == 1
    assert value(samples, "wsthread_closes_sent_total", code="1013") == 1
    assert value(samples, "wsthread_connections_open") == 0


def test_labels_and_a_stats_dict_and_escaping() -> None:
    """Extra labels on every sample; a stats dict is accepted; label values are escaped."""
    stats: Dict[str, Any] = {
        "connections": {"open": 1, "opening": 0, "opened": 5, "closed": 4},
        "failures": {'odd "kind"\\\n': 2},
        "latency": {"max": 0.25, "mean": None},
        "hub": {"healthy": True, "dropped": 7, "note": "not a number"},
    }
    text = render_prometheus(stats, prefix="app_ws", labels={"worker": "12"})
    types, samples = parse(text)
    assert value(samples, "app_ws_connections_open", worker="12") == 1
    assert (
        value(samples, "app_ws_handshake_failures_total", worker="12", kind='odd "kind"\\\n') == 2
    )
    assert value(samples, "app_ws_ping_latency_seconds", worker="12", stat="max") == 0.25
    assert ("app_ws_ping_latency_seconds", (("stat", "mean"), ("worker", "12"))) not in samples
    assert value(samples, "app_ws_hub_dropped_total", worker="12") == 7
    assert value(samples, "app_ws_hub_healthy", worker="12") == 1
    assert "note" not in text and text.endswith("\n")
    assert types["app_ws_hub_healthy"] == "gauge" and types["app_ws_hub_dropped"] == "counter"


def test_every_figure_of_a_fresh_server_is_rendered(make_server: ServerFactory) -> None:
    """Nothing of server.stats() is lost: each number becomes a sample, even at zero."""
    server = make_server()
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as client:
        client.send("ping")
        assert client.recv(timeout=5) == "ping"
        types, samples = parse(render_prometheus(server))
    names = {name for name, _ in samples}
    expected = {
        "wsthread_connections_open",
        "wsthread_connections_opening",
        "wsthread_connections_opened_total",
        "wsthread_connections_closed_total",
        "wsthread_dropped_total",
        "wsthread_messages_total",
        "wsthread_bytes_total",
        "wsthread_buffered_bytes",
        "wsthread_queued_messages",
        "wsthread_backpressure_bytes",
        "wsthread_slow_connections",
        "wsthread_topics",
        "wsthread_topic_subscriptions",
        "wsthread_topic_publishes_total",
    }
    assert expected <= names, sorted(expected - names)
    assert all(kind in ("counter", "gauge") for kind in types.values())


@pytest.mark.parametrize("path", ["/", "/other"])
def test_the_example_upgrades_every_other_path(path: str) -> None:
    """Only /metrics is plain HTTP; a WebSocket on another path joins the room."""
    with example("metrics.py") as room:
        with wsthread.connect(room.urls[0].rstrip("/") + path) as ws:
            ws.send("hi")
            assert ws.recv(timeout=5) == "hi"
        room.interrupt()
