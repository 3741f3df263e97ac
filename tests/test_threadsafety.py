"""The thread-safety contract (docs/reference/threads.md), proved over real sockets.

Many threads use one connection, or one server, at once: sends, receives,
pings, closes and broadcasts. Every message carries its source and sequence
number and a body derived from both, so the checks can tell a message that
arrived whole, in order and once from one that was cut, interleaved with
another, lost or duplicated. Every thread is joined with a generous bound:
a deadlock fails the test instead of hanging it, and a loaded two-core
machine still passes.
"""

from __future__ import annotations

import collections
import inspect
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import pytest

import wsthread
from conftest import ServerFactory, assert_going_away, stalled_client, wait_until
from wsthread.sansio.frames import Frame, Opcode
from wsthread.trace import Tracer

# Generous: the bound says "no deadlock", not "fast" (a loaded 2-core machine).
BOUND = 120.0

Message = Union[str, bytes]


def body(source: str, n: int) -> str:
    """The text of message ``n`` from ``source``: sizes from 0 to ~70 KB, content from both."""
    size = 70_000 if n % 50 == 49 else (n * 37) % 3000
    seed = f"{source}.{n}."
    return f"{source}:{n}:" + (seed * (size // len(seed) + 1))[:size]


def make(source: str, n: int) -> Union[Message, List[Message]]:
    """Message ``n`` of ``source``: text, binary, or fragmented into three pieces."""
    text = body(source, n)
    if n % 7 == 3:  # fragmented: no other message may slip between the pieces
        third = max(1, len(text) // 3)
        return [text[:third], text[third : 2 * third], text[2 * third :]]
    return text.encode() if n % 2 else text


def check(message: Message) -> Tuple[str, int]:
    """The source and number of a received message, after checking it arrived whole."""
    text = message.decode() if isinstance(message, bytes) else message
    source, n, _ = text.split(":", 2)
    assert text == body(source, int(n)), f"message {source}:{n} is corrupt"
    return source, int(n)


def run_threads(targets: List[Callable[[], None]], bound: float = BOUND) -> List[BaseException]:
    """Start one thread per target, join them all within ``bound``; their exceptions."""
    errors: List[BaseException] = []

    def wrap(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # collected and reported by the test
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t), daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + bound
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [thread for thread in threads if thread.is_alive()]
    assert not stuck, f"{len(stuck)} threads still running after {bound}s: a deadlock"
    return errors


def sender(
    ws: Any, source: str, count: int, sent: Optional[List[int]] = None
) -> Callable[[], None]:
    """A thread body sending ``count`` messages of ``source``; ``sent`` counts the successes."""

    def run() -> None:
        for n in range(count):
            try:
                ws.send(make(source, n))
            except wsthread.ConnectionClosed:
                return
            if sent is not None:
                sent[0] += 1

    return run


def receiver(ws: Any, into: List[Tuple[str, int]]) -> Callable[[], None]:
    """A thread body receiving until the connection closes normally, checking each message."""

    def run() -> None:
        for message in ws:
            into.append(check(message))

    return run


def assert_exactly_once_in_order(
    per_thread: List[List[Tuple[str, int]]], expected: Dict[str, int]
) -> None:
    """Each source's messages 0..n-1 arrived exactly once; each thread saw them in order."""
    seen = collections.Counter(item for items in per_thread for item in items)
    duplicated = [item for item, times in seen.items() if times > 1]
    assert not duplicated, f"duplicated: {duplicated[:5]}"
    missing = [(s, n) for s, count in expected.items() for n in range(count) if (s, n) not in seen]
    assert not missing, f"{len(missing)} lost, first {missing[:5]}"
    assert sum(seen.values()) == sum(expected.values())
    for items in per_thread:
        last: Dict[str, int] = {}
        for source, n in items:
            assert n > last.get(source, -1), f"{source}:{n} arrived after {source}:{last[source]}"
            last[source] = n


class CloseCounter(Tracer):
    """A tracer that only counts the close frames each side sends."""

    def __init__(self) -> None:
        super().__init__(None)
        self.counts: Dict[str, int] = collections.Counter()
        self.counts_lock = threading.Lock()

    def handshake(self, direction: str, data: bytes) -> None:
        """Ignore the handshake."""

    def frame(self, direction: str, frame: Frame, mask: Optional[bytes]) -> None:
        """Count close frames by direction."""
        if frame.opcode is Opcode.CLOSE:
            with self.counts_lock:
                self.counts[direction] += 1


# -- send ----------------------------------------------------------------------


@pytest.mark.parametrize("side", ["server", "client"])
def test_send_from_many_threads_keeps_messages_whole_and_in_order(
    make_server: ServerFactory, side: str
) -> None:
    """8 threads send 150 messages each (text, binary, fragmented, up to 70 KB) at once."""
    threads, count = 8, 150
    expected = {f"t{i}": count for i in range(threads)}
    received: List[Tuple[str, int]] = []

    def server_sends(ws: wsthread.ServerConnection) -> None:
        errors = run_threads([sender(ws, f"t{i}", count) for i in range(threads)])
        assert not errors, errors

    def server_receives(ws: wsthread.ServerConnection) -> None:
        receiver(ws, received)()

    server = make_server(server_sends if side == "server" else server_receives)
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        if side == "server":
            receiver(ws, received)()
            assert ws.close_code == 1000
        else:
            errors = run_threads([sender(ws, f"t{i}", count) for i in range(threads)])
            assert not errors, errors
    assert wait_until(lambda: not server.connections, timeout=BOUND)
    assert_exactly_once_in_order([received], expected)


# -- recv ----------------------------------------------------------------------


def test_recv_from_many_threads_hands_each_message_to_one(make_server: ServerFactory) -> None:
    """6 threads in recv() (some with timeouts) share 2,000 messages: each once, in order.

    "In order" as each thread can see it: a thread's successive calls get
    ever later messages. (The order in which two threads *return* is the
    scheduler's.)
    """
    count = 2000

    def burst(ws: wsthread.ServerConnection) -> None:
        for n in range(count):
            ws.send(f"m{n}:" + "x" * (n % 300))

    server = make_server(burst)
    per_thread: List[List[int]] = [[] for _ in range(6)]

    def take(index: int) -> Callable[[], None]:
        def run() -> None:
            while True:
                try:
                    message = ws.recv(timeout=0.05 if index % 2 else None)
                except TimeoutError:
                    continue
                except wsthread.ConnectionClosedOK:
                    return
                head, tail = str(message).split(":", 1)
                n = int(head[1:])
                assert tail == "x" * (n % 300), f"message {n} is corrupt"
                per_thread[index].append(n)

        return run

    with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        errors = run_threads([take(i) for i in range(6)])
    assert not errors, errors
    every = sorted(n for numbers in per_thread for n in numbers)
    assert every == list(range(count)), "a message lost or handed out twice"
    for numbers in per_thread:
        assert numbers == sorted(numbers), "a thread got an earlier message after a later one"


# -- everything at once ----------------------------------------------------------


def test_send_recv_ping_broadcast_then_close_all_at_once(make_server: ServerFactory) -> None:
    """On one connection: 4 senders, 3 receivers, 2 pingers, 2 server threads, 2 broadcasters.

    Then 4 threads close at once. Every message arrives whole and exactly
    once, each receiving thread sees every source in order, every ping is
    answered, only one close frame is sent, and nothing deadlocks.
    """
    senders, server_senders, broadcasters, count = 4, 2, 2, 200
    on_server, on_client = CloseCounter(), CloseCounter()
    handler_done = threading.Event()

    def handler(ws: wsthread.ServerConnection) -> None:
        def echo() -> None:
            for message in ws:
                text = message.decode() if isinstance(message, bytes) else message
                source, n = check(text)
                ws.send(make("echo-" + source, n))

        pushes = [sender(ws, f"push{i}", count) for i in range(server_senders)]
        errors = run_threads([echo, *pushes])
        assert not errors, errors
        handler_done.set()

    server = make_server(handler, trace=on_server)

    def broadcaster(index: int) -> Callable[[], None]:
        def run() -> None:
            for n in range(count):
                message = make(f"b{index}", n)
                if isinstance(message, list):  # broadcast() takes whole messages
                    message = "".join(message)  # type: ignore[arg-type]
                server.broadcast(message)

        return run

    expected = {f"echo-c{i}": count for i in range(senders)}
    expected.update({f"push{i}": count for i in range(server_senders)})
    expected.update({f"b{i}": count for i in range(broadcasters)})
    total = sum(expected.values())
    per_thread: List[List[Tuple[str, int]]] = [[] for _ in range(3)]
    pongs: List[bool] = []

    with wsthread.connect(f"ws://127.0.0.1:{server.port}/", trace=on_client) as ws:
        assert wait_until(lambda: len(server.connections) == 1)

        def pinger() -> None:
            for _ in range(50):
                try:
                    pongs.append(ws.ping().wait(BOUND))
                except wsthread.ConnectionClosed:
                    return

        def closer() -> None:
            # Close once every message is in, racing the other closers.
            wait_until(
                lambda: sum(map(len, per_thread)) >= total and len(pongs) == 100, timeout=BOUND
            )
            ws.close()
            assert ws.closed and ws.close_code == 1000

        errors = run_threads(
            [sender(ws, f"c{i}", count) for i in range(senders)]
            + [receiver(ws, items) for items in per_thread]
            + [pinger, pinger]
            + [broadcaster(i) for i in range(broadcasters)]
            + [closer] * 4
        )
    assert not errors, errors
    assert_exactly_once_in_order(per_thread, expected)
    assert pongs == [True] * 100
    assert handler_done.wait(BOUND)
    # Each side traces what it sends and what it receives: one close frame each way.
    assert on_client.counts == {"client -> server": 1, "server -> client": 1}
    assert on_server.counts == {"client -> server": 1, "server -> client": 1}


def test_close_while_threads_send_loses_nothing_sent(make_server: ServerFactory) -> None:
    """Close amid 6 sending threads: each send either arrived or raised ConnectionClosed."""
    received: List[Tuple[str, int]] = []
    done = threading.Event()

    def record(ws: wsthread.ServerConnection) -> None:
        receiver(ws, received)()
        done.set()

    server = make_server(record)
    sent = [[0] for _ in range(6)]
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:

        def closer() -> None:
            wait_until(lambda: len(received) >= 100, timeout=BOUND)
            ws.close()

        errors = run_threads(
            [sender(ws, f"t{i}", 10_000, sent[i]) for i in range(6)] + [closer] * 3
        )
    assert not errors, errors  # ConnectionClosed is the only way a send may fail
    assert done.wait(BOUND)
    by_source = collections.defaultdict(list)
    for source, n in received:
        by_source[source].append(n)
    for i in range(6):
        numbers = by_source[f"t{i}"]
        assert numbers == list(range(len(numbers))), "a gap or reordering"
        assert len(numbers) == sent[i][0], f"t{i}: {sent[i][0]} sends returned, {len(numbers)} came"
    assert sum(s[0] for s in sent) < 6 * 10_000  # the close really came in the middle


def test_fail_never_waits_for_a_blocked_sender(make_server: ServerFactory) -> None:
    """fail() returns while another thread is stuck in send() to a peer that reads nothing."""
    entered = threading.Event()
    outcome: List[BaseException] = []

    def push(ws: wsthread.ServerConnection) -> None:
        entered.set()
        try:
            while True:
                ws.send(b"x" * 65536)
        except wsthread.ConnectionClosed as exc:
            outcome.append(exc)

    server = make_server(push, write_timeout=None)
    client = stalled_client(server.port)
    try:
        assert entered.wait(BOUND)
        assert wait_until(lambda: len(server.connections) == 1)
        (connection,) = server.connections
        time.sleep(0.5)  # let the sender fill the socket buffers and block
        errors = run_threads([lambda: connection.fail(1011, "giving up")] * 3)
        assert not errors, errors
        assert wait_until(lambda: bool(outcome), timeout=BOUND)
        assert isinstance(outcome[0], wsthread.ConnectionClosed)
    finally:
        client.close()


def test_close_and_pings_end_within_close_timeout_when_the_peer_is_silent(
    make_server: ServerFactory,
) -> None:
    """Against a peer that answers nothing: 3 threads' close() return after about close_timeout.

    Pings that never got their pong are released (their events set) when
    the connection closes.
    """
    outcome: Dict[str, Any] = {}

    def handler(ws: wsthread.ServerConnection) -> None:
        waiters = [ws.ping() for _ in range(3)]
        started = time.monotonic()
        errors = run_threads([ws.close] * 3)
        outcome.update(
            elapsed=time.monotonic() - started,
            errors=errors,
            pings=[w.is_set() for w in waiters],
            closed=ws.closed,
        )

    server = make_server(handler, close_timeout=1)
    client = stalled_client(server.port)  # reads nothing, answers nothing
    try:
        assert wait_until(lambda: "elapsed" in outcome, timeout=BOUND)
    finally:
        client.close()
    assert outcome["errors"] == [] and outcome["closed"]
    assert outcome["pings"] == [True] * 3
    assert 0.9 <= outcome["elapsed"] < 60  # close_timeout, then TCP is dropped; no hang


# -- the server ------------------------------------------------------------------------


def test_broadcast_from_many_threads_never_waits_for_a_stalled_client(
    make_server: ServerFactory,
) -> None:
    """4 threads broadcast past a client that reads nothing (no write timeout, no limit).

    If a broadcast waited for that client it would wait for ever: the bound
    proves it does not. The clients that read get every message whole, in
    each broadcaster's order.
    """
    server = make_server(lambda ws: ws.recv(), write_timeout=None, write_limit=None)
    stalled = stalled_client(server.port)
    readers = [wsthread.connect(f"ws://127.0.0.1:{server.port}/") for _ in range(3)]
    try:
        assert wait_until(lambda: len(server.connections) == 4)

        def broadcaster(index: int) -> Callable[[], None]:
            def run() -> None:
                for n in range(300):
                    server.broadcast(body(f"b{index}", n))

            return run

        errors = run_threads([broadcaster(i) for i in range(4)], bound=60)
        assert not errors, errors
        for reader in readers:
            items = [check(reader.recv(timeout=BOUND)) for _ in range(4 * 300)]
            assert_exactly_once_in_order([items], {f"b{i}": 300 for i in range(4)})
    finally:
        stalled.close()
        for reader in readers:
            reader.close()


def test_shutdown_from_many_threads_while_clients_talk(make_server: ServerFactory) -> None:
    """4 threads call shutdown() at once while 5 clients talk: all return; each client gets 1001."""
    server = make_server()
    clients = [wsthread.connect(f"ws://127.0.0.1:{server.port}/") for _ in range(5)]
    codes: List[Optional[int]] = []

    def chat(ws: wsthread.ClientConnection) -> Callable[[], None]:
        def run() -> None:
            try:
                for n in range(100_000):
                    ws.send(body("c", n % 49))
                    check(ws.recv(timeout=BOUND))
            except wsthread.ConnectionClosed:
                pass
            codes.append(ws.close_code)

        return run

    talking = [threading.Thread(target=chat(ws), daemon=True) for ws in clients]
    for thread in talking:
        thread.start()
    time.sleep(0.3)
    errors = run_threads([server.shutdown] * 4)
    assert not errors, errors
    for thread in talking:
        thread.join(BOUND)
        assert not thread.is_alive()
    assert codes == [1001] * 5
    for ws in clients:
        ws.close()


def test_serve_forever_and_start_refuse_a_second_caller(make_server: ServerFactory) -> None:
    """One accept loop per server: a second serve_forever() or start() raises RuntimeError."""
    server = make_server()  # started: its accept loop runs on a thread of its own
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:  # so it is serving
        ws.send("up")
        assert ws.recv(timeout=BOUND) == "up"
    with pytest.raises(RuntimeError, match="already serving"):
        server.serve_forever()
    with pytest.raises(RuntimeError, match="already started"):
        server.start()


def test_connections_snapshot_while_clients_come_and_go(make_server: ServerFactory) -> None:
    """connections, broadcast() and port from 3 threads while 40 clients connect and leave."""
    server = make_server()
    stop = threading.Event()
    sizes: List[int] = []

    def watch() -> None:
        while not stop.is_set():
            sizes.append(len(server.connections))
            server.broadcast("tick")
            assert server.port > 0

    def churn() -> None:
        try:
            for _ in range(10):
                with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:
                    ws.send("hi")
                    while ws.recv(timeout=BOUND) != "hi":
                        pass
        finally:
            stop.set()

    errors = run_threads([watch, watch, watch, churn, churn, churn, churn])
    assert not errors, errors
    # A closed client may still be registered for a moment while its thread opens
    # the next one: the snapshots only have to be consistent lists, and empty at the end.
    assert sizes and max(sizes) <= 40
    assert wait_until(lambda: not server.connections, timeout=BOUND)


def test_serve_socket_from_many_threads_then_shutdown(make_server: ServerFactory) -> None:
    """4 threads each serve_socket() a socketpair at once; shutdown() ends them all with 1001."""
    server = make_server()
    pairs = [socket.socketpair() for _ in range(4)]
    serving = [
        threading.Thread(target=server.serve_socket, args=(theirs,), daemon=True)
        for _, theirs in pairs
    ]
    for thread in serving:
        thread.start()
    clients = [wsthread.connect("ws://localhost/", sock=ours, close_timeout=2) for ours, _ in pairs]
    try:
        for n, ws in enumerate(clients):
            ws.send(body("p", n))
            assert check(ws.recv(timeout=BOUND)) == ("p", n)
        assert wait_until(lambda: len(server.connections) == 4)
        errors = run_threads([server.shutdown] * 2)
        assert not errors, errors
        for thread in serving:
            thread.join(BOUND)
            assert not thread.is_alive()
        assert_going_away(clients, timeout=BOUND)
    finally:
        for ws in clients:
            ws.close()


def test_recv_streaming_and_recv_at_once_never_split_a_message(make_server: ServerFactory) -> None:
    """One thread iterates recv_streaming(), two call recv(): each message goes whole to one."""
    count = 300

    def fragments(ws: wsthread.ServerConnection) -> None:
        for n in range(count):
            text = body("f", n % 49)
            third = max(1, len(text) // 3)
            ws.send([text[:third], text[third : 2 * third], text[2 * third :]])
        ws.send("end")
        ws.recv()  # until the client closes

    server = make_server(fragments)
    streamed: List[Tuple[str, int]] = []
    received: List[Tuple[str, int]] = []
    done = threading.Event()

    with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:

        def streamer() -> None:
            while not done.is_set():
                try:
                    text = "".join(ws.recv_streaming())  # type: ignore[arg-type]
                except wsthread.ConnectionClosed:
                    return
                if text == "end":
                    done.set()
                    ws.close()  # wakes the takers
                    return
                streamed.append(check(text))

        def taker() -> None:
            while not done.is_set():
                try:
                    message = ws.recv(timeout=0.2)
                except TimeoutError:
                    continue
                except wsthread.ConnectionClosed:
                    return
                if message == "end":
                    done.set()
                    ws.close()  # wakes the streamer, which has no timeout
                    return
                received.append(check(message))

        errors = run_threads([streamer, taker, taker])
    assert not errors, errors
    assert streamed and received  # both ways of receiving took part (about 1:2 here)
    numbers = sorted(n for _, n in streamed + received)
    assert numbers == sorted(n % 49 for n in range(count))  # whole, once each (check() above)


def test_counters_read_from_many_threads_during_traffic(make_server: ServerFactory) -> None:
    """stats(), latency and received_bytes of a connection, and server.stats(), read from
    4 threads while messages and pings flow: no error, and the counters never go down."""
    server = make_server()
    stop = threading.Event()
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:

        def traffic() -> None:
            try:
                for n in range(400):
                    ws.send(body("s", n % 49))
                    check(ws.recv(timeout=BOUND))
                    if n % 20 == 0:
                        ws.ping().wait(BOUND)
            finally:
                stop.set()

        def watch() -> None:
            last: Dict[str, int] = {}
            while not stop.is_set():
                snapshot = ws.stats()
                for key in ("messages_received", "bytes_received", "messages_sent", "bytes_sent"):
                    assert snapshot[key] >= last.get(key, 0), key
                    last[key] = snapshot[key]
                assert ws.received_bytes >= 0
                assert ws.latency is None or ws.latency >= 0
                traffic_now = server.stats()["traffic"]
                assert traffic_now["messages_received"] >= last.get("server", 0)
                last["server"] = traffic_now["messages_received"]

        errors = run_threads([traffic, watch, watch, watch, watch])
        assert not errors, errors
        assert ws.stats()["messages_sent"] >= 400 and ws.latency is not None


# -- the page ------------------------------------------------------------------------

PAGE = Path(__file__).resolve().parent.parent / "docs" / "reference" / "threads.md"
TESTS = Path(__file__).resolve().parent


def page_sections() -> Dict[str, str]:
    """The text of each ``## `` section of the thread-safety page, by heading."""
    text = PAGE.read_text(encoding="utf-8")
    return {
        part.split("\n", 1)[0].strip(): part.split("\n", 1)[1] for part in text.split("\n## ")[1:]
    }


def public_methods(cls: type, own_only: bool) -> List[str]:
    """The public methods and properties of ``cls`` (defined on ``cls`` itself if ``own_only``)."""
    names = []
    for name in dir(cls):
        if name.startswith("_") and name not in ("__iter__", "__enter__", "__exit__"):
            continue
        if own_only and name not in vars(cls):
            continue
        attribute = inspect.getattr_static(cls, name)
        if isinstance(attribute, (property, staticmethod, classmethod)) or callable(attribute):
            names.append(name)
    return names


def rows(section: str) -> List[str]:
    """The first cell of every table row of a section."""
    return [
        line.split("|")[1]
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith("| method") and "---" not in line
    ]


def test_the_page_covers_every_public_method() -> None:
    """Every public method/property of the three classes has a row; every test named exists."""
    sections = page_sections()
    shared = " ".join(rows(sections["ServerConnection and ClientConnection"]))
    expected = {
        "ServerConnection and ClientConnection": (
            shared,
            public_methods(wsthread.Connection, own_only=False),
        ),
        "ServerConnection": (
            " ".join(rows(sections["ServerConnection"])),
            public_methods(wsthread.ServerConnection, own_only=True),
        ),
        "ClientConnection": (
            " ".join(rows(sections["ClientConnection"])),
            public_methods(wsthread.ClientConnection, own_only=True),
        ),
        "WebSocketServer": (
            " ".join(rows(sections["WebSocketServer"])),
            public_methods(wsthread.WebSocketServer, own_only=False),
        ),
    }
    missing = {
        title: [name for name in names if not re.search(rf"`{re.escape(name)}(\(\))?`", cells)]
        for title, (cells, names) in expected.items()
    }
    assert not any(missing.values()), f"add rows to docs/reference/threads.md for {missing}"
    classes = {
        "ServerConnection and ClientConnection": wsthread.Connection,
        "ServerConnection": wsthread.ServerConnection,
        "ClientConnection": wsthread.ClientConnection,
        "WebSocketServer": wsthread.WebSocketServer,
    }
    for title, cls in classes.items():
        for cell in rows(sections[title]):
            for name in re.findall(r"`(\w+)(?:\(\))?`", cell):
                assert hasattr(cls, name), f"threads.md, {title}: {name} no longer exists"
    assert len(expected["WebSocketServer"][1]) >= 20  # the check is not vacuous

    text = PAGE.read_text(encoding="utf-8")
    references = re.findall(r"`(test_\w+\.py)::(test_\w+)`", text)
    assert len(references) >= 30
    for filename, test in references:
        path = TESTS / filename
        assert path.exists(), f"{filename} does not exist"
        assert re.search(rf"^def {test}\(", path.read_text(encoding="utf-8"), re.M), (
            f"{filename}::{test} named in threads.md does not exist"
        )
    for title, section in sections.items():
        if title == "The rules in one paragraph":
            continue
        for row in section.splitlines():
            if row.startswith("| `"):
                assert "::test_" in row, f"{title}: a row names no test: {row[:60]}"
