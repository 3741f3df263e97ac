"""websockets' asyncio server for the fan-out benchmark: ``websockets.asyncio.server.broadcast()``.

Run as ``python benchmarks/servers/websockets_asyncio_fanout.py [--port N] [--deflate]``;
it prints ``listening on ws://127.0.0.1:PORT/`` and takes the commands of
``fanout_control`` on stdin; everything runs on the standard asyncio event
loop. A broadcast is one ``broadcast(server.connections, message)``; a topic
publish is ``broadcast()`` over that topic's subscribers (``subscribe N``).
``--deflate`` accepts permessage-deflate as the sync server does.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any, Dict

from fanout_control import Subscriptions, parse_subscribe, serve_commands_async
from websockets_fanout import deflate_extensions


async def serve(args: argparse.Namespace) -> None:
    """Serve until ``quit`` on stdin."""
    from websockets.asyncio.server import broadcast, serve

    topics = Subscriptions()

    async def handler(ws: Any) -> None:
        try:
            async for message in ws:
                topic = parse_subscribe(message)
                if topic is not None:
                    topics.add(topic, ws)
        finally:
            topics.discard(ws)

    options: Dict[str, Any] = {"compression": None, "max_size": 2**20, "backlog": 1024}
    if args.deflate:
        options["extensions"] = deflate_extensions()
    async with serve(handler, "127.0.0.1", args.port, **options) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"listening on ws://127.0.0.1:{port}/", flush=True)

        def count() -> Dict[str, int]:
            return {"connections": len(server.connections), "subscribed": topics.count}

        await serve_commands_async(
            lambda message: broadcast(server.connections, message),
            count,
            lambda topic, message: broadcast(topics.members(topic), message),
        )


def main() -> None:
    """The command line."""
    parser = argparse.ArgumentParser(description="websockets asyncio fan-out server.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--deflate", action="store_true", help="accept permessage-deflate")
    parser.add_argument("--write-limit", type=int, help="ignored: broadcast() skips nobody")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
