"""Cross-process broadcast through Redis: throughput and latency.

::

    python benchmarks/scaleout.py            # 3 processes x 100 clients, about a minute
    python benchmarks/scaleout.py --quick    # a smoke run, a few seconds

It starts Debian's ``redis-server`` on a free loopback port (nothing saved,
a temporary directory), then ``--processes`` wsthread servers (this file in
``--serve`` mode), each with a :class:`wsthread.hubs.RedisHub` on that Redis
and a handler that broadcasts every message it receives. The client (picows,
on uvloop when installed, all in this process) opens ``--clients``
connections to *each* server; the first connection of each server also
publishes. Every broadcast must reach every client of every process once:
the script checks that, and that no hub dropped anything.

Two workloads, each run with the Redis hub and, for comparison, on one
process holding all the clients with no hub:

- **latency**: one broadcast at a time (the next is sent when every client
  has the previous one); the 50th and 99th percentile of the time from the
  publisher's send to each client's receipt.
- **throughput**: ``--window`` broadcasts in flight at once, publishers
  taking turns; broadcasts per second (each one delivered to every client),
  with the latency percentiles under that load.

Messages are ``--size`` bytes of binary; compression is off. Client and
servers share the machine's cores, so the client's CPU time is part of
every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HEADER = struct.Struct("!QQ")  # sequence number, send time (perf_counter_ns)


# ---------------------------------------------------------------------------
# The server (run in subprocesses)


def serve(redis_url: Optional[str]) -> None:
    """``--serve``: a broadcasting server, with a RedisHub unless ``redis_url`` is None."""
    sys.path.insert(0, str(ROOT))
    import wsthread
    from wsthread.hubs import RedisHub

    hub = RedisHub(redis_url, channel="scaleout-bench") if redis_url else None

    def handler(ws: wsthread.ServerConnection) -> None:
        for message in ws:
            ws.server.broadcast(message)

    def health(connection: Any, request: wsthread.Request) -> Optional[wsthread.Response]:
        if request.path != "/stats":
            return None
        stats = hub.stats() if hub is not None else {"healthy": True, "dropped": 0}
        return wsthread.http_response(200, json.dumps(stats).encode())

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    with wsthread.serve(
        handler,
        "127.0.0.1",
        0,
        hub=hub,
        process_request=health,
        compression=None,
        ping_interval=None,
        max_connections=10_000,
    ) as server:
        if hub is not None and not hub.wait_healthy(10):
            raise SystemExit("Redis not reachable")
        print(f"ws://127.0.0.1:{server.port}/", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


# ---------------------------------------------------------------------------
# Processes


def free_port() -> int:
    """A free loopback port (for redis-server, which needs a number)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Run redis-server on a free loopback port in a temporary directory; yield its URL."""
    binary = shutil.which("redis-server") or "/usr/sbin/redis-server"
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                directory,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                        sock.sendall(b"PING\r\n")
                        if sock.recv(16).startswith(b"+PONG"):
                            break
                except OSError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise RuntimeError("redis-server did not start") from None
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(10)


@contextlib.contextmanager
def servers(count: int, redis_url: Optional[str]) -> Iterator[List[str]]:
    """Start ``count`` server processes; yield their URLs; stop them."""
    command = [sys.executable, str(Path(__file__).resolve()), "--serve", redis_url or ""]
    processes: List[subprocess.Popen[str]] = []
    try:
        urls = []
        for _ in range(count):
            process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            processes.append(process)
        for process in processes:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            if not line.startswith("ws://"):
                raise RuntimeError(f"a server did not start: {line!r}")
            urls.append(line)
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()


def server_stats(url: str) -> Dict[str, Any]:
    """The hub counters of a server, from its /stats page."""
    http = url.replace("ws://", "http://") + "stats"
    with urllib.request.urlopen(http, timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------
# The client


class Collector:
    """Counts receipts per broadcast and records one latency per receipt."""

    def __init__(self, expected: int) -> None:
        self.expected = expected  # receipts per broadcast: every client
        self.counts: Dict[int, int] = {}
        self.latencies_ns: List[int] = []
        self.complete: Dict[int, asyncio.Future[None]] = {}
        self.errors = 0

    def expect(self, seq: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.complete[seq] = future
        self.counts[seq] = 0
        return future

    def receive(self, payload: bytes) -> None:
        now = time.perf_counter_ns()
        seq, sent = HEADER.unpack_from(payload)
        self.latencies_ns.append(now - sent)
        count = self.counts.get(seq, 0) + 1
        self.counts[seq] = count
        if count == self.expected:
            self.complete[seq].set_result(None)
        elif count > self.expected:
            self.errors += 1  # a duplicate


async def open_clients(urls: Sequence[str], per_server: int, collector: Collector) -> List[Any]:
    """Open ``per_server`` picows connections to each URL; return the transports by server."""
    from picows import WSListener, WSMsgType, ws_connect

    class Listener(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type is WSMsgType.BINARY:
                collector.receive(frame.get_payload_as_bytes())

    by_server = []
    for url in urls:
        transports = []
        for _ in range(per_server):
            transport, _listener = await ws_connect(Listener, url, websocket_handshake_timeout=30)
            transports.append(transport)
        by_server.append(transports)
    return by_server


def percentile(values: List[int], fraction: float) -> float:
    """Nearest-rank percentile of nanosecond values, in milliseconds."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, int(round(fraction * len(ordered))) - 1))
    return ordered[index] / 1e6


