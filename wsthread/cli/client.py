"""``python -m wsthread URI``: an interactive WebSocket client.

Messages from the server are printed as they arrive (``<`` text, ``< [binary]``
hex for binary); each line typed on standard input is sent as a text message.
End of input (Ctrl-D, or the end of a pipe) or Ctrl-C closes the connection
with a closing handshake, and the close code and reason are printed.

    python -m wsthread ws://127.0.0.1:8765/
    echo hello | python -m wsthread ws://127.0.0.1:8765/
    python -m wsthread --cafile certs/ca.pem wss://localhost:8765/
    python -m wsthread --trace ws://127.0.0.1:8765/
    python -m wsthread --unix /run/app.sock ws://localhost/chat
    python -m wsthread --proxy socks5h://127.0.0.1:1080 wss://example.com/

``--trace`` writes the opening handshake and every frame, annotated (see
:mod:`wsthread.trace`), to standard error, so that standard output keeps
only the messages.
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import List, Optional

from ..client.client import ClientConnection, connect, unix_connect
from ..client.proxy import ProxyOption
from ..connection.tls import client_context
from ..connection.trace import Tracer
from ..exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

__all__ = ["main"]


def _send_stdin(ws: ClientConnection) -> None:
    """Send each line of standard input, then close at end of input."""
    try:
        for line in sys.stdin:
            ws.send(line.rstrip("\r\n"))
    except ConnectionClosed:
        return
    ws.close()


def _show(message: object) -> str:
    if isinstance(message, bytes):
        return f"< [binary {len(message)} bytes] {message.hex()}"
    return f"< {message}"


def _proxy_option(value: Optional[str]) -> ProxyOption:
    """``--proxy``: absent means the environment's; ``none`` means no proxy."""
    if value is None:
        return True
    if value.lower() == "none":
        return None
    return value


def main(argv: Optional[List[str]] = None) -> int:
    """Run the interactive client; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m wsthread",
        description="An interactive WebSocket client: each line typed is sent as a text "
        "message; each message received is printed after '<'. Ctrl-D (end of input) "
        "or Ctrl-C closes the connection.",
    )
    parser.add_argument("uri", help="ws:// or wss:// URI to connect to")
    parser.add_argument(
        "--unix",
        metavar="PATH",
        help="connect over this Unix socket; the URI then gives only the Host and path",
    )
    parser.add_argument("--cafile", help="trust the CA certificates in this PEM file (wss)")
    parser.add_argument(
        "--insecure", action="store_true", help="skip TLS certificate checks (development only)"
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="write the handshake and every frame, annotated, to standard error",
    )
    parser.add_argument(
        "--proxy",
        metavar="URL",
        help="connect through this proxy (http://[user:pass@]host:port, socks5://, socks5h://),"
        " or 'none' to ignore HTTP_PROXY, HTTPS_PROXY and ALL_PROXY (used by default)",
    )
    args = parser.parse_args(argv)

    context = None
    if args.uri.startswith("wss:") and (args.cafile or args.insecure):
        context = client_context(args.cafile, insecure=args.insecure)
    trace = Tracer(sys.stderr) if args.trace else None
    try:
        if args.unix is not None:
            ws = unix_connect(args.unix, args.uri, ssl=context, trace=trace)
        else:
            ws = connect(args.uri, ssl=context, trace=trace, proxy=_proxy_option(args.proxy))
    except (InvalidURI, InvalidHandshake, OSError, ValueError) as exc:
        print(f"Failed to connect to {args.uri}: {exc}", file=sys.stderr)
        return 1
    print(f"Connected to {args.uri}.", file=sys.stderr)

    threading.Thread(target=_send_stdin, args=(ws,), daemon=True).start()
    try:
        try:
            for message in ws:
                print(_show(message), flush=True)
        except ConnectionClosed:
            pass
    except KeyboardInterrupt:
        ws.close()
    ws.close()
    reason = f" ({ws.close_reason})" if ws.close_reason else ""
    print(f"Connection closed: code {ws.close_code}{reason}.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
