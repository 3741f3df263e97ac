"""At the open-files limit: the accept loop backs off, answers 503, warns once, and recovers."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

from conftest import UPGRADE_REQUEST, ServerFactory, read_head, run_ok, wait_or_kill
from wsthread.runtime.fdlimit import AcceptGuard, describe_limit, is_resource_error

resource = pytest.importorskip("resource")

# The server: ulimit -n 256, an echo handler, log records on stderr, and on
# stdin a command "cpu" that prints the process's CPU seconds.
SERVER = textwrap.dedent(
    """
    import logging, resource, sys, threading, time
    import wsthread
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")

    def echo(ws):
        for message in ws:
            ws.send(message)

    server = wsthread.serve(echo, "127.0.0.1", 0, ping_interval=None)
    server.start()
    print(server.port, flush=True)
    for line in sys.stdin:
        if line.strip() == "cpu":
            print(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), flush=True)
        elif line.strip() == "stats":
            print(server.stats(), flush=True)
        elif line.strip() == "lot":
            from wsthread.connection import parking
            print(parking.Parking._instance is not None, flush=True)
    server.shutdown()
    """
)


class Child:
    """The server subprocess."""

    def __init__(self, tmp_path: Path) -> None:
        self.stderr_path = tmp_path / "stderr.txt"
        self.stderr = open(self.stderr_path, "w")  # noqa: SIM115 (closed by stop())
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def ask(self, command: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def cpu(self) -> float:
        return float(self.ask("cpu"))

    def log(self) -> List[str]:
        return self.stderr_path.read_text().splitlines()

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        wait_or_kill(self.process, 30)
        self.stderr.close()


def attempt(port: int, timeout: float = 30) -> Tuple[str, Optional[socket.socket]]:
    """Open a WebSocket by hand; return ("101", socket), ("503", None) or ("closed", None).

    "closed" also stands for no answer within ``timeout`` seconds.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(UPGRADE_REQUEST + b"\r\n")
        head = read_head(sock)
    except OSError:
        head = b""
    if head.startswith(b"HTTP/1.1 101"):
        return "101", sock
    sock.close()
    return ("503" if head.startswith(b"HTTP/1.1 503") else "closed"), None


def echo_once(sock: socket.socket, payload: bytes = b"hi") -> bytes:
    """Send one masked text frame and read the unmasked echo."""
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    reply = b""
    while len(reply) < 2 + len(payload):
        data = sock.recv(4096)
        assert data, "closed instead of echoing"
        reply += data
    return reply[2:]


def flood(port: int, count: int) -> Tuple[List[socket.socket], List[str]]:
    """``count`` attempts in a row; the WebSockets that opened stay open."""
    opened: List[socket.socket] = []
    outcomes: List[str] = []
    for _ in range(count):
        outcome, sock = attempt(port)
        outcomes.append(outcome)
        if sock is not None:
            opened.append(sock)
    return opened, outcomes


