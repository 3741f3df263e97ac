"""What server.shutdown() costs with many idle connections open.

One command::

    python benchmarks/shutdown.py            # 5,000 connections
    python benchmarks/shutdown.py --connections 1000

A wsthread server runs as a subprocess, all options at their defaults but
``max_connections=None`` and no keepalive. This script opens N idle
WebSocket connections to it with plain sockets, then asks it to shut down:
``shutdown()`` closes them all with 1001, and 50 client threads here answer
each close frame as a browser would. Printed: the time to open the N
connections and the server's CPU meanwhile, the wall time and the server's
CPU during ``shutdown()``, how many clients received 1001, and the server's
threads before and after.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import wsthread  # noqa: E402 (after the path above)

ANSWERERS = 50
REQUEST = (
    b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)) + b"\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
CLOSE_1001_MASKED = b"\x88\x82\x00\x00\x00\x00\x03\xe9"  # a client's close frame, 1001


def handler(ws: wsthread.ServerConnection) -> None:
    """Read until the connection closes."""
    for _ in ws:
        pass


def open_connections(port: int, count: int) -> List[socket.socket]:
    """Open ``count`` WebSocket connections with plain sockets; wait for every 101."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(REQUEST)
        sockets.append(sock)
    for sock in sockets:
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"refused: {head[:60]!r}")
    return sockets


def answer(sockets: List[socket.socket], received: List[int]) -> None:
    """Wait for each socket's close frame; count 1001s and answer them."""
    for sock in sockets:
        sock.settimeout(60)
        data = b""
        try:
            while len(data) < 4:
                more = sock.recv(256)
                if not more:
                    break
                data += more
            if data[:1] == b"\x88" and data[2:4] == b"\x03\xe9":
                received.append(1)
                sock.sendall(CLOSE_1001_MASKED)
        except OSError:
            pass
        finally:
            sock.close()


def serve() -> None:
    """The server subprocess: print the port, then shut down when told and report."""
    server = wsthread.serve(handler, "127.0.0.1", 0, max_connections=None, ping_interval=None)
    server.start()
    print(json.dumps({"port": server.port}), flush=True)
    for line in sys.stdin:
        if line.strip() == "cpu":
            print(json.dumps({"cpu": time.process_time()}), flush=True)
        elif line.strip() == "shutdown":
            threads = threading.active_count()
            cpu, started = time.process_time(), time.monotonic()
            server.shutdown()
            wall, cpu = time.monotonic() - started, time.process_time() - cpu
            report = {"wall": wall, "cpu": cpu, "threads_before": threads}
            report["threads_after"] = threading.active_count()
            print(json.dumps(report), flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    """Run once and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=5000, help="connections (5000)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 2 descriptors a connection
    except (ImportError, ValueError, OSError):
        pass
    if args.serve:
        serve()
        return 0
    server = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None

    def ask(command: str) -> Dict[str, Any]:
        assert server.stdin is not None and server.stdout is not None
        server.stdin.write(command + "\n")
        server.stdin.flush()
        return json.loads(server.stdout.readline())  # type: ignore[no-any-return]

    try:
        port = json.loads(server.stdout.readline())["port"]
        cpu, started = ask("cpu")["cpu"], time.monotonic()
        sockets = open_connections(port, args.connections)
        opening, cpu = time.monotonic() - started, ask("cpu")["cpu"] - cpu
        print(
            f"opened {args.connections} connections: {opening:.2f} s wall, {cpu:.2f} s server CPU"
        )
        time.sleep(2)  # every connection idle
        received: List[int] = []
        answerers = [
            threading.Thread(target=answer, args=(sockets[i::ANSWERERS], received))
            for i in range(ANSWERERS)
        ]
        for thread in answerers:
            thread.start()
        report = ask("shutdown")
        for thread in answerers:
            thread.join()
    finally:
        server.stdin.close()
        server.wait(timeout=60)
    print(f"shutdown: {report['wall']:.2f} s wall, {report['cpu']:.2f} s server CPU")
    print(f"clients that received 1001: {len(received)} of {args.connections}")
    print(f"server threads: {report['threads_before']} before, {report['threads_after']} after")
    return 0 if len(received) == args.connections else 1


if __name__ == "__main__":
    sys.exit(main())
