"""websockets' sync server for the fan-out benchmark: a loop of ``send()`` over the connections.

Run as ``python benchmarks/servers/websockets_fanout.py [--port N] [--deflate]``;
it prints ``listening on ws://127.0.0.1:PORT/`` and takes the commands of
``fanout_control`` on stdin, on its main thread, which broadcasts by calling
each connection's ``send()`` in turn (websockets' sync API has no
broadcast). Each connection's handler thread only reads (``subscribe N``
puts it on topic N). ``--deflate`` accepts permessage-deflate without server
context takeover, otherwise with websockets' defaults.
"""

from __future__ import annotations

import argparse
import threading
from typing import Any, Dict, Set

from fanout_control import Subscriptions, parse_subscribe, serve_commands


def deflate_extensions() -> Any:
    """websockets' permessage-deflate, its defaults but no server context takeover."""
    from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

    return [
        ServerPerMessageDeflateFactory(
            server_no_context_takeover=True,
            server_max_window_bits=12,
            client_max_window_bits=12,
            compress_settings={"memLevel": 5},
        )
    ]


def main() -> None:
    """Serve until ``quit`` on stdin."""
    parser = argparse.ArgumentParser(description="websockets sync fan-out server.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--deflate", action="store_true", help="accept permessage-deflate")
    parser.add_argument("--write-limit", type=int, help="ignored: send() blocks instead")
    args = parser.parse_args()

    from websockets.exceptions import ConnectionClosed
    from websockets.sync.server import serve

    lock = threading.Lock()
    connections: Set[Any] = set()
    topics = Subscriptions()

    def handler(ws: Any) -> None:
        with lock:
            connections.add(ws)
        try:
            for message in ws:
                topic = parse_subscribe(message)
                if topic is not None:
                    topics.add(topic, ws)
        finally:
            with lock:
                connections.discard(ws)
            topics.discard(ws)

    def send_all(message: bytes, targets: Any) -> None:
        for ws in targets:
            try:
                ws.send(message)
            except ConnectionClosed:
                pass

    def broadcast(message: bytes) -> None:
        with lock:
            targets = list(connections)
        send_all(message, targets)

    def publish(topic: int, message: bytes) -> None:
        send_all(message, topics.members(topic))

    def count() -> Dict[str, int]:
        with lock:
            return {"connections": len(connections), "subscribed": topics.count}

    options: Dict[str, Any] = {"compression": None, "max_size": 2**20}
    if args.deflate:
        options["extensions"] = deflate_extensions()
    with serve(handler, "127.0.0.1", args.port, **options) as server:
        port = server.socket.getsockname()[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        print(f"listening on ws://127.0.0.1:{port}/", flush=True)
        serve_commands(broadcast, count, publish)
        server.shutdown()


if __name__ == "__main__":
    main()
