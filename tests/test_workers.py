"""Several worker processes on one port: spread of connections, one signal stops all."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Set, Tuple

import pytest
from websockets.sync.client import ClientConnection, connect

from conftest import assert_clean_exit, assert_going_away, echo_process
from wsthread.server import ServerConnection
from wsthread.workers import HAS_REUSE_PORT

pytestmark = pytest.mark.skipif(not HAS_REUSE_PORT, reason="needs SO_REUSEPORT")

TESTS = Path(__file__).resolve().parent


def pid_handler(ws: ServerConnection) -> None:
    """Answer every message with the worker's process id (for the API tests)."""
    for _ in ws:
        ws.send(str(os.getpid()))


def gone(pid: int) -> bool:
    """True if no process ``pid`` exists any more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@contextlib.contextmanager
def workers_process(workers: int) -> Iterator[Tuple[subprocess.Popen, int, List[int]]]:  # type: ignore[type-arg]
    """Run :func:`run_workers` with :func:`pid_handler` in a new session; yield it, port, pids."""
    code = (
        "import sys\n"
        "from test_workers import pid_handler\n"
        "from wsthread.workers import run_workers\n"
        "def ready(port, pids):\n"
        "    print(port, *pids, flush=True)\n"
        "if __name__ == '__main__':\n"
        f"    sys.exit(run_workers(pid_handler, '127.0.0.1', 0, workers={workers},"
        " on_ready=ready, close_timeout=2))\n"
    )
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, like a shell job
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, f"did not start: {process.stderr.read() if process.stderr else ''}"
        port, *pids = map(int, line.split())
        yield process, port, pids
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def open_clients(stack: contextlib.ExitStack, url: str, count: int) -> List[ClientConnection]:
    """Open ``count`` connections at once (kept open: distinct 4-tuples), closed by ``stack``."""
    return [stack.enter_context(connect(url, open_timeout=10)) for _ in range(count)]


def test_echo_cli_workers_share_the_port_and_stop_together() -> None:
    """`--workers 3`: connections spread over 3 processes; SIGINT to the parent stops all: 0."""
    with echo_process("--workers", "3") as (process, url):
        with contextlib.ExitStack() as stack:
            clients = open_clients(stack, url, 30)
            for i, ws in enumerate(clients):
                ws.send(f"hello {i}")
                assert ws.recv(timeout=10) == f"hello {i}"
                ws.send(b"\x00\xff")
                assert ws.recv(timeout=10) == b"\x00\xff"
            process.send_signal(signal.SIGINT)  # to the parent only
            assert_going_away(clients, timeout=15)
        log = assert_clean_exit(process, timeout=30)
    assert "Traceback" not in log
    # Log lines are "date time [pid] LEVEL ...": which workers opened connections?
    serving: Set[str] = set()
    opened: Set[str] = set()
    for line in log.splitlines():
        fields = line.split()
        if len(fields) > 3 and "serving on port" in line:
            serving.add(fields[2])
        if len(fields) > 3 and "connection open" in line:
            opened.add(fields[2])
    assert len(serving) == 3, log
    assert opened == serving, log  # 30 connections: each of the 3 workers got some
    for pid in serving:
        assert gone(int(pid.strip("[]")))


@pytest.mark.slow
def test_run_workers_ctrl_c_to_the_process_group() -> None:
    """A terminal's Ctrl-C (SIGINT to every process of the group) stops all workers, exit 0."""
    with workers_process(2) as (process, port, pids):
        assert len(set(pids)) == 2
        with contextlib.ExitStack() as stack:
            clients = open_clients(stack, f"ws://127.0.0.1:{port}/", 40)
            seen = set()
            for ws in clients:
                ws.send("who")
                seen.add(int(ws.recv(timeout=10)))
            assert seen == set(pids)
            os.killpg(process.pid, signal.SIGINT)
            assert_going_away(clients, timeout=15)
        assert_clean_exit(process, timeout=30)
    assert all(gone(pid) for pid in pids)


@pytest.mark.slow
def test_run_workers_sigterm_and_a_dying_worker() -> None:
    """SIGTERM stops all with 0; a worker killed on its own stops the rest with status 1."""
    with workers_process(2) as (process, _port, pids):
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert all(gone(pid) for pid in pids)

    with workers_process(2) as (process, port, pids):
        os.kill(pids[0], signal.SIGKILL)
        assert process.wait(timeout=30) == 1
        assert process.stderr is not None
        assert "exited with -9; stopping the others" in process.stderr.read()
    assert all(gone(pid) for pid in pids)


def test_run_workers_refuses_what_it_sets_itself() -> None:
    """hub=, ssl= and reuse_port= are the workers' business: factories instead."""
    from wsthread.workers import run_workers

    for name in ("hub", "ssl", "reuse_port"):
        with pytest.raises(TypeError):
            run_workers(pid_handler, "127.0.0.1", 0, **{name: None})
    with pytest.raises(ValueError):
        run_workers(pid_handler, "127.0.0.1", 0, workers=0)
