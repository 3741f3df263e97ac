"""``python -m wsthread.echo``: a WebSocket echo server.

Every message comes back as it came: text as text, binary as binary. Ctrl-C
(or SIGTERM) shuts the server down gracefully, closing every connection
with 1001, and exits with status 0.

``--trace`` writes the opening handshake and every frame of every
connection, annotated (see :mod:`wsthread.trace`), to standard error, each
line prefixed with the client's address; standard output keeps the server's
own messages.
"""

from __future__ import annotations

import argparse
import errno
import functools
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any, Dict, List, Optional

from ..connection.tls import server_context
from ..connection.trace import Tracer
from ..server.server import ServerConnection, serve

# The development certificates of a source checkout (see certs/README.md).
CERTS = Path(__file__).resolve().parent.parent / "certs"

__all__ = ["echo", "main"]


def echo(connection: ServerConnection) -> None:
    """The echo handler: send every message back unchanged."""
    for message in connection:
        connection.send(message)


def _size(text: str) -> Optional[int]:
    return None if text.lower() == "none" else int(text)


def _seconds(text: str) -> Optional[float]:
    return None if text.lower() == "none" else float(text)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the echo server until interrupted; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m wsthread.echo", description="A WebSocket echo server."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8765, help="port to bind (default 8765; 0 = any)"
    )
    parser.add_argument(
        "--max-size",
        type=_size,
        default=2**20,
        metavar="BYTES",
        help="largest message accepted, or 'none' (default 1048576)",
    )
    parser.add_argument(
        "--max-connections",
        type=_size,
        default=1024,
        metavar="N",
        help="open connections at once, or 'none'; beyond, HTTP 503 (default 1024)",
    )
    parser.add_argument(
        "--ping-interval",
        type=_seconds,
        default=20.0,
        metavar="SECONDS",
        help="send a keepalive ping every SECONDS, whatever the traffic, or 'none' (default 20)",
    )
    parser.add_argument(
        "--unix",
        metavar="PATH",
        help="listen on this Unix socket instead of --host/--port (behind nginx, say)",
    )
    parser.add_argument("--quiet", action="store_true", help="log warnings only")
    parser.add_argument(
        "--trace",
        action="store_true",
        help="write the handshake and every frame, annotated, to standard error",
    )
    parser.add_argument("--no-compression", action="store_true", help="refuse permessage-deflate")
    parser.add_argument(
        "--tls", action="store_true", help="serve wss:// (default port 8765, certs/ files)"
    )
    parser.add_argument(
        "--certfile",
        default=str(CERTS / "localhost.pem"),
        help="certificate chain (and key) in PEM, for --tls (default certs/localhost.pem)",
    )
    parser.add_argument("--keyfile", default=None, help="private key in PEM, for --tls")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="serve from N processes sharing the port (SO_REUSEPORT; default 1)",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")

    log_options: Dict[str, Any] = {
        "level": logging.WARNING if args.quiet else logging.INFO,
        # With several workers, say which process logs.
        "format": "%(asctime)s [%(process)d] %(levelname)s %(message)s"
        if args.workers > 1
        else "%(asctime)s %(levelname)s %(message)s",
    }
    logging.basicConfig(**log_options)

    def on_sigterm(signum: int, frame: Optional[FrameType]) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    # Ctrl-C must work even when started from a shell or supervisor that
    # ignores SIGINT (a background job inherits that, and Python then
    # installs no KeyboardInterrupt handler).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    context = None
    if args.tls:
        try:
            context = server_context(args.certfile, args.keyfile)
        except (OSError, ValueError) as exc:
            parser.error(f"cannot load the TLS certificate {args.certfile}: {exc}")

    compression = None if args.no_compression else "deflate"
    if args.trace and args.workers > 1:
        parser.error("--trace works with one worker only")
    if args.unix is not None and args.workers > 1:
        parser.error("--unix works with one worker only")
    if args.workers > 1:
        return _run_workers(args, context is not None, compression, log_options)
    where: Dict[str, Any] = {} if args.unix is None else {"unix_path": args.unix}
    try:
        server = serve(
            echo,
            args.host,
            args.port,
            **where,
            max_size=args.max_size,
            max_connections=args.max_connections,
            ping_interval=args.ping_interval,
            ssl=context,
            compression=compression,
            trace=Tracer(sys.stderr) if args.trace else None,
        )
    except OSError as exc:  # a port in use, a bad address: one line, no traceback
        address = args.unix if args.unix is not None else f"{args.host}:{args.port}"
        reason = os.strerror(exc.errno) if exc.errno else str(exc)  # without serve()'s advice
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = " (another server listens there: stop it, or choose another --port)"
        print(
            f"python -m wsthread.echo: cannot listen on {address}: {reason}{hint}",
            file=sys.stderr,
        )
        return 1
    with server:
        host = args.host if ":" not in args.host else f"[{args.host}]"
        if context is not None and args.host in ("127.0.0.1", "::1"):
            host = "localhost"
        scheme = "wss" if context is not None else "ws"
        if server.unix_path is not None:
            place = f"the Unix socket {server.unix_path} ({scheme}://)"
        else:
            place = f"{scheme}://{host}:{server.port}/"
        print(f"wsthread echo server on {place} (Ctrl-C to stop)", flush=True)
        if context is not None and args.certfile == str(CERTS / "localhost.pem"):
            print(
                f"clients trust it with the development CA {CERTS / 'ca.pem'}, e.g.\n"
                f"  python -m wsthread --cafile {CERTS / 'ca.pem'} {scheme}://localhost:{server.port}/",
                flush=True,
            )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("shutting down", flush=True)
    return 0


def _run_workers(
    args: argparse.Namespace, tls: bool, compression: Optional[str], log_options: Dict[str, Any]
) -> int:
    """``--workers N``: the echo server in N processes on one port."""
    from ..integrations.workers import run_workers

    def on_ready(port: int, pids: List[int]) -> None:
        scheme, host = ("wss" if tls else "ws"), args.host
        if tls and host in ("127.0.0.1", "::1"):
            host = "localhost"
        elif ":" in host:
            host = f"[{host}]"
        print(
            f"wsthread echo server on {scheme}://{host}:{port}/ (Ctrl-C to stop), "
            f"{len(pids)} workers: pids {' '.join(map(str, pids))}",
            flush=True,
        )

    status = run_workers(
        echo,
        args.host,
        args.port,
        workers=args.workers,
        ssl_factory=functools.partial(server_context, args.certfile, args.keyfile) if tls else None,
        initializer=functools.partial(logging.basicConfig, **log_options),
        on_ready=on_ready,
        max_size=args.max_size,
        max_connections=args.max_connections,
        ping_interval=args.ping_interval,
        compression=compression,
    )
    print("shutting down" if status == 0 else "stopped after a worker failed", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
