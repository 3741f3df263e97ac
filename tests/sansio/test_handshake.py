"""The HTTP/1.1 opening handshake, parsed and built without sockets (RFC 6455 §4)."""

from __future__ import annotations

from http import HTTPStatus
from typing import List, Optional, Tuple

import pytest

from wsthread.exceptions import (
    InvalidHandshake,
    InvalidMethod,
    InvalidRequest,
    InvalidResponse,
    InvalidStatus,
    InvalidVersion,
    RequestTooLarge,
    UpgradeRequired,
)
from wsthread.sansio.handshake import (
    Headers,
    Request,
    RequestParser,
    Response,
    ResponseParser,
    accept_key,
    accept_response,
    build_request,
    error_response,
    generate_key,
    header_has_token,
    parse_tokens,
    validate_request,
    validate_response,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="

BROWSER_REQUEST = (
    b"GET /chat?room=1 HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: keep-alive, Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Cookie: session=abc; theme=dark\r\n"
    b"\r\n"
)


def parse(data: bytes, **limits: int) -> Optional[Request]:
    """Feed ``data`` in one chunk."""
    return RequestParser(**limits).feed(data)


def test_accept_key_matches_rfc_example() -> None:
    """The RFC 6455 §1.3 example key gives the RFC's accept value."""
    assert accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_generate_key_is_16_random_bytes() -> None:
    """Generated keys are base64 of 16 bytes and differ each time."""
    import base64

    first, second = generate_key(), generate_key()
    assert len(base64.b64decode(first)) == 16
    assert first != second


def test_browser_request_parses() -> None:
    """A typical browser request yields method, path, query, headers and cookies."""
    request = parse(BROWSER_REQUEST)
    assert request is not None
    assert (request.method, request.target, request.version) == ("GET", "/chat?room=1", "HTTP/1.1")
    assert request.path == "/chat" and request.query == "room=1"
    assert request.headers.get("sec-websocket-key") == KEY
    assert request.cookies == {"session": "abc", "theme": "dark"}
    assert validate_request(request) == KEY


def test_one_chunk_and_byte_by_byte_agree() -> None:
    """Feeding the request in one chunk or one byte at a time gives the same request."""
    parser = RequestParser()
    results: List[Optional[Request]] = [parser.feed(bytes([b])) for b in BROWSER_REQUEST]
    assert results[:-1] == [None] * (len(BROWSER_REQUEST) - 1)
    assert results[-1] == parse(BROWSER_REQUEST)


def test_trailing_data_is_kept() -> None:
    """Bytes after the head (the first frames) are handed on as trailing_data."""
    parser = RequestParser()
    assert parser.feed(BROWSER_REQUEST + b"\x81\x85abcd") is not None
    assert parser.trailing_data == b"\x81\x85abcd"


def test_headers_are_case_insensitive_and_ordered() -> None:
    """Headers keep order and repeated names; lookups ignore case."""
    headers = Headers([("A", "1"), ("b", "2"), ("a", "3")])
    assert headers.get("a") == "1" and headers.get_all("A") == ["1", "3"]
    assert "B" in headers and "c" not in headers
    assert list(headers) == ["A", "b", "a"] and len(headers) == 3
    assert headers.get("missing", "x") == "x"


def test_tokens() -> None:
    """Comma-separated tokens are split and compared without case."""
    assert parse_tokens(" keep-alive ,Upgrade,, ") == ["keep-alive", "Upgrade"]
    headers = Headers([("Connection", "keep-alive"), ("Connection", "UPGRADE")])
    assert header_has_token(headers, "connection", "upgrade")
    assert not header_has_token(headers, "connection", "close")


def request_with(
    replace: Optional[bytes] = None, by: bytes = b"", start: bytes = b"GET / HTTP/1.1"
) -> Request:
    """The browser request with one line replaced (or removed) and another start line."""
    lines = BROWSER_REQUEST.split(b"\r\n")
    lines[0] = start
    if replace is not None:
        lines = [by if line.startswith(replace) else line for line in lines]
        lines = [line for line in lines[:-2] if line] + [b"", b""]
    result = parse(b"\r\n".join(lines))
    assert result is not None
    return result


@pytest.mark.parametrize(
    "request_, error, status",
    [
        (request_with(start=b"POST / HTTP/1.1"), InvalidMethod, 405),
        (request_with(start=b"GET / HTTP/1.0"), InvalidRequest, 400),
        (request_with(b"Upgrade:"), UpgradeRequired, 426),
        (request_with(b"Upgrade:", b"Upgrade: h2c"), UpgradeRequired, 426),
        (request_with(b"Connection:", b"Connection: keep-alive"), InvalidRequest, 400),
        (request_with(b"Host:"), InvalidRequest, 400),
        (request_with(b"Sec-WebSocket-Version:"), InvalidVersion, 426),
        (request_with(b"Sec-WebSocket-Version:", b"Sec-WebSocket-Version: 8"), InvalidVersion, 426),
        (request_with(b"Sec-WebSocket-Key:"), InvalidRequest, 400),
        (request_with(b"Sec-WebSocket-Key:", b"Sec-WebSocket-Key: abc"), InvalidRequest, 400),
        (request_with(b"Sec-WebSocket-Key:", b"Sec-WebSocket-Key: !!!!"), InvalidRequest, 400),
    ],
    ids=[
        "post",
        "http10",
        "no-upgrade",
        "other-upgrade",
        "no-connection",
        "no-host",
        "no-version",
        "version-8",
        "no-key",
        "short-key",
        "non-base64-key",
    ],
)
def test_validation_failures(request_: Request, error: type, status: int) -> None:
    """Each broken requirement raises its own exception with its HTTP status."""
    with pytest.raises(error) as info:  # type: ignore[var-annotated]
        validate_request(request_)
    assert info.value.status == status


def test_version_error_advertises_13() -> None:
    """The 426 for a wrong version carries Sec-WebSocket-Version: 13."""
    with pytest.raises(InvalidVersion) as info:
        validate_request(request_with(b"Sec-WebSocket-Version:", b"Sec-WebSocket-Version: 8"))
    response = error_response(info.value).serialize()
    assert response.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    assert b"\r\nSec-WebSocket-Version: 13\r\n" in response


def test_request_line_too_long_before_crlf() -> None:
    """A request line over the limit raises 414 before its end has arrived."""
    parser = RequestParser(max_line=100)
    with pytest.raises(RequestTooLarge) as info:
        parser.feed(b"GET /" + b"a" * 200)
    assert info.value.status == HTTPStatus.REQUEST_URI_TOO_LONG


def test_header_line_too_long() -> None:
    """A header line over the limit raises 431, even before its CRLF."""
    parser = RequestParser(max_line=100)
    parser.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(RequestTooLarge) as info:
        parser.feed(b"X-Long: " + b"b" * 200)
    assert info.value.status == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE


def test_too_many_headers() -> None:
    """More header lines than max_headers raise 431."""
    data = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(11)) + b"\r\n"
    with pytest.raises(RequestTooLarge) as info:
        parse(data, max_headers=10)
    assert info.value.status == 431


