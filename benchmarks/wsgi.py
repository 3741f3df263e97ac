"""WebSockets for a WSGI app: wsthread.wsgi.middleware vs Flask-Sock under gunicorn, and Channels.

    pip install -e ".[bench]"            # Flask, Flask-Sock, gunicorn, Channels, daphne
    python benchmarks/wsgi.py            # about 2 minutes
    python benchmarks/wsgi.py --quick    # a smoke run

Both apps (``benchmarks/servers/wsgi_apps.py``) are the same Flask app with
an echo at ``/ws``, served by ``gunicorn -k gthread -w 1 --threads 600``,
compression and pings off. With ``channels`` and ``daphne`` installed, a
Django Channels echo (a synchronous ``WebsocketConsumer``,
``benchmarks/servers/channels_echo.py``) runs under daphne as a third
column. The same client (wsthread's, one thread per connection) drives
them all. Figures:

1. round trips/s, 1 connection, 16-byte text, strict ping-pong;
2. round trips/s summed over 20 connections, each in strict ping-pong;
3. idle WebSockets: the RSS (KB) and threads per open connection of a
   fresh gunicorn worker, with 500 connections open, against its baseline
   with one.

The client and the server share the machine: the load average is printed
with the table, and figures from a loaded machine are marked as such.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import wsthread  # noqa: E402

APPS = {
    "wsthread middleware": "wsgi_apps:middleware_app",
    "Flask-Sock": "wsgi_apps:flask_sock_app",
    "Django Channels (daphne)": "channels_echo:application",
}


@contextlib.contextmanager
def gunicorn(app: str, threads: int) -> Iterator[Tuple[int, int]]:
    """Run gunicorn gthread (or daphne, for Channels) on a free port; yield (port, worker pid)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    port = listener.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE / "servers")]))
    command = [
        sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", "1", "--threads", str(threads),
        "--bind", f"fd://{listener.fileno()}", "--log-level", "error", "--graceful-timeout", "5",
        "--backlog", "2048", app,
    ]  # fmt: skip
    daphne = app.startswith("channels_")
    if daphne:  # an ASGI server, one process, its own thread pool for sync consumers
        command = [sys.executable, "-m", "daphne", "--fd", str(listener.fileno()), "-v", "0", app]
    process = subprocess.Popen(command, env=env, pass_fds=[listener.fileno()])
    listener.close()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as probe:
                    probe.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if probe.recv(64).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{app} did not start")
            time.sleep(0.1)
        if daphne:
            yield port, process.pid
            return
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        yield port, int(children[0])
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def status(pid: int) -> Tuple[float, int]:
    """VmRSS (KB) and threads of a process."""
    rss, threads = 0.0, 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = float(line.split()[1]) * 1.024  # kB (KiB) to KB
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss, threads


def ping_pong(port: int, seconds: float, results: List[int], start: threading.Event) -> None:
    """One connection in strict ping-pong for ``seconds``; append its round trips."""
    with wsthread.connect(f"ws://127.0.0.1:{port}/ws", compression=None, ping_interval=None) as ws:
        message = "x" * 16
        ws.send(message)
        ws.recv(timeout=30)
        start.wait()
        count = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ws.send(message)
            ws.recv(timeout=30)
            count += 1
        results.append(count)


def round_trips(port: int, connections: int, seconds: float) -> float:
    """Round trips per second summed over ``connections`` in strict ping-pong."""
    results: List[int] = []
    start = threading.Event()
    threads = [
        threading.Thread(target=ping_pong, args=(port, seconds, results, start))
        for _ in range(connections)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    start.set()
    for thread in threads:
        thread.join()
    if len(results) != connections:
        raise RuntimeError(f"{connections - len(results)} connections failed")
    return sum(results) / seconds


def idle(port: int, pid: int, count: int) -> Tuple[float, float]:
    """KB of RSS and threads per idle open WebSocket, against the worker's baseline."""
    warm = wsthread.connect(f"ws://127.0.0.1:{port}/ws", compression=None, ping_interval=None)
    warm.send("warm")
    warm.recv(timeout=10)
    time.sleep(1)
    rss0, threads0 = status(pid)
    opened = []
    for _ in range(count):
        ws = wsthread.connect(f"ws://127.0.0.1:{port}/ws", compression=None, ping_interval=None)
        opened.append(ws)
    for ws in opened:  # each one served, not waiting in gunicorn's queue
        ws.send("hi")
        ws.recv(timeout=30)
    time.sleep(2)
    rss1, threads1 = status(pid)
    for ws in opened + [warm]:
        ws.close()
    return (rss1 - rss0) / count, (threads1 - threads0) / count


def has_channels() -> bool:
    """Whether Django Channels and daphne are installed."""
    try:
        import channels  # noqa: F401
        import daphne  # noqa: F401
    except ImportError:
        return False
    return True


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per figure (median kept)")
    args = parser.parse_args()
    seconds = 0.5 if args.quick else 3.0
    rounds = 1 if args.quick else args.rounds
    idle_count = 50 if args.quick else 500
    figures: Dict[str, Dict[str, float]] = {name: {} for name in APPS}
    print(f"load before: {load()}", flush=True)
    for name, app in APPS.items():
        if app.startswith("channels_") and not has_channels():
            print(f"{name}: skipped (pip install channels daphne)", flush=True)
            continue
        with gunicorn(app, threads=idle_count + 100) as (port, pid):
            one = [round_trips(port, 1, seconds) for _ in range(rounds)]
            many = [round_trips(port, 20, seconds) for _ in range(rounds)]
            figures[name]["rt1"] = statistics.median(one)
            figures[name]["rt20"] = statistics.median(many)
        with gunicorn(app, threads=idle_count + 100) as (port, pid):  # a fresh worker
            kb, threads = idle(port, pid, idle_count)
            figures[name]["kb"], figures[name]["threads"] = kb, threads
        print(f"{name}: done (load {load()})", flush=True)
    names = [name for name in APPS if figures[name]]
    print()
    print(f"| one process (gunicorn gthread; daphne) | {' | '.join(names)} | ratio |")
    print("| --- |" + " --- |" * (len(names) + 1))
    rows = [
        ("round trips/s, 1 connection", "rt1", 0),
        ("round trips/s, 20 connections", "rt20", 0),
        (f"RSS per idle WebSocket, KB ({idle_count} open)", "kb", 1),
        ("threads per idle WebSocket", "threads", 2),
    ]
    for label, key, digits in rows:
        values = [figures[name][key] for name in names]
        ratio = values[0] / values[1] if values[1] else float("nan")
        cells = " | ".join(f"{value:,.{digits}f}" for value in values)
        print(f"| {label} | {cells} | {ratio:.2f}× |")
    print("\n(ratio: wsthread middleware / Flask-Sock)")
    print(f"\nload after: {load()} ({os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
