"""Soak test: churn WebSocket connections against a wsthread server for a while.

    python stress/soak.py --duration 600            # ten minutes, a line per second
    python stress/soak.py --duration 20 --json      # what CI runs (tests/test_load.py)

An echo server runs in this process on 127.0.0.1 (a free port). Worker
threads open and close connections as fast as they can, mixing well-behaved
sessions (a few messages of random size, text and binary, with or without
permessage-deflate, every echo checked) with bad ones (a client that
vanishes mid-handshake, one that resets the connection mid-frame, one that
sends garbage). Once a second (``--interval``) a line reports the elapsed
time, connections so far, errors, RSS and the thread count; at the end the
workers stop, the thread count must come back to where it started, and a
summary is printed (as JSON on the last line with ``--json``).

Exit status 0 when no echo was wrong or missing and no thread was left.
Only loopback is used; everything stops by itself after ``--duration``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import socket
import struct
import sys
import threading
import time
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import wsthread  # noqa: E402
from wsthread.exceptions import ConnectionClosed, InvalidHandshake  # noqa: E402
from wsthread.server import ServerConnection  # noqa: E402

UPGRADE = (
    b"GET /soak HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def rss_mb() -> float:
    """This process's resident set size in MiB (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def echo(connection: ServerConnection) -> None:
    """Send every message back."""
    for message in connection:
        connection.send(message)


class Counters:
    """Shared tallies, updated under a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections = 0
        self.messages = 0
        self.errors = 0
        self.error_samples: List[str] = []

    def add(self, connections: int = 0, messages: int = 0, error: Optional[str] = None) -> None:
        with self.lock:
            self.connections += connections
            self.messages += messages
            if error is not None:
                self.errors += 1
                if len(self.error_samples) < 10:
                    self.error_samples.append(error)


def good_session(port: int, rng: random.Random, counters: Counters) -> None:
    """Connect, exchange a few messages, check every echo, close."""
    compression = "deflate" if rng.random() < 0.3 else None
    with wsthread.connect(
        f"ws://127.0.0.1:{port}/", compression=compression, open_timeout=10, close_timeout=5
    ) as ws:
        for _ in range(rng.randint(1, 10)):
            size = rng.choice([0, 10, 100, 1000, 16384])
            message: Any = rng.randbytes(size) if rng.random() < 0.5 else "é" * (size // 2)
            ws.send(message)
            if ws.recv(timeout=10) != message:
                raise AssertionError("echo differs from what was sent")
            counters.add(messages=1)


def vanish_mid_handshake(port: int, rng: random.Random) -> None:
    """Send part of the upgrade request and close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(UPGRADE[: rng.randint(1, len(UPGRADE) - 1)])


def reset_mid_frame(port: int, rng: random.Random) -> None:
    """Open a WebSocket by hand, send half a frame, reset the connection."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        sock.sendall(UPGRADE)
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(4096)
            if not data:
                raise AssertionError("server closed during the handshake")
            head += data
        if not head.startswith(b"HTTP/1.1 101"):
            raise AssertionError(f"handshake refused: {head[:40]!r}")
        sock.sendall(b"\x82\xfe" + struct.pack("!H", 1000) + b"\x00\x00\x00\x00" + b"x" * 10)
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


def garbage(port: int, rng: random.Random) -> None:
    """Send noise and a blank line; expect a 4xx and a close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(rng.randbytes(rng.randint(1, 200)).replace(b"\n", b"") + b"\r\n\r\n")
        answer = b""
        try:
            while True:
                data = sock.recv(4096)
                if not data:
                    break
                answer += data
        except ConnectionResetError:
            pass
        if answer and not answer.startswith(b"HTTP/1.1 4"):
            raise AssertionError(f"unexpected answer to garbage: {answer[:40]!r}")


def worker(port: int, seed: int, stop: threading.Event, counters: Counters) -> None:
    """Churn connections until ``stop`` is set."""
    rng = random.Random(seed)
    while not stop.is_set():
        roll = rng.random()
        try:
            if roll < 0.7:
                good_session(port, rng, counters)
            elif roll < 0.8:
                vanish_mid_handshake(port, rng)
            elif roll < 0.9:
                reset_mid_frame(port, rng)
            else:
                garbage(port, rng)
            counters.add(connections=1)
        except (AssertionError, ConnectionClosed, InvalidHandshake, OSError) as exc:
            counters.add(connections=1, error=f"{type(exc).__name__}: {exc}")


def main(argv: Optional[List[str]] = None) -> int:
    """Run the soak; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, required=True, help="seconds to run")
    parser.add_argument("--workers", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between reports")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON last")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    args = parser.parse_args(argv)
    out = sys.stderr if args.json else sys.stdout

    server = wsthread.serve(
        echo, "127.0.0.1", 0, open_timeout=2, close_timeout=2, ping_interval=1, ping_timeout=5
    ).start()
    threads_start = threading.active_count()
    counters = Counters()
    stop = threading.Event()
    workers = [
        threading.Thread(target=worker, args=(server.port, args.seed + i, stop, counters))
        for i in range(args.workers)
    ]
    started = time.monotonic()
    samples: List[Dict[str, float]] = []

    def sample() -> Dict[str, float]:
        with counters.lock:
            row = {
                "t": round(time.monotonic() - started, 1),
                "connections": counters.connections,
                "messages": counters.messages,
                "errors": counters.errors,
                "rss_mb": round(rss_mb(), 1),
                "threads": threading.active_count(),
                "open": len(server.connections),
            }
        samples.append(row)
        print(
            "{t:7.1f}s {connections:8d} conns {messages:8d} msgs {errors:4d} errors "
            "{rss_mb:8.1f} MiB RSS {threads:5d} threads {open:4d} open".format(**row),
            file=out,
            flush=True,
        )
        return row

    print(f"soak: {args.workers} workers against ws://127.0.0.1:{server.port}/", file=out)
    sample()
    for thread in workers:
        thread.start()
    try:
        while time.monotonic() - started < args.duration:
            time.sleep(min(args.interval, max(0.0, args.duration - (time.monotonic() - started))))
            sample()
    finally:
        stop.set()
        for thread in workers:
            thread.join(30)
    # Every connection thread of the server must end: back to the starting count.
    deadline = time.monotonic() + 15
    while threading.active_count() > threads_start and time.monotonic() < deadline:
        time.sleep(0.05)
    final = sample()
    server.shutdown()
    # Allocators and thread stacks warm up for a while; growth is judged on the second half.
    warm = samples[max(1, len(samples) // 2)]
    summary = {
        "duration_s": final["t"],
        "connections": counters.connections,
        "messages": counters.messages,
        "errors": counters.errors,
        "error_samples": counters.error_samples,
        "threads_start": threads_start,
        "threads_end": final["threads"],
        "threads_max": max(row["threads"] for row in samples),
        "rss_start_mb": samples[0]["rss_mb"],
        "rss_warm_mb": warm["rss_mb"],
        "rss_end_mb": final["rss_mb"],
        "rss_max_mb": max(row["rss_mb"] for row in samples),
        "rss_growth_second_half_mb": round(final["rss_mb"] - warm["rss_mb"], 1),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key}: {value}")
    ok = counters.errors == 0 and final["threads"] <= threads_start
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