def test_too_many_header_bytes() -> None:
    """Header bytes over max_header_bytes raise 431."""
    data = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 50) for i in range(40))
    with pytest.raises(RequestTooLarge):
        parse(data, max_header_bytes=1000)


def test_parser_buffer_stays_bounded() -> None:
    """Dribbling an endless header never buffers much more than max_line."""
    parser = RequestParser(max_line=1000)
    parser.feed(b"GET / HTTP/1.1\r\nX: ")
    with pytest.raises(RequestTooLarge):
        for _ in range(10_000):
            parser.feed(b"a" * 10)
            assert len(parser._head._buffer) <= 1010


@pytest.mark.parametrize(
    "data",
    [
        b"\x16\x03\x01\x00\xa5",  # a TLS ClientHello
        b"GET / HTTP/1.1\nHost: x\n\n",  # bare LF
        b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",  # obs-fold
        b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET /\r\n\r\n",
        b"GET / HTTP/1.1 extra\r\n\r\n",
        b"GET / FTP/1.1\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\n\r\n",
    ],
    ids=[
        "tls",
        "bare-lf",
        "obs-fold",
        "no-colon",
        "space-in-name",
        "two-parts",
        "four-parts",
        "bad-version",
        "nul",
    ],
)
def test_malformed_requests_are_400(data: bytes) -> None:
    """Malformed request heads raise InvalidRequest (400)."""
    with pytest.raises(InvalidRequest) as info:
        parse(data)
    assert info.value.status == 400


def test_tls_detected_on_first_byte() -> None:
    """A TLS record is recognised from its first byte alone."""
    with pytest.raises(InvalidRequest, match="TLS"):
        RequestParser().feed(b"\x16")


