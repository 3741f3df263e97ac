"""``python -m wsthread.sidecar``: a WebSocket server beside a WSGI app, fed through a Redis hub.

For WSGI servers that cannot hand a socket over (uWSGI, mod_wsgi,
Passenger, Granian's WSGI mode, waitress). The sidecar holds the WebSockets
on its own port (or Unix socket, behind the same nginx as the application);
the application publishes with :class:`~wsthread.sidecar.HubPublisher` on
the same Redis channel, and the sidecar's clients get every message::

    python -m wsthread.sidecar --redis redis://127.0.0.1:6379/0 --port 8770

    # in a view, under any WSGI server:
    from wsthread.sidecar import HubPublisher
    publisher = HubPublisher("redis://127.0.0.1:6379/0")
    publisher.broadcast_json({"note": "saved"})      # every client
    publisher.publish_json("room-7", {"note": "hi"})  # clients of ?topic=room-7

A client connects to any path (or those of ``--path``) and is pushed to:
what it sends is read and dropped (reading is how its close is seen). A
query ``?topic=NAME`` (repeatable) subscribes it to topics. ``GET
/health`` answers 200 while Redis is reachable (503 otherwise), ``GET
/metrics`` the Prometheus text of the server's counters. Ctrl-C or SIGTERM
closes every connection with 1001 and exits with status 0. The main thread
serves; each connection has its own; the hub has one.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import urllib.parse
from types import FrameType
from typing import Any, List, Optional

from ..integrations.hubs import RedisHub
from ..integrations.publisher import HubPublisher
from ..sansio.handshake import Request, Response, http_response
from ..server.server import ServerConnection, WebSocketServer, serve, unix_serve
from ..server.stats import PROMETHEUS_CONTENT_TYPE, render_prometheus

__all__ = ["HubPublisher", "sidecar_handler", "sidecar_server", "main"]

logger = logging.getLogger("wsthread")


def sidecar_handler(ws: ServerConnection) -> None:
    """Subscribe the client to the topics of its query (``?topic=a&topic=b``), then push to it."""
    assert ws.request is not None
    for topic in urllib.parse.parse_qs(ws.request.query).get("topic", []):
        try:
            ws.subscribe(topic)
        except ValueError as exc:  # too many, or a bad name: the client learns why
            ws.close(1008, str(exc)[:120])
            return
    for _ in ws:  # nothing to answer; reading is how the close is seen
        pass


def _service_pages(ws: ServerConnection, request: Request) -> Optional[Response]:
    """``process_request``: ``/health`` and ``/metrics`` as plain HTTP; the rest upgrades."""
    if request.path == "/metrics":
        body = render_prometheus(ws.server).encode("utf-8")
        return http_response(200, body, content_type=PROMETHEUS_CONTENT_TYPE)
    if request.path == "/health":
        healthy = bool(ws.server.stats().get("hub", {}).get("healthy", True))
        report = {"healthy": healthy, "connections": len(ws.server.connections)}
        return http_response(
            200 if healthy else 503, json.dumps(report).encode(), content_type="application/json"
        )
    return None


def sidecar_server(
    redis_url: str,
    channel: str = "wsthread",
    host: str = "127.0.0.1",
    port: int = 8770,
    *,
    paths: Optional[List[str]] = None,
    unix_path: Optional[str] = None,
    **options: Any,
) -> WebSocketServer:
    """The sidecar's server: :func:`sidecar_handler` on ``paths`` (or any), attached to a hub.

    Args:
        redis_url: the Redis that the application's :class:`HubPublisher` uses.
        channel: the hub's channel, the publisher's too.
        host: the address to bind, with ``port``.
        port: the port; 0 picks a free one.
        paths: the request paths served (``None``: any path).
        unix_path: a Unix socket to listen on instead of ``host:port``.
        options: more options of :func:`wsthread.serve` (``origins``,
            ``trusted_proxies``, ``max_connections``...).
    """
    hub = RedisHub(redis_url, channel=channel)
    routes: Any = sidecar_handler if not paths else dict.fromkeys(paths, sidecar_handler)
    options.setdefault("process_request", _service_pages)
    try:
        if unix_path is not None:
            return unix_serve(routes, unix_path, hub=hub, **options)
        return serve(routes, host, port, hub=hub, **options)
    except BaseException:
        hub.close()
        raise


def main(argv: Optional[List[str]] = None) -> int:
    """Run the sidecar until interrupted; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m wsthread.sidecar",
        description="A WebSocket server that pushes what a WSGI app publishes through Redis.",
    )
    parser.add_argument("--redis", required=True, metavar="URL", help="the hub's Redis URL")
    parser.add_argument(
        "--channel", default="wsthread", help="the hub's channel (default wsthread)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8770, help="port (default 8770; 0 = any)")
    parser.add_argument("--unix", metavar="PATH", help="listen on this Unix socket instead")
    parser.add_argument(
        "--path",
        action="append",
        metavar="PATH",
        help="serve WebSockets on this path only (repeatable; default: any path)",
    )
    parser.add_argument(
        "--origin",
        action="append",
        metavar="ORIGIN",
        help="accept only this Origin (repeatable; default: any)",
    )
    parser.add_argument(
        "--trusted-proxy",
        action="append",
        metavar="ADDRESS",
        help="believe X-Forwarded-For from this proxy (repeatable)",
    )
    parser.add_argument("--quiet", action="store_true", help="log warnings only")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )

    def on_sigterm(signum: int, frame: Optional[FrameType]) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        server = sidecar_server(
            args.redis,
            args.channel,
            args.host,
            args.port,
            paths=args.path,
            unix_path=args.unix,
            origins=args.origin,
            trusted_proxies=args.trusted_proxy,
        )
    except OSError as exc:
        print(f"python -m wsthread.sidecar: cannot listen: {exc}", file=sys.stderr)
        return 1
    with server:
        if server.unix_path is not None:
            place = f"the Unix socket {server.unix_path}"
        else:
            host = args.host if ":" not in args.host else f"[{args.host}]"
            place = f"ws://{host}:{server.port}/"
        print(
            f"wsthread sidecar on {place}, fed by {args.redis} channel {args.channel!r} "
            "(Ctrl-C to stop)",
            flush=True,
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("shutting down", flush=True)
    return 0
