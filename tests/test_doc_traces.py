"""The traces shown in the documentation are what ``--trace`` prints today.

A page marks a recorded trace with a MyST comment right before its `````text``
block (see ``docs/README.md``):

* ``% trace echo``: ``python -m wsthread.echo --trace`` (standard error) while
  ``python -m wsthread URI`` sends ``Hello``, reads the echo and closes;
* ``% trace client``: the client's side of that same session
  (``python -m wsthread URI --trace``);
* ``% trace shutdown``: the echo server's trace when it gets Ctrl-C while that
  client is connected.

The test runs those sessions for real and checks that each marked block is a
run of consecutive lines of the trace, once the parts that differ from run to
run are replaced by placeholders: the client's port, the server's port (the
pages show the default, 8765), the handshake key and accept value, the masking
keys and the log lines' timestamps. Every other character must match, as in a
doctest. Blocks that show a ``$ python -m wsthread.frames ...`` command (other
than in frames.md, which ``tests/test_trace.py`` checks) must be followed by
what that command prints.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

from conftest import echo_process, reap, wait_until

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DOCUMENTED_PORT = "8765"
SCENARIOS = ("echo", "client", "shutdown")


def marked_blocks(marker: str) -> Iterator[Tuple[Path, int, str, List[str]]]:
    """Each `````text`` block right after ``% MARKER ARG``: (page, line, ARG, its lines)."""
    for path in sorted(DOCS.rglob("*.md")):
        if "_build" in path.parts:
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        for index, line in enumerate(lines):
            words = line.split()
            if words[:2] != ["%", marker] or len(words) != 3:
                continue
            fence = index + 1
            while fence < len(lines) and not lines[fence].strip():
                fence += 1
            assert fence < len(lines) and lines[fence].strip() == "```text", (
                f"{path.relative_to(ROOT)}:{index + 1}: '% {marker}' must stand before a text block"
            )
            end = lines.index("```", fence + 1)
            yield path, fence + 1, words[2], lines[fence + 1 : end]


def normalise(line: str, port: str) -> str:
    """``line`` with the parts that change from run to run replaced by placeholders."""
    line = re.sub(r"^\[127\.0\.0\.1:\d+\]", "[127.0.0.1:CLIENT-PORT]", line)
    line = re.sub(r"\[127\.0\.0\.1:\d+\] connection", "[127.0.0.1:CLIENT-PORT] connection", line)
    line = line.replace(f"127.0.0.1:{port}", f"127.0.0.1:{DOCUMENTED_PORT}")
    line = re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", "DATE ", line)
    line = re.sub(r"(Sec-WebSocket-(Key|Accept)): \S+$", r"\1: VALUE", line)
    return re.sub(r"\bkey=[0-9a-f]{8}\b", "key=MASK", line)


def fix_request_size(line: str, port: str) -> str:
    """The request's byte count as it would be with the documented port in ``Host``."""
    match = re.search(r"HTTP request, (\d+) bytes$", line)
    if match is None:
        return line
    size = int(match.group(1)) - len(port) + len(DOCUMENTED_PORT)
    return line[: match.start(1)] + f"{size} bytes"


