"""A ``websockets`` asyncio echo server with compression off: a reference row of the benchmark.

Run as ``python benchmarks/servers/websockets_asyncio_echo.py [PORT]``; it
prints ``listening on ws://127.0.0.1:PORT/`` once it accepts connections and
runs until SIGTERM. It runs on the standard asyncio event loop (what a user
of ``websockets.asyncio.server`` gets without installing anything else);
everything else is websockets' defaults, as for the sync reference.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from websockets.asyncio.server import ServerConnection, serve


async def echo(websocket: ServerConnection) -> None:
    """Send every message back unchanged."""
    async for message in websocket:
        await websocket.send(message)


async def main() -> None:
    """Serve until SIGTERM."""
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(echo, "127.0.0.1", port, compression=None, backlog=1024) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"listening on ws://127.0.0.1:{bound}/", flush=True)
        await stop


if __name__ == "__main__":
    asyncio.run(main())
