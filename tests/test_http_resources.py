"""Bounded HTTP resources on serve(wsgi=...), over real sockets: streaming, deadlines, memory.

Bodies reach the application as they arrive; a client that trickles bytes
is dropped by the minimum rate (each 64 KiB within ``open_timeout`` of
waiting), whatever it sent before; a chunked body that passes
``max_body_size`` mid-stream is refused; ``max_http_connections`` holds
kept-alive connections too. The memory test runs the server in a
subprocess and reads its ``VmRSS``.
"""

from __future__ import annotations

import http.client
import selectors
import socket
import subprocess
import sys
import sysconfig
import textwrap
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional

import pytest

from conftest import ServerFactory, echo_handler, wait_until

CHUNKED_HEAD = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_a_chunked_body_reaches_the_app_before_it_has_all_arrived(
    make_server: ServerFactory,
) -> None:
    """The app reads 100 KiB of a chunked body while the client holds back its end."""
    got_first: threading.Event = threading.Event()
    seen: Dict[str, Any] = {}

    def app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        stream = environ["wsgi.input"]
        first = stream.read(100 * 1024)
        seen.update(
            length=environ.get("CONTENT_LENGTH"),
            terminated=environ.get("wsgi.input_terminated"),
            first=len(first),
        )
        got_first.set()
        rest = stream.read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"%d" % (len(first) + len(rest))]

    server = make_server({"/ws": echo_handler}, wsgi=app)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        head = CHUNKED_HEAD.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
        sock.sendall(head + b"30000\r\n" + b"a" * 0x30000 + b"\r\n")
        # Nothing more until the app has read its first 100 KiB: buffering would deadlock here.
        assert got_first.wait(10)
        sock.sendall(b"5\r\nhello\r\n0\r\n\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"%d" % (0x30000 + 5))
    assert seen == {"length": None, "terminated": True, "first": 100 * 1024}


def test_a_short_chunked_body_is_given_a_content_length(make_server: ServerFactory) -> None:
    """A chunked body ending within 64 KiB is read first: CONTENT_LENGTH, for apps that need one."""

    def app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH", 0)))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    server = make_server({"/ws": echo_handler}, wsgi=app)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("POST", "/", body=iter([b"one ", b"two"]), encode_chunked=True)
    assert connection.getresponse().read() == b"one two"
    connection.request("GET", "/")  # and the connection goes on
    assert connection.getresponse().status == 200
    connection.close()


def test_a_chunked_body_past_max_body_size_mid_stream_is_413_and_closed(
    make_server: ServerFactory,
) -> None:
    """The size line that passes the limit ends the body: 413 to the reading app, then close."""
    read: List[int] = []

    def app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        stream = environ["wsgi.input"]
        while True:
            piece = stream.read(8192)
            if not piece:
                break
            read.append(len(piece))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"all read"]

    server = make_server({"/ws": echo_handler}, wsgi=app, max_body_size=200_000)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        chunk = b"10000\r\n" + b"z" * 0x10000 + b"\r\n"  # 64 KiB each: the fourth passes the limit
        sock.sendall(CHUNKED_HEAD + chunk * 3)
        try:
            sock.sendall(chunk * 2 + b"0\r\n\r\n" + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        except OSError:
            pass  # the server may have closed already
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 413 ") and answer.count(b"HTTP/1.1") == 1, answer[:200]
    assert sum(read) == 3 * 0x10000


def test_a_body_trickled_after_a_fast_start_is_closed_by_its_deadline(
    make_server: ServerFactory,
) -> None:
    """1 MiB at once, then a byte every 0.2 s: 408 within open_timeout of the trickle's start.

    Each byte arrives well within ``open_timeout`` of the last, so a
    per-read timeout alone never ends this request.
    """

    def app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        stream = environ["wsgi.input"]
        while stream.read(65536):
            pass
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    server = make_server({"/ws": echo_handler}, wsgi=app, open_timeout=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n")
        sock.sendall(b"b" * 2**20)
        trickle_started = time.monotonic()
        sock.settimeout(0.2)
        answer = b""
        while time.monotonic() - trickle_started < 10:
            try:
                sock.send(b"b")
                data = sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            answer += data
        took = time.monotonic() - trickle_started
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert took < 5, took  # open_timeout=1 of waiting, then the answer


def test_kept_alive_connections_count_against_max_http_connections(
    make_server: ServerFactory,
) -> None:
    """Two kept-alive HTTP connections fill max_http_connections=2: the third gets 503."""

    def app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"page"]

    server = make_server({"/ws": echo_handler}, wsgi=app, max_http_connections=2)
    kept = []
    for _ in range(2):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", "/")
        assert connection.getresponse().read() == b"page"
        kept.append(connection)
    assert server.http_connections.count == 2
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 503 ")
    kept.pop().close()
    assert wait_until(lambda: server.http_connections.count == 1)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/")
    assert connection.getresponse().read() == b"page"
    connection.close()
    kept.pop().close()
    assert wait_until(lambda: server.http_connections.count == 0)


SERVER = textwrap.dedent(
    """
    import sys
    import wsthread

    def app(environ, start_response):
        stream = environ["wsgi.input"]
        total = 0
        while True:
            piece = stream.read(65536)
            if not piece:
                break
            total += len(piece)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"read %d" % total]

    server = wsthread.serve({"/ws": lambda ws: None}, "127.0.0.1", 0, wsgi=app, open_timeout=2)
    server.start()
    print(server.port, flush=True)
    sys.stdin.read()
    server.shutdown()
    """
)


def vm_rss_kb(pid: int) -> int:
    """A process's VmRSS, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.timeout(60)
def test_slow_posts_and_half_sent_chunked_bodies_are_dropped_and_memory_stays_bounded() -> None:
    """200 POSTs trickling a byte every 0.5 s and 8 chunked bodies of 8 MiB sent but 64 KiB.

    All are closed by their deadline (open_timeout=2 of waiting), the
    server's RSS grows by far less than the 64 MB the bodies would take if
    buffered, and a legitimate request meanwhile is answered.
    """
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert server.stdin is not None and server.stdout is not None
    try:
        port = int(server.stdout.readline())
        time.sleep(0.3)
        baseline = vm_rss_kb(server.pid)
        peak = baseline
        size = 8 * 2**20
        burst = {
            "slow": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
            "chunked": CHUNKED_HEAD + b"%x\r\n" % size + b"c" * (size - 65536),
        }
        clients = []
        for kind, count in (("slow", 200), ("chunked", 8)):
            for _ in range(count):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                sock.setblocking(False)
                clients.append({"sock": sock, "left": memoryview(burst[kind]), "closed": None})
        started = time.monotonic()
        selector = selectors.DefaultSelector()
        for each in clients:
            selector.register(each["sock"], selectors.EVENT_READ | selectors.EVENT_WRITE, each)
        stalled: Dict[int, float] = {}
        next_byte = started + 0.5
        legit: Optional[bytes] = None
        while len(stalled) < len(clients) or any(c["closed"] is None for c in clients):
            now = time.monotonic()
            assert now - started < 40, "some connections were never closed"
            for key, events in selector.select(0.05):
                each = key.data
                if events & selectors.EVENT_READ:
                    try:
                        data = each["sock"].recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        each["closed"] = now
                        selector.unregister(each["sock"])
                        each["sock"].close()
                        stalled.setdefault(id(each), now)
                        continue
                if events & selectors.EVENT_WRITE and each["left"]:
                    try:
                        sent = each["sock"].send(each["left"][: 1 << 20])
                    except BlockingIOError:
                        sent = 0
                    each["left"] = each["left"][sent:]
                    if not each["left"]:
                        stalled[id(each)] = now
                        selector.modify(each["sock"], selectors.EVENT_READ, each)
            if now >= next_byte:  # the trickle: a byte each, every 0.5 s
                next_byte = now + 0.5
                for each in clients:
                    if each["closed"] is None and not each["left"]:
                        try:
                            each["sock"].send(b"x")
                        except OSError:
                            pass
                peak = max(peak, vm_rss_kb(server.pid))
                if legit is None and len(stalled) == len(clients):  # all held: a real client
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    connection.request("GET", "/")
                    legit = connection.getresponse().read()
                    connection.close()
        # Each closed within open_timeout (2 s) of waiting after its last burst, plus slack.
        waits = [c["closed"] - stalled[id(c)] for c in clients]
        print(f"closed {min(waits):.2f}-{max(waits):.2f} s after their last burst; ", end="")
        print(f"RSS {baseline} kB -> {peak} kB")  # shown with pytest -s
        assert max(waits) < 5, waits
        assert legit == b"read 0"
        growth_mb = (peak - baseline) / 1024
        # A free-threaded build gives each thread heaps of its own: 86 MB here on 3.13t
        # for these 208 connection threads (docs/howto/free-threading.md, the memory cost).
        limit = 120 if sysconfig.get_config_var("Py_GIL_DISABLED") else 40
        assert growth_mb < limit, growth_mb
    finally:
        server.stdin.close()
        server.wait(20)
