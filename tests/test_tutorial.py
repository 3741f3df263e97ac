"""The tutorial's programs as a new user runs them: typed input, Ctrl-D, /quit, Ctrl-C.

The ``% norun`` blocks of the tutorial are whole programs meant to be saved
and run in a terminal. These tests take them from the pages, point them at a
server on a free port, and run them in a real interpreter.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest

import wsthread
from conftest import ServerFactory, reap, wait_until

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "tutorial"


def program(page: str, marker: str) -> str:
    """The one ``python`` block of ``page`` that contains ``marker``."""
    text = (TUTORIAL / page).read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if marker in b]
    assert len(blocks) == 1, f"{page}: {len(blocks)} blocks contain {marker!r}"
    return blocks[0]


def start_client(tmp_path: Path, port: int) -> subprocess.Popen[str]:
    """Run the two-thread client of client.md against ``port``, stdin on a pipe."""
    code = program("client.md", "def show_messages").replace("8765", str(port))
    script = tmp_path / "chat_client.py"
    script.write_text(code, encoding="utf-8")
    return subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )


def finish(process: subprocess.Popen[str]) -> List[str]:
    """Wait for the program's exit (generously); its stdout lines, after checking stderr."""
    if process.stdin is not None and process.stdin.closed:
        process.stdin = None  # communicate() would flush it
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"the program hung; stdout {out!r}, stderr {err!r}")
    assert process.returncode == 0, err
    assert "Traceback" not in err, err
    return out.splitlines()


def test_client_ctrl_d_closes_cleanly(make_server: ServerFactory, tmp_path: Path) -> None:
    """End of input (Ctrl-D) in the two-thread client closes with 1000; no EOFError, no hang."""
    server = make_server()
    process = start_client(tmp_path, server.port)
    assert process.stdin is not None
    process.stdin.write("hello\n")
    process.stdin.close()  # what Ctrl-D does in a terminal
    assert finish(process) == ["< hello", "closed: 1000"]


def test_client_quit_closes_cleanly(make_server: ServerFactory, tmp_path: Path) -> None:
    """/quit closes with 1000 while standard input stays open."""
    server = make_server()
    process = start_client(tmp_path, server.port)
    assert process.stdin is not None
    process.stdin.write("hello\n/quit\n")
    process.stdin.flush()  # and the input stays open
    try:
        assert finish(process) == ["< hello", "closed: 1000"]
    finally:
        process.stdin.close()


def test_client_ctrl_c_closes_cleanly(make_server: ServerFactory, tmp_path: Path) -> None:
    """Ctrl-C in the two-thread client: no traceback, a closing handshake, exit 0."""
    server = make_server()
    process = start_client(tmp_path, server.port)
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("hello\n")
    process.stdin.flush()
    assert process.stdout.readline() == "< hello\n"
    process.send_signal(signal.SIGINT)
    try:
        assert finish(process) == ["closed: 1000"]
    finally:
        process.stdin.close()


@pytest.mark.parametrize("page", ["echo.md", "chat.md"])
def test_tutorial_server_ctrl_c_ends_without_traceback(tmp_path: Path, page: str) -> None:
    """The tutorial's echo_server.py and chat_server.py stop on Ctrl-C: exit 0, no traceback."""
    # Port 0, and one added line that tells the test which port it got (a port
    # picked in advance could be taken meanwhile by a parallel run).
    code = program(page, "serve_forever()")
    assert code.count('"127.0.0.1", 8765) as server:\n') == 1
    code = code.replace(
        '"127.0.0.1", 8765) as server:\n',
        '"127.0.0.1", 0) as server:\n    print(server.port, flush=True)\n',
    )
    script = tmp_path / "server.py"
    script.write_text(code, encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())

        def echoes() -> bool:
            try:
                with wsthread.connect(f"ws://127.0.0.1:{port}/?name=x", open_timeout=5) as ws:
                    ws.send("hello")
                    if page == "chat.md":  # the chat announces x, then relays
                        said = [ws.recv(timeout=5), ws.recv(timeout=5)]
                        return said == ["* x joined", "x: hello"]
                    return ws.recv(timeout=5) == "hello"
            except OSError:
                time.sleep(0.1)
                return False

        assert wait_until(echoes, timeout=60), "the tutorial's server did not start"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        reap(process)
    assert process.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "connection closed: code 1000" in err  # the page's logging.basicConfig(INFO)


def test_close_log_line_has_no_trailing_space(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """'connection closed: code 1000' ends there without a reason; a reason follows a space."""
    server = make_server()
    with caplog.at_level(logging.INFO, logger="wsthread"):
        with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:
            ws.send("x")
            ws.recv(timeout=10)
        with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:
            ws.close(1001, "bye")
        assert wait_until(
            lambda: sum("connection closed" in r.getMessage() for r in caplog.records) >= 2,
            timeout=30,
        )
    lines = sorted(
        r.getMessage().split("] ", 1)[1]
        for r in caplog.records
        if "connection closed" in r.getMessage()
    )
    assert lines == ["connection closed: code 1000", "connection closed: code 1001 bye"]
