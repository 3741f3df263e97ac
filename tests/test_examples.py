"""Smoke tests for examples/: each one started as its users start it, talked to, stopped.

Every example runs as a subprocess with ``--port 0``, prints its URL on the
first line of its output, and must stop on one SIGINT (Ctrl-C) with exit
status 0 and no traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Dict, Iterator, List, Optional, Set, Tuple

import pytest

import wsthread
from conftest import ServerFactory, assert_going_away, reap, run_ok, stalled_client, write_certfile

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
URL = re.compile(r"\b(?:wss?|https?)://[^\s/]+/")


class Example:
    """A running example: its process, the URLs of its first line, its stderr file."""

    def __init__(self, process: subprocess.Popen[str], urls: List[str], stderr: IO[str]) -> None:
        self.process = process
        self.urls = urls
        self.stderr = stderr

    @property
    def port(self) -> int:
        """The port of the first URL."""
        return int(self.urls[0].rstrip("/").rsplit(":", 1)[1])

    def errors(self) -> str:
        """Everything the process wrote to stderr so far."""
        self.stderr.seek(0)
        return self.stderr.read()

    def interrupt(self) -> str:
        """Send one SIGINT, as Ctrl-C does; check it exits 0 without a traceback."""
        self.process.send_signal(signal.SIGINT)
        return self.wait_exit()

    def wait_exit(self) -> str:
        """Wait for the process to end; check it exited 0 without a traceback; its stdout."""
        try:
            out, _ = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 30 s after one SIGINT; stderr:\n{self.errors()}")
        errors = self.errors()
        assert self.process.returncode == 0, errors
        assert "Traceback" not in errors, errors
        return out


def default_sigint() -> None:
    """In the child: SIGINT as in a terminal, even if this test run ignores it.

    Python turns SIGINT into KeyboardInterrupt only when SIGINT is not
    ignored at start-up, and an ignored SIGINT is inherited: a test run
    started in the background (``cmd &`` in a script) would otherwise hand
    that on to the examples, and Ctrl-C could not be tested.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def example(script: str, *args: str, stdin: int = subprocess.DEVNULL) -> Iterator[Example]:
    """Start ``python examples/SCRIPT --port 0 ARGS``; yield once it printed its URL."""
    with tempfile.TemporaryFile("w+", encoding="utf-8") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLES / script), "--port", "0", *args],
            preexec_fn=default_sigint,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            encoding="utf-8",
        )
        try:
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], 60)
            line = process.stdout.readline() if ready else ""
            urls = URL.findall(line)
            if not urls:
                reap(process)
                stderr.seek(0)
                pytest.fail(f"{script} printed no URL: {line!r}; stderr:\n{stderr.read()}")
            yield Example(process, urls, stderr)
        finally:
            reap(process)


def ws_url(http_url: str, path: str) -> str:
    """The WebSocket URL for ``path`` on the server at ``http_url``."""
    return http_url.replace("http", "ws", 1).rstrip("/") + path


# -- echo_server.py and echo_client.py ----------------------------------------


def test_echo_pair() -> None:
    """echo_client.py sends its arguments to echo_server.py and prints the echoes."""
    with example("echo_server.py") as server:
        assert server.urls == [f"ws://127.0.0.1:{server.port}/"]
        client = run_ok(
            [
                sys.executable,
                EXAMPLES / "echo_client.py",
                "--port",
                str(server.port),
                "hello",
                "wörld",
            ],
            encoding="utf-8",
            timeout=30,
        )
        assert client.stdout.splitlines() == [
            f"connected to ws://127.0.0.1:{server.port}/",
            "< hello",
            "< wörld",
        ]
        server.interrupt()


