"""An echo server over TLS: ``wss://``.

    python examples/tls_echo.py
    python -m wsthread --cafile certs/ca.pem wss://localhost:8443/

By default it uses the development certificate in ``certs/`` (a throw-away
CA signed it for localhost; see ``certs/README.md``: development only).
Bring your own with ``--certfile`` (and ``--keyfile``). The TLS handshake
runs on each connection's own thread, within the open timeout, so a client
that stalls mid-handshake delays nobody else.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import wsthread
import wsthread.tls

CERTS = Path(__file__).resolve().parent.parent / "certs"


def echo(ws: wsthread.ServerConnection) -> None:
    """Send every message back."""
    for message in ws:
        ws.send(message)


def main() -> None:
    """Serve wss:// until Ctrl-C."""
    parser = argparse.ArgumentParser(description="A wss:// echo server.")
    parser.add_argument("--port", type=int, default=8443, help="port (default 8443, 0 = any)")
    parser.add_argument(
        "--certfile",
        default=str(CERTS / "localhost.pem"),
        help="PEM certificate chain, and key unless --keyfile (default certs/localhost.pem)",
    )
    parser.add_argument("--keyfile", help="PEM private key")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    # TLS 1.2 or newer with the given certificate; that is all a wss:// server adds.
    context = wsthread.tls.server_context(args.certfile, args.keyfile)
    with wsthread.serve(echo, "127.0.0.1", args.port, ssl=context) as server:
        print(f"TLS echo server on wss://localhost:{server.port}/ (Ctrl-C to stop)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("shutting down", flush=True)


if __name__ == "__main__":
    main()
