"""What a `websockets.sync` user reaches for, over real sockets: Unix sockets, ``sock=``,
identifying headers, ``process_response`` and addresses.

Where it makes the test stronger, the other end is the ``websockets`` library
(an implementation independent of wsthread).
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, List, Optional

import pytest
import websockets.sync.client
from websockets.exceptions import InvalidStatus as WebsocketsInvalidStatus

import wsthread
from conftest import ServerFactory, echo_handler, raw_handshake, reap, wait_until
from wsthread import Request, Response, ServerConnection
from wsthread.server import DetachedServer, WebSocketServer

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")

UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


# -- Unix sockets ------------------------------------------------------------


def test_unix_serve_and_unix_connect(tmp_path: Path) -> None:
    """A server on a Unix socket echoes to wsthread's and websockets' Unix clients."""
    path = tmp_path / "ws.sock"
    seen: List[Any] = []

    def handler(ws: ServerConnection) -> None:
        seen.append((ws.client_host, ws.remote_address, ws.local_address))
        echo_handler(ws)

    with wsthread.unix_serve(handler, path, close_timeout=2).start() as server:
        assert server.unix_path == str(path)
        with pytest.raises(ValueError):
            server.port  # noqa: B018 - a Unix socket has no port
        with wsthread.unix_connect(path, "ws://localhost/chat", close_timeout=2) as ws:
            assert ws.remote_address == str(path)
            ws.send("over unix")
            assert ws.recv(timeout=5) == "over unix"
        with websockets.sync.client.unix_connect(str(path), "ws://localhost/") as other:
            other.send(b"\x00\x01")
            assert other.recv(timeout=5) == b"\x00\x01"
    assert seen[0] == ("unix", "", str(path))
    assert not path.exists(), "the socket file is removed on shutdown"


def test_unix_serve_takes_over_a_stale_socket_but_not_a_live_one(tmp_path: Path) -> None:
    """A socket file nobody listens on is replaced; a live server's path is refused."""
    path = tmp_path / "ws.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, as after a crash
    assert path.exists()
    with wsthread.unix_serve(echo_handler, path).start():
        with pytest.raises(OSError):
            wsthread.unix_serve(echo_handler, path)
        with wsthread.unix_connect(path) as ws:
            ws.send("still mine")
            assert ws.recv(timeout=5) == "still mine"


def test_unix_connect_to_nothing_raises(tmp_path: Path) -> None:
    """No server at the path: an OSError, as for a refused TCP connection."""
    with pytest.raises(OSError):
        wsthread.unix_connect(tmp_path / "nobody.sock")


