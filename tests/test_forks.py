"""A server inherited across fork() refuses loudly, and never harms the parent's connections.

Each scenario runs in its own interpreter (``fork()`` inside pytest's process
would copy pytest too): the script makes a server, opens a client, forks,
and prints one JSON line per process, which the test checks.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

from conftest import run_ok

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")

SCRIPT = r"""
import json, os, sys, threading
import wsthread

def echo(ws):
    for message in ws:
        ws.send(message)

server = wsthread.serve(echo, "127.0.0.1", 0, close_timeout=2).start()
client = wsthread.connect(f"ws://127.0.0.1:{server.port}/", open_timeout=10)
client.send("before")
assert client.recv(timeout=10) == "before"

read_end, write_end = os.pipe()
pid = os.fork()
if pid == 0:  # the child: everything must refuse, naming the cause
    os.close(read_end)
    report = {}
    for name, action in [
        ("broadcast", lambda: server.broadcast("from the child")),
        ("start", server.start),
        ("serve_forever", server.serve_forever),
        ("connections", lambda: server.connections),
    ]:
        try:
            action()
            report[name] = None
        except RuntimeError as exc:
            report[name] = str(exc)
    # A server of the child's own works, helper threads included: its
    # handler never reads, so only a reader thread can answer the ping.
    done = threading.Event()
    def busy(ws):
        done.wait(10)
    own = wsthread.serve(busy, "127.0.0.1", 0, close_timeout=2).start()
    with wsthread.connect(f"ws://127.0.0.1:{own.port}/", open_timeout=10) as mine:
        report["own_pong"] = mine.ping().wait(10)
        done.set()
    own.shutdown()
    os.write(write_end, json.dumps(report).encode())
    os.close(write_end)
    sys.exit(0)  # runs the atexit hooks inherited from the parent: server.shutdown()

os.close(write_end)
chunks = []
while True:
    chunk = os.read(read_end, 65536)
    if not chunk:
        break
    chunks.append(chunk)
_, status = os.waitpid(pid, 0)
child = json.loads(b"".join(chunks) or b"{}")
# The parent's connection and listening socket survived the child's exit.
client.send("after")
echoed = client.recv(timeout=10)
count = server.broadcast("broadcast")
broadcast = client.recv(timeout=10)
with wsthread.connect(f"ws://127.0.0.1:{server.port}/", open_timeout=10) as again:
    again.send("new")
    new = again.recv(timeout=10)
client.close()
server.shutdown()
print(json.dumps({
    "child": child, "status": status, "echoed": echoed, "count": count,
    "broadcast": broadcast, "new": new,
}))
"""


def run_script(script: str) -> Dict[str, Any]:
    """Run ``script`` in a fresh interpreter; its last stdout line, as JSON."""
    result = run_ok([sys.executable, "-c", script], cwd=ROOT, timeout=120)
    report: Dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


@pytest.fixture(scope="module")
def fork_report() -> Dict[str, Any]:
    """What the parent and the forked child saw (one run for the tests below)."""
    return run_script(SCRIPT)


@pytest.mark.parametrize("name", ["broadcast", "start", "serve_forever", "connections"])
def test_inherited_server_refuses_and_says_why(fork_report: Dict[str, Any], name: str) -> None:
    """Each of these raises in a forked child, naming the cause and the fix."""
    message = fork_report["child"][name]
    assert message is not None, f"{name} worked in the forked child"
    assert "fork()" in message and "inherited" in message
    assert "reuse_port=True" in message and "hub" in message
    assert "Reloaders and pre-fork servers" in message


def test_child_exit_leaves_the_parent_serving(fork_report: Dict[str, Any]) -> None:
    """The inherited atexit shutdown() in the child leaves the parent's sockets alone."""
    assert fork_report["status"] == 0
    assert fork_report["echoed"] == "after"
    assert fork_report["count"] == 1 and fork_report["broadcast"] == "broadcast"
    assert fork_report["new"] == "new"


def test_child_gets_its_own_helper_threads(fork_report: Dict[str, Any]) -> None:
    """A server made in the child starts its own helper threads (reader threads)."""
    assert fork_report["child"]["own_pong"] is True


def test_fork_guard_unit() -> None:
    """ForkGuard: not inherited in its own process; its message names the action."""
    from wsthread.runtime.forks import ForkGuard, fork_generation

    guard = ForkGuard("thing")
    assert not guard.inherited
    guard.check("anything")  # does not raise
    assert "broadcast()" in guard.message("broadcast()")
    generation = fork_generation()
    pid = os.fork()
    if pid == 0:  # the child: one fork deeper, and the guard made before it knows
        os._exit(0 if fork_generation() == generation + 1 and guard.inherited else 1)
    _, status = os.waitpid(pid, 0)
    assert status == 0, "in the child, the generation did not go up or the guard missed the fork"
    assert fork_generation() == generation  # the parent's count is unchanged


def test_port_in_use_says_why_a_newcomer_may_meet_it() -> None:
    """Address in use: the same errno, and a message naming reloaders and workers."""
    import errno as errno_module
    import socket as socket_module

    import wsthread

    with socket_module.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(OSError) as info:
            wsthread.serve(lambda ws: None, "127.0.0.1", port)
    assert info.value.errno == errno_module.EADDRINUSE
    message = str(info.value)
    assert f"127.0.0.1:{port} is taken" in message
    assert "flask run --debug" in message and "reuse_port=True" in message
