"""Prometheus metrics at /metrics, on the WebSocket server's own port.

    python examples/metrics.py                       # ws://127.0.0.1:8768/
    python examples/metrics.py --redis redis://127.0.0.1:6379/0
    curl http://127.0.0.1:8768/metrics               # what Prometheus scrapes

A small room: every message a client sends is broadcast to every client
(through Redis with ``--redis``, so that several processes share the
room). ``process_request`` answers ``GET /metrics`` with plain HTTP before
any upgrade: :func:`wsthread.stats.render_prometheus` writes
``server.stats()`` (connections, closes, messages and bytes, clients
dropped for falling behind, what is buffered, ping latency, and the hub's
counters) in Prometheus's text format. No client library is needed.

A scrape configuration for it::

    scrape_configs:
      - job_name: wsthread
        static_configs:
          - targets: ["127.0.0.1:8768"]
"""

from __future__ import annotations

import argparse
import logging
from typing import Optional

import wsthread
from wsthread.stats import PROMETHEUS_CONTENT_TYPE, render_prometheus


def room(ws: wsthread.ServerConnection) -> None:
    """The handler: each message goes to everyone in the room."""
    for message in ws:
        ws.server.broadcast(message)


def metrics_page(
    ws: wsthread.ServerConnection, request: wsthread.Request
) -> Optional[wsthread.Response]:
    """``process_request``: ``/metrics`` is answered with the exposition; the rest upgrades."""
    if request.path != "/metrics":
        return None
    body = render_prometheus(ws.server).encode("utf-8")
    return wsthread.http_response(200, body, content_type=PROMETHEUS_CONTENT_TYPE)


def main() -> None:
    """Serve the room and its metrics until Ctrl-C."""
    parser = argparse.ArgumentParser(description="A broadcast room with Prometheus metrics.")
    parser.add_argument("--port", type=int, default=8768, help="port (default 8768, 0 = any)")
    parser.add_argument("--redis", help="a Redis URL: share the room between processes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    hub = None
    if args.redis:
        from wsthread.hubs import RedisHub

        hub = RedisHub(args.redis, channel="metrics-example", min_delay=0.05, max_delay=1.0)
    with wsthread.serve(
        room, "127.0.0.1", args.port, process_request=metrics_page, hub=hub
    ) as server:
        port = server.port
        print(
            f"room on ws://127.0.0.1:{port}/, metrics on http://127.0.0.1:{port}/metrics",
            flush=True,
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("shutting down", flush=True)


if __name__ == "__main__":
    main()
