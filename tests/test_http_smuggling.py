"""Request-smuggling probes against serve(wsgi=...), over real sockets: refused, or one request.

Each probe is sent whole on a fresh connection, which the client then
half-closes. The server must answer it with 400, 501 or 505 and close, or
answer exactly one request, and never serve the ``/admin`` request that a
lenient parser (or a proxy reading the bytes differently) would find
hidden inside it. The table is also in docs/howto/security.md, checked by
the last test here.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Tuple

import pytest

from conftest import echo_handler

ADMIN = b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
ONE = "one request"
POST = b"POST / HTTP/1.1\r\nHost: x\r\n"
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n"
CLOSE = b"Connection: close\r\n"
EMPTY = b"0\r\n\r\n"
HELLO = b"5\r\nhello\r\n" + EMPTY
KEY = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"

# (what the probe tries, the bytes, the answer: a status, or ONE)
PROBES: List[Tuple[str, bytes, str]] = [
    # Content-Length and Transfer-Encoding together
    (
        "CL then TE (CL.TE)",
        POST + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n" + EMPTY + ADMIN,
        "400",
    ),
    (
        "TE then CL (TE.CL)",
        CHUNKED + b"Content-Length: 3\r\n\r\n1e\r\n" + ADMIN[:30] + b"\r\n" + EMPTY,
        "400",
    ),
    (
        "TE chunked with CL: 0",
        POST + b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n" + EMPTY + ADMIN,
        "400",
    ),
    # Content-Length repeated or odd
    (
        "two different CL",
        POST + b"Content-Length: 5\r\nContent-Length: 40\r\n\r\nhello" + ADMIN,
        "400",
    ),
    ("two equal CL", POST + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", "400"),
    ("CL list 5, 5", POST + b"Content-Length: 5, 5\r\n\r\nhello", "400"),
    ("CL +5", POST + b"Content-Length: +5\r\n\r\nhello", "400"),
    ("CL 0x5", POST + b"Content-Length: 0x5\r\n\r\nhello", "400"),
    ("CL with a space inside (5 0)", POST + b"Content-Length: 5 0\r\n\r\nhello", "400"),
    ("CL with OWS around it", POST + b"Content-Length:  5 \r\nConnection: close\r\n\r\nhello", ONE),
    # Transfer-Encoding lists
    (
        "TE chunked, identity",
        POST + b"Transfer-Encoding: chunked, identity\r\n\r\n" + EMPTY + ADMIN,
        "400",
    ),
    ("TE identity, chunked", POST + b"Transfer-Encoding: identity, chunked\r\n\r\n" + EMPTY, "501"),
    ("TE gzip, chunked", POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n" + EMPTY, "501"),
    (
        "TE chunked twice (two headers)",
        CHUNKED + b"Transfer-Encoding: chunked\r\n\r\n" + EMPTY,
        "400",
    ),
    ("TE xchunked", POST + b"Transfer-Encoding: xchunked\r\n\r\n" + EMPTY, "400"),
    ("TE identity alone", POST + b"Transfer-Encoding: identity\r\n\r\n" + ADMIN, "400"),
    (
        "TE with a space before the colon",
        POST + b"Transfer-Encoding : chunked\r\n\r\n" + EMPTY,
        "400",
    ),
    (
        "TE in an HTTP/1.0 request",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" + EMPTY,
        "400",
    ),
    ("TE with a vertical tab", POST + b"Transfer-Encoding: \x0bchunked\r\n\r\n" + EMPTY, "400"),
    (
        "Transfer_Encoding (underscore) is not TE",
        POST + b"Transfer_Encoding: chunked\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        ONE,
    ),
    # obs-fold
    (
        "TE folded onto a second line",
        POST + b"Transfer-Encoding: identity\r\n chunked\r\n\r\n" + EMPTY,
        "400",
    ),
    ("obs-fold in any header", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n", "400"),
    ("a first header line that starts with a space", b"GET / HTTP/1.1\r\n Host: x\r\n\r\n", "400"),
    # bare LF and CR
    ("bare LF in the head", b"GET / HTTP/1.1\nHost: x\n\n", "400"),
    (
        "bare LF in chunk lines (5\\nhello\\n0\\n\\n)",
        CHUNKED + b"\r\n5\nhello\n0\n\n" + ADMIN,
        "400",
    ),
    ("bare LF after the chunk size only", CHUNKED + b"\r\n5\nhello\r\n" + EMPTY, "400"),
    ("bare LF after the chunk data", CHUNKED + b"\r\n5\r\nhello\n0\r\n\r\n", "400"),
    ("bare CR in a header value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", "400"),
    ("NUL in a header value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", "400"),
    # chunk sizes and extensions
    ("whitespace after the chunk size", CHUNKED + b"\r\n5 \r\nhello\r\n" + EMPTY, "400"),
    ("whitespace before ; of an extension", CHUNKED + b"\r\n5 ;a=b\r\nhello\r\n" + EMPTY, "400"),
    ("chunk size 0x5", CHUNKED + b"\r\n0x5\r\nhello\r\n" + EMPTY, "400"),
    ("chunk size -1", CHUNKED + b"\r\n-1\r\n\r\n", "400"),
    (
        "chunk size of 17 hex digits (overflow)",
        CHUNKED + b"\r\n10000000000000005\r\nhello\r\n" + EMPTY,
        "400",
    ),
    ("chunk data longer than its size", CHUNKED + b"\r\n3\r\nhello\r\n" + EMPTY, "400"),
    (
        "a quoted extension holding a bare LF",
        CHUNKED + b'\r\n5;a="x\ny"\r\nhello\r\n0\r\n\r\n',
        "400",
    ),
    (
        "a 6,000-byte chunk extension",
        CHUNKED + b"\r\n5;a=" + b"b" * 6000 + b"\r\nhello\r\n" + EMPTY,
        "400",
    ),
    ("well-formed extensions", CHUNKED + CLOSE + b'\r\n5;a=b;c="d e"\r\nhello\r\n0\r\n\r\n', ONE),
    # trailers
    ("a well-formed trailer", CHUNKED + CLOSE + b"\r\n5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n", ONE),
    ("a folded trailer", CHUNKED + b"\r\n5\r\nhello\r\n0\r\nX-Sum: 1\r\n 2\r\n\r\n", "400"),
    ("a trailer ended by a bare LF", CHUNKED + b"\r\n5\r\nhello\r\n0\r\nX-Sum: 1\n\r\n", "400"),
    # Host
    ("no Host in HTTP/1.1", b"GET / HTTP/1.1\r\n\r\n", "400"),
    ("two Host headers", b"GET / HTTP/1.1\r\nHost: x\r\nHost: admin.internal\r\n\r\n", "400"),
    ("Host with a space", b"GET / HTTP/1.1\r\nHost: x y\r\n\r\n", "400"),
    ("Host with userinfo", b"GET / HTTP/1.1\r\nHost: u@x\r\n\r\n", "400"),
    (
        "absolute-form URI beside another Host",
        b"GET http://real.example/ HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
        ONE,
    ),
    ("HTTP/1.0 without Host", b"GET / HTTP/1.0\r\n\r\n", ONE),
    # versions
    ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", "505"),
    ("HTTP/1.7", b"GET / HTTP/1.7\r\nHost: x\r\n\r\n", "505"),
    ("HTTP/0.9 (no version)", b"GET /\r\n\r\n", "400"),
    ("lower-case http/1.1", b"GET / http/1.1\r\nHost: x\r\n\r\n", "400"),
    ("two spaces in the request line", b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", "400"),
    # methods
    ("CONNECT", b"CONNECT admin.internal:443 HTTP/1.1\r\nHost: admin.internal:443\r\n\r\n", "501"),
    ("PRI * HTTP/2.0 (the HTTP/2 preface)", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "400"),
    # upgrades that do not happen
    (
        "Upgrade: websocket to a non-route, then /admin",
        b"GET /notws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + KEY
        + b"\r\n"
        + ADMIN,
        ONE,
    ),
    (
        "Upgrade: h2c, then /admin",
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        + b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
        + ADMIN,
        ONE,
    ),
]


def app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Read the whole body; answer the host, method and body; /admin says ADMIN."""
    if environ["PATH_INFO"] == "/admin":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ADMIN"]
    body = environ["wsgi.input"].read()
    text = f"{environ['REQUEST_METHOD']} host={environ.get('HTTP_HOST')} body={body!r}"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [text.encode()]


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, half-close, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


