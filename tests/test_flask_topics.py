"""examples/flask_app's per-order updates under real gunicorn -w 2 and a real redis-server.

Pages watch order 123 or order 124 (``/ws/orders?id=...``, a topic per
order) in both workers; ``POST /orders/123`` is an ordinary Flask view that
publishes the change. Whichever worker serves the POST, every watcher of 123
gets it, once, and no watcher of 124 does. gunicorn binds 127.0.0.1 on a
free port, redis-server too (the ``redis_server`` fixture); both are stopped
by the test (gunicorn's whole process group).
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
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

import wsthread
from conftest import RedisServer

pytest.importorskip("flask")
pytest.importorskip("gunicorn")

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="gunicorn needs fork()")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flask_app"
BOUND = 90.0  # generous: interpreters start slowly on a loaded machine


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def gunicorn(app_dir: Path, port: int, redis_url: str) -> Iterator[subprocess.Popen[str]]:
    """gunicorn -w 2 with the example's config on ``port``; its process group stopped after."""
    log = open(app_dir / "gunicorn.log", "w+", encoding="utf-8")  # noqa: SIM115 - closed below
    command = [sys.executable, "-m", "gunicorn", "-w", "2", "-c", "gunicorn.conf.py"]
    command += ["-b", f"127.0.0.1:{port}", "app:app"]
    process = subprocess.Popen(
        command,
        cwd=app_dir,
        env={**os.environ, "LIVE_REDIS": redis_url},
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


def post(port: int, order: int, status: str) -> Dict[str, object]:
    """``POST /orders/<order>`` with a new status; the view's JSON answer."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/orders/{order}",
        data=urllib.parse.urlencode({"status": status}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        answer: Dict[str, object] = json.loads(response.read())
        return answer


def test_an_order_update_reaches_its_watchers_in_both_workers_only(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A watcher of order 123 in each worker gets every update of 123, whichever worker's view
    made it; watchers of 124 get none of them (only 124's own update)."""
    app_dir = tmp_path / "flask_app"
    shutil.copytree(EXAMPLE, app_dir, ignore=shutil.ignore_patterns("__pycache__"))
    port = free_port()
    log = app_dir / "gunicorn.log"
    with gunicorn(app_dir, port, redis_server.url) as process:
        watchers: List[Tuple[wsthread.ClientConnection, int, int]] = []  # (ws, order, worker)
        try:
            # Which worker serves a connection is the kernel's choice (the page is told
            # which): keep opening until each worker has a watcher of each order.
            deadline = time.monotonic() + BOUND
            placed: Dict[int, Set[int]] = {123: set(), 124: set()}
            while any(len(each) < 2 for each in placed.values()):
                assert time.monotonic() < deadline, (placed, log.read_text())
                assert process.poll() is None, log.read_text()
                order = 123 if len(placed[123]) <= len(placed[124]) else 124
                try:
                    ws = wsthread.connect(
                        f"ws://127.0.0.1:{port}/ws/orders?id={order}", open_timeout=10
                    )
                except OSError:
                    time.sleep(0.2)  # gunicorn still starting
                    continue
                hello = json.loads(ws.recv(timeout=30))
                assert hello["watching"] == order
                if hello["worker"] in placed[order]:
                    ws.close()  # that worker has one already
                    continue
                watchers.append((ws, order, hello["worker"]))
                placed[order].add(hello["worker"])
            updates: List[str] = []
            served_by: Set[int] = set()
            # Updates of order 123 until both workers have served at least one (bounded).
            while len(served_by) < 2 or len(updates) < 4:
                assert len(updates) < 60, f"every POST went to worker {served_by}"
                status = f"status {len(updates)}"
                answer = post(port, 123, status)
                served_by.add(int(answer["worker"]))  # type: ignore[call-overload]
                updates.append(status)
            post(port, 124, "124 only")
            # Two publishers (the workers): the order between them is not kept, so read
            # until every update came; each exactly once.
            for ws, order, _ in watchers:
                if order == 123:
                    got = [json.loads(ws.recv(timeout=30))["status"] for _ in updates]
                    assert sorted(got) == sorted(updates), got
            # By now each worker has delivered every update of 123: a 124 watcher has the
            # one update of 124, and nothing else is coming.
            for ws, order, _ in watchers:
                if order == 124:
                    assert json.loads(ws.recv(timeout=30)) == {"id": 124, "status": "124 only"}
                    with pytest.raises(TimeoutError):
                        ws.recv(timeout=1)
            print(f"\n{len(updates)} updates of order 123 served by workers {sorted(served_by)}")
        finally:
            for ws, _, _ in watchers:
                ws.close()
    text = log.read_text()
    assert "Traceback" not in text and text.count("Booting worker") == 2, text
