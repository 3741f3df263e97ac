"""The reloader and pre-fork recipes of docs/howto/forks.md, run for real.

``examples/prefork/app.py`` under ``flask run --debug`` (through a reload)
and under gunicorn with two workers, with and without ``--preload``; and the
pattern the recipes replace (a server made at import time, under gunicorn
``--preload``), which must now fail loudly instead of silently.

Each server binds 127.0.0.1 on free ports and is stopped by the test (the
whole process group: gunicorn's master and workers, flask's reloader and its
child).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

import wsthread
from conftest import RedisServer

pytest.importorskip("flask")
pytest.importorskip("gunicorn")

pytestmark = [
    pytest.mark.slow,  # each test starts several interpreters
    pytest.mark.skipif(not hasattr(os, "fork"), reason="gunicorn and the reloader need fork()"),
]

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "examples" / "prefork"
BOUND = 90.0  # generous: interpreters start slowly on a loaded machine


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running(command: List[str], cwd: Path, env: Dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """Run ``command`` in its own process group; stop the whole group on the way out."""
    log = open(cwd / "server.log", "w+", encoding="utf-8")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(timeout=30)
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


def output(cwd: Path) -> str:
    """What the server processes wrote so far."""
    return (cwd / "server.log").read_text(encoding="utf-8", errors="replace")


def http(url: str, data: Optional[Dict[str, str]] = None) -> Tuple[int, str]:
    """GET (or POST ``data``) without following redirects; the status and body."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    body = None if data is None else urllib.parse.urlencode(data).encode()
    try:
        with opener.open(url, data=body, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def wait_for_page(url: str, cwd: Path, process: subprocess.Popen[str]) -> str:
    """Poll ``url`` until it answers 200; its body."""
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the server exited:\n{output(cwd)}"
        try:
            status, body = http(url)
            if status == 200:
                return body
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} never answered 200:\n{output(cwd)}")


def screen(ws_port: int) -> Tuple[wsthread.ClientConnection, int]:
    """Open a page's WebSocket; the connection and the pid that serves it."""
    ws = wsthread.connect(f"ws://127.0.0.1:{ws_port}/", open_timeout=30)
    hello = json.loads(ws.recv(timeout=30))
    return ws, int(hello["hello"])


def items(ws: wsthread.ClientConnection, count: int) -> List[str]:
    """The next ``count`` orders pushed to ``ws``."""
    return [json.loads(ws.recv(timeout=BOUND))["item"] for _ in range(count)]


@pytest.mark.parametrize("preload", [False, True], ids=["no-preload", "preload"])
def test_gunicorn_two_workers_each_serve_and_share_broadcasts(
    redis_server: RedisServer, tmp_path: Path, preload: bool
) -> None:
    """gunicorn -w 2 (with and without --preload): both workers serve WebSockets, every
    order reaches every page whichever worker took the POST."""
    app_dir = tmp_path / "prefork"
    shutil.copytree(RECIPE, app_dir, ignore=shutil.ignore_patterns("__pycache__"))
    http_port, ws_port = free_port(), free_port()
    command = [sys.executable, "-m", "gunicorn", "-w", "2", "-c", "gunicorn.conf.py"]
    command += ["-b", f"127.0.0.1:{http_port}", *(["--preload"] if preload else []), "app:app"]
    env = {"WS_PORT": str(ws_port), "WS_REDIS": redis_server.url}
    with running(command, app_dir, env) as process:
        wait_for_page(f"http://127.0.0.1:{http_port}/", app_dir, process)
        pages: List[wsthread.ClientConnection] = []
        pids = set()
        try:
            # The kernel spreads connections over the workers that listen; the
            # second may still be starting: keep opening pages until both serve.
            deadline = time.monotonic() + BOUND
            while len(pids) < 2 and time.monotonic() < deadline:
                ws, pid = screen(ws_port)
                if pid in pids and len(pages) >= 4:
                    ws.close()
                    time.sleep(0.05)
                    continue
                pages.append(ws)
                pids.add(pid)
            assert len(pids) == 2, f"every WebSocket landed in worker {pids}:\n{output(app_dir)}"
            posted = [f"order {n}" for n in range(6)]
            for item in posted:
                status, _ = http(f"http://127.0.0.1:{http_port}/orders", {"item": item})
                assert status == 303
            for ws in pages:  # different publishers: compare as sets
                assert sorted(items(ws, len(posted))) == sorted(posted)
        finally:
            for ws in pages:
                ws.close()
    log = output(app_dir)
    assert "Traceback" not in log and log.count("Booting worker") == 2, log