def test_accept_response_bytes() -> None:
    """The 101 response carries Upgrade, Connection, the accept key and options."""
    response = accept_response(
        KEY, subprotocol="chat", extensions="permessage-deflate", extra_headers=[("X-A", "b")]
    )
    assert response.serialize() == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"Sec-WebSocket-Protocol: chat\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
        b"X-A: b\r\n"
        b"\r\n"
    )


@pytest.mark.parametrize(
    "error, headers",
    [
        (InvalidMethod("m"), [("Allow", "GET")]),
        (UpgradeRequired("m"), [("Upgrade", "websocket"), ("Connection", "Upgrade")]),
        (InvalidVersion("m"), [("Sec-WebSocket-Version", "13")]),
        (InvalidRequest("m"), []),
        (InvalidRequest("m", headers=[("Retry-After", "1")]), [("Retry-After", "1")]),
    ],
    ids=["405", "426-upgrade", "426-version", "400", "400-given"],
)
def test_handshake_errors_carry_the_headers_their_answer_needs(
    error: InvalidHandshake, headers: List[Tuple[str, str]]
) -> None:
    """Each error class adds its own headers (Allow, Upgrade, Sec-WebSocket-Version)."""
    assert error.headers == headers
    head = error_response(error).serialize().split(b"\r\n\r\n")[0]
    for name, value in headers:
        assert f"\r\n{name}: {value}\r\n".encode() in head + b"\r\n"


def test_error_response_is_one_line_of_text() -> None:
    """An error response has the status, a text body and a matching Content-Length."""
    response = error_response(InvalidMethod("method POST not allowed: use GET"))
    data = response.serialize()
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert body == b"method POST not allowed: use GET\n"
    assert b"Content-Length: %d" % len(body) in head
    assert b"Allow: GET" in head and b"Connection: close" in head


def test_client_request_round_trip() -> None:
    """A client's request parses and validates on the server side."""
    key = generate_key()
    request = build_request(
        "::1", 8765, "/x?y=1", key, secure=False, origin="http://o", subprotocols=["a", "b"]
    )
    parsed = parse(request.serialize())
    assert parsed is not None
    assert parsed.headers.get("Host") == "[::1]:8765"
    assert parsed.headers.get("Sec-WebSocket-Protocol") == "a, b"
    assert validate_request(parsed) == key


def test_default_port_is_left_out_of_host() -> None:
    """Host omits :80 for ws and :443 for wss."""
    assert build_request("h", 80, "/", KEY, secure=False).headers.get("Host") == "h"
    assert build_request("h", 443, "/", KEY, secure=True).headers.get("Host") == "h"
    assert build_request("h", 443, "/", KEY, secure=False).headers.get("Host") == "h:443"


def parse_response(data: bytes) -> Response:
    """Parse a response head byte by byte."""
    parser = ResponseParser()
    result = None
    for byte in data:
        result = parser.feed(bytes([byte]))
    assert result is not None
    return result


def test_client_validates_server_answer() -> None:
    """validate_response accepts the server's 101 and returns the subprotocol."""
    response = parse_response(accept_response(KEY, subprotocol="b").serialize())
    assert validate_response(response, KEY, subprotocols=["a", "b"]) == "b"


@pytest.mark.parametrize(
    "response, error",
    [
        (Response(403, "Forbidden"), InvalidStatus),
        (accept_response("AAAAAAAAAAAAAAAAAAAAAA=="), InvalidResponse),
        (
            Response(101, "Switching Protocols", Headers([("Connection", "Upgrade")])),
            InvalidResponse,
        ),
        (accept_response(KEY, subprotocol="z"), InvalidResponse),
    ],
    ids=["status", "wrong-accept", "no-upgrade", "unoffered-subprotocol"],
)
def test_client_rejects_bad_answers(response: Response, error: type) -> None:
    """A non-101 status or a broken 101 raises the matching exception."""
    with pytest.raises(error):
        validate_response(response, KEY, subprotocols=["a"])


def test_invalid_status_carries_status() -> None:
    """InvalidStatus carries the HTTP status the server sent."""
    with pytest.raises(InvalidStatus) as info:
        validate_response(Response(503, "Service Unavailable"), KEY)
    assert info.value.status == 503


def test_malformed_status_line() -> None:
    """A status line that is not HTTP raises InvalidResponse."""
    with pytest.raises(InvalidResponse):
        ResponseParser().feed(b"SSH-2.0-OpenSSH\r\n\r\n")
