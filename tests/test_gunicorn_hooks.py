"""gunicorn with a post_worker_init of its own plus wsthread's; the warning for -w 2 without a hub.

A config that already has a hook calls ``wsthread.wsgi.attach(worker)`` from
it, or wraps it with ``chain_post_worker_init``: both hooks run (the user's
writes a file; wsthread's closes the WebSockets with 1001 when the worker is
told to stop, where gunicorn alone would wait ``graceful_timeout``). With
two workers and no hub, each worker logs the warning once, however many
requests it serves. gunicorn runs in its own process group, on free ports,
stopped by the test.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest
from test_prefork import BOUND, free_port, output, running, wait_for_page

import wsthread

pytest.importorskip("gunicorn")

pytestmark = [
    pytest.mark.slow,  # each test starts gunicorn and its workers
    pytest.mark.skipif(not hasattr(os, "fork"), reason="gunicorn needs fork()"),
]

APP = """
import os
import wsthread.wsgi


def page(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


def feed(ws):
    ws.send(str(os.getpid()))
    for _ in ws:
        pass


application = wsthread.wsgi.middleware(page, {"/ws": feed})
"""

SETTINGS = """
bind = "127.0.0.1:{port}"
worker_class = "gthread"
threads = 4
workers = {workers}
graceful_timeout = 60
"""

# The user's own hook, and two ways of adding wsthread's to it.
OWN_HOOK = """
import os
import wsthread.wsgi


def my_post_worker_init(worker):
    with open("own-hook-ran", "a") as marks:
        marks.write(f"{os.getpid()}\\n")
"""

CONFIGS: Dict[str, str] = {
    "attach": OWN_HOOK
    + """

def post_worker_init(worker):
    my_post_worker_init(worker)
    wsthread.wsgi.attach(worker)
""",
    "chain": OWN_HOOK
    + """
post_worker_init = wsthread.wsgi.chain_post_worker_init(my_post_worker_init)
""",
    "none": "",
    "wsthread": "from wsthread.wsgi import post_worker_init  # noqa: F401\n",
}


def start(tmp_path: Path, hook: str, workers: int) -> tuple:  # type: ignore[type-arg]
    """Write the app and its config; the gunicorn command and the port."""
    port = free_port()
    (tmp_path / "hookapp.py").write_text(APP, encoding="utf-8")
    config = SETTINGS.format(port=port, workers=workers) + CONFIGS[hook]
    (tmp_path / "gunicorn.conf.py").write_text(config, encoding="utf-8")
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "hookapp:application"]
    return command, port


@pytest.mark.parametrize("hook", ["attach", "chain"])
def test_an_existing_hook_and_wsthreads_both_run(tmp_path: Path, hook: str) -> None:
    """The user's hook wrote its mark; wsthread's closes the WebSocket with 1001 on SIGTERM."""
    command, port = start(tmp_path, hook, workers=1)
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    with running(command, tmp_path, env) as process:
        worker_pid = int(wait_for_page(f"http://127.0.0.1:{port}/", tmp_path, process))
        ws = wsthread.connect(f"ws://127.0.0.1:{port}/ws", open_timeout=30)
        assert ws.recv(timeout=30) == str(worker_pid)
        marks = (tmp_path / "own-hook-ran").read_text(encoding="utf-8").split()
        assert marks == [str(worker_pid)]  # the user's hook ran, once, in the worker
        started = time.monotonic()
        os.kill(process.pid, signal.SIGTERM)  # the master tells the worker to stop
        with pytest.raises(wsthread.ConnectionClosed):
            while True:
                ws.recv(timeout=BOUND)
        # gunicorn alone would wait graceful_timeout (60 s) with the WebSocket open.
        assert ws.close_code == 1001, output(tmp_path)
        assert time.monotonic() - started < 30
        process.wait(timeout=BOUND)
    assert "Traceback" not in output(tmp_path)


def warnings_by_pid(log: str) -> List[int]:
    """The pid of every "no hub is attached" warning in the log, in order."""
    return [int(pid) for pid in re.findall(r"WebSocketMiddleware in process (\d+):.*no hub", log)]


@pytest.mark.parametrize("hook", ["wsthread", "none"])
def test_two_workers_without_a_hub_warn_once_per_worker(tmp_path: Path, hook: str) -> None:
    """-w 2, no hub: one warning per worker (at start with the hook, else at its first request)."""
    command, port = start(tmp_path, hook, workers=2)
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    with running(command, tmp_path, env) as process:
        wait_for_page(f"http://127.0.0.1:{port}/", tmp_path, process)
        seen = set()
        deadline = time.monotonic() + BOUND
        while len(seen) < 2:  # requests until both workers served some
            assert time.monotonic() < deadline, output(tmp_path)
            with wsthread.connect(f"ws://127.0.0.1:{port}/ws", open_timeout=30) as ws:
                seen.add(int(ws.recv(timeout=30)))
        for _ in range(6):  # more of each: no more warnings
            with wsthread.connect(f"ws://127.0.0.1:{port}/ws", open_timeout=30) as ws:
                ws.recv(timeout=30)
        log = output(tmp_path)
        warned = warnings_by_pid(log)
        assert sorted(warned) == sorted(seen), log
        if hook == "wsthread":
            assert "gunicorn runs 2 workers" in log
        else:
            assert "wsgi.multiprocess" in log


def test_one_worker_does_not_warn(tmp_path: Path) -> None:
    """-w 1 with threads needs no hub: no warning."""
    command, port = start(tmp_path, "wsthread", workers=1)
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    with running(command, tmp_path, env) as process:
        wait_for_page(f"http://127.0.0.1:{port}/", tmp_path, process)
        with wsthread.connect(f"ws://127.0.0.1:{port}/ws", open_timeout=30) as ws:
            ws.recv(timeout=30)
        assert warnings_by_pid(output(tmp_path)) == []
