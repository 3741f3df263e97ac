"""Bodies that pin memory on serve(wsgi=...): slow POSTs and half-sent chunked bodies (issue 27).

    python benchmarks/http_resources.py                   # the issue's sizes: 800 + 150 x 16 MiB
    python benchmarks/http_resources.py --quick           # 100 + 10 x 2 MiB, open_timeout 2

A wsthread server (``serve(wsgi=app)``, options at their defaults unless
given) runs in a subprocess; its app reads ``wsgi.input`` in 64 KiB pieces
and throws them away. One client process, on one thread with
:mod:`selectors`, then opens at once:

* ``--slow`` POSTs that announce a 1 MB ``Content-Length`` and send one
  body byte every ``--trickle`` seconds;
* ``--chunked`` chunked POSTs that announce one chunk of ``--size`` bytes,
  send all of it but 64 KiB as fast as the server takes it, then one byte
  every ``--trickle`` seconds.

Meanwhile another process sends a legitimate ``GET /`` every 0.1 s on a
fresh connection and times its answer. The server's RSS is read from
``/proc/<pid>/status`` (``VmRSS``) before the attack and every 0.2 s
during it. Printed: how many attack connections the server closed and
when (seconds after their last burst of data: the deadline is
``open_timeout`` of waiting per 64 KiB), the RSS baseline, peak and growth,
and the legitimate requests' latencies, apart for those sent while the
attackers were still pushing their bursts (the server's CPU is then
saturated by the bodies it reads) and those sent afterwards.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

_READ = 65536


def serve(open_timeout: float) -> None:
    """The server process: print the port, serve until stdin closes."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import wsthread

    def app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        stream = environ["wsgi.input"]
        total = 0
        while True:
            piece = stream.read(_READ)
            if not piece:
                break
            total += len(piece)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"read {total}".encode()]

    def nothing(ws: Any) -> None:
        pass

    server = wsthread.serve({"/ws": nothing}, "127.0.0.1", 0, wsgi=app, open_timeout=open_timeout)
    server.start()
    print(server.port, flush=True)
    sys.stdin.read()
    server.shutdown()


