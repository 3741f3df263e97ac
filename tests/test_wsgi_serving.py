"""serve(wsgi=app), routing by path, and wsthread.testing, over real sockets in this process."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from typing import Any, Callable, Dict, Iterable, List

import pytest
from test_server import shutdown_once_in_hook

import wsthread
from conftest import ServerFactory, assert_going_away, echo_handler, wait_until
from wsthread.server import ServerConnection, WebSocketServer
from wsthread.wsgi import middleware

pytest_plugins = ["wsthread.testing"]


def wsgi_app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """A small WSGI application: /, /body (echoes the body), /empty (204), /stream (no length)."""
    path = environ["PATH_INFO"]
    if path == "/body":
        size = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(size)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [body]
    if path == "/empty":
        start_response("204 No Content", [])
        return [b""]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"one ", b"two"])
    if path == "/environ":
        start_response("200 OK", [("Content-Type", "application/json")])
        keys = ("PATH_INFO", "QUERY_STRING", "REQUEST_METHOD", "HTTP_X_THING", "SERVER_PROTOCOL")
        return [json.dumps({key: environ.get(key) for key in keys}).encode()]
    if path == "/big":  # 64 MiB, more than the socket buffers hold
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (b"x" * 65536 for _ in range(1024))
    if path == "/boom":
        raise RuntimeError("the application failed")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"page"]


def where(ws: ServerConnection) -> None:
    ws.send(f"{ws.request.path}|{ws.request.query}")


def raw_rest(sock: socket.socket) -> bytes:
    """Read from ``sock`` until the server closes it."""
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def raw(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send ``data``, read until the server closes, return what it sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return raw_rest(sock)


def assert_echoes(uri: str, text: str = "hi") -> None:
    """A connection to ``uri`` (an echo handler) gives ``text`` back."""
    with wsthread.connect(uri) as ws:
        ws.send(text)
        assert ws.recv(timeout=5) == text


def refused_status(uri: str) -> int:
    """The HTTP status that answers an upgrade to ``uri`` (which must not be 101)."""
    with pytest.raises(wsthread.InvalidStatus) as refused:
        wsthread.connect(uri)
    return refused.value.status


# -- routing ------------------------------------------------------------------


def test_routes_pick_the_handler_and_unknown_paths_get_404(make_server: ServerFactory) -> None:
    """A mapping routes by exact path; the handler reads path and query; others: 404."""
    server = make_server({"/echo": echo_handler, "/where": where})
    base = f"ws://127.0.0.1:{server.port}"
    with wsthread.connect(f"{base}/where?a=1&b=2") as ws:
        assert ws.recv(timeout=5) == "/where|a=1&b=2"
    assert_echoes(f"{base}/echo")
    assert refused_status(f"{base}/elsewhere") == 404
    assert server.connections == [] or wait_until(lambda: not server.connections)


def test_routes_are_checked_when_the_server_is_made() -> None:
    """A bad route fails at once, not at the first connection."""
    with pytest.raises(ValueError):
        wsthread.serve({"ws": echo_handler}, "127.0.0.1", 0)
    with pytest.raises(TypeError):
        wsthread.serve({"/ws": "not a handler"}, "127.0.0.1", 0)  # type: ignore[dict-item]


# -- serve(wsgi=app) ----------------------------------------------------------


def test_wsgi_and_websocket_on_one_port(make_server: ServerFactory) -> None:
    """Upgrades to a route reach the handler; everything else reaches the WSGI app."""
    server = make_server({"/ws": echo_handler}, wsgi=wsgi_app)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/")
    response = connection.getresponse()
    assert (response.status, response.read()) == (200, b"page")
    assert_echoes(f"ws://127.0.0.1:{server.port}/ws")
    # An upgrade to another path goes to the application (which does not upgrade).
    assert refused_status(f"ws://127.0.0.1:{server.port}/other") == 200
    connection.close()


def test_keep_alive_bodies_head_204_and_unknown_length(make_server: ServerFactory) -> None:
    """One connection carries several requests; bodies, HEAD and 204 are framed right."""
    server = make_server({"/ws": echo_handler}, wsgi=wsgi_app)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("POST", "/body", body=b"x" * 200_000)
    response = connection.getresponse()
    assert response.read() == b"x" * 200_000
    sock = connection.sock
    connection.request("POST", "/body", body=iter([b"chunk", b"ed"]), encode_chunked=True)
    response = connection.getresponse()
    assert response.read() == b"chunked"
    connection.request("HEAD", "/")
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Content-Length") == "4"
    assert response.read() == b""
    connection.request("GET", "/empty")
    response = connection.getresponse()
    assert response.status == 204 and response.read() == b""
    connection.request("GET", "/environ?q=1", headers={"X-Thing": "yes"})
    environ = json.loads(connection.getresponse().read())
    assert environ == {
        "PATH_INFO": "/environ",
        "QUERY_STRING": "q=1",
        "REQUEST_METHOD": "GET",
        "HTTP_X_THING": "yes",
        "SERVER_PROTOCOL": "HTTP/1.1",
    }
    assert connection.sock is sock  # every request above went over one connection
    # No Content-Length: the end of the connection delimits the body.
    connection.request("GET", "/stream")
    response = connection.getresponse()
    assert response.getheader("Connection") == "close"
    assert response.read() == b"one two"
    connection.close()


def test_bad_requests_get_clear_answers(make_server: ServerFactory) -> None:
    """Garbage (a non-ASCII Content-Length too): 400; an oversized body: 413; an app error: 500."""
    server = make_server({"/ws": echo_handler}, wsgi=wsgi_app, max_body_size=1000)
    assert raw(server.port, b"\x00\x01garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    answer = raw(server.port, b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413 ")
    answer = raw(
        server.port,
        b"POST /body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"7d0\r\n" + b"x" * 2000 + b"\r\n0\r\n\r\n",
    )  # fmt: skip
    assert answer.startswith(b"HTTP/1.1 413 ")
    answer = raw(
        server.port,
        b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 400 ")
    for size in (b"0x5", b"+5", b"5_0", b""):  # chunk sizes are hex digits only
        answer = raw(
            server.port,
            b"POST /body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + size + b"\r\nxxxxx\r\n0\r\n\r\n",
        )  # fmt: skip
        assert answer.startswith(b"HTTP/1.1 400 "), size
    # "\xb2" is "²" in latin-1: a digit to str.isdigit(), not to int()
    answer = raw(server.port, b"POST /body HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    answer = raw(server.port, b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 500 ")


def test_slow_and_unfinished_requests_time_out(
    make_server: ServerFactory, thread_baseline: Callable[[], int]
) -> None:
    """Slowloris heads, unfinished bodies and half-sent upgrades are dropped; threads come back."""
    server = make_server({"/ws": echo_handler}, wsgi=wsgi_app, open_timeout=1)
    started = time.monotonic()
    clients: List[socket.socket] = []
    for partial in (
        b"GET / HTTP/1.1\r\nHost: x\r\nX-a: ",  # slowloris: the head never ends
        b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc",  # body never ends
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    ):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(partial)
        clients.append(sock)
    # A normal client is served meanwhile.
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/")
    assert connection.getresponse().read() == b"page"
    connection.close()
    answers = []
    for sock in clients:
        answers.append(raw_rest(sock))
        sock.close()
    # Closed by the server: without an answer, or 408 for the unfinished body.
    assert answers[0] == b"" and answers[2] == b""
    assert answers[1] == b"" or answers[1].startswith(b"HTTP/1.1 408 "), answers[1]
    assert time.monotonic() - started < 8
    assert wait_until(lambda: threading.active_count() <= thread_baseline() + 3, 10)
    assert wait_until(lambda: not connection_threads(), 10)


def connection_threads() -> List[threading.Thread]:
    """wsthread's connection threads still running."""
    return [thread for thread in threading.enumerate() if thread.name.startswith("wsthread-conn")]