def run_session(shutdown: bool) -> Tuple[str, str]:
    """One interactive client session with the echo server, both tracing: (server, client).

    The client sends ``Hello`` once the server has logged the open connection
    (so that the log line and the frames come in one order), and waits for the
    echo; then either closes (end of input) or, with ``shutdown``, stays until
    the server gets SIGINT.
    """
    with echo_process("--trace") as (server, url):
        errors = server.stderr
        assert errors is not None
        server_lines: List[str] = []
        drain = threading.Thread(target=lambda: server_lines.extend(errors), daemon=True)
        drain.start()
        client = subprocess.Popen(
            [sys.executable, "-m", "wsthread", url, "--trace"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        try:
            assert client.stdin is not None and client.stdout is not None
            opened = wait_until(lambda: any("connection open" in x for x in server_lines), 30)
            assert opened, "".join(server_lines)
            client.stdin.write("Hello\n")
            client.stdin.flush()
            assert client.stdout.readline().startswith("< Hello"), "no echo"
            if shutdown:
                server.send_signal(signal.SIGINT)
                client.wait(timeout=30)
            client_trace = client.communicate(timeout=30)[1]
        finally:
            reap(client)
        if not shutdown:
            server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0
        drain.join(timeout=30)
    return "".join(server_lines), client_trace


def normalised(trace: str, url: str) -> List[str]:
    """The lines of a trace, normalised, as the documented port would show them."""
    port = url.rstrip("/").rsplit(":", 1)[1]
    return [fix_request_size(normalise(line, port), port) for line in trace.splitlines()]


@pytest.fixture(scope="module")
def traces() -> Dict[str, List[str]]:
    """The normalised trace of each scenario, recorded now."""
    recorded: Dict[str, List[str]] = {}
    for shutdown in (False, True):
        server_trace, client_trace = run_session(shutdown)
        url = re.search(r"ws://127\.0\.0\.1:\d+/", client_trace)
        assert url is not None, client_trace
        if shutdown:
            recorded["shutdown"] = normalised(server_trace, url.group(0))
        else:
            recorded["echo"] = normalised(server_trace, url.group(0))
            recorded["client"] = normalised(client_trace, url.group(0))
    return recorded


def is_excerpt(shown: List[str], trace: List[str]) -> bool:
    """Whether ``shown`` is a run of consecutive lines of ``trace`` (both normalised)."""
    return any(trace[start : start + len(shown)] == shown for start in range(len(trace)))


DOCUMENTED = list(marked_blocks("trace"))


def test_the_documented_traces_are_found() -> None:
    """The pages that show recorded traces mark them, with a known scenario each."""
    pages = {path.relative_to(DOCS).as_posix() for path, _, _, _ in DOCUMENTED}
    assert {
        "howto/tracing.md",
        "explanation/handshake.md",
        "explanation/closing.md",
        "explanation/frames.md",
        "tutorial/install.md",
    } <= pages
    assert all(scenario in SCENARIOS for _, _, scenario, _ in DOCUMENTED)
    assert all(shown for _, _, _, shown in DOCUMENTED)


@pytest.mark.parametrize(
    "path, line, scenario, shown",
    DOCUMENTED,
    ids=[f"{path.relative_to(DOCS).as_posix()}:{line}" for path, line, _, _ in DOCUMENTED],
)
def test_documented_trace_matches_the_trace_printed_now(
    path: Path, line: int, scenario: str, shown: List[str], traces: Dict[str, List[str]]
) -> None:
    """The block is what ``--trace`` prints, apart from ports, keys, masks and dates."""
    expected = [normalise(text, DOCUMENTED_PORT) for text in shown]
    actual = traces[scenario]
    assert is_excerpt(expected, actual), (
        f"docs/{path.relative_to(DOCS).as_posix()}:{line}: the trace shown is not what "
        f"--trace prints now ({scenario}). Printed now, normalised:\n" + "\n".join(actual)
    )


def test_a_changed_line_is_caught(traces: Dict[str, List[str]]) -> None:
    """The comparison is not vacuous: one changed header or a reordered pair fails it."""
    trace = traces["echo"]
    assert is_excerpt(trace[:3], trace)
    changed = [line.replace("Upgrade: websocket", "Upgrade: WebSocket") for line in trace[:5]]
    assert not is_excerpt(changed, trace)
    assert not is_excerpt([trace[1], trace[0]], trace)


def commands_shown() -> Iterator[Tuple[Path, str, str]]:
    """``$ python -m wsthread.frames ...`` blocks outside frames.md: (page, command, output)."""
    for path in sorted(DOCS.rglob("*.md")):
        if "_build" in path.parts or path.name == "frames.md":
            continue
        for command, shown in re.findall(
            r"```text\n\$ (python -m wsthread\.frames [^\n]*)\n(.*?)```",
            path.read_text(encoding="utf-8"),
            re.S,
        ):
            yield path, command, shown


COMMANDS = list(commands_shown())


@pytest.mark.parametrize(
    "path, command, shown",
    COMMANDS,
    ids=[
        f"{path.relative_to(DOCS).as_posix()}-{number}"
        for number, (path, _, _) in enumerate(COMMANDS)
    ],
)
def test_decoder_output_shown_is_what_it_prints(path: Path, command: str, shown: str) -> None:
    """A ``python -m wsthread.frames`` run shown in a page prints exactly that."""
    arguments = command.split()[3:]
    result = subprocess.run(
        [sys.executable, "-m", "wsthread.frames", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.stdout == shown, f"{path.relative_to(ROOT)}: {command}"
