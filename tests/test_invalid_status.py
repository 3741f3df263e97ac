"""A refused handshake's InvalidStatus carries the response's headers and the start of its body."""

from __future__ import annotations

import socket
import threading
from typing import Any, Iterator

import pytest

import wsthread
from conftest import ServerFactory, read_head
from wsthread import InvalidStatus, http_response


def refuse_401(ws: Any, request: Any) -> Any:
    """process_request: 401 with a reason in the body, and a header that says more."""
    return http_response(
        401, b"token expired\n", headers=[("WWW-Authenticate", 'Bearer error="invalid_token"')]
    )


def test_a_401_with_a_body_shows_the_body(make_server: ServerFactory) -> None:
    """Status, headers and body on the exception; its text shows the status and the body."""
    server = make_server(process_request=refuse_401)
    with pytest.raises(InvalidStatus) as info:
        wsthread.connect(f"ws://127.0.0.1:{server.port}/")
    error = info.value
    assert error.status == 401
    assert error.body == b"token expired\n"
    assert ("WWW-Authenticate", 'Bearer error="invalid_token"') in error.headers
    assert error.response.status == 401 and error.response.body == error.body
    assert str(error) == "server rejected WebSocket connection: HTTP 401: token expired"


def test_only_the_first_64_kib_of_a_large_body_is_kept(make_server: ServerFactory) -> None:
    """A 200 KiB body: 64 KiB kept, the text shows its start and '...'."""
    large = b"why " * 50_000
    server = make_server(process_request=lambda ws, request: http_response(403, large))
    with pytest.raises(InvalidStatus) as info:
        wsthread.connect(f"ws://127.0.0.1:{server.port}/")
    assert info.value.body == large[: 64 * 1024]
    assert str(info.value).endswith("why why why...") and len(str(info.value)) < 300


@pytest.fixture
def raw_http_server() -> Iterator[Any]:
    """A one-shot server on a free port that answers the upgrade with the bytes it is given."""
    listener = socket.create_server(("127.0.0.1", 0))
    answers: list = []  # type: ignore[type-arg]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            read_head(conn)
            answer, close = answers[0]
            conn.sendall(answer)
            if not close:
                conn.recv(1)  # hold the connection open until the client leaves

    def start(answer: bytes, close: bool = True) -> int:
        answers.append((answer, close))
        threading.Thread(target=serve, daemon=True).start()
        return int(listener.getsockname()[1])

    yield start
    listener.close()


def test_a_chunked_body_is_decoded(raw_http_server: Any) -> None:
    """Transfer-Encoding: chunked, from a server that keeps the connection open."""
    port = raw_http_server(
        b"HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\nRetry-After: 30\r\n\r\n"
        b"5\r\nslow \r\n4\r\ndown\r\n0\r\n\r\n",
        close=False,
    )
    with pytest.raises(InvalidStatus) as info:
        wsthread.connect(f"ws://127.0.0.1:{port}/", open_timeout=5)
    assert info.value.body == b"slow down" and info.value.status == 429
    assert ("Retry-After", "30") in info.value.headers
    assert "HTTP 429: slow down" in str(info.value)


def test_a_body_that_ends_with_the_connection(raw_http_server: Any) -> None:
    """No Content-Length: the body is what came before the server closed."""
    port = raw_http_server(b"HTTP/1.1 500 Internal Server Error\r\n\r\nit broke")
    with pytest.raises(InvalidStatus, match="HTTP 500: it broke") as info:
        wsthread.connect(f"ws://127.0.0.1:{port}/")
    assert info.value.body == b"it broke"


def test_a_refusal_without_a_body_reads_as_before(raw_http_server: Any) -> None:
    """Content-Length: 0: no body, the message is the status alone."""
    port = raw_http_server(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", close=False)
    with pytest.raises(InvalidStatus) as info:
        wsthread.connect(f"ws://127.0.0.1:{port}/", open_timeout=5)
    assert str(info.value) == "server rejected WebSocket connection: HTTP 404"
    assert info.value.body == b""
