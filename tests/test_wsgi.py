"""wsthread.wsgi.middleware in a Flask app under gunicorn, Werkzeug, wsthread and waitress.

Each server runs in its own process, on a free loopback port, serving
``tests/wsgiapps/flaskapp.py``. For each one the test checks plain HTTP, a
WebSocket echo, path and query, a broadcast from a Flask view, a 404 path,
a refused origin, that worker threads come back, and a clean shutdown
(the WebSocket closed with 1001, the process gone, no traceback logged).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

import wsthread
from conftest import reap, wait_until

pytest.importorskip("flask")

APPS = Path(__file__).resolve().parent / "wsgiapps"
ROOT = APPS.parent.parent

WERKZEUG_RUNNER = """
import sys
sys.path.insert(0, ".")
import flaskapp
from werkzeug.serving import make_server
server = make_server("127.0.0.1", 0, flaskapp.app, threaded=True)
print("serving on port", server.port, flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    pass
"""

WAITRESS_RUNNER = """
import logging, sys
logging.basicConfig(level=logging.INFO)
sys.path.insert(0, ".")
import flaskapp, waitress
server = waitress.create_server(flaskapp.app, host="127.0.0.1", port=0, threads=2)
print("serving on port", server.effective_port, flush=True)
server.run()
"""


class Served:
    """A server process and where it listens."""

    def __init__(self, process: subprocess.Popen[str], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        reap(self.process)


def http_request(
    port: int,
    method: str,
    path: str,
    body: Optional[bytes] = None,
    headers: Optional[Dict[str, str]] = None,
) -> Tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def raw_answer(port: int, request: bytes) -> bytes:
    """Send raw bytes; what the server answers before it closes (within 20 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def environment(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(APPS), env.get("PYTHONPATH", "")])
    env.update(extra or {})
    return env


def no_control_socket() -> List[str]:
    """gunicorn 24+ opens a control socket in $HOME unless told not to (older: no flag)."""
    import gunicorn.config

    names = {setting.name for setting in gunicorn.config.KNOWN_SETTINGS}
    return ["--no-control-socket"] if "control_socket_disable" in names else []


def start(kind: str, tmp_path: Path, redis_url: Optional[str] = None) -> Served:
    """Start ``kind`` serving flaskapp:app on a free port; return once it answers HTTP."""
    log = tmp_path / f"{kind}.log"
    extra = {"WSGI_TEST_REDIS": redis_url} if redis_url else {}
    if kind in ("gthread", "sync", "preload"):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        port = listener.getsockname()[1]
        workers = ["-k", "gthread", "--threads", "4", "-w", "1"]
        if kind == "sync":
            workers = ["-k", "sync", "-w", "2", "--timeout", "0"]
        elif kind == "preload":  # the app (and its middleware) imported in the master
            workers.append("--preload")
        command = [
            sys.executable, "-m", "gunicorn", *workers, *no_control_socket(),
            "--bind", f"fd://{listener.fileno()}",
            "-c", "gunicorn_conf.py", "--graceful-timeout", "20", "--log-level", "debug",
            "flaskapp:app",
        ]  # fmt: skip
        with open(log, "w") as output:
            process = subprocess.Popen(
                command, cwd=APPS, env=environment(extra), stdout=output,
                stderr=subprocess.STDOUT, text=True, pass_fds=[listener.fileno()],
            )  # fmt: skip
        listener.close()
    else:
        if kind == "werkzeug":
            command = [sys.executable, "-c", WERKZEUG_RUNNER]
        elif kind == "waitress":
            command = [sys.executable, "-c", WAITRESS_RUNNER]
        else:
            command = [sys.executable, "-m", "wsthread.wsgi", "flaskapp:app", "--port", "0"]
        output_file = open(log, "w")  # noqa: SIM115 - the process writes it
        process = subprocess.Popen(
            command, cwd=APPS, env=environment(extra), stdout=subprocess.PIPE,
            stderr=output_file, text=True,
        )  # fmt: skip
        output_file.close()
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "port" in line or "127.0.0.1:" in line, line
        port = int(re.search(r"(?:port |127\.0\.0\.1:)(\d+)", line).group(1))  # type: ignore[union-attr]
    served = Served(process, port, log)

    def answers() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return http_request(port, "GET", "/")[0] == 200
        except OSError:
            return False

    assert wait_until(answers, 60), log.read_text()
    return served


def stats(port: int) -> Dict[str, Any]:
    status, body = http_request(port, "GET", "/stats")
    assert status == 200, body
    return dict(json.loads(body))


def no_websocket_left(port: int) -> bool:
    """The answering process has no open WebSocket and no reader thread left."""
    current = stats(port)
    readers = [name for name in current["threads"] if name.startswith("wsthread-reader")]
    return current["connections"] == 0 and not readers


@pytest.fixture
def servers() -> Iterator[List[Served]]:
    started: List[Served] = []
    yield started
    for served in started:
        served.stop()


KINDS = ["gthread", "sync", "preload", "werkzeug", "wsthread"]


@pytest.mark.parametrize("kind", KINDS)
def test_flask_app_with_websockets(
    kind: str, tmp_path: Path, servers: List[Served], request: pytest.FixtureRequest
) -> None:
    """HTTP, echo, path, broadcast from a view, 404, refused origin, threads back, shutdown."""
    # Two sync workers: a WebSocket holds one, so the view runs in the other,
    # and the broadcast crosses processes through Redis.
    redis_url = request.getfixturevalue("redis_server").url if kind == "sync" else None
    pytest.importorskip("gunicorn" if kind in ("gthread", "sync", "preload") else "flask")
    served = start(kind, tmp_path, redis_url)
    servers.append(served)
    port = served.port

    # Plain HTTP goes to Flask, bodies included.
    assert http_request(port, "GET", "/") == (200, b"hello from flask")
    status, body = http_request(port, "POST", "/upload", b"x" * 100_000)
    assert (status, json.loads(body)) == (200, {"size": 100_000})
    assert http_request(port, "GET", "/missing")[0] == 404

    # A WebSocket echo, text and binary.
    with wsthread.connect(served.url("/ws"), ping_interval=None) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.send(b"\x00\xff" * 1000)
        assert ws.recv(timeout=10) == b"\x00\xff" * 1000

    # The handler reads its path and query.
    with wsthread.connect(served.url("/where?room=7"), ping_interval=None) as ws:
        assert ws.recv(timeout=10) == "/where?room=7"

    # A Flask view broadcasts to the WebSocket clients.
    with wsthread.connect(served.url("/feed"), ping_interval=None) as feed:
        assert feed.recv(timeout=10) == "subscribed"
        status, body = http_request(port, "POST", "/broadcast", b"news")
        assert status == 200, body
        assert feed.recv(timeout=10) == "news"

    # A path that is not a route: 404, before any upgrade.
    with pytest.raises(wsthread.InvalidStatus) as not_found:
        wsthread.connect(served.url("/nope"), ping_interval=None)
    assert not_found.value.status == 404

    # An origin that is not allowed: 403.
    with pytest.raises(wsthread.InvalidStatus) as refused:
        wsthread.connect(served.url("/ws"), origin="http://evil.example", ping_interval=None)
    assert refused.value.status == 403
    with wsthread.connect(served.url("/ws"), origin="http://good.example") as ws:
        ws.send("allowed")
        assert ws.recv(timeout=10) == "allowed"

    # Broken upgrades get a clear 4xx from the middleware, and nothing hangs.
    bad_key = (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n"
    )
    assert raw_answer(port, bad_key).startswith(b"HTTP/1.1 400 ")
    old_version = bad_key.replace(b"13", b"8").replace(b"short", b"dGhlIHNhbXBsZSBub25jZQ==")
    assert raw_answer(port, old_version).startswith(b"HTTP/1.1 426 ")
    # A client that leaves right after its upgrade request.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(old_version.replace(b"\r\n\r\n", b"\r\n"))
    # Garbage is the server's own business: it answers (each in its way) and closes.
    assert b" 101 " not in raw_answer(port, b"\x16\x03\x01garbage\r\n\r\n")

    # Worker threads come back: more WebSockets, one after another, than
    # gunicorn has threads (4); then nothing is left open.
    before = len(stats(port)["threads"])
    for index in range(10):
        with wsthread.connect(served.url("/ws"), ping_interval=None) as ws:
            ws.send(str(index))
            assert ws.recv(timeout=10) == str(index)
    assert wait_until(lambda: no_websocket_left(port), 20), stats(port)
    # Thread counts come back too (gthread's pool may have grown to its 4 threads).
    pool = 4 if kind in ("gthread", "preload") else 0
    assert wait_until(lambda: len(stats(port)["threads"]) <= before + pool, 20), stats(port)
    assert http_request(port, "GET", "/")[0] == 200

    # Shutdown: the open WebSocket is closed with 1001 (going away), the
    # process exits, and nothing was logged as an error on the way.
    feed = wsthread.connect(served.url("/feed"), ping_interval=None)
    assert feed.recv(timeout=10) == "subscribed"
    started = time.monotonic()
    served.process.send_signal(signal.SIGINT if kind == "werkzeug" else signal.SIGTERM)
    with pytest.raises(wsthread.ConnectionClosed) as closed:
        feed.recv(timeout=30)
    assert closed.value.code == 1001, closed.value
    assert served.process.wait(30) == 0
    assert time.monotonic() - started < 20
    log = served.log.read_text()
    assert "Traceback" not in log, log
    assert "Error handling request" not in log, log
    assert "already" not in log.lower(), log  # "headers already sent" and the like


def test_waitress_refuses_the_upgrade_clearly(tmp_path: Path, servers: List[Served]) -> None:
    """waitress cannot hand its socket over: 501, one ERROR line naming the servers that work."""
    pytest.importorskip("waitress")
    served = start("waitress", tmp_path)
    servers.append(served)
    assert http_request(served.port, "GET", "/") == (200, b"hello from flask")
    for _ in range(3):
        started = time.monotonic()
        with pytest.raises(wsthread.InvalidStatus) as refused:
            wsthread.connect(served.url("/ws"), ping_interval=None, open_timeout=10)
        assert refused.value.status == 501
        assert b"gunicorn" in refused.value.body if hasattr(refused.value, "body") else True
        assert time.monotonic() - started < 5  # answered, not left hanging
    assert http_request(served.port, "GET", "/")[0] == 200
    served.process.terminate()
    served.process.wait(10)
    log = served.log.read_text()
    errors = [line for line in log.splitlines() if "refused with 501" in line]
    assert len(errors) == 1, log
    assert "gunicorn" in errors[0] and "Werkzeug" in errors[0]
    assert "Traceback" not in log


def test_the_command_line_with_workers_and_routes(tmp_path: Path) -> None:
    """python -m wsthread.wsgi APP --ws PATH=HANDLER --workers 2: both routes, one port, Ctrl-C."""
    log = tmp_path / "cli.log"
    with open(log, "w") as errors:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "wsthread.wsgi", "flaskapp:app", "--port", "0",
                "--workers", "2", "--ws", "/plain=flaskapp:echo",
            ],
            cwd=APPS, env=environment(), stdout=subprocess.PIPE, stderr=errors, text=True,
        )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert match, line + log.read_text()
        port = int(match.group(1))
        assert http_request(port, "GET", "/") == (200, b"hello from flask")
        for path in ("/ws", "/plain"):  # the middleware's route, the command line's route
            for _ in range(4):  # connections spread over the workers
                with wsthread.connect(f"ws://127.0.0.1:{port}{path}", ping_interval=None) as ws:
                    ws.send(path)
                    assert ws.recv(timeout=10) == path
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    finally:
        reap(process)
    assert "Traceback" not in log.read_text(), log.read_text()