def test_a_client_that_stops_reading_a_response_is_dropped_quietly(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A large response to a client that reads nothing ends after write_timeout, no ERROR."""
    server = make_server({"/ws": echo_handler}, wsgi=wsgi_app, write_timeout=1)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        assert wait_until(lambda: not connection_threads(), 20)
    finally:
        sock.close()
    assert not [record for record in caplog.records if record.levelname == "ERROR"]


def test_middleware_inside_wsthread_serving(make_server: ServerFactory) -> None:
    """An app wrapped by the middleware, served by serve(wsgi=): its routes upgrade too."""
    app = middleware(wsgi_app, {"/inner": where})
    try:
        server = make_server({"/ws": echo_handler}, wsgi=app)
        with wsthread.connect(f"ws://127.0.0.1:{server.port}/inner?x=1") as ws:
            assert ws.recv(timeout=5) == "/inner|x=1"
        assert_echoes(f"ws://127.0.0.1:{server.port}/ws")
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", "/")
        assert connection.getresponse().read() == b"page"
        connection.close()
    finally:
        app.shutdown()


def test_shutdown_closes_the_middlewares_websockets_with_1001(make_server: ServerFactory) -> None:
    """serve(wsgi=middleware(...)).shutdown(): the middleware's clients get 1001 too, not 1006."""
    app = middleware(wsgi_app, {"/inner": echo_handler})
    try:
        server = make_server({"/ws": echo_handler}, wsgi=app)
        inner = wsthread.connect(f"ws://127.0.0.1:{server.port}/inner")
        outer = wsthread.connect(f"ws://127.0.0.1:{server.port}/ws")
        for ws in (inner, outer):
            ws.send("open")
            assert ws.recv(timeout=5) == "open"
        server.shutdown()
        assert_going_away([inner, outer])
        assert inner.close_reason == "server shutting down"
        inner.close()
        outer.close()
    finally:
        app.shutdown()


def test_a_middleware_101_sent_as_shutdown_begins_is_followed_by_1001(
    make_server: ServerFactory,
) -> None:
    """serve(wsgi=middleware(...)) shut down in the middleware's handshake: 101, then 1001."""
    box: List[WebSocketServer] = []
    hook = shutdown_once_in_hook(box)
    app = middleware(wsgi_app, {"/inner": echo_handler}, process_response=hook)
    try:
        server = make_server({"/ws": echo_handler}, wsgi=app)
        box.append(server)
        with wsthread.connect(f"ws://127.0.0.1:{server.port}/inner", ping_interval=None) as ws:
            assert_going_away([ws])
        assert ws.close_code == 1001
    finally:
        app.shutdown()


def test_middleware_refuses_where_no_socket_is_handed_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A WSGI server without a socket in the environ: 501 and one ERROR line."""
    app = middleware(wsgi_app, {"/ws": where})
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/ws",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": "waitress",
        "HTTP_HOST": "x",
        "HTTP_UPGRADE": "websocket",
        "HTTP_CONNECTION": "Upgrade",
    }
    statuses: List[str] = []
    for _ in range(3):
        body = b"".join(app(dict(environ), lambda status, headers: statuses.append(status)))
        assert b"gunicorn" in body
    assert statuses == ["501 Not Implemented"] * 3
    errors = [record for record in caplog.records if record.levelname == "ERROR"]
    assert len(errors) == 1 and "waitress" in errors[0].getMessage()
    plain = dict(environ, PATH_INFO="/")
    assert b"".join(app(plain, lambda status, headers: statuses.append(status))) == b"page"
    app.shutdown()


# -- wsthread.testing ---------------------------------------------------------


def test_middleware_refuses_a_tls_socket_of_the_wsgi_server() -> None:
    """gunicorn --certfile hands over an SSLSocket: 501 saying to end TLS in front."""
    import ssl

    app = middleware(wsgi_app, {"/ws": where})
    raw_socket = socket.socket()
    tls_socket = ssl.create_default_context().wrap_socket(
        raw_socket, server_hostname="x", do_handshake_on_connect=False
    )
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/ws",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "x",
        "HTTP_UPGRADE": "websocket",
        "HTTP_CONNECTION": "Upgrade",
        "gunicorn.socket": tls_socket,
    }
    statuses: List[str] = []
    try:
        body = b"".join(app(environ, lambda status, headers: statuses.append(status)))
    finally:
        tls_socket.close()
        app.shutdown()
    assert statuses == ["501 Not Implemented"]
    assert b"TLS" in body


def test_testing_connect_to_a_handler_a_mapping_and_an_app() -> None:
    """connect() reaches a handler, a route of a mapping, and a middleware's route."""
    from wsthread.testing import connect

    with connect(echo_handler) as ws:
        ws.send(b"\x00bytes")
        assert ws.recv(timeout=5) == b"\x00bytes"
    with connect({"/a": where}, "/a?k=v") as ws:
        assert ws.recv(timeout=5) == "/a|k=v"
    with pytest.raises(wsthread.InvalidStatus) as not_found:
        connect({"/a": where}, "/b")
    assert not_found.value.status == 404
    app = middleware(wsgi_app, {"/ws": echo_handler})
    with connect(app, "/ws") as ws:
        ws.send("through the middleware")
        assert ws.recv(timeout=5) == "through the middleware"
    app.shutdown()


def test_testing_connect_passes_server_options() -> None:
    """server_options reach the server side: a refused origin gets 403."""
    from wsthread.testing import connect

    options = {"origins": ["https://good.example"]}
    with pytest.raises(wsthread.InvalidStatus) as refused:
        connect(echo_handler, origin="https://evil.example", server_options=options)
    assert refused.value.status == 403
    with connect(echo_handler, origin="https://good.example", server_options=options) as ws:
        ws.send("ok")
        assert ws.recv(timeout=5) == "ok"


def test_handler_errors_reach_the_test_client() -> None:
    """A handler that raises closes the test connection with 1011, as in production."""
    from wsthread.testing import connect

    def broken(ws: ServerConnection) -> None:
        raise ValueError("bug")

    with connect(broken) as ws, pytest.raises(wsthread.ConnectionClosedError) as closed:
        ws.recv(timeout=5)
    assert closed.value.code == 1011


def test_the_ws_connect_fixture(ws_connect: Callable[..., Any]) -> None:
    """The pytest plugin's fixture opens connections and closes them after the test."""
    ws = ws_connect(echo_handler)
    ws.send("fixture")
    assert ws.recv(timeout=5) == "fixture"
    assert len(ws.server.connections) == 1
