"""A minimal WebSocket echo server: ``python examples/echo_server.py --port 8765``."""

from __future__ import annotations

import argparse
import logging

import wsthread


def handler(ws: wsthread.ServerConnection) -> None:
    """Send every message back to where it came from."""
    for message in ws:
        ws.send(message)


def main() -> None:
    """Serve until Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with wsthread.serve(handler, "127.0.0.1", args.port) as server:
        logging.info("serving on ws://127.0.0.1:%d/", server.port)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            logging.info("shutting down")


if __name__ == "__main__":
    main()