def test_echo_client_stops_on_ctrl_c() -> None:
    """The interactive client echoes stdin lines and exits 0 on one Ctrl-C."""
    with (
        example("echo_server.py") as server,
        example(
            "echo_client.py", "--url", f"ws://127.0.0.1:{server.port}/", stdin=subprocess.PIPE
        ) as client,
    ):
        assert client.process.stdin is not None and client.process.stdout is not None
        client.process.stdin.write("ping\n")
        client.process.stdin.flush()
        assert client.process.stdout.readline() == "< ping\n"
        client.interrupt()
        server.interrupt()


def test_echo_server_ctrl_c_closes_clients_with_1001() -> None:
    """One Ctrl-C closes the server's open connections with 1001 (going away)."""
    with example("echo_server.py") as server, wsthread.connect(server.urls[0]) as ws:
        ws.send("still there?")
        assert ws.recv(timeout=5) == "still there?"
        server.interrupt()
        assert_going_away([ws], timeout=10)


# -- chat/ ----------------------------------------------------------------------


def events(ws: wsthread.ClientConnection, count: int) -> List[dict]:  # type: ignore[type-arg]
    """The next ``count`` chat events received on ``ws``."""
    return [json.loads(ws.recv(timeout=5)) for _ in range(count)]


def test_chat_serves_its_page_and_a_404() -> None:
    """The chat server answers plain HTTP itself: the page at /, 404 elsewhere."""
    with example("chat/server.py") as chat:
        assert chat.urls == [f"http://127.0.0.1:{chat.port}/"]
        with urllib.request.urlopen(chat.urls[0], timeout=5) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/html")
            page = response.read().decode()
        for element in ('id="name"', 'id="join"', 'id="message"', 'id="log"', "new WebSocket"):
            assert element in page
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(chat.urls[0] + "nothing-here", timeout=5)
        assert error.value.code == 404
        chat.interrupt()


def test_chat_broadcasts_messages_joins_and_leaves() -> None:
    """Every participant sees every message, who joined and who left."""
    with example("chat/server.py") as chat:
        with wsthread.connect(ws_url(chat.urls[0], "/ws?name=alice")) as alice:
            assert events(alice, 2) == [
                {"type": "welcome", "you": "alice", "people": ["alice"]},
                {"type": "join", "name": "alice", "people": ["alice"]},
            ]
            with wsthread.connect(ws_url(chat.urls[0], "/ws?name=alice")) as alice2:
                assert events(alice2, 2) == [
                    {"type": "welcome", "you": "alice-2", "people": ["alice", "alice-2"]},
                    {"type": "join", "name": "alice-2", "people": ["alice", "alice-2"]},
                ]
                assert events(alice, 1) == [
                    {"type": "join", "name": "alice-2", "people": ["alice", "alice-2"]}
                ]
                alice2.send("hi <b>all</b>")
                said = {"type": "message", "name": "alice-2", "text": "hi <b>all</b>"}
                assert events(alice, 1) == [said]
                assert events(alice2, 1) == [said]
            assert events(alice, 1) == [{"type": "leave", "name": "alice-2", "people": ["alice"]}]
        chat.interrupt()


# -- clock.py ---------------------------------------------------------------------


def test_clock_pushes_the_time_to_every_client() -> None:
    """Clients that never send anything still get a tick every interval."""
    with example("clock.py", "--interval", "0.2") as clock:
        with wsthread.connect(clock.urls[0]) as first, wsthread.connect(clock.urls[0]) as second:
            for ws in (first, second):
                ticks = [ws.recv(timeout=5) for _ in range(2)]
                for tick in ticks:
                    assert isinstance(tick, str)
                    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", tick), tick
                assert ticks[0] <= ticks[1]
        clock.interrupt()


# -- rooms.py ---------------------------------------------------------------------


