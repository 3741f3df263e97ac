"""Autobahn TestSuite conformance of ``python -m wsthread.echo``, driven by kosoku."""

from __future__ import annotations

import collections
import concurrent.futures
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Set, Tuple

import pytest

from conftest import echo_process, reap, wait_until

pytestmark = pytest.mark.slow

ACCEPTED_BEHAVIOR = {"OK", "NON-STRICT", "INFORMATIONAL"}
ACCEPTED_CLOSE = {"OK", "INFORMATIONAL"}
# The server suite is judged strictly: NON-STRICT counts as a failure (6.4.3
# and 6.4.4, invalid UTF-8 inside a frame that arrives in pieces, are OK
# since the text of an incomplete frame is checked as it arrives).
STRICT_BEHAVIOR = {"OK", "INFORMATIONAL"}
# The cases whose outcome is only informational (the suite judges nothing).
INFORMATIONAL_CASES = 3


@pytest.fixture
def echo_server() -> Iterator[int]:
    """Run ``python -m wsthread.echo`` on a free port, as the suite's subject.

    Keepalive pings are off: kosoku ends a case when an unsolicited ping
    arrives in it, so any 12.* case that runs past the 20 s ping interval on
    a loaded machine would be reported FAILED for a ping the RFC allows.
    """
    with echo_process("--max-size", "67108864", "--ping-interval", "none", "--quiet") as (
        process,
        url,
    ):
        yield int(url.rstrip("/").rsplit(":", 1)[1])
        process.terminate()
        assert process.wait(timeout=15) == 0, "the echo server did not exit cleanly on SIGTERM"


def run_kosoku(
    port: int,
    outdir: Path,
    excludes: List[str],
    includes: Sequence[str] = (),
    parallel: int = 2,
) -> Dict[str, dict]:
    """Run kosoku against 127.0.0.1:port and return its per-case index."""
    command = [kosoku_executable(), "-p", str(parallel), "-o", str(outdir)]
    for pattern in includes:
        command += ["-i", pattern]
    for pattern in excludes:
        command += ["-x", pattern]
    command.append(f"127.0.0.1:{port}")
    subprocess.run(command, check=False, timeout=1200, stdout=subprocess.DEVNULL)
    return read_report(outdir)


def kosoku_executable() -> str:
    """The kosoku command, from PATH or beside this Python."""
    kosoku = shutil.which("kosoku")
    if kosoku is None:
        candidate = Path(sys.executable).with_name("kosoku")
        assert candidate.exists(), "kosoku is not installed (pip install -e '.[test]')"
        kosoku = str(candidate)
    return kosoku


def read_report(outdir: Path) -> Dict[str, dict]:
    """The per-case results in kosoku's ``index.json`` (one agent expected)."""
    index = json.loads((outdir / "index.json").read_text())
    assert len(index) == 1, f"expected one agent in the report, got {list(index)}"
    return next(iter(index.values()))  # type: ignore[no-any-return]


def judge(
    cases: Dict[str, dict], accepted: Set[str] = ACCEPTED_BEHAVIOR
) -> Tuple[Dict[Tuple[str, str], int], Dict[str, Tuple[str, str]]]:
    """Tally the outcomes and list the cases whose outcome is not ``accepted``."""
    tally = collections.Counter((c["behavior"], c["behaviorClose"]) for c in cases.values())
    failures = {
        case_id: (c["behavior"], c["behaviorClose"])
        for case_id, c in cases.items()
        if c["behavior"] not in accepted or c["behaviorClose"] not in ACCEPTED_CLOSE
    }
    return dict(tally), failures


