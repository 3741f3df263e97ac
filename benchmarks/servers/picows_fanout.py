"""picows' server for the fan-out benchmark: ``transport.send()`` to each client, on uvloop.

Run as ``python benchmarks/servers/picows_fanout.py [--port N]``; it prints
``listening on ws://127.0.0.1:PORT/`` and takes the commands of
``fanout_control`` on stdin, on the event loop. picows has no broadcast and
no permessage-deflate: a broadcast is a loop of ``send()`` over the
connected transports, and ``--deflate`` is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, Dict, List, Set

from fanout_control import Subscriptions, serve_commands_async


async def serve(port: int) -> None:
    """Serve until ``quit`` on stdin."""
    from picows import WSListener, WSMsgType, ws_create_server

    transports: Set[Any] = set()
    topics = Subscriptions()

    class Member(WSListener):
        """Register on connect, subscribe on ``subscribe N``, answer the close."""

        def on_ws_connected(self, transport: Any) -> None:
            transports.add(transport)

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type is WSMsgType.TEXT:
                words = frame.get_payload_as_ascii_text().split()
                if words and words[0] == "subscribe":
                    topics.add(int(words[1]), transport)
            elif frame.msg_type is WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: Any) -> None:
            transports.discard(transport)
            topics.discard(transport)

    def send_all(message: bytes, targets: List[Any]) -> None:
        for transport in targets:
            transport.send(WSMsgType.BINARY, message)

    server = await ws_create_server(lambda request: Member(), "127.0.0.1", port, backlog=1024)
    print(f"listening on ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/", flush=True)

    def count() -> Dict[str, int]:
        return {"connections": len(transports), "subscribed": topics.count}

    await serve_commands_async(
        lambda message: send_all(message, list(transports)),
        count,
        lambda topic, message: send_all(message, topics.members(topic)),
    )
    server.close()


def main() -> None:
    """The command line."""
    parser = argparse.ArgumentParser(description="picows fan-out server.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--deflate", action="store_true", help="refused: picows has no deflate")
    parser.add_argument("--write-limit", type=int, help="ignored: picows buffers without limit")
    args = parser.parse_args()
    if args.deflate:
        sys.exit("picows has no permessage-deflate")
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.port))
    else:
        uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