def test_rooms_reach_only_their_members_and_bound_what_one_joins() -> None:
    """rooms.py: a message reaches the members of its room only; leaving (or disconnecting)
    is announced to the room; a room name over 256 bytes and a 17th room are refused."""
    with example("rooms.py") as rooms:
        url = rooms.urls[0]
        with contextlib.ExitStack() as stack:
            alice, bob, carol = (
                stack.enter_context(wsthread.connect(f"{url}?name={who}"))
                for who in ("alice", "bob", "carol")
            )
            for ws, who in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
                assert events(ws, 1) == [{"type": "welcome", "you": who}]
            alice.send("/join lobby")
            assert events(alice, 1) == [{"type": "joined", "room": "lobby", "name": "alice"}]
            bob.send("/join lobby")
            joined = {"type": "joined", "room": "lobby", "name": "bob"}
            assert events(alice, 1) == events(bob, 1) == [joined]
            carol.send("/join garden")
            assert events(carol, 1)[0]["room"] == "garden"

            bob.send("hello lobby")
            said = {"type": "message", "room": "lobby", "name": "bob", "text": "hello lobby"}
            assert events(alice, 1) == events(bob, 1) == [said]
            carol.send("/say lobby sneaking in")
            assert events(carol, 1)[0]["type"] == "error"  # not a member
            carol.send("/rooms")
            assert events(carol, 1) == [{"type": "rooms", "rooms": ["garden"]}]

            alice.send("/join " + "x" * 257)
            assert "256 bytes" in events(alice, 1)[0]["text"]
            for n in range(15):  # lobby and 15 more: the 16 of max_subscriptions
                alice.send(f"/join room {n}")
                assert events(alice, 1)[0]["type"] == "joined"
            alice.send("/join one too many")
            refused = events(alice, 1)[0]
            assert refused["type"] == "error" and "max_subscriptions" in refused["text"]

            bob.close()  # disconnecting leaves the room, and the room hears of it
            assert events(alice, 1) == [{"type": "left", "room": "lobby", "name": "bob"}]
            alice.send("/leave lobby")
            alice.send("/rooms")  # answered once she has left
            assert events(alice, 1) == [
                {"type": "rooms", "rooms": sorted(f"room {n}" for n in range(15))}
            ]
            carol.send("/join lobby")  # alice left: she hears nothing of it
            assert events(carol, 1) == [{"type": "joined", "room": "lobby", "name": "carol"}]
            carol.send("/say lobby anyone?")
            assert events(carol, 1)[0]["text"] == "anyone?"
            alice.send("/rooms")
            assert len(events(alice, 1)[0]["rooms"]) == 15  # nothing from the lobby came first
        rooms.interrupt()


# -- legacy_app.py ----------------------------------------------------------------


def test_legacy_app_request_handlers_push_to_websocket_clients() -> None:
    """A POST handled by http.server reaches every WebSocket client through broadcast."""
    with example("legacy_app.py", "--ws-port", "0", "--port", "0") as app:
        http_url, ws_events = app.urls
        assert http_url.startswith("http://127.0.0.1:") and ws_events.startswith("ws://")
        with urllib.request.urlopen(http_url, timeout=5) as response:
            assert f":{ws_events.rsplit(':', 1)[1].rstrip('/')}/" in response.read().decode()
        with wsthread.connect(ws_events) as screen1, wsthread.connect(ws_events) as screen2:
            for item in ("coffee", "tea"):
                request = urllib.request.Request(
                    http_url + "orders", data=f"item={item}".encode(), method="POST"
                )
                with urllib.request.urlopen(request, timeout=5) as response:
                    assert response.status == 201
            expected = [{"id": 1, "item": "coffee"}, {"id": 2, "item": "tea"}]
            for screen in (screen1, screen2):
                # A screen's handler sends the orders it missed, while broadcasts
                # already reach it: an order may come twice (the page files them
                # by id and ignores the copy), never be missing.
                seen: Dict[int, Dict[str, object]] = {}
                while len(seen) < 2:
                    order = json.loads(screen.recv(timeout=30))
                    assert seen.setdefault(order["id"], order) == order
                assert [seen[n] for n in sorted(seen)] == expected
        with urllib.request.urlopen(http_url + "orders", timeout=5) as response:
            assert json.loads(response.read()) == expected
        app.interrupt()


