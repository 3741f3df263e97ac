"""20,000 idle connections on one wsthread server: new handshakes meanwhile, and the wind-down.

    python benchmarks/idle20k.py [--connections 20000] [--processes 4] [--hold 40]

The server runs in a process of its own (``max_connections=None``, a small
``thread_stack_size``, the default keepalive: a ping every 20 s, 20 s for
the pong). The idle clients are plain sockets in ``--processes`` other
processes, one thread each (an epoll loop), which complete the handshake
and then only answer the server's pings, as idle browsers do. Each process
raises its open-files limit to the hard limit.

Once they are all open, this process opens a new connection with
``wsthread.connect()`` every ``--every`` seconds for ``--hold`` seconds (two
keepalive rounds by default) and times each opening handshake, from the TCP
connect to the 101 read: the p50, p99 and worst are printed, with the
server's threads, RSS, CPU and the machine's load. Then every client closes
all its sockets at once and exits, and the script times how long the server
takes to come back to the thread count it had before the first client.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import wsthread  # noqa: E402
from wsthread.sansio.protocol import Protocol, Side  # noqa: E402


def raise_fd_limit() -> Tuple[int, int]:
    """Raise this process's open-files soft limit to the hard limit; return both."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# -- the server process --------------------------------------------------------


def serve(stack: int) -> None:
    """Run the echo server until stdin closes; print its port first."""
    raise_fd_limit()

    def handler(ws: wsthread.ServerConnection) -> None:
        for message in ws:
            ws.send(message)

    server = wsthread.serve(handler, "127.0.0.1", 0, max_connections=None, thread_stack_size=stack)
    server.start()
    print(f"port {server.port}", flush=True)
    sys.stdin.read()  # until the parent closes it
    server.shutdown()


# -- an idle-client process ----------------------------------------------------


class IdleClient:
    """One raw client connection: connect, handshake, then answer pings."""

    __slots__ = ("sock", "state", "buffer", "protocol")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.state = "connecting"
        self.buffer = b""
        self.protocol: Optional[Protocol] = None


def request(port: int) -> bytes:
    """An upgrade request with a fresh key."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def clients(port: int, count: int, in_flight: int) -> None:
    """Open ``count`` idle connections, hold them until stdin says "leave", then drop them all."""
    raise_fd_limit()
    selector = selectors.DefaultSelector()
    opened = failed = dropped = pings = 0
    pending = 0
    to_open = count
    last_report = time.monotonic()

    def start_one() -> None:
        nonlocal pending, to_open
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        client = IdleClient(sock)
        selector.register(sock, selectors.EVENT_WRITE, client)
        pending += 1
        to_open -= 1

    def lose(client: IdleClient) -> None:
        nonlocal failed, dropped, pending
        selector.unregister(client.sock)
        client.sock.close()
        if client.state == "open":
            dropped += 1
        else:
            failed += 1
            pending -= 1

    selector.register(sys.stdin, selectors.EVENT_READ, None)
    leaving = False
    while not leaving:
        while to_open and pending < in_flight:
            start_one()
        for key, _ in selector.select(timeout=1.0):
            client = key.data
            if client is None:  # stdin: "leave" or EOF
                leaving = True
                continue
            sock = client.sock
            try:
                if client.state == "connecting":
                    sock.send(request(port))
                    client.state = "handshake"
                    selector.modify(sock, selectors.EVENT_READ, client)
                    continue
                data = sock.recv(65536)
            except OSError:
                lose(client)
                continue
            if not data:
                lose(client)
                continue
            if client.state == "handshake":
                client.buffer += data
                if b"\r\n\r\n" not in client.buffer:
                    continue
                head, _, rest = client.buffer.partition(b"\r\n\r\n")
                client.buffer = b""
                if not head.startswith(b"HTTP/1.1 101"):
                    lose(client)
                    continue
                client.state = "open"
                client.protocol = Protocol(Side.CLIENT, max_size=2**16)
                opened += 1
                pending -= 1
                data = rest
                if not data:
                    continue
            protocol = client.protocol
            assert protocol is not None
            protocol.receive_data(data)
            output = protocol.data_to_send()
            if output:
                pings += 1
                try:
                    sock.send(output)
                except OSError:
                    lose(client)
        now = time.monotonic()
        if now - last_report >= 1.0 or (not to_open and not pending):
            last_report = now
            report = {"opened": opened, "failed": failed, "dropped": dropped, "pongs": pings}
            print(json.dumps(report), flush=True)
    # Leave all at once: the kernel closes every socket as the process exits.
    os._exit(0)


# -- the measuring process -----------------------------------------------------


def proc_status(pid: int) -> Dict[str, int]:
    """The server's thread count, RSS (KB) and CPU (clock ticks) from /proc."""
    status: Dict[str, int] = {}
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            name, _, value = line.partition(":")
            if name in ("Threads", "VmRSS"):
                status[name] = int(value.split()[0])
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    status["cpu"] = int(fields[11]) + int(fields[12])
    return status