@pytest.fixture(scope="module")
def port() -> Iterable[int]:
    """One server for the module's probes (each probe has a connection of its own)."""
    import wsthread

    server = wsthread.serve({"/ws": echo_handler}, "127.0.0.1", 0, wsgi=app, open_timeout=3)
    server.start()
    yield server.port
    server.shutdown()


@pytest.mark.parametrize("name, data, answer", PROBES, ids=[probe[0] for probe in PROBES])
def test_probe(port: int, name: str, data: bytes, answer: str) -> None:
    """The probe gets its error status and the connection ends, or exactly one answer."""
    reply = exchange(port, data)
    statuses = re.findall(rb"^HTTP/1\.1 (\d{3}) ", reply, re.MULTILINE)
    assert b"ADMIN" not in reply, reply
    if answer == ONE:
        assert statuses == [b"200"], reply
    else:
        assert statuses == [answer.encode()], reply


def test_the_probes_exercise_what_they_say(port: int) -> None:
    """The accepted probes' bodies and hosts: what a strict reading gives."""
    answers = {name: exchange(port, data) for name, data, answer in PROBES if answer == ONE}
    assert answers["well-formed extensions"].endswith(b"body=b'hello'")
    assert answers["a well-formed trailer"].endswith(b"body=b'hello'")
    assert answers["CL with OWS around it"].endswith(b"body=b'hello'")
    assert answers["absolute-form URI beside another Host"].endswith(b"host=real.example body=b''")
    # Without the upgrade, the same pipelined bytes are served as two requests.
    both = exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + ADMIN)
    assert both.count(b"HTTP/1.1 200 ") == 2 and both.endswith(b"ADMIN")


def test_there_are_at_least_30_probes_and_the_security_howto_lists_them() -> None:
    """docs/howto/security.md has a row per probe, with its answer."""
    assert len(PROBES) >= 30
    page = (Path(__file__).parent.parent / "docs" / "howto" / "security.md").read_text()
    rows = set(re.findall(r"^\| (.+?) \| (.+?) \|$", page, re.MULTILINE))
    for name, _, answer in PROBES:
        assert (name.replace("|", "\\|"), answer) in rows, name