def test_echo_cli_and_interactive_client_on_a_unix_socket(tmp_path: Path) -> None:
    """`python -m wsthread.echo --unix PATH` and `python -m wsthread --unix PATH URI`."""
    path = tmp_path / "echo.sock"
    server = subprocess.Popen(
        [sys.executable, "-m", "wsthread.echo", "--unix", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert f"Unix socket {path}" in line, line
        client = subprocess.run(
            [sys.executable, "-m", "wsthread", "--unix", str(path), "ws://localhost/"],
            input="hello over a file\nsecond line\n",
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert client.returncode == 0, client.stderr
        assert client.stdout.splitlines() == ["< hello over a file", "< second line"]
        assert "code 1000" in client.stderr
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=15) == 0
        assert not path.exists()
    finally:
        reap(server)


# -- sock= --------------------------------------------------------------------

INHERITED = """
import socket, sys, wsthread
listener = socket.socket(fileno=int(sys.argv[1]))  # as systemd passes LISTEN_FDS
server = wsthread.serve(lambda ws: [ws.send(m.upper()) for m in ws], sock=listener)
print("serving", server.port, flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    server.shutdown()
"""


def test_serve_an_inherited_listening_socket() -> None:
    """A child process serves a listening socket it inherited by file descriptor."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    child = subprocess.Popen(
        [sys.executable, "-c", INHERITED, str(listener.fileno())],
        pass_fds=[listener.fileno()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    listener.close()  # the child owns it now
    try:
        assert child.stdout is not None
        assert child.stdout.readline().split() == ["serving", str(port)]
        with wsthread.connect(f"ws://127.0.0.1:{port}/", close_timeout=2) as ws:
            ws.send("from systemd")
            assert ws.recv(timeout=5) == "FROM SYSTEMD"
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=15) == 0
        assert child.stderr is not None
        assert "Traceback" not in child.stderr.read()
    finally:
        reap(child)


def test_serve_a_socket_that_is_bound_but_not_listening() -> None:
    """serve(sock=...) calls listen() on a bound socket; shutdown closes it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    with wsthread.serve(echo_handler, sock=sock, close_timeout=2).start() as server:
        assert server.port == sock.getsockname()[1]
        with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:
            ws.send("bound")
            assert ws.recv(timeout=5) == "bound"
    assert sock.fileno() == -1


def test_connect_and_serve_socket_over_a_socketpair(make_server: ServerFactory) -> None:
    """connect(sock=) on one end of a socketpair, server.serve_socket() on the other."""
    server = make_server(echo_handler)
    client_end, server_end = socket.socketpair()
    thread = threading.Thread(target=server.serve_socket, args=(server_end,))
    thread.start()
    with wsthread.connect("ws://localhost/pair", sock=client_end, close_timeout=2) as ws:
        ws.send("through the pair")
        assert ws.recv(timeout=5) == "through the pair"
        ws.send(b"\xff" * 70000)
        assert ws.recv(timeout=5) == b"\xff" * 70000
        assert wait_until(lambda: len(server.connections) == 1)
        assert server.connections[0].request is not None
        assert server.connections[0].request.target == "/pair"
    thread.join(10)
    assert not thread.is_alive()
    assert client_end.fileno() == -1


def test_a_detached_server_listens_on_nothing_and_serves_what_it_is_given() -> None:
    """DetachedServer: no listening socket, yet serve_socket() and shutdown() work as usual."""
    server = DetachedServer(echo_handler, "127.0.0.1", 0, close_timeout=2)
    assert server.socket.fileno() == -1
    assert_shutdown_ends_a_served_socket(server)


def test_connect_sock_is_closed_when_the_handshake_fails() -> None:
    """A failed handshake over a given socket closes it, as for one connect() made."""
    client_end, server_end = socket.socketpair()
    server_end.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(wsthread.InvalidStatus):
        wsthread.connect("ws://localhost/", sock=client_end, open_timeout=5)
    assert client_end.fileno() == -1
    server_end.close()


def assert_shutdown_ends_a_served_socket(server: WebSocketServer) -> None:
    """A connection served by ``server.serve_socket()`` echoes, then gets 1001 at shutdown."""
    client_end, server_end = socket.socketpair()
    thread = threading.Thread(target=server.serve_socket, args=(server_end,))
    thread.start()
    ws = wsthread.connect("ws://localhost/", sock=client_end, close_timeout=2)
    ws.send("served")
    assert ws.recv(timeout=5) == "served"
    assert wait_until(lambda: len(server.connections) == 1)
    server.shutdown()
    with pytest.raises(wsthread.ConnectionClosed):
        ws.recv(timeout=10)
    assert ws.close_code == 1001
    thread.join(10)
    assert not thread.is_alive()


def test_shutdown_ends_a_socket_being_served() -> None:
    """serve_socket() connections are closed with 1001 by shutdown, like accepted ones."""
    assert_shutdown_ends_a_served_socket(
        wsthread.serve(echo_handler, "127.0.0.1", 0, close_timeout=2)
    )


def test_shutdown_does_not_wait_for_a_serve_socket_thread_that_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """shutdown() waits for serve_socket() to return, not for the caller's thread to end."""

    tidied = threading.Event()

    def slow_to_return(ws: ServerConnection) -> None:
        for message in ws:
            ws.send(message)
        time.sleep(0.3)  # tidying up after the close: shutdown's snapshot sees the thread
        tidied.set()

    server = wsthread.serve(slow_to_return, "127.0.0.1", 0, close_timeout=30)
    client_end, server_end = socket.socketpair()
    returned = threading.Event()
    release = threading.Event()

    def application_thread() -> None:  # like a WSGI server's worker thread
        server.serve_socket(server_end)
        returned.set()
        release.wait(30)

    thread = threading.Thread(target=application_thread)
    thread.start()
    try:
        ws = wsthread.connect("ws://localhost/", sock=client_end, close_timeout=2)
        assert wait_until(lambda: len(server.connections) == 1)
        caplog.set_level(logging.WARNING, logger="wsthread")
        started = time.monotonic()
        server.shutdown()
        # shutdown waited for serve_socket() to finish its handler (it does not
        # wait for the caller's code after it: `returned` is set just after).
        assert tidied.is_set()
        assert returned.wait(10)
        assert time.monotonic() - started < 20  # not for close_timeout (30 s)
        assert not [r for r in caplog.records if "still running" in r.getMessage()]
        with pytest.raises(wsthread.ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 1001
    finally:
        release.set()
        thread.join(10)


# -- identifying headers --------------------------------------------------------


def test_server_header_default_custom_and_none(make_server: ServerFactory) -> None:
    """The 101 and the HTTP answers carry Server: wsthread, another value, or none."""
    default = make_server(echo_handler)
    custom = make_server(echo_handler, server_header="acme/2")
    removed = make_server(echo_handler, server_header=None)
    with websockets.sync.client.connect(f"ws://127.0.0.1:{default.port}/") as ws:
        assert ws.response.headers.get_all("Server") == ["wsthread"]
    with wsthread.connect(f"ws://127.0.0.1:{custom.port}/") as ws:
        assert ws.response.headers.get_all("Server") == ["acme/2"]
    with wsthread.connect(f"ws://127.0.0.1:{removed.port}/") as ws:
        assert ws.response.headers.get_all("Server") == []
    assert b"\r\nServer: acme/2\r\n" in raw_handshake(custom.port, b"GET / HTTP/1.1\r\n\r\n")
    assert b"Server:" not in raw_handshake(removed.port, b"GET / HTTP/1.1\r\n\r\n")


def test_user_agent_header_default_custom_and_none(make_server: ServerFactory) -> None:
    """The client sends User-Agent: wsthread, another value, none, or the caller's own."""
    agents: List[Optional[str]] = []

    def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        agents.append(ws.request.headers.get("User-Agent"))

    server = make_server(handler)
    uri = f"ws://127.0.0.1:{server.port}/"
    for options in (
        {},
        {"user_agent_header": "probe/1"},
        {"user_agent_header": None},
        {"additional_headers": [("user-agent", "mine")]},
    ):
        wsthread.connect(uri, **options).close()  # type: ignore[arg-type]
    assert wait_until(lambda: len(agents) == 4)
    assert agents == ["wsthread", "probe/1", None, "mine"]


# -- process_response -----------------------------------------------------------


def test_process_response_adds_a_header(make_server: ServerFactory) -> None:
    """A header added to the 101 reaches the client; the connection then works."""

    def add_cookie(ws: ServerConnection, request: Request, response: Response) -> None:
        assert response.status == 101 and request.path == "/login"
        response.headers.add("Set-Cookie", f"session=abc; Path={request.path}")

    server = make_server(echo_handler, process_response=add_cookie)
    with websockets.sync.client.connect(f"ws://127.0.0.1:{server.port}/login") as ws:
        assert ws.response.headers["Set-Cookie"] == "session=abc; Path=/login"
        ws.send("in")
        assert ws.recv(timeout=5) == "in"


def test_process_response_replaces_the_response(make_server: ServerFactory) -> None:
    """Another response replaces the 101 and ends the connection; the handler never runs."""
    ran: List[bool] = []

    def handler(ws: ServerConnection) -> None:
        ran.append(True)

    def refuse(ws: ServerConnection, request: Request, response: Response) -> Response:
        return wsthread.http_response(429, b"slow down\n", [("Retry-After", "30")])

    server = make_server(handler, process_response=refuse)
    with pytest.raises(WebsocketsInvalidStatus) as info:
        websockets.sync.client.connect(f"ws://127.0.0.1:{server.port}/")
    response = info.value.response
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "30"
    assert response.headers["Server"] == "wsthread"
    assert response.body == b"slow down\n"
    with pytest.raises(wsthread.InvalidStatus) as ours:
        wsthread.connect(f"ws://127.0.0.1:{server.port}/")
    assert ours.value.status == 429
    assert not ran


def test_process_response_replacing_the_101(make_server: ServerFactory) -> None:
    """A new 101 built from the old one is sent as is and the connection opens."""

    def rebuild(ws: ServerConnection, request: Request, response: Response) -> Response:
        headers = wsthread.Headers(response.headers.items())
        headers.add("X-Rebuilt", "yes")
        return Response(101, "Switching Protocols", headers)

    server = make_server(echo_handler, process_response=rebuild)
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        assert ws.response.headers.get("X-Rebuilt") == "yes"
        ws.send("rebuilt")
        assert ws.recv(timeout=5) == "rebuilt"


def test_process_response_that_raises_answers_500(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing hook gives the client a 500 and the log a traceback."""

    def broken(ws: ServerConnection, request: Request, response: Response) -> None:
        raise RuntimeError("bug in the hook")

    server = make_server(echo_handler, process_response=broken)
    with pytest.raises(wsthread.InvalidStatus) as info:
        wsthread.connect(f"ws://127.0.0.1:{server.port}/")
    assert info.value.status == 500
    assert wait_until(lambda: "process_response failed" in caplog.text)
    assert "bug in the hook" in caplog.text


# -- addresses --------------------------------------------------------------------


def test_local_and_remote_addresses_over_tcp(make_server: ServerFactory) -> None:
    """Each side's local address is the other side's remote address."""
    seen: List[Any] = []

    def handler(ws: ServerConnection) -> None:
        seen.append((ws.local_address, ws.remote_address))
        ws.send("ok")
        for _ in ws:
            pass

    server = make_server(handler)
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        assert ws.recv(timeout=5) == "ok"
        assert ws.remote_address == ("127.0.0.1", server.port)
        client_local = ws.local_address
    assert seen == [(("127.0.0.1", server.port), client_local)]


# -- decode= and text= ------------------------------------------------------------


def test_send_text_and_recv_decode_both_ways(make_server: ServerFactory) -> None:
    """bytes sent as text and str sent as binary arrive as such; decode= converts on receipt."""
    frames: List[Any] = []

    def relay(ws: ServerConnection) -> None:
        for _ in range(4):
            frames.append(ws.recv(decode=False))  # text comes as its UTF-8 bytes
        ws.send(b"caf\xc3\xa9", text=True)  # UTF-8 bytes out as a text frame, untouched
        ws.send("bin", text=False)  # a str out as a binary frame
        ws.send([b"fr", b"ag"], text=True)  # fragments of bytes as one text message
        ws.send(b"\xc3\xa9t\xc3\xa9")
        ws.recv()

    server = make_server(relay)
    with websockets.sync.client.connect(f"ws://127.0.0.1:{server.port}/") as other:
        other.send("é text")
        other.send(b"\x00binary")
        other.send(["fr", "agmented"])
        other.send("")
        assert other.recv(timeout=5) == "café"  # websockets saw a text frame
        assert other.recv(timeout=5) == b"bin"  # ... and a binary one
        assert other.recv(timeout=5) == "frag"
        assert other.recv(timeout=5) == b"\xc3\xa9t\xc3\xa9"
        other.send("done")
    assert frames == ["é text".encode(), b"\x00binary", b"fragmented", b""]
    with wsthread.connect(f"ws://127.0.0.1:{make_server(relay).port}/") as ws:
        ws.send("é text")
        ws.send(b"\x00binary")
        ws.send(["fr", "agmented"])
        ws.send("")
        assert ws.recv(timeout=5, decode=False) == b"caf\xc3\xa9"
        assert ws.recv(timeout=5, decode=True) == "bin"
        assert ws.recv(timeout=5, decode=None) == "frag"
        assert ws.recv(timeout=5, decode=True) == "été"
        ws.send("done")


def test_recv_decode_true_on_binary_that_is_not_utf8(make_server: ServerFactory) -> None:
    """decode=True on binary that is not UTF-8 raises UnicodeDecodeError; the connection goes on."""

    def handler(ws: ServerConnection) -> None:
        ws.send(b"\xff\xfe")
        ws.send("after")
        ws.recv()

    server = make_server(handler)
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        with pytest.raises(UnicodeDecodeError):
            ws.recv(timeout=5, decode=True)
        assert ws.recv(timeout=5) == "after"
        ws.send("bye")


# -- latency and stats ------------------------------------------------------------


def test_latency_after_a_ping(make_server: ServerFactory) -> None:
    """latency is None until a pong comes back, then the round trip of that ping."""
    server = make_server(echo_handler, ping_interval=None)
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/", ping_interval=None) as ws:
        assert ws.latency is None
        started = time.monotonic()
        assert ws.ping().wait(5)
        elapsed = time.monotonic() - started
        assert ws.latency is not None and 0 < ws.latency <= elapsed
        assert ws.stats()["latency"] == ws.latency


def test_latency_from_keepalive_pings(make_server: ServerFactory) -> None:
    """The server's keepalive pings keep each connection's latency up to date."""
    seen: List[Optional[float]] = []

    def handler(ws: ServerConnection) -> None:
        assert wait_until(lambda: ws.latency is not None, timeout=10)
        seen.append(ws.latency)

    server = make_server(handler, ping_interval=0.1, ping_timeout=5)
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/", ping_interval=None) as ws:  # noqa: SIM117
        with pytest.raises(wsthread.ConnectionClosedOK):
            ws.recv(timeout=15)
    assert seen and seen[0] is not None and 0 < seen[0] < 5


def test_connection_stats_count_both_ways(make_server: ServerFactory) -> None:
    """Messages and wire bytes each way, and what waits in the queue."""
    ready = threading.Event()
    release = threading.Event()
    server_stats: List[Any] = []

    def handler(ws: ServerConnection) -> None:
        assert ws.recv() == "a" * 10
        ws.send(b"b" * 200)
        ready.set()
        release.wait(10)
        # "x", then the three pieces of the fragmented message (its frames)
        assert wait_until(lambda: ws.stats()["queued"] == 4)
        server_stats.append(ws.stats())
        ws.recv()
        ws.recv()

    server = make_server(handler, compression=None)
    with wsthread.connect(
        f"ws://127.0.0.1:{server.port}/", compression=None, ping_interval=None
    ) as ws:
        assert ws.stats() == {
            "messages_received": 0,
            "bytes_received": 0,
            "messages_sent": 0,
            "bytes_sent": 0,
            "queued": 0,
            "latency": None,
        }
        ws.send("a" * 10)  # 2 + 4 (mask) + 10 bytes on the wire
        assert ws.recv(timeout=5) == b"b" * 200  # 2 + 2 (length) + 200
        assert ready.wait(5)
        ws.send("x")
        ws.send(["y", "z"])  # one message in three frames: 7 + 7 + 6 bytes
        stats = ws.stats()  # before the server's close frame, and the reply, can come
        release.set()
        assert wait_until(lambda: bool(server_stats))
        assert stats["messages_sent"] == 3 and stats["bytes_sent"] == 16 + 7 + 20
        assert stats["messages_received"] == 1 and stats["bytes_received"] == 204
    assert server_stats[0]["messages_received"] == 3
    assert server_stats[0]["bytes_received"] == 16 + 7 + 20
    assert server_stats[0]["messages_sent"] == 1 and server_stats[0]["bytes_sent"] == 204


def test_server_stats_roll_up_open_and_closed_connections(make_server: ServerFactory) -> None:
    """server.stats() adds up every connection's traffic, the queue and the latencies."""
    hold = threading.Event()

    def handler(ws: ServerConnection) -> None:
        for message in ws:
            if message == "hold":
                hold.wait(10)
            ws.send(message)

    server = make_server(handler, compression=None, ping_interval=None)
    uri = f"ws://127.0.0.1:{server.port}/"
    with wsthread.connect(uri, compression=None, ping_interval=None) as first:
        first.send("12345")  # 2 + 4 + 5 = 11 bytes in, 7 out
        assert first.recv(timeout=5) == "12345"
    # The closed connection's totals stay: its close frames too (8 in, 4 out).
    assert wait_until(lambda: server.stats()["connections"]["closed"] == 1)
    stats = server.stats()
    assert stats["traffic"] == {
        "messages_received": 1,
        "bytes_received": 11 + 8,
        "messages_sent": 1,
        "bytes_sent": 7 + 4,
    }
    assert stats["latency"] == {"max": None, "mean": None} and stats["queued"] == 0
    with wsthread.connect(uri, compression=None, ping_interval=None) as second:
        assert wait_until(lambda: len(server.connections) == 1)
        assert server.connections[0].ping().wait(5)
        second.send("hold")
        second.send("a")
        second.send("b")
        assert wait_until(lambda: server.stats()["queued"] == 2)
        stats = server.stats()
        assert stats["traffic"]["messages_received"] == 1 + 3
        assert stats["traffic"]["bytes_received"] == 19 + 10 + 7 + 7 + 10  # and the 4-byte pong
        latency = server.connections[0].latency
        assert latency is not None
        assert stats["latency"] == {"max": latency, "mean": latency}
        json.dumps(stats)  # ready for a metrics endpoint
        hold.set()
        assert [second.recv(timeout=5) for _ in range(3)] == ["hold", "a", "b"]