def test_flask_example_under_gunicorn_with_its_config(tmp_path: Path) -> None:
    """examples/flask_app with its gunicorn.conf.py: a post reaches the open pages' WebSockets."""
    pytest.importorskip("gunicorn")
    example = ROOT / "examples" / "flask_app"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    log = tmp_path / "gunicorn.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn", *no_control_socket(), "-c", "gunicorn.conf.py",
                "--bind", f"fd://{listener.fileno()}", "app:app",
            ],
            cwd=example, env=environment(), stdout=output, stderr=subprocess.STDOUT,
            text=True, pass_fds=[listener.fileno()],
        )  # fmt: skip
    listener.close()
    served = Served(process, port, log)
    try:
        assert wait_until(lambda: answers(served), 60), log.read_text()
        status, page = http_request(port, "GET", "/")
        assert status == 200 and b"new WebSocket" in page
        pages = [wsthread.connect(served.url("/ws"), ping_interval=None) for _ in range(2)]
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        status, _ = http_request(port, "POST", "/post", b"text=hello", form)
        assert status == 200
        posts = [json.loads(ws.recv(timeout=10)) for ws in pages]
        assert [post["text"] for post in posts] == ["hello", "hello"]
        process.send_signal(signal.SIGTERM)
        for ws, post in zip(pages, posts):
            with pytest.raises(wsthread.ConnectionClosed) as closed:
                while True:  # the same post may come again, from the backlog
                    assert json.loads(ws.recv(timeout=20)) == post
            assert closed.value.code == 1001
        assert process.wait(30) == 0
    finally:
        served.stop()
    assert "Traceback" not in log.read_text(), log.read_text()