def test_legacy_app_page_shows_existing_orders_and_the_race_loses_none() -> None:
    """The page lists the orders that exist; ?after=N sends the rest, while orders keep coming.

    Orders are posted without pause while pages load and subscribe: for
    every page, the orders it lists plus those that reach its WebSocket
    cover every order, none missing, whatever the timing.
    """
    with example("legacy_app.py", "--ws-port", "0", "--port", "0") as app:
        http_url, ws_events = app.urls

        def post(item: str) -> None:
            request = urllib.request.Request(
                http_url + "orders", data=f"item={item}".encode(), method="POST"
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.status == 201

        for item in ("coffee", "tea"):
            post(item)
        with urllib.request.urlopen(http_url, timeout=30) as response:
            page = response.read().decode()
        assert '<ol id="orders" data-last="2">' in page
        assert ">#1 coffee</li>" in page and ">#2 tea</li>" in page

        # The form without JavaScript: 303 back to the page, which lists the order.
        request = urllib.request.Request(
            http_url + "orders", data=b"item=%3Cb%3Ecake", headers={"Accept": "text/html"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # follows the 303
            assert response.url == http_url and ">#3 &lt;b&gt;cake</li>" in response.read().decode()

        stop = threading.Event()
        posted = [3]

        def keep_posting() -> None:
            while not stop.is_set():
                post(f"order {posted[0] + 1}")
                posted[0] += 1

        poster = threading.Thread(target=keep_posting)
        poster.start()
        try:
            for _ in range(10):
                with urllib.request.urlopen(http_url, timeout=30) as response:
                    page = response.read().decode()
                last = int(re.search(r'data-last="(\d+)"', page).group(1))  # type: ignore[union-attr]
                listed = {int(n) for n in re.findall(r'id="order-(\d+)"', page)}
                assert listed == set(range(1, last + 1))
                with wsthread.connect(f"{ws_events}?after={last}") as ws:
                    # Not on the page: recorded during the subscription, or after it.
                    target = max(posted[0], last) + 1
                    wanted = set(range(1, target + 1))
                    pushed: Set[int] = set()
                    while not wanted <= listed | pushed:
                        # Missed orders and live ones may interleave; a gap times out here.
                        try:
                            pushed.add(json.loads(ws.recv(timeout=30))["id"])
                        except TimeoutError:
                            pytest.fail(f"lost in the gap: {wanted - listed - pushed}")
                assert pushed and min(pushed) > last  # ?after=N: nothing the page already has
        finally:
            stop.set()
            poster.join(60)
        app.interrupt()


# -- tls_echo.py --------------------------------------------------------------------


def test_tls_echo(tmp_path: Path) -> None:
    """tls_echo.py serves wss:// with the certificate it is given."""
    trustme = pytest.importorskip("trustme")
    certfile = tmp_path / "server.pem"
    context = write_certfile(trustme.CA(), certfile)
    with example("tls_echo.py", "--certfile", str(certfile)) as server:
        assert server.urls == [f"wss://localhost:{server.port}/"]
        with wsthread.connect(server.urls[0], ssl=context) as ws:
            ws.send("secret")
            assert ws.recv(timeout=5) == "secret"
        server.interrupt()


# -- polling_vs_websocket.py --------------------------------------------------------


def test_polling_vs_websocket_prints_its_table() -> None:
    """A short run delivers every event by all four methods and prints one row each."""
    result = run_ok(
        [
            sys.executable,
            EXAMPLES / "polling_vs_websocket.py",
            "--events",
            "5",
            "--every",
            "0.05",
            "--fast-poll",
            "0.02",
            "--slow-poll",
            "0.1",
        ],
        timeout=60,
    )
    assert "Traceback" not in result.stderr
    rows = {
        line.split("  ")[0].strip(): line.split()
        for line in result.stdout.splitlines()
        if line.startswith(("short poll ", "long polling ", "WebSocket push "))
    }
    assert list(rows) == [
        "short poll 20 ms",
        "short poll 100 ms",
        "long polling",
        "WebSocket push",
    ], result.stdout
    assert "events!" not in result.stdout  # every method delivered every event
    # The tables quoted in the docs and the docstring have today's columns and rows.
    printed = [line for line in result.stdout.splitlines() if line.startswith("method ")]
    for where, path in [
        ("docs/explanation/why.md", EXAMPLES.parent / "docs" / "explanation" / "why.md"),
        ("the script's docstring", EXAMPLES / "polling_vs_websocket.py"),
    ]:
        text = path.read_text(encoding="utf-8")
        quoted = [line.strip() for line in text.splitlines() if line.strip().startswith("method ")]
        assert len(quoted) == 1, where
        assert re.split(r"\s{2,}", quoted[0]) == re.split(r"\s{2,}", printed[0]), where
        labels = [
            re.split(r"\s{2,}", line.strip())[0]
            for line in text.splitlines()
            if re.match(r"\s*(short poll \d+ ms|long polling|WebSocket push)\s{2,}\d", line)
        ]
        expected = ["short poll 50 ms", "short poll 250 ms", "long polling", "WebSocket push"]
        assert labels == expected, where
    long_polling, websocket = rows["long polling"], rows["WebSocket push"]
    # One answered request per event when events are 50 ms apart; on a loaded
    # machine a late poll collects several at once (seen: 2 requests for 5).
    assert 1 <= int(long_polling[2]) <= 5
    assert websocket[2] == "1"  # the handshake
    # bytes per event: the WebSocket frames cost less than any HTTP exchange.
    assert int(websocket[5]) < int(long_polling[5])


def test_polling_vs_websocket_stops_on_ctrl_c() -> None:
    """Interrupted mid-run, the comparison stops at once, with status 0."""
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "polling_vs_websocket.py"), "--events", "1000"],
            preexec_fn=default_sigint,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            assert process.stdout is not None
            assert process.stdout.readline().startswith("comparing")
            process.send_signal(signal.SIGINT)
            out, _ = process.communicate(timeout=20)
            stderr.seek(0)
            errors = stderr.read()
            assert process.returncode == 0, errors
            assert "Traceback" not in errors
            assert out.strip().endswith("interrupted")
        finally:
            reap(process)


# -- broadcast with one stalled client among a hundred healthy ones --------------------


class WarningLog(logging.Handler):
    """Keep the wsthread warnings (with the time they were logged)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: List[Tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Remember one record."""
        self.records.append((time.monotonic(), record.getMessage()))


def read_what_arrived(sock: socket.socket) -> Tuple[List[int], Optional[int], str]:
    """Read a stalled client's socket to the end: message numbers, close code, how it ended."""
    data = bytearray()
    try:
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                ending = "EOF"
                break
            data += chunk
    except ConnectionResetError:
        ending = "RST"
    except socket.timeout:
        ending = "still open"
    numbers: List[int] = []
    close_code = None
    i = 0
    while i + 2 <= len(data):  # server frames: FIN + opcode, unmasked length, payload
        opcode, length, start = data[i] & 0x0F, data[i + 1] & 0x7F, i + 2
        if length == 126:
            length, start = int.from_bytes(data[start : start + 2], "big"), start + 2
        elif length == 127:
            length, start = int.from_bytes(data[start : start + 8], "big"), start + 8
        if start + length > len(data):
            break
        if opcode == 0x2:
            numbers.append(int.from_bytes(data[start : start + 8], "big"))
        elif opcode == 0x8:
            close_code = int.from_bytes(data[start : start + 2], "big")
        i = start + length
    return numbers, close_code, ending


@pytest.mark.slow
@pytest.mark.parametrize("with_stalled", [False, True], ids=["100 healthy", "100 + 1 stalled"])
def test_broadcast_with_one_stalled_client(make_server: ServerFactory, with_stalled: bool) -> None:
    """100 healthy clients get all 300 broadcasts of 16 KiB in order; a stalled one is cut off.

    Run with ``-s`` to see the figures. Server defaults: write_limit 1 MiB,
    write_timeout 10 s. Clients, server and broadcaster share this process.
    """
    clients, messages, size = 100, 300, 16384
    warnings = WarningLog()
    logging.getLogger("wsthread").addHandler(warnings)
    ended: Dict[wsthread.ServerConnection, float] = {}
    handler_done = threading.Condition()

    def listen_only(ws: wsthread.ServerConnection) -> None:
        try:
            for _ in ws:
                pass
        finally:
            with handler_done:
                ended[ws] = time.monotonic()
                handler_done.notify_all()

    server = make_server(listen_only, compression=None)
    url = f"ws://127.0.0.1:{server.port}/"
    healthy = []
    stalled = None
    try:
        healthy = [
            wsthread.connect(url, compression=None, ping_interval=None) for _ in range(clients)
        ]
        if with_stalled:
            stalled = stalled_client(server.port)
        deadline = time.monotonic() + 10
        while len(server.connections) < clients + with_stalled:  # the last handler starting
            assert time.monotonic() < deadline
            time.sleep(0.01)
        received: List[List[int]] = [[] for _ in healthy]
        finished: List[Optional[float]] = [None] * clients

        def consume(index: int, ws: wsthread.ClientConnection) -> None:
            for _ in range(messages):
                received[index].append(int.from_bytes(ws.recv(timeout=60)[:8], "big"))
            finished[index] = time.monotonic()

        consumers = [
            threading.Thread(target=consume, args=(i, ws), daemon=True)
            for i, ws in enumerate(healthy)
        ]
        for consumer in consumers:
            consumer.start()
        filler = bytes(size - 8)
        calls, counts = [], []
        start = time.monotonic()
        for number in range(messages):
            before = time.monotonic()
            counts.append(server.broadcast(number.to_bytes(8, "big") + filler))
            calls.append(time.monotonic() - before)
        sent = time.monotonic()
        for consumer in consumers:
            consumer.join(120)

        assert all(numbers == list(range(messages)) for numbers in received)
        assert not any(ws.closed for ws in healthy)
        done = [t - start for t in finished if t is not None]
        figures = [
            f"{clients} healthy{' + 1 stalled' if with_stalled else ''}, {messages} broadcasts"
            f" of {size // 1024} KiB: all healthy clients got all in order",
            f"broadcast loop {sent - start:.2f} s; one broadcast() median"
            f" {statistics.median(calls) * 1000:.1f} ms, max {max(calls) * 1000:.1f} ms",
            f"healthy clients had everything after median {statistics.median(done):.2f} s,"
            f" last {max(done):.2f} s",
        ]
        if stalled is not None:
            address = stalled.getsockname()

            def stalled_ended() -> List[wsthread.ServerConnection]:
                return [c for c in ended if c.remote_address[:2] == address]

            with handler_done:
                assert handler_done.wait_for(stalled_ended, timeout=30), (
                    "the stalled client is open"
                )
                [connection] = stalled_ended()
            cut = [(t - start, m) for t, m in warnings.records if "closing with" in m]
            assert len(cut) == 1, warnings.records
            assert "1013" in cut[0][1] or "1011" in cut[0][1]
            assert counts[0] == clients + 1 and counts[-1] == clients
            numbers, close_code, ending = read_what_arrived(stalled)
            assert numbers == list(range(len(numbers)))  # a prefix, in order
            figures.append(
                f"stalled client: cut at {cut[0][0]:.2f} s ({cut[0][1].split('] ')[-1]});"
                f" its handler ended at {ended[connection] - start:.2f} s; it had received"
                f" {len(numbers)} messages ({len(numbers) * size / 2**20:.1f} MiB, kernel"
                f" buffers), then {ending}, close frame {close_code}"
            )
        print("\n" + "\n".join(figures))
    finally:
        logging.getLogger("wsthread").removeHandler(warnings)
        for ws in healthy:
            ws.close()
        if stalled is not None:
            stalled.close()
