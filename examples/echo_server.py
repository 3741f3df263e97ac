"""The smallest useful WebSocket server: every message comes back as it came.

Run it with ``python examples/echo_server.py`` (``--port 0`` picks a free
port), talk to it with ``python examples/echo_client.py``, stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging

import wsthread


def echo(ws: wsthread.ServerConnection) -> None:
    """Send every message back: text as text, binary as binary."""
    for message in ws:
        ws.send(message)


def main() -> None:
    """Serve on 127.0.0.1 until Ctrl-C."""
    parser = argparse.ArgumentParser(description="A WebSocket echo server.")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765, 0 = any)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    with wsthread.serve(echo, "127.0.0.1", args.port) as server:
        print(f"echo server on ws://127.0.0.1:{server.port}/ (Ctrl-C to stop)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("shutting down", flush=True)
    # Leaving the ``with`` block shut the server down: every client got 1001.


if __name__ == "__main__":
    main()