@pytest.mark.timeout(1500)
def test_autobahn_server_whole_suite(echo_server: int, tmp_path: Path) -> None:
    """Every Autobahn case, 1.* to 13.* with permessage-deflate, passes against the echo server."""
    started = time.monotonic()
    # Two cases at a time, except 12.*: a thousand compressed messages of up
    # to 128 KiB each, some in 256-byte fragments. Two of those at once, with
    # kosoku, on this 2-core machine (and one GIL for both connections) come
    # close to kosoku's per-case time limit, so they run one at a time.
    cases = run_kosoku(echo_server, tmp_path / "parallel", ["12.*"])
    cases.update(run_kosoku(echo_server, tmp_path / "serial", [], ["12.*"], parallel=1))
    elapsed = time.monotonic() - started
    tally, failures = judge(cases, STRICT_BEHAVIOR)
    compression = sum(c["duration"] for k, c in cases.items() if k.startswith(("12.", "13.")))
    print(
        f"\nAutobahn server: {len(cases)} cases in {elapsed:.1f}s "
        f"(compression cases 12.*/13.*: {compression / 1000:.0f}s of case durations): "
        f"{tally}"
    )
    if os.environ.get("WSTHREAD_AUTOBAHN_REPORT"):
        shutil.copytree(tmp_path, os.environ["WSTHREAD_AUTOBAHN_REPORT"], dirs_exist_ok=True)
    slowest = max(cases, key=lambda case_id: cases[case_id]["duration"])
    print(f"slowest case: {slowest} ({cases[slowest]['duration'] / 1000:.1f}s)")
    assert len(cases) == 517, f"{len(cases)} cases ran, not 517"
    assert not failures, f"failing cases (NON-STRICT counts): {failures}"
    not_ok = {case_id: c["behavior"] for case_id, c in cases.items() if c["behavior"] != "OK"}
    assert len(not_ok) == INFORMATIONAL_CASES, f"not OK: {not_ok}"


def free_port() -> int:
    """A port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def drive_client_cases(port: int, agent: str, compression: Any = "deflate") -> None:
    """Run every case of a fuzzingserver with wsthread's client, echoing messages."""
    import wsthread

    base = f"ws://127.0.0.1:{port}"
    with wsthread.connect(f"{base}/getCaseCount") as ws:
        count = int(ws.recv(timeout=30))
    for case in range(1, count + 1):
        try:
            ws = wsthread.connect(
                f"{base}/runCase?case={case}&agent={agent}",
                max_size=2**26,
                open_timeout=30,
                compression=compression,
                # No keepalive pings: a case of 12.* that outlasts ping_interval
                # on a loaded machine got an unsolicited ping, and kosoku then
                # ended the case early (12.2.15 failed that way after 20 s).
                ping_interval=None,
            )
        except (OSError, wsthread.InvalidHandshake):
            continue
        with ws:
            try:
                for message in ws:
                    ws.send(message)
            except wsthread.ConnectionClosed:
                pass
    with wsthread.connect(f"{base}/updateReports?agent={agent}") as ws:
        try:
            ws.recv(timeout=30)
        except wsthread.ConnectionClosed:
            pass


def run_fuzzingserver(
    outdir: Path, includes: Sequence[str], excludes: Sequence[str], compression: Any
) -> Dict[str, dict]:
    """Start kosoku's fuzzingserver for the selected cases, drive it, return its report."""
    port = free_port()
    command = [kosoku_executable(), "-m", "fuzzingserver", "-o", str(outdir)]
    for pattern in includes:
        command += ["-i", pattern]
    for pattern in excludes:
        command += ["-x", pattern]
    command.append(f"127.0.0.1:{port}")
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert "listening" in line, line
        drive_client_cases(port, "wsthread", compression)
        process.wait(timeout=120)
    finally:
        reap(process)
    return read_report(outdir)


def group_13_offers() -> Dict[str, List[Any]]:
    """The offers each case group 13.1-13.7 makes, as Autobahn's case file describes them.

    Autobahn's client offers are ``(requestNoContextTakeover,
    requestMaxWindowBits)`` pairs: the first asks the server for
    ``server_no_context_takeover``, the second for
    ``server_max_window_bits=N`` (0: not asked). Its offers also always
    carry ``client_no_context_takeover`` (``acceptNoContextTakeover``
    defaults to true), which the server's side of groups 13.2, 13.5 and
    13.6 requires before it asks the client for no context takeover; and
    wsthread's offers always carry ``client_max_window_bits``, which groups
    13.3-13.6 require before they ask for a 512-byte client window.
    kosoku serves no case information, so each group gets its own
    fuzzingserver, selected with ``-i``.
    """
    import wsthread

    def offer(no_context_takeover: bool, max_window_bits: int) -> Any:
        return wsthread.Deflate(
            client_no_context_takeover=True,
            server_no_context_takeover=no_context_takeover,
            server_max_window_bits=max_window_bits or None,
        )

    return {
        "13.1": [offer(False, 0)],
        "13.2": [offer(True, 0)],
        "13.3": [offer(False, 9)],
        "13.4": [offer(False, 15)],
        "13.5": [offer(True, 9)],
        "13.6": [offer(True, 15)],
        "13.7": [offer(True, 9), offer(True, 0), offer(False, 0)],
    }


