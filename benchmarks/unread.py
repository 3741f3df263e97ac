"""Memory of received-but-unread messages: a flood to handlers that do not read yet.

One command::

    python benchmarks/unread.py                      # 100 connections x 40 messages of ~1 MiB
    python benchmarks/unread.py --connections 1000 --messages 4

It starts a wsthread server as a subprocess, with the default options,
whose handler waits (as a busy handler does: a slow database call, a
``time.sleep``) until this script says "release". Every client connects and
sends its messages of about 1 MiB as fast as TCP lets it. Once the server has
stopped taking more (its buffered bytes no longer grow) and a few seconds
more have passed, the handlers are released and read everything, checking
that each message arrived whole, in order, and exactly once; each handler
answers its client with what it found. A handler drops each message once it
has checked it; with ``--keep-last`` it keeps it until the next one arrives
(``message = ws.recv()`` in a loop does), which adds one message per handler
to the whole run's peak: the application's memory, not the library's.

Printed: the server's RSS before the flood, its peak (VmHWM) while the
handlers did not read, its peak over the whole run, the most bytes the
receive budget held, and the check results. ``--json FILE`` writes them
too. Run it under ``flock /work/heavy.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional

HEADER = struct.Struct("!QQ")  # connection number, message number
SIZE = 2**20 - 64  # about 1 MiB, under the default max_size of 1 MiB


BODY = SIZE - HEADER.size


def fill(number: int) -> bytes:
    """The byte that fills message ``number`` after its header."""
    return bytes([number % 251])


def body(number: int) -> bytes:
    """The bytes after the header of message ``number``."""
    return fill(number) * BODY


def proc_status(field: str, pid: str = "self") -> int:
    """A ``/proc/PID/status`` figure in bytes (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


# -- the server (a subprocess) --------------------------------------------------------


def serve(messages: int, keep_last: bool) -> None:
    """Run the server: print the port and baseline; obey "stats", "release", "report"."""
    import wsthread
    from wsthread.connection.budget import ReceiveBudget
    from wsthread.connection.threads import shared
    from wsthread.options import DEFAULT_RECEIVE_BUDGET

    release = threading.Event()
    results: Dict[int, str] = {}
    lock = threading.Lock()

    def handler(ws: Any) -> None:
        release.wait()
        problems = []
        who = -1
        for number in range(messages):
            message = ws.recv(timeout=600)
            who, seen = HEADER.unpack_from(message)
            if seen != number:
                problems.append(f"message {seen} arrived as number {number}")
            elif len(message) != SIZE or message.count(fill(number), HEADER.size) != BODY:
                problems.append(f"message {number} damaged ({len(message)} bytes)")
            if not keep_last:
                del message  # done with it: only the library holds messages now
        verdict = "ok" if not problems else "; ".join(problems[:3])
        with lock:
            results[who] = verdict
        ws.send(verdict)

    server = wsthread.serve(handler, "127.0.0.1", 0, max_connections=None)
    server.start()
    budget = shared(ReceiveBudget, DEFAULT_RECEIVE_BUDGET)
    print(json.dumps({"port": server.port, "rss": proc_status("VmRSS")}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "stats":
            report = {"buffered": server.stats()["buffered"], "budget": budget.used}
            report["open"] = server.stats()["connections"]["open"]
            print(json.dumps(report), flush=True)
        elif command == "hwm":
            print(json.dumps({"hwm": proc_status("VmHWM")}), flush=True)
        elif command == "release":
            release.set()
            print("{}", flush=True)
        elif command == "report":
            with lock:
                verdicts = dict(results)
            print(
                json.dumps(
                    {
                        "hwm": proc_status("VmHWM"),
                        "rss": proc_status("VmRSS"),
                        "budget_limit": budget.limit,
                        "budget_peak": budget.peak,
                        "handlers_ok": sum(1 for v in verdicts.values() if v == "ok"),
                        "problems": [v for v in verdicts.values() if v != "ok"][:5],
                    }
                ),
                flush=True,
            )
    server.shutdown()


# -- the clients (this process) ---------------------------------------------------------


class Server:
    """The server subprocess and its little command protocol."""

    def __init__(self, messages: int, keep_last: bool) -> None:
        command = [sys.executable, __file__, "--serve", "--messages", str(messages)]
        self.process = subprocess.Popen(
            command + ["--keep-last"] * keep_last,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.hello = self._read()

    def _read(self) -> Dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the server subprocess ended")
        return json.loads(line)  # type: ignore[no-any-return]

    def ask(self, command: str) -> Dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read()

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def client(port: int, who: int, messages: int, verdicts: List[Optional[str]]) -> None:
    """Connect, send ``messages`` messages as fast as TCP allows, then read the verdict."""
    import wsthread

    try:
        with wsthread.connect(
            f"ws://127.0.0.1:{port}/",
            open_timeout=120,
            write_timeout=None,
            ping_interval=None,
            compression=None,
        ) as ws:
            for number in range(messages):
                ws.send(HEADER.pack(who, number) + body(number))
            verdicts[who] = str(ws.recv(timeout=600))
    except Exception as exc:  # reported, not raised: one failure must not hide the others
        verdicts[who] = f"client error: {exc!r}"


def run(connections: int, messages: int, hold: float, keep_last: bool) -> Dict[str, Any]:
    """Run the flood once; return the figures."""
    server = Server(messages, keep_last)
    try:
        baseline = server.hello["rss"]
        verdicts: List[Optional[str]] = [None] * connections
        started = time.monotonic()
        threads = [
            threading.Thread(target=client, args=(server.hello["port"], who, messages, verdicts))
            for who in range(connections)
        ]
        for thread in threads:
            thread.start()
        # Wait until the server stops taking more, then hold a while.
        last, still_since = -1, time.monotonic()
        while time.monotonic() - still_since < 2 and time.monotonic() - started < 120:
            time.sleep(0.25)
            stats = server.ask("stats")
            held = stats["budget"]
            if held != last or stats["open"] < connections:
                last, still_since = held, time.monotonic()
        time.sleep(hold)
        flood_hwm = server.ask("hwm")["hwm"]
        flood_seconds = time.monotonic() - started
        server.ask("release")
        for thread in threads:
            thread.join(timeout=900)
        report = server.ask("report")
        total_seconds = time.monotonic() - started
    finally:
        server.stop()
    return {
        "connections": connections,
        "messages": messages,
        "handler_keeps_last": keep_last,
        "message_bytes": SIZE,
        "rss_before_mb": baseline / 1e6,
        "peak_growth_while_unread_mb": (flood_hwm - baseline) / 1e6,
        "peak_growth_whole_run_mb": (report["hwm"] - baseline) / 1e6,
        "budget_limit_mb": report["budget_limit"] / 1e6,
        "budget_peak_mb": report["budget_peak"] / 1e6,
        "flood_seconds": flood_seconds,
        "total_seconds": total_seconds,
        "handlers_ok": report["handlers_ok"],
        "clients_ok": sum(1 for verdict in verdicts if verdict == "ok"),
        "problems": report["problems"] + [v for v in verdicts if v != "ok"][:5],
        "load": " ".join(open("/proc/loadavg").read().split()[:3]),
    }


def main(argv: Optional[List[str]] = None) -> int:
    """Parse the options; run the server or the whole benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=100, help="clients (100)")
    parser.add_argument("--messages", type=int, default=40, help="messages per client (40)")
    parser.add_argument(
        "--hold", type=float, default=3, help="seconds at the peak before the release (3)"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument(
        "--keep-last",
        action="store_true",
        help="handlers keep each message until the next one arrives",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.messages, args.keep_last)
        return 0
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 2 descriptors a connection
    except (ImportError, ValueError, OSError):
        pass
    figures = run(args.connections, args.messages, args.hold, args.keep_last)
    for key, value in figures.items():
        print(f"{key}: {value:.1f}" if isinstance(value, float) else f"{key}: {value}")
    if args.json:
        with open(args.json, "w") as output:
            json.dump(figures, output, indent=2)
    return 0 if figures["clients_ok"] == args.connections else 1


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
