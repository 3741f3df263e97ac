"""A ``websockets`` sync echo server with compression off: the benchmark's reference.

Run as ``python benchmarks/servers/websockets_echo.py [PORT [MAX_SIZE]]``
(MAX_SIZE in bytes, or ``none``; the Autobahn timing needs 16 MiB); it prints
``listening on ws://127.0.0.1:PORT/`` once it accepts connections and runs
until SIGTERM or Ctrl-C. Everything else is websockets' defaults (1 MiB
message limit, keepalive pings every 20 s), as wsthread's echo server has.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import Optional

from websockets.sync.server import ServerConnection, serve


def echo(websocket: ServerConnection) -> None:
    """Send every message back unchanged."""
    for message in websocket:
        websocket.send(message)


def main() -> None:
    """Serve until SIGTERM."""
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    max_size: Optional[int] = 2**20
    if len(sys.argv) > 2:
        max_size = None if sys.argv[2].lower() == "none" else int(sys.argv[2])

    def on_sigterm(signum: int, frame: Optional[FrameType]) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    with serve(echo, "127.0.0.1", port, compression=None, max_size=max_size) as server:
        host, bound = server.socket.getsockname()[:2]
        print(f"listening on ws://{host}:{bound}/", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