@pytest.mark.timeout(1800)
def test_autobahn_client_whole_suite(tmp_path: Path) -> None:
    """All 517 Autobahn cases pass with wsthread's client (OK, NON-STRICT or INFORMATIONAL):
    1.*-12.* with the default offer, and each group 13.1-13.7 with the offers its case
    descriptions make; none UNIMPLEMENTED."""
    runs: List[Tuple[str, Sequence[str], Sequence[str], Any]] = [("1-12", (), ("13.*",), "deflate")]
    runs += [(group, (f"{group}.*",), (), offers) for group, offers in group_13_offers().items()]
    started = time.monotonic()
    cases: Dict[str, dict] = {}
    # Two fuzzingservers at a time, each driven by its own client thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            pool.submit(run_fuzzingserver, tmp_path / name, includes, excludes, offers): name
            for name, includes, excludes, offers in runs
        }
        for future in concurrent.futures.as_completed(futures):
            name = futures[future]
            report = future.result()
            if name.startswith("13."):
                assert report and all(case.startswith(name + ".") for case in report), name
            cases.update(report)
    elapsed = time.monotonic() - started
    tally, failures = judge(cases)
    print(f"\nAutobahn client: {len(cases)} cases in {elapsed:.1f}s: {tally}")
    if os.environ.get("WSTHREAD_AUTOBAHN_REPORT"):
        shutil.copytree(tmp_path, os.environ["WSTHREAD_AUTOBAHN_REPORT"], dirs_exist_ok=True)
    assert len(cases) == 517, f"{len(cases)} cases ran, not 517"
    assert not failures, f"failing or unimplemented cases: {failures}"


@pytest.fixture
def gunicorn_echo(tmp_path: Path) -> Iterator[int]:
    """``autobahn_app:app`` (the echo behind wsthread.wsgi.middleware) under gunicorn gthread."""
    pytest.importorskip("gunicorn")

    import gunicorn.config

    apps = Path(__file__).resolve().parent / "wsgiapps"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = int(listener.getsockname()[1])
    names = {setting.name for setting in gunicorn.config.KNOWN_SETTINGS}
    command = [
        sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", "1",
        # kosoku runs two cases at once, and a case may open its next
        # connection before the last one's thread is back: room for more.
        "--threads", "16",
        "--bind", f"fd://{listener.fileno()}", "--graceful-timeout", "10",
        "--log-level", "warning", "autobahn_app:app",
    ]  # fmt: skip
    if "control_socket_disable" in names:
        command.insert(3, "--no-control-socket")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(apps.parent.parent), env.get("PYTHONPATH", "")])
    log = tmp_path / "gunicorn.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            command, cwd=apps, env=env, stdout=output, stderr=subprocess.STDOUT,
            pass_fds=[listener.fileno()],
        )  # fmt: skip
    listener.close()
    try:
        up = wait_until(lambda: process.poll() is not None or answers_200(port), timeout=60)
        assert up and process.poll() is None, log.read_text()
        yield port
        process.terminate()
        assert process.wait(timeout=30) == 0
        text = log.read_text()
        assert "Traceback" not in text, text
    finally:
        reap(process)


def answers_200(port: int) -> bool:
    """Whether a GET / on ``port`` is answered with 200 now (False while nothing answers)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as probe:
            probe.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return probe.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


@pytest.mark.timeout(1500)
def test_autobahn_server_suite_through_the_wsgi_middleware(
    gunicorn_echo: int, tmp_path: Path
) -> None:
    """All 517 cases pass through wsthread.wsgi.middleware under gunicorn's gthread worker."""
    started = time.monotonic()
    cases = run_kosoku(gunicorn_echo, tmp_path / "parallel", ["12.*"])
    cases.update(run_kosoku(gunicorn_echo, tmp_path / "serial", [], ["12.*"], parallel=1))
    elapsed = time.monotonic() - started
    tally, failures = judge(cases, STRICT_BEHAVIOR)
    print(f"\nAutobahn through the middleware under gunicorn: {len(cases)} cases in {elapsed:.1f}s")
    print(tally)
    assert len(cases) == 517, f"{len(cases)} cases ran, not 517"
    assert not failures, f"failing cases (NON-STRICT counts): {failures}"
    not_ok = {case_id: c["behavior"] for case_id, c in cases.items() if c["behavior"] != "OK"}
    assert len(not_ok) == INFORMATIONAL_CASES, f"not OK: {not_ok}"
