"""wsthread's fan-out server for the benchmark: ``broadcast()``, and ``publish()`` once it exists.

Run as ``python benchmarks/servers/wsthread_fanout.py [--port N] [--deflate]``;
it prints ``listening on ws://127.0.0.1:PORT/`` and then takes the commands of
``fanout_control`` on stdin, on its main thread. Each connection's handler
(on that connection's thread) only reads: a ``subscribe N`` text message puts
the connection on topic N, with ``connection.subscribe()`` when wsthread has
it. Only wsthread's public API is used.
"""

from __future__ import annotations

import argparse
import threading
from typing import Any, Dict, Optional

from fanout_control import parse_subscribe, serve_commands

import wsthread


def main() -> None:
    """Serve until ``quit`` on stdin."""
    parser = argparse.ArgumentParser(description="wsthread fan-out server for the benchmark.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--deflate",
        action="store_true",
        help="accept permessage-deflate, without server context takeover",
    )
    parser.add_argument(
        "--write-limit", type=int, default=None, help="serve()'s write_limit (its default)"
    )
    args = parser.parse_args()
    subscribed = [0]
    lock = threading.Lock()

    def handler(ws: Any) -> None:
        for message in ws:
            topic = parse_subscribe(message)
            if topic is not None and hasattr(ws, "subscribe"):
                ws.subscribe(str(topic))
                with lock:
                    subscribed[0] += 1

    options: Dict[str, Any] = {"max_connections": None}
    options["compression"] = (
        wsthread.Deflate(server_no_context_takeover=True) if args.deflate else None
    )
    if args.write_limit is not None:
        options["write_limit"] = args.write_limit
    server = wsthread.serve(handler, "127.0.0.1", args.port, **options)
    publish: Optional[Any] = None
    if hasattr(server, "publish"):

        def publish(topic: int, message: bytes) -> None:
            server.publish(str(topic), message)

    def count() -> Dict[str, int]:
        with lock:
            return {"connections": len(server.connections), "subscribed": subscribed[0]}

    def stats() -> Dict[str, Any]:
        return {"stats": server.stats()}

    with server:
        server.start()
        print(f"listening on ws://127.0.0.1:{server.port}/", flush=True)
        serve_commands(
            server.broadcast,
            count,
            publish,
            stats,
            no_topics="not available: this wsthread has no server.publish() yet",
        )


if __name__ == "__main__":
    main()