def answers(served: Served) -> bool:
    """Whether the server answers HTTP yet (it must still be running)."""
    assert served.process.poll() is None, served.log.read_text()
    try:
        return http_request(served.port, "GET", "/")[0] == 200
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_wsgi_benchmark_runs() -> None:
    """benchmarks/wsgi.py --quick prints its table (Flask-Sock and gunicorn installed)."""
    pytest.importorskip("flask_sock")
    pytest.importorskip("gunicorn")
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "wsgi.py"), "--quick"],
        capture_output=True, text=True, timeout=280, env=environment(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    for row in ("round trips/s, 1 connection", "RSS per idle WebSocket", "threads per idle"):
        assert row in result.stdout, result.stdout
    assert "wsthread middleware | Flask-Sock" in result.stdout


def test_flask_example_under_flask_run(tmp_path: Path) -> None:
    """examples/flask_app under `flask --app app run` (Werkzeug): page, WebSocket, post, Ctrl-C."""
    example = ROOT / "examples" / "flask_app"
    log = tmp_path / "flask.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "app", "run", "--port", "0"],
        cwd=example, env=environment({"NO_COLOR": "1"}), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        seen = []
        port = 0
        deadline = time.monotonic() + 60
        while not port and time.monotonic() < deadline:
            line = process.stderr.readline()
            seen.append(line)
            match = re.search(r"Running on http://127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match.group(1))
        assert port, "".join(seen)
        status, page = http_request(port, "GET", "/")
        assert status == 200 and b"new WebSocket" in page
        with wsthread.connect(f"ws://127.0.0.1:{port}/ws", ping_interval=None) as ws:
            form = {"Content-Type": "application/x-www-form-urlencoded"}
            assert http_request(port, "POST", "/post", b"text=from+a+view", form)[0] == 200
            post = json.loads(ws.recv(timeout=10))
            assert post["text"] == "from a view"
            process.send_signal(signal.SIGINT)  # Ctrl-C
            with pytest.raises(wsthread.ConnectionClosed) as closed:
                while True:  # the same post may come again, from the backlog
                    assert json.loads(ws.recv(timeout=20)) == post
            assert closed.value.code == 1001
        assert process.wait(30) == 0
        rest = process.stderr.read()
    finally:
        reap(process)
    log.write_text("".join(seen) + rest)
    assert "Traceback" not in rest, rest