def rss_kb(pid: int) -> int:
    """The process's resident memory, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Attacker:
    """One attacking connection: a burst, then a byte every ``trickle`` seconds."""

    def __init__(self, port: int, kind: str, burst: memoryview, trickle: float) -> None:
        self.kind = kind
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.burst = burst
        self.trickle = trickle
        self.stalled_at: Optional[float] = None  # when the burst was all sent
        self.next_byte = 0.0
        self.closed_at: Optional[float] = None
        self.answer = b""

    def write(self, now: float) -> None:
        if self.burst:
            try:
                sent = self.sock.send(self.burst[: 1 << 20])
            except BlockingIOError:
                return
            except OSError:
                self.close(now)
                return
            self.burst = self.burst[sent:]
            if not self.burst:
                self.stalled_at = now
                self.next_byte = now + self.trickle
        elif now >= self.next_byte:
            try:
                self.sock.send(b"x")
            except OSError:
                pass
            self.next_byte = now + self.trickle

    def read(self, now: float) -> None:
        try:
            data = self.sock.recv(_READ)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.answer += data[:200]
        else:
            self.close(now)

    def close(self, now: float) -> None:
        if self.closed_at is None:
            self.closed_at = now
            self.sock.close()


def legit(port: int) -> None:
    """The checker process: a GET / every 0.1 s on a fresh connection until stdin closes.

    Prints, as JSON, when each was sent (``time.time()``) and the time it
    took to its whole answer, and the failures.
    """
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    latencies: List[Tuple[float, float]] = []
    failures: List[str] = []
    while not stop.is_set():
        sent_at = time.time()
        started = time.monotonic()
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/")
            response = connection.getresponse()
            body = response.read()
            connection.close()
            if response.status != 200 or body != b"read 0":
                failures.append(f"{response.status} {body[:40]!r}")
            else:
                latencies.append((sent_at, time.monotonic() - started))
        except OSError as exc:
            failures.append(repr(exc))
        stop.wait(0.1)
    print(json.dumps({"latencies": latencies, "failures": failures}))


def attack(args: argparse.Namespace) -> int:
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--open-timeout", str(args.open_timeout)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert server.stdout is not None and server.stdin is not None
    port = int(server.stdout.readline())
    try:
        return _attack(args, server.pid, port)
    finally:
        server.stdin.close()
        server.wait(30)


def _attack(args: argparse.Namespace, pid: int, port: int) -> int:
    time.sleep(0.5)
    baseline = rss_kb(pid)
    peak = [baseline]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], rss_kb(pid))
            except OSError:
                return
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # In a process of its own: this one's GIL is busy sending.
    checker = subprocess.Popen(
        [sys.executable, __file__, "--legit", str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert checker.stdin is not None and checker.stdout is not None
    slow_head = memoryview(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
    sent = args.size - 65536
    chunked = memoryview(
        b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n" % args.size
        + b"x" * sent
    )
    started = time.monotonic()
    wall_offset = time.time() - started
    attackers = [Attacker(port, "slow", slow_head, args.trickle) for _ in range(args.slow)]
    attackers += [Attacker(port, "chunked", chunked, args.trickle) for _ in range(args.chunked)]
    opened = time.monotonic()
    selector = selectors.DefaultSelector()
    for each in attackers:
        selector.register(each.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, each)
    limit = started + args.max_seconds
    open_ones = len(attackers)
    while open_ones and time.monotonic() < limit:
        for key, events in selector.select(0.05):
            each = key.data
            now = time.monotonic()
            if events & selectors.EVENT_READ:
                each.read(now)
            if each.closed_at is None and events & selectors.EVENT_WRITE:
                each.write(now)
                if not each.burst:  # only the trickle now: no need to poll for writing
                    selector.modify(each.sock, selectors.EVENT_READ, each)
            if each.closed_at is not None:
                selector.unregister(each.sock)
                open_ones -= 1
        now = time.monotonic()
        for each in attackers:
            if each.closed_at is None and not each.burst and now >= each.next_byte:
                each.write(now)
    stop.set()
    checker.stdin.close()
    report = json.loads(checker.stdout.read())
    checker.wait(15)
    timed: List[Tuple[float, float]] = report["latencies"]
    failures: List[str] = report["failures"]
    # The wall-clock time the last attacker finished its burst: before it, the
    # server is busy reading 150 x 16 MiB as fast as the clients send them.
    bursts = [each.stalled_at for each in attackers if each.stalled_at is not None]
    burst_end = wall_offset + max(bursts) if bursts else 0.0
    sampler.join(5)
    ended = time.monotonic()
    print(
        f"{args.slow} slow POSTs, {args.chunked} chunked bodies of {args.size} bytes "
        f"({sent} sent), open_timeout={args.open_timeout}, a byte every {args.trickle}s; "
        f"connections opened in {opened - started:.2f}s; load {os.getloadavg()[0]:.1f}"
    )
    failed = 0
    for kind in ("slow", "chunked"):
        group = [each for each in attackers if each.kind == kind]
        if not group:
            continue
        closed = [each for each in group if each.closed_at is not None]
        stalls = [
            each.closed_at - (each.stalled_at or started)
            for each in closed
            if each.closed_at is not None
        ]
        answered = sum(1 for each in closed if each.answer.startswith(b"HTTP/1.1 408 "))
        print(
            f"  {kind}: {len(closed)}/{len(group)} closed by the server ({answered} with 408); "
            + (
                f"closed {min(stalls):.2f}-{max(stalls):.2f}s after their last burst"
                if stalls
                else ""
            )
        )
        failed += len(group) - len(closed)
        for each in group:
            if each.closed_at is None:
                each.sock.close()
    growth = (peak[0] - baseline) / 1024
    print(
        f"  server RSS: {baseline / 1024:.1f} MB before, {peak[0] / 1024:.1f} MB at peak: "
        f"+{growth:.1f} MB"
    )
    print(f"  the attackers' bursts took {burst_end - wall_offset - started:.2f}s")
    for phase, latencies in (
        ("during the bursts", [took for when, took in timed if when < burst_end]),
        ("after them", [took for when, took in timed if when >= burst_end]),
    ):
        if not latencies:
            continue
        ordered = sorted(latencies)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        print(
            f"  legitimate GET / {phase}: {len(ordered)} answered; "
            f"median {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
            f"max {ordered[-1] * 1000:.1f} ms, {sum(1 for t in ordered if t > 0.05)} over 50 ms"
        )
    print(f"  {len(failures)} legitimate requests failed; the run took {ended - started:.1f}s")
    for failure in failures[:5]:
        print("  failure:", failure)
    return 1 if failed or failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--legit", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="100 + 10 x 2 MiB, open_timeout 2")
    parser.add_argument("--slow", type=int, default=800, help="slow POSTs")
    parser.add_argument("--chunked", type=int, default=150, help="half-sent chunked bodies")
    parser.add_argument("--size", type=int, default=16 * 2**20, help="each chunked body's size")
    parser.add_argument("--open-timeout", type=float, default=10, help="the server's")
    parser.add_argument("--trickle", type=float, default=4, help="seconds between bytes")
    parser.add_argument("--max-seconds", type=float, default=120, help="give up after this")
    args = parser.parse_args()
    if args.serve:
        serve(args.open_timeout)
        return 0
    if args.legit:
        legit(args.legit)
        return 0
    if args.quick:
        args.slow, args.chunked, args.size, args.open_timeout = 100, 10, 2 * 2**20, 2.0
        args.trickle, args.max_seconds = 0.5, 30
    return attack(args)


if __name__ == "__main__":
    sys.exit(main())