async def workload(
    urls: Sequence[str], per_server: int, messages: int, window: int, size: int
) -> Dict[str, float]:
    """Send ``messages`` broadcasts, ``window`` in flight; measure."""
    from picows import WSMsgType

    collector = Collector(expected=len(urls) * per_server)
    by_server = await open_clients(urls, per_server, collector)
    publishers = [transports[0] for transports in by_server]
    padding = b"x" * max(0, size - HEADER.size)
    in_flight = asyncio.Semaphore(window)
    done: List[asyncio.Future[None]] = []

    async def release(future: asyncio.Future[None]) -> None:
        await future
        in_flight.release()

    started = time.perf_counter()
    for seq in range(messages):
        await in_flight.acquire()
        future = collector.expect(seq)
        done.append(future)
        asyncio.ensure_future(release(future))
        payload = HEADER.pack(seq, time.perf_counter_ns()) + padding
        publishers[seq % len(publishers)].send(WSMsgType.BINARY, payload)
    await asyncio.wait_for(asyncio.gather(*done), timeout=120)
    elapsed = time.perf_counter() - started
    for transports in by_server:
        for transport in transports:
            transport.send_close()
            transport.disconnect()
    if collector.errors:
        raise RuntimeError(f"{collector.errors} duplicate deliveries")
    return {
        "broadcasts_per_s": messages / elapsed,
        "deliveries_per_s": messages * collector.expected / elapsed,
        "p50_ms": percentile(collector.latencies_ns, 0.50),
        "p99_ms": percentile(collector.latencies_ns, 0.99),
    }


async def run(args: argparse.Namespace) -> Dict[str, Any]:
    """Both workloads on both set-ups; return the results."""
    results: Dict[str, Any] = {}
    setups = [
        (
            f"{args.processes} processes x {args.clients} clients, Redis hub",
            args.processes,
            args.clients,
            True,
        ),
        (
            f"1 process x {args.processes * args.clients} clients, no hub",
            1,
            args.processes * args.clients,
            False,
        ),
    ]
    with redis_server() as url:
        for name, processes, clients, with_redis in setups:
            with servers(processes, url if with_redis else None) as urls:
                row = {
                    "latency": await workload(urls, clients, args.latency_messages, 1, args.size),
                    "throughput": await workload(
                        urls, clients, args.messages, args.window, args.size
                    ),
                }
                if with_redis:
                    stats = [server_stats(u) for u in urls]
                    if any(s["dropped"] for s in stats) or not all(s["healthy"] for s in stats):
                        raise RuntimeError(f"a hub dropped messages: {stats}")
                results[name] = row
            print_row(name, row)
    return results


def print_row(name: str, row: Dict[str, Dict[str, float]]) -> None:
    """One set-up's figures, as lines a person reads."""
    latency, throughput = row["latency"], row["throughput"]
    print(f"{name}:", flush=True)
    print(
        f"  one at a time:   p50 {latency['p50_ms']:.2f} ms, p99 {latency['p99_ms']:.2f} ms"
        f" ({latency['broadcasts_per_s']:.0f} broadcasts/s)",
        flush=True,
    )
    print(
        f"  {ARGS.window} in flight:    {throughput['broadcasts_per_s']:.0f} broadcasts/s"
        f" = {throughput['deliveries_per_s']:.0f} deliveries/s;"
        f" p50 {throughput['p50_ms']:.2f} ms, p99 {throughput['p99_ms']:.2f} ms",
        flush=True,
    )


ARGS = argparse.Namespace(window=0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the options, run, print (and save with --json)."""
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", metavar="REDIS_URL", help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--clients", type=int, default=100, help="clients per process")
    parser.add_argument("--messages", type=int, default=2000, help="broadcasts, throughput run")
    parser.add_argument("--latency-messages", type=int, default=300)
    parser.add_argument("--window", type=int, default=16, help="broadcasts in flight")
    parser.add_argument("--size", type=int, default=64, help="message size in bytes (>= 16)")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the results there")
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve or None)
        return 0
    if args.quick:
        args.clients, args.messages, args.latency_messages = 10, 200, 50
    ARGS = args
    print(
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, {args.size}-byte binary"
        f" messages, compression off; load average before: {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    try:
        import uvloop
    except ImportError:
        results = asyncio.run(run(args))
    else:
        results = uvloop.run(run(args))
    print(f"load average after: {os.getloadavg()[0]:.1f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