def load() -> str:
    """The machine's load averages."""
    with open("/proc/loadavg") as file:
        return " ".join(file.read().split()[:3])


class Reports(threading.Thread):
    """Keeps the last report line of one client process."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.last: Dict[str, int] = {"opened": 0, "failed": 0, "dropped": 0, "pongs": 0}
        self.start()

    def run(self) -> None:
        for line in self.stream:
            try:
                self.last = json.loads(line)
            except ValueError:
                pass


def total(reports: List[Reports], name: str) -> int:
    """The sum of one counter over the client processes."""
    return sum(report.last[name] for report in reports)


def percentile(values: List[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` fall (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def probe(port: int, hold: float, every: float) -> Tuple[List[float], List[str]]:
    """Open and close a new connection every ``every`` seconds for ``hold``; time each handshake."""
    times: List[float] = []
    errors: List[str] = []
    end = time.monotonic() + hold
    while time.monotonic() < end:
        began = time.monotonic()
        try:
            ws = wsthread.connect(f"ws://127.0.0.1:{port}/", open_timeout=10, compression=None)
        except Exception as exc:  # counted and shown
            errors.append(repr(exc))
        else:
            times.append(time.monotonic() - began)
            ws.close()
        time.sleep(max(0.0, every - (time.monotonic() - began)))
    return times, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=20000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--in-flight", type=int, default=50, help="handshakes per client process")
    parser.add_argument("--hold", type=float, default=40.0, help="seconds of probing")
    parser.add_argument("--every", type=float, default=0.1, help="seconds between probes")
    parser.add_argument("--stack", type=int, default=256 * 1024, help="thread_stack_size")
    parser.add_argument("--role", choices=["server", "clients"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "server":
        serve(args.stack)
        return
    if args.role == "clients":
        clients(args.port, args.count, args.in_flight)
        return

    soft, hard = raise_fd_limit()
    print(f"open files limit: {soft} (hard {hard}); load {load()}", flush=True)
    me = [sys.executable, str(Path(__file__).resolve())]
    server = subprocess.Popen(
        me + ["--role", "server", "--stack", str(args.stack)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None and server.stdin is not None
    port = int(server.stdout.readline().split()[1])
    time.sleep(2)
    baseline = proc_status(server.pid)
    print(f"server pid {server.pid} port {port}: baseline {baseline}", flush=True)

    workers: List[subprocess.Popen[str]] = []
    reports: List[Reports] = []
    share = args.connections // args.processes
    counts = [
        share + (1 if i < args.connections % args.processes else 0) for i in range(args.processes)
    ]
    began = time.monotonic()
    for count in counts:
        worker = subprocess.Popen(
            me
            + ["--role", "clients", "--port", str(port), "--count", str(count)]
            + ["--in-flight", str(args.in_flight)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert worker.stdout is not None
        workers.append(worker)
        reports.append(Reports(worker.stdout))
    last_print = 0.0
    while True:
        opened, failed = total(reports, "opened"), total(reports, "failed")
        if opened + failed >= args.connections:
            break
        if time.monotonic() - began > 600 or server.poll() is not None:
            print("gave up opening", flush=True)
            break
        if time.monotonic() - last_print >= 5:
            last_print = time.monotonic()
            status = proc_status(server.pid)
            print(
                f"  {time.monotonic() - began:5.1f}s: {opened:,} open, {failed} failed;"
                f" server threads {status['Threads']:,}, RSS {status['VmRSS'] // 1024} MiB;"
                f" load {load()}",
                flush=True,
            )
        time.sleep(0.2)
    opened, failed = total(reports, "opened"), total(reports, "failed")
    open_seconds = time.monotonic() - began
    time.sleep(2)
    before = proc_status(server.pid)
    added = before["Threads"] - baseline["Threads"]
    print(
        f"opened {opened:,} ({failed} failed) in {open_seconds:.1f}s;"
        f" server threads {before['Threads']:,} (+{added:,}),"
        f" RSS {(before['VmRSS'] - baseline['VmRSS']) / max(1, opened):.1f} KB per connection;"
        f" load {load()}",
        flush=True,
    )

    cpu_before = proc_status(server.pid)["cpu"]
    probe_began = time.monotonic()
    times, errors = probe(port, args.hold, args.every)
    probe_seconds = time.monotonic() - probe_began
    after = proc_status(server.pid)
    cpu = (after["cpu"] - cpu_before) / os.sysconf("SC_CLK_TCK")
    pongs = total(reports, "pongs")
    dropped = total(reports, "dropped")
    ms = [t * 1000 for t in times]
    result: Dict[str, Any] = {
        "connections": opened,
        "failed_to_open": failed,
        "open_seconds": round(open_seconds, 1),
        "probes": len(times),
        "probe_errors": len(errors),
        "handshake_p50_ms": round(statistics.median(ms), 2) if ms else None,
        "handshake_p99_ms": round(percentile(ms, 0.99), 2) if ms else None,
        "handshake_max_ms": round(max(ms), 2) if ms else None,
        "over_50ms": sum(1 for t in ms if t > 50),
        "server_cpu_cores_while_idle": round(cpu / probe_seconds, 3),
        "pongs_sent_by_idle_clients": pongs,
        "idle_dropped_by_server": dropped,
        "server_threads": after["Threads"],
        "server_rss_mib": after["VmRSS"] // 1024,
        "load_while_idle": load(),
    }
    print(
        f"{len(times)} handshakes over {probe_seconds:.0f}s beside {opened:,} idle:"
        f" p50 {result['handshake_p50_ms']} ms, p99 {result['handshake_p99_ms']} ms,"
        f" max {result['handshake_max_ms']} ms, {result['over_50ms']} over 50 ms,"
        f" {len(errors)} failed{' (' + errors[0] + ')' if errors else ''};"
        f" server CPU {result['server_cpu_cores_while_idle']} cores; {pongs:,} pongs;"
        f" {dropped} idle connections dropped; load {load()}",
        flush=True,
    )

    left_at = time.monotonic()
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("leave\n")
        worker.stdin.flush()
    for worker in workers:
        worker.wait(30)
    gone_at = time.monotonic()
    wound_down: Optional[float] = None
    while time.monotonic() - left_at < 120:
        threads = proc_status(server.pid)["Threads"]
        if threads <= baseline["Threads"]:
            wound_down = time.monotonic() - left_at
            break
        time.sleep(0.05)
    result["clients_exit_seconds"] = round(gone_at - left_at, 2)
    result["baseline_threads"] = baseline["Threads"]
    result["back_to_baseline_seconds"] = None if wound_down is None else round(wound_down, 2)
    result["threads_at_end"] = proc_status(server.pid)["Threads"]
    print(
        f"clients left (their processes exited in {gone_at - left_at:.2f}s);"
        f" server back to {baseline['Threads']} threads in"
        f" {'more than 120' if wound_down is None else f'{wound_down:.2f}'}s",
        flush=True,
    )
    server.stdin.close()
    server.wait(30)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
