"""No CR/LF from an application or a peer reaches the wire, and WSGI bodies keep to Content-Length.

Each injection path of issue 27, over a real socket: the 101's
``extra_headers`` (static: refused at ``serve()``; computed, from the
attacker's query: a 500), ``http_response(headers=...)`` and a bad
``Response`` from the hooks, a WSGI app's ``start_response`` status and
headers, and the client's ``additional_headers``, ``origin``,
``user_agent_header`` and URI. Each asserts that no injected header line
appears in what the peer reads.
"""

from __future__ import annotations

import socket
import urllib.parse
from typing import Any, Callable, Dict, Iterator, List

import pytest

import wsthread
from wsthread import Request, Response, http_response

EVIL = "a\r\nSet-Cookie: evil=1"
UPGRADE = (
    "GET {target} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def echo(ws: Any) -> None:
    for message in ws:
        ws.send(message)


def exchange(port: int, data: bytes, until_close: bool = False) -> bytes:
    """Send ``data`` raw; read the response head (or everything until the server closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while until_close or b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


@pytest.fixture
def serve() -> Iterator[Callable[..., wsthread.WebSocketServer]]:
    servers: List[wsthread.WebSocketServer] = []

    def start(handler: Any = echo, **options: Any) -> wsthread.WebSocketServer:
        server = wsthread.serve(handler, "127.0.0.1", 0, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()


def test_static_extra_headers_refused_at_serve() -> None:
    """A CR/LF in a static extra header raises ValueError at ``serve()``, before any client."""
    with pytest.raises(ValueError, match="header X"):
        wsthread.serve(echo, "127.0.0.1", 0, extra_headers=[("X", EVIL)])


def test_extra_headers_computed_from_the_query_give_500(serve: Any) -> None:
    """A remote attacker's CR/LF, relayed by a computed extra_headers, gets a 500, not a cookie."""

    def from_query(connection: Any, request: Request) -> Dict[str, str]:
        return {"X-Name": urllib.parse.unquote(request.query.partition("=")[2])}

    server = serve(extra_headers=from_query)
    target = "/?name=" + urllib.parse.quote(EVIL)
    head = exchange(server.port, UPGRADE.format(target=target).encode())
    assert head.startswith(b"HTTP/1.1 500 ")
    assert b"evil" not in head


def test_http_response_headers_from_process_request_give_500(serve: Any) -> None:
    """``http_response(headers=[bad])`` raises in the hook: the client gets 500 and no injection."""
    server = serve(process_request=lambda c, r: http_response(200, b"hi", [("X", EVIL)]))
    head = exchange(server.port, UPGRADE.format(target="/").encode())
    assert head.startswith(b"HTTP/1.1 500 ") and b"evil" not in head


def test_a_response_with_a_bad_reason_gives_500(serve: Any) -> None:
    """A hand-made ``Response`` whose reason holds CR/LF is not sent: 500 instead."""
    server = serve(process_request=lambda c, r: Response(200, "OK\r\nSet-Cookie: evil=1"))
    head = exchange(server.port, UPGRADE.format(target="/").encode())
    assert head.startswith(b"HTTP/1.1 500 ") and b"evil" not in head


def test_process_response_header_idioms(serve: Any) -> None:
    """websockets' idioms work: ``request.headers[...]``, ``response.headers[...] = v``, ``del``."""
    seen: List[str] = []

    def process_request(connection: Any, request: Request) -> None:
        seen.append(request.headers["Authorization"])

    def process_response(connection: Any, request: Request, response: Response) -> None:
        response.headers["X-Added"] = "yes"
        del response.headers["Server"]

    server = serve(process_request=process_request, process_response=process_response)
    request = UPGRADE.format(target="/").replace("Host: a\r\n", "Host: a\r\nAuthorization: t\r\n")
    head = exchange(server.port, request.encode())
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"\r\nX-Added: yes\r\n" in head and b"\r\nServer:" not in head
    assert seen == ["t"]


def test_process_response_injection_gives_500(serve: Any) -> None:
    """``response.headers["X"] = bad`` raises in process_response: 500, nothing injected."""

    def process_response(connection: Any, request: Request, response: Response) -> None:
        response.headers["X"] = EVIL

    server = serve(process_response=process_response)
    head = exchange(server.port, UPGRADE.format(target="/").encode())
    assert head.startswith(b"HTTP/1.1 500 ") and b"evil" not in head


@pytest.mark.parametrize("where", ["status", "header"])
def test_wsgi_start_response_injection_gives_500(serve: Any, where: str) -> None:
    """A WSGI app's CR/LF in its status or a header raises in start_response: wsgiref's 500."""

    def app(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        if where == "status":
            start_response("200 OK\r\nSet-Cookie: evil=1", [])
        else:
            start_response("200 OK", [("X", EVIL)])
        return [b"hi"]

    server = serve({"/ws": echo}, wsgi=app)
    head = exchange(server.port, b"GET /page HTTP/1.1\r\nHost: a\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 ") and b"evil" not in head


@pytest.mark.parametrize(
    "body", [[b"hi", b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"], [b"shor"]]
)
def test_wsgi_body_never_passes_content_length(serve: Any, body: List[bytes]) -> None:
    """An over-long body is cut at Content-Length, a short one ends the connection: one answer."""

    def app(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        start_response("200 OK", [("Content-Length", "2" if len(body) == 2 else "10")])
        return body

    server = serve({"/ws": echo}, wsgi=app)
    pipelined = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n"
    received = exchange(server.port, pipelined, until_close=True)
    assert received.count(b"HTTP/1.1 ") == 1
    assert b"evil" not in received


@pytest.mark.parametrize(
    "option",
    [
        {"additional_headers": [("X", EVIL)]},
        {"additional_headers": {"X": EVIL}},
        {"origin": "http://a" + EVIL},
        {"user_agent_header": "agent" + EVIL},
    ],
)
def test_client_options_refused_at_connect(serve: Any, option: Dict[str, Any]) -> None:
    """The client's headers are checked when ``connect()`` is called: ValueError, nothing sent."""
    requests: List[Request] = []
    server = serve(process_request=lambda c, r: requests.append(r))
    with pytest.raises(ValueError):
        wsthread.connect(f"ws://127.0.0.1:{server.port}/", open_timeout=5, **option)
    assert requests == []


@pytest.mark.parametrize(("path", "expected"), [("/a b", "/a%20b"), ("/a\r\nX: y", "/aX:%20y")])
def test_client_uri_is_percent_encoded(serve: Any, path: str, expected: str) -> None:
    """A space in the URI's path is percent-encoded; CR and LF are dropped (as urlsplit does)."""
    targets: List[str] = []
    server = serve(process_request=lambda c, r: targets.append(r.target))
    with wsthread.connect(f"ws://127.0.0.1:{server.port}{path}", open_timeout=5) as ws:
        ws.send("x")
        assert ws.recv(timeout=5) == "x"
    assert targets == [expected]