@pytest.mark.slow
def test_at_the_open_files_limit(tmp_path: Path) -> None:
    """ulimit -n 256, 400 attempts, twice: 503s, low CPU, one warning per episode, recovery."""
    child = Child(tmp_path)
    held: List[socket.socket] = []
    try:
        # The parking lot took its descriptor before the limit: made lazily, by
        # a read going idle at the limit, it would take the one the accept
        # thread frees to answer 503, and late clients would wait unanswered.
        assert child.ask("lot") == "True"
        for episode in (1, 2):
            cpu_before = child.cpu()
            started = time.monotonic()
            held, outcomes = flood(child.port, 400)
            flood_wall = time.monotonic() - started
            flood_cpu = child.cpu() - cpu_before
            # Stay at the limit for 3 s, with a new client every 0.1 s.
            cpu_before = child.cpu()
            started = time.monotonic()
            late: List[str] = []
            for _ in range(30):
                late.append(attempt(child.port, timeout=5)[0])
                time.sleep(0.1)
            wall = time.monotonic() - started
            cpu = child.cpu() - cpu_before
            counts = {name: outcomes.count(name) for name in ("101", "503", "closed")}
            print(
                f"\nepisode {episode}: {counts}, late {set(late)}; server CPU: 400 attempts"
                f" {flood_cpu:.2f} s in {flood_wall:.1f} s, then at the limit {cpu:.3f} s"
                f" in {wall:.1f} s ({100 * cpu / wall:.1f}%)"
            )
            assert 200 <= counts["101"] < 256, counts
            assert counts["101"] + counts["503"] + counts["closed"] == 400
            assert counts["503"] + counts["closed"] >= 400 - 256
            assert set(late) <= {"503", "closed"}, late
            assert late.count("503") >= len(late) // 2, late  # the reserve answers most
            assert cpu / wall < 0.5, f"the server burned {cpu:.2f} s of CPU in {wall:.1f} s"
            # Every open connection still works.
            assert echo_once(held[0]) == b"hi" and echo_once(held[-1]) == b"hi"
            # Free some descriptors: new clients are served at once.
            for sock in held[:10]:
                sock.close()
            released = time.monotonic()
            while True:
                outcome, sock = attempt(child.port)
                if sock is not None:
                    break
                assert time.monotonic() - released < 10, "never served again"
            print(f"served again {time.monotonic() - released:.3f} s after 10 clients left")
            assert echo_once(sock) == b"hi"
            sock.close()
            for sock in held[10:]:
                sock.close()
            held = []
            # Wait until the server has let go of them all.
            deadline = time.monotonic() + 30
            while eval(child.ask("stats"))["connections"]["open"] and time.monotonic() < deadline:
                time.sleep(0.1)
        warnings = [line for line in child.log() if line.startswith("WARNING")]
        assert len(warnings) == 2, warnings  # one per episode
        assert "open-files limit: 256" in warnings[0] and "ulimit -n" in warnings[0]
        stats = eval(child.ask("stats"))
        assert stats["accept_errors"].get("EMFILE", 0) >= 2 * (400 - 256)
        again = [line for line in child.log() if "accepting connections again" in line]
        assert len(again) == 2, child.log()[-5:]
    finally:
        for sock in held:
            sock.close()
        child.stop()


def test_accept_guard_backs_off_without_a_reserve() -> None:
    """ENFILE (no descriptor of ours helps): pauses that double, cut short by a freed descriptor."""
    lines: List[str] = []

    class Log:
        def warning(self, message: str, *args: object) -> None:
            lines.append(message % args)

        def info(self, message: str, *args: object) -> None:
            lines.append(message % args)

    guard = AcceptGuard(Log())
    listener = socket.socket()
    try:
        error = OSError(errno.ENFILE, os.strerror(errno.ENFILE))
        guard.failed(error, listener)
        first = guard.pause()
        guard.failed(error, listener)
        assert 0 < first < guard.pause() <= 0.5
        assert len(lines) == 1 and "ENFILE" in lines[0]
        started = time.monotonic()
        guard.descriptor_freed()
        guard.wait(5)
        assert time.monotonic() - started < 1  # woken, not timed out
        guard.accepted()
        assert guard.pause() == 0 and not guard.at_limit
        assert "accepting connections again" in lines[-1]
        guard.failed(OSError(errno.ECONNABORTED, "aborted"), listener)
        assert not guard.at_limit  # other errors are not an episode
    finally:
        listener.close()
        guard.close()


def test_describe_limit_and_is_resource_error() -> None:
    """The hint names the current limit; only resource errnos count."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert f"open-files limit: {soft}" in describe_limit()
    assert is_resource_error(OSError(errno.EMFILE, "x"))
    assert not is_resource_error(OSError(errno.ECONNRESET, "x"))


CLIENT = textwrap.dedent(
    """
    import resource, sys
    import wsthread
    port = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    hoard = []
    try:
        while True:
            hoard.append(open(__import__("os").devnull))
    except OSError:
        pass
    try:
        wsthread.connect(f"ws://127.0.0.1:{port}/", open_timeout=5)
    except OSError as exc:
        print("OSError", exc.errno, exc)
    hoard.pop().close()
    with wsthread.connect(f"ws://127.0.0.1:{port}/", open_timeout=5) as ws:
        ws.send("back")
        print("echo", ws.recv(timeout=5))
    """
)


def test_client_at_the_open_files_limit_says_which_limit(make_server: ServerFactory) -> None:
    """connect() out of descriptors raises EMFILE naming the limit; one freed descriptor will do."""
    server = make_server()
    result = run_ok([sys.executable, "-c", CLIENT, str(server.port)], timeout=60)
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"OSError {errno.EMFILE} ") and "open-files limit: 64" in lines[0]
    assert "ulimit -n" in lines[0]
    assert lines[1] == "echo back"
