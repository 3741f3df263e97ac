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
from wsthread.exceptions import ProtocolError  # noqa: E402
from wsthread.sansio.frames import (  # noqa: E402
    CloseCode,
    Frame,
    FrameParser,
    Opcode,
    parse_close,
    serialize_close,
    serialize_frame,
)
from wsthread.sansio.handshake import build_request, generate_key  # noqa: E402

ANSWERERS = 50
GOING_AWAY = int(CloseCode.GOING_AWAY)  # 1001
# A client's answer to the server's close frame, masked as a client must.
CLOSE_ANSWER = serialize_frame(Frame(Opcode.CLOSE, serialize_close(GOING_AWAY)), mask=os.urandom(4))


def handler(ws: wsthread.ServerConnection) -> None:
    """Read until the connection closes."""
    for _ in ws:
        pass


def open_connections(port: int, count: int) -> List[socket.socket]:
    """Open ``count`` WebSocket connections with plain sockets; wait for every 101."""
    request = build_request("127.0.0.1", port, "/", generate_key(), secure=False).serialize()
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(request)
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
        parser = FrameParser(expect_masked=False)
        try:
            frame = None
            while frame is None:
                more = sock.recv(256)
                if not more:
                    break
                parser.feed(more)
                frame = parser.next_frame()
            if frame is not None and frame.opcode is Opcode.CLOSE:
                if parse_close(frame.payload)[0] == GOING_AWAY:
                    received.append(1)
                sock.sendall(CLOSE_ANSWER)
        except (OSError, ProtocolError):
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