def test_gunicorn_one_worker_with_threads_needs_no_hub(tmp_path: Path) -> None:
    """gunicorn -w 1 --threads 8 (the recipe without Redis): every page gets every order."""
    app_dir = tmp_path / "prefork"
    shutil.copytree(RECIPE, app_dir, ignore=shutil.ignore_patterns("__pycache__"))
    http_port, ws_port = free_port(), free_port()
    command = [sys.executable, "-m", "gunicorn", "-w", "1", "--threads", "8"]
    command += ["-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{http_port}", "app:app"]
    with running(command, app_dir, {"WS_PORT": str(ws_port)}) as process:
        wait_for_page(f"http://127.0.0.1:{http_port}/", app_dir, process)
        pages = [screen(ws_port) for _ in range(3)]
        try:
            assert len({pid for _, pid in pages}) == 1
            for item in ("tea", "cake"):
                assert http(f"http://127.0.0.1:{http_port}/orders", {"item": item})[0] == 303
            for ws, _ in pages:
                assert items(ws, 2) == ["tea", "cake"]  # one publisher: in order
        finally:
            for ws, _ in pages:
                ws.close()
    assert "Traceback" not in output(app_dir)


NAIVE_APP = """
import os
import flask
import wsthread

app = flask.Flask(__name__)

def screen(ws):
    for _ in ws:
        pass

# What the recipes replace: a server made and started at import time.
events = wsthread.serve(screen, "127.0.0.1", int(os.environ["WS_PORT"])).start()

@app.post("/orders")
def order():
    return f"sent to {events.broadcast('x')}\\n"
"""


def test_gunicorn_preload_with_a_server_made_at_import_fails_loudly(tmp_path: Path) -> None:
    """The old pattern under --preload: broadcast() in a worker raises, naming fork and the fix."""
    (tmp_path / "naive.py").write_text(NAIVE_APP, encoding="utf-8")
    http_port, ws_port = free_port(), free_port()
    command = [sys.executable, "-m", "gunicorn", "-w", "2", "--preload"]
    command += ["-b", f"127.0.0.1:{http_port}", "naive:app"]
    with running(command, tmp_path, {"WS_PORT": str(ws_port)}) as process:
        deadline = time.monotonic() + BOUND
        status = 0
        while time.monotonic() < deadline:
            assert process.poll() is None, output(tmp_path)
            try:
                status, _ = http(f"http://127.0.0.1:{http_port}/orders", {})
                break
            except OSError:
                time.sleep(0.2)
        assert status == 500  # no longer "sent to 0", silently
        deadline = time.monotonic() + BOUND
        while "inherited" not in output(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.2)
    log = output(tmp_path)
    assert "RuntimeError: broadcast(): this WebSocketServer on port" in log, log
    assert "through fork()" in log and "reuse_port=True" in log and "hub" in log


def test_flask_run_debug_serves_and_survives_a_reload(tmp_path: Path) -> None:
    """flask run --debug: the reloader's watcher never binds; the child serves; a reload works."""
    app_dir = tmp_path / "prefork"
    shutil.copytree(RECIPE, app_dir, ignore=shutil.ignore_patterns("__pycache__"))
    http_port, ws_port = free_port(), free_port()
    command = [sys.executable, "-m", "flask", "--app", "app", "run", "--debug"]
    command += ["--host", "127.0.0.1", "--port", str(http_port)]
    env = {"WS_PORT": str(ws_port), "PYTHONPATH": str(ROOT)}
    with running(command, app_dir, env) as process:
        url = f"http://127.0.0.1:{http_port}"
        assert f":{ws_port}/" in wait_for_page(url + "/", app_dir, process)
        first, first_pid = screen(ws_port)
        assert http(url + "/orders", {"item": "coffee"})[0] == 303
        assert items(first, 1) == ["coffee"]

        # Edit the app, as a developer does: the reloader restarts its child.
        source = app_dir / "app.py"
        source.write_text(source.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
        with pytest.raises(wsthread.ConnectionClosed):
            first.recv(timeout=BOUND)  # the old child is gone, and its server with it
        assert f":{ws_port}/" in wait_for_page(url + "/", app_dir, process)
        second, second_pid = screen(ws_port)
        assert second_pid != first_pid
        assert http(url + "/orders", {"item": "tea"})[0] == 303
        assert items(second, 1) == ["tea"]
        second.close()
        first.close()
    log = output(app_dir)
    assert "Address already in use" not in log and "Traceback" not in log, log
    assert "Restarting" in log or "Detected change" in log, log
