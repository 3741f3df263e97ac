"""The opening handshake (RFC 6455 §4): HTTP/1.1 Upgrade, parsed and built without I/O.

The client asks::

    GET /chat HTTP/1.1
    Host: server.example.com
    Upgrade: websocket
    Connection: Upgrade
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==
    Sec-WebSocket-Version: 13

and the server agrees::

    HTTP/1.1 101 Switching Protocols
    Upgrade: websocket
    Connection: Upgrade
    Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzwzxjYK4gN8=

``Sec-WebSocket-Accept`` is base64(SHA-1(key + GUID)): proof that the server
read the key and speaks WebSocket, so a plain HTTP server (or a cache) cannot
be mistaken for one. Everything after the blank line is WebSocket frames.

The parsers read the head incrementally and refuse to buffer more than their
limits, so a client that sends an endless request line costs a few KiB.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.cookies
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import (
    Any,
    Dict,
    Iterable,
    Iterator,
    List,
    MutableMapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from ..exceptions import (
    InvalidHandshake,
    InvalidMethod,
    InvalidRequest,
    InvalidResponse,
    InvalidStatus,
    InvalidVersion,
    RequestTooLarge,
    UpgradeRequired,
)

__all__ = [
    "GUID",
    "accept_key",
    "generate_key",
    "Headers",
    "MultipleValuesError",
    "check_header",
    "encode_target",
    "parse_tokens",
    "header_has_token",
    "Request",
    "Response",
    "RequestParser",
    "ResponseParser",
    "validate_request",
    "accept_response",
    "error_response",
    "http_response",
    "build_request",
    "validate_response",
    "header_pairs",
]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_key(key: str) -> str:
    """Compute ``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key``."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def generate_key() -> str:
    """Make a fresh ``Sec-WebSocket-Key``: 16 random bytes, base64-encoded."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VERSION = re.compile(r"^HTTP/[0-9]\.[0-9]$")
_STATUS = re.compile(r"[0-9]{3}")  # ASCII digits only: "²".isdigit() is true
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# What a request target may not hold on the wire: whitespace, controls, non-ASCII.
_TARGET_FORBIDDEN = re.compile(r"[\x00-\x20\x7f-\uffff]")
# What build_request leaves as it is in a target: RFC 3986 unreserved, sub-delims, "%:@/?".
_TARGET_SAFE = "!$&'()*+,;=:@/?%~-._"


class MultipleValuesError(KeyError):
    """``headers[name]`` when ``name`` has several values: use :meth:`Headers.get_all`."""


def check_header(name: str, value: str) -> None:
    """Refuse a header that would break the HTTP head it is written into.

    The name must be an RFC 9110 token; the value may hold no CR, LF, NUL
    or other control character but HTAB, and must be Latin-1 (HTTP/1.1
    heads are bytes). This is the one check every header passes, on the
    way in (the parsers answer a peer's bad header with 400 before it gets
    here) and on the way out: an application's ``extra_headers``,
    ``http_response(headers=...)``, ``additional_headers``, ``origin`` or
    ``user_agent_header`` with a line break in it raises here, at its call,
    and never reaches the wire.

    Raises:
        TypeError: ``name`` or ``value`` is not a ``str``.
        ValueError: either would change the head's framing.
    """
    if not isinstance(name, str) or not isinstance(value, str):
        raise TypeError(
            f"a header name and value must be str, not {type(name).__name__} and "
            f"{type(value).__name__}"
        )
    if not _TOKEN.match(name):
        raise ValueError(f"invalid header name {name[:40]!r}: not an HTTP token")
    if _CONTROL.search(value):
        raise ValueError(f"invalid value for header {name}: control characters (CR, LF, NUL...)")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"invalid value for header {name}: not Latin-1") from None


class Headers(MutableMapping[str, str]):
    """HTTP headers: ordered, case-insensitive, a name may repeat.

    As a mapping (as websockets' ``Headers``): ``headers["Authorization"]``
    is the only value of that header, ``KeyError`` when there is none and
    :class:`MultipleValuesError` (a ``KeyError``) when there are several;
    ``headers[name] = value`` *adds* a header (call ``del headers[name]``
    first to replace); ``del headers[name]`` removes every value of it;
    ``name in headers``, :meth:`get` (the first value), :meth:`get_all`,
    :meth:`items` (every pair, in order) and iteration over the names as
    received. Every header added is checked by :func:`check_header`.
    """

    def __init__(self, items: Iterable[Tuple[str, str]] = ()) -> None:
        self._items: List[Tuple[str, str]] = []
        for name, value in items:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        """Append a header.

        Raises:
            TypeError, ValueError: see :func:`check_header`.
        """
        check_header(name, value)
        self._items.append((name, value))

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:  # type: ignore[override]
        """The first value of ``name``, or ``default``."""
        lowered = name.lower()
        for key, value in self._items:
            if key.lower() == lowered:
                return value
        return default

    def get_all(self, name: str) -> List[str]:
        """Every value of ``name``, in order."""
        lowered = name.lower()
        return [value for key, value in self._items if key.lower() == lowered]

    def items(self) -> List[Tuple[str, str]]:  # type: ignore[override]
        """All headers as ``(name, value)`` pairs, in order, names as received."""
        return list(self._items)

    def __getitem__(self, name: str) -> str:
        values = self.get_all(name)
        if not values:
            raise KeyError(name)
        if len(values) > 1:
            raise MultipleValuesError(name)
        return values[0]

    def __setitem__(self, name: str, value: str) -> None:
        self.add(name, value)

    def __delitem__(self, name: str) -> None:
        lowered = name.lower()
        kept = [(key, value) for key, value in self._items if key.lower() != lowered]
        if len(kept) == len(self._items):
            raise KeyError(name)
        self._items = kept

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, _ in self._items])

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k.lower(), v) for k, v in self._items] == [(k.lower(), v) for k, v in other._items]

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def serialize(self) -> bytes:
        """The headers as HTTP lines, each ending in CRLF."""
        return b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in self._items)


def parse_tokens(value: str) -> List[str]:
    """Split a comma-separated header value into its stripped, non-empty tokens."""
    return [token.strip() for token in value.split(",") if token.strip()]


def header_has_token(headers: Headers, name: str, token: str) -> bool:
    """Whether any ``name`` header lists ``token`` (compared case-insensitively)."""
    wanted = token.lower()
    return any(
        item.lower() == wanted for value in headers.get_all(name) for item in parse_tokens(value)
    )


@dataclass
class Request:
    """An HTTP request head.

    Attributes:
        method: ``GET`` for a WebSocket handshake.
        target: the request target, such as ``/chat?room=1``.
        version: the protocol, such as ``HTTP/1.1``.
        headers: the request headers.
    """

    method: str
    target: str
    version: str = "HTTP/1.1"
    headers: Headers = field(default_factory=Headers)

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        """The query string (after ``?``), or ``""``."""
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    @property
    def cookies(self) -> Dict[str, str]:
        """The cookies sent in ``Cookie`` headers (``{}`` if unreadable)."""
        jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
        try:
            for value in self.headers.get_all("Cookie"):
                jar.load(value)
        except http.cookies.CookieError:
            return {}
        return {name: morsel.value for name, morsel in jar.items()}

    def serialize(self) -> bytes:
        """The request head as bytes.

        Raises:
            ValueError: the method is not a token, the target holds a space
                or a control character, or the version is not ``HTTP/x.y``.
        """
        if not _TOKEN.match(self.method):
            raise ValueError(f"invalid HTTP method {self.method[:40]!r}")
        if not self.target or _TARGET_FORBIDDEN.search(self.target):
            raise ValueError(f"invalid request target {self.target[:80]!r}: percent-encode it")
        if not _VERSION.match(self.version):
            raise ValueError(f"invalid HTTP version {self.version[:40]!r}")
        line = f"{self.method} {self.target} {self.version}\r\n".encode("latin-1")
        return line + self.headers.serialize() + b"\r\n"


@dataclass
class Response:
    """An HTTP response.

    Attributes:
        status: the status code, such as 101.
        reason: the reason phrase, such as ``Switching Protocols``.
        headers: the response headers.
        body: the body (empty for 101).
        version: the protocol, ``HTTP/1.1``.
    """

    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = "HTTP/1.1"

    def serialize(self) -> bytes:
        """The whole response as bytes.

        Raises:
            ValueError: the status is not three digits, the reason holds a
                control character (CR, LF...) or is not Latin-1, or the
                version is not ``HTTP/x.y``.
        """
        if isinstance(self.status, bool) or not 100 <= int(self.status) <= 999:
            raise ValueError(f"invalid HTTP status {self.status!r}")
        if not isinstance(self.reason, str) or _CONTROL.search(self.reason):
            raise ValueError(f"invalid reason phrase {str(self.reason)[:40]!r}")
        if not _VERSION.match(self.version):
            raise ValueError(f"invalid HTTP version {self.version[:40]!r}")
        try:
            line = f"{self.version} {int(self.status)} {self.reason}\r\n".encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"invalid reason phrase {self.reason[:40]!r}: not Latin-1") from None
        return line + self.headers.serialize() + b"\r\n" + self.body


class _HeadParser:
    """Read an HTTP head incrementally, within limits; shared by both parsers."""

    def __init__(self, *, max_line: int, max_headers: int, max_header_bytes: int) -> None:
        self.max_line = max_line
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer already searched for line ends
        self._start_line: Optional[str] = None
        self._headers = Headers()
        self._header_bytes = 0
        self.trailing_data = b""
        self.done = False

    def feed(self, data: bytes) -> Optional[Tuple[str, Headers]]:
        if self.done:
            self.trailing_data += data
            return None
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n", self._scanned)
            if end < 0:
                self._scanned = len(self._buffer)
                self._check_partial_line(self._buffer)
                return None
            line = bytes(self._buffer[: end + 1])
            # The limit a line still arriving would get: the same answer however it was cut.
            self._check_partial_line(line[:-1])
            del self._buffer[: end + 1]
            self._scanned = 0
            if not line.endswith(b"\r\n"):
                raise InvalidRequest("HTTP lines must end with CRLF")
            result = self._line(line[:-2])
            if result is not None:
                self.done = True
                self.trailing_data = bytes(self._buffer)
                self._buffer = bytearray()
                return result

    def _check_partial_line(self, pending: Union[bytes, bytearray]) -> None:
        # The CR of a line of exactly max_line bytes may arrive before its LF.
        limit = self.max_line + (1 if pending.endswith(b"\r") else 0)
        if len(pending) > limit:
            if self._start_line is None:
                raise RequestTooLarge(
                    "request line too long", status=HTTPStatus.REQUEST_URI_TOO_LONG
                )
            raise RequestTooLarge("header line too long")

    def _line(self, raw: bytes) -> Optional[Tuple[str, Headers]]:
        if len(raw) > self.max_line:
            self._check_partial_line_for(raw)
        try:
            line = raw.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
            raise InvalidRequest("undecodable bytes in the HTTP head") from None
        if self._start_line is None:
            if _CONTROL.search(line):
                raise InvalidRequest("control characters in the HTTP start line")
            self._start_line = line
            return None
        if line == "":
            return self._start_line, self._headers
        self._header_bytes += len(raw) + 2
        if self._header_bytes > self.max_header_bytes:
            raise RequestTooLarge("too many header bytes")
        if len(self._headers) >= self.max_headers:
            raise RequestTooLarge("too many headers")
        if line[0] in " \t":
            raise InvalidRequest("obsolete line folding in headers is not accepted")
        name, colon, value = line.partition(":")
        if not colon:
            # Never quote the line: it may hold a credential, and this text is logged.
            raise InvalidRequest("malformed header line: no colon")
        if not _TOKEN.match(name):
            raise InvalidRequest(f"malformed header name {name[:40]!r}")
        value = value.strip(" \t")
        if _CONTROL.search(value):
            raise InvalidRequest(f"control characters in header {name}")
        self._headers.add(name, value)
        return None

    def _check_partial_line_for(self, raw: bytes) -> None:
        if self._start_line is None:
            raise RequestTooLarge("request line too long", status=HTTPStatus.REQUEST_URI_TOO_LONG)
        raise RequestTooLarge("header line too long")


class RequestParser:
    """Parse a request head as it arrives (server side).

    Args:
        max_line: the longest request line or header line (414 or 431 beyond).
        max_headers: the most header lines (431 beyond).
        max_header_bytes: the most header bytes in all (431 beyond).

    Attributes:
        trailing_data: bytes that arrived after the head (the first frames).
    """

    def __init__(
        self, *, max_line: int = 8192, max_headers: int = 100, max_header_bytes: int = 65536
    ) -> None:
        self._head = _HeadParser(
            max_line=max_line, max_headers=max_headers, max_header_bytes=max_header_bytes
        )
        self._first = True

    @property
    def trailing_data(self) -> bytes:
        """Bytes received after the end of the head."""
        return self._head.trailing_data

    def feed(self, data: bytes) -> Optional[Request]:
        """Take received bytes; return the :class:`Request` once its head is complete.

        Raises:
            InvalidRequest: the bytes are not an HTTP/1.x request (400).
            RequestTooLarge: a size limit was passed (414 or 431).
        """
        if self._first and data:
            self._first = False
            if data[0] == 0x16:
                raise InvalidRequest("TLS handshake received on a plain-text port")
        result = self._head.feed(data)
        if result is None:
            return None
        start_line, headers = result
        parts = start_line.split(" ")
        if len(parts) != 3 or not all(parts):
            raise InvalidRequest("malformed request line")
        method, target, version = parts
        if not _TOKEN.match(method):
            raise InvalidRequest("malformed request method")
        if not _VERSION.match(version):
            raise InvalidRequest("malformed HTTP version")
        return Request(method, target, version, headers)


class ResponseParser:
    """Parse a response head as it arrives (client side); the body is not read.

    Attributes:
        trailing_data: bytes that arrived after the head.
    """

    def __init__(
        self, *, max_line: int = 8192, max_headers: int = 100, max_header_bytes: int = 65536
    ) -> None:
        self._head = _HeadParser(
            max_line=max_line, max_headers=max_headers, max_header_bytes=max_header_bytes
        )

    @property
    def trailing_data(self) -> bytes:
        """Bytes received after the end of the head."""
        return self._head.trailing_data

    def feed(self, data: bytes) -> Optional[Response]:
        """Take received bytes; return the :class:`Response` once its head is complete.

        Raises:
            InvalidResponse: the bytes are not an HTTP/1.x response.
        """
        try:
            result = self._head.feed(data)
        except InvalidHandshake as exc:
            raise InvalidResponse(f"malformed HTTP response: {exc}") from exc
        if result is None:
            return None
        start_line, headers = result
        version, _, rest = start_line.partition(" ")
        status_text, _, reason = rest.partition(" ")
        if not _VERSION.match(version) or not _STATUS.fullmatch(status_text):
            raise InvalidResponse(f"malformed status line: {start_line[:60]!r}")
        return Response(int(status_text), reason, headers, b"", version)


def validate_request(request: Request) -> str:
    """Check that ``request`` is a WebSocket upgrade; return its ``Sec-WebSocket-Key``.

    Raises:
        InvalidMethod: not a GET (405).
        UpgradeRequired: no ``Upgrade: websocket`` (426).
        InvalidVersion: ``Sec-WebSocket-Version`` is not 13 (426).
        InvalidRequest: anything else wrong (400).
    """
    if request.method != "GET":
        raise InvalidMethod(f"method {request.method} not allowed: use GET")
    if request.version != "HTTP/1.1":
        raise InvalidRequest(f"{request.version} not supported: WebSocket needs HTTP/1.1")
    headers = request.headers
    if not header_has_token(headers, "Upgrade", "websocket"):
        raise UpgradeRequired("this is a WebSocket endpoint: send an Upgrade: websocket request")
    if not header_has_token(headers, "Connection", "upgrade"):
        raise InvalidRequest("missing Connection: Upgrade header")
    if len(headers.get_all("Host")) != 1:
        raise InvalidRequest("missing or repeated Host header")
    versions = headers.get_all("Sec-WebSocket-Version")
    if [v.strip() for v in versions] != ["13"]:
        raise InvalidVersion("unsupported Sec-WebSocket-Version: this server speaks 13")
    keys = headers.get_all("Sec-WebSocket-Key")
    if len(keys) != 1:
        raise InvalidRequest("missing or repeated Sec-WebSocket-Key header")
    key = keys[0]
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise InvalidRequest("Sec-WebSocket-Key is not base64") from None
    if len(raw) != 16:
        raise InvalidRequest("Sec-WebSocket-Key must encode 16 bytes")
    return key


def accept_response(
    key: str,
    *,
    subprotocol: Optional[str] = None,
    extensions: Optional[str] = None,
    extra_headers: Iterable[Tuple[str, str]] = (),
) -> Response:
    """Build the ``101 Switching Protocols`` answer to a valid request."""
    headers = Headers(
        [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept_key(key)),
        ]
    )
    if subprotocol is not None:
        headers.add("Sec-WebSocket-Protocol", subprotocol)
    if extensions:
        headers.add("Sec-WebSocket-Extensions", extensions)
    for name, value in extra_headers:
        headers.add(name, value)
    return Response(101, "Switching Protocols", headers)


def http_response(
    status: Union[int, HTTPStatus],
    body: bytes = b"",
    headers: Iterable[Tuple[str, str]] = (),
    content_type: str = "text/plain; charset=utf-8",
) -> Response:
    """Build a plain HTTP response that closes the connection."""
    try:
        reason = HTTPStatus(int(status)).phrase
    except ValueError:
        reason = "Unknown"
    all_headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
    )
    for name, value in headers:
        all_headers.add(name, value)
    return Response(int(status), reason, all_headers, body)


def error_response(exc: InvalidHandshake) -> Response:
    """Turn a handshake error into its HTTP answer: the status and one line of text."""
    body = (str(exc).replace("\r", " ").replace("\n", " ") + "\n").encode("utf-8")
    return http_response(exc.status, body, exc.headers)


def header_pairs(headers: Any) -> List[Tuple[str, str]]:
    """``(name, value)`` pairs from headers given as a mapping or as pairs (``None``: none)."""
    if headers is None:
        return []
    items = getattr(headers, "items", None)
    return list(items()) if callable(items) else list(headers)


def build_request(
    host: str,
    port: int,
    resource: str,
    key: str,
    *,
    secure: bool,
    origin: Optional[str] = None,
    subprotocols: Sequence[str] = (),
    extensions: Optional[str] = None,
    extra_headers: Iterable[Tuple[str, str]] = (),
) -> Request:
    """Build a client's upgrade request."""
    host_text = f"[{host}]" if ":" in host and not host.startswith("[") else host
    if port != (443 if secure else 80):
        host_text = f"{host_text}:{port}"
    headers = Headers(
        [
            ("Host", host_text),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", "13"),
        ]
    )
    if origin is not None:
        headers.add("Origin", origin)
    if subprotocols:
        headers.add("Sec-WebSocket-Protocol", ", ".join(subprotocols))
    if extensions:
        headers.add("Sec-WebSocket-Extensions", extensions)
    for name, value in extra_headers:
        headers.add(name, value)
    return Request("GET", encode_target(resource or "/"), "HTTP/1.1", headers)


def encode_target(resource: str) -> str:
    """A request target safe to write: spaces, controls and non-ASCII percent-encoded (UTF-8).

    ``/a b?q=é`` becomes ``/a%20b?q=%C3%A9``; characters that are already
    legal, existing ``%XX`` escapes among them, are left alone; a fragment
    (``#...``) is not sent. CR and LF become ``%0D`` and ``%0A``, so a URI
    can never add a header line to the request.
    """
    return urllib.parse.quote(resource.split("#", 1)[0], safe=_TARGET_SAFE)


def validate_response(
    response: Response, key: str, *, subprotocols: Sequence[str] = ()
) -> Optional[str]:
    """Check a server's answer to the upgrade request; return the chosen subprotocol.

    Raises:
        InvalidStatus: the status is not 101 (with the response's headers
            and body: read the body into ``response`` first, see
            :mod:`wsthread.sansio.body`).
        InvalidResponse: the 101 answer breaks the protocol.
    """
    if response.status != 101:
        try:
            status = HTTPStatus(response.status)
        except ValueError:
            status = HTTPStatus.BAD_GATEWAY
        raise InvalidStatus(
            f"server rejected WebSocket connection: HTTP {response.status}",
            status=status,
            headers=response.headers.items(),
            body=response.body,
            response=response,
        )
    headers = response.headers
    if not header_has_token(headers, "Upgrade", "websocket"):
        raise InvalidResponse("101 response without Upgrade: websocket")
    if not header_has_token(headers, "Connection", "upgrade"):
        raise InvalidResponse("101 response without Connection: Upgrade")
    if headers.get_all("Sec-WebSocket-Accept") != [accept_key(key)]:
        raise InvalidResponse("wrong or missing Sec-WebSocket-Accept")
    chosen = headers.get_all("Sec-WebSocket-Protocol")
    if not chosen:
        return None
    if len(chosen) != 1 or chosen[0] not in subprotocols:
        raise InvalidResponse(f"server chose a subprotocol that was not offered: {chosen}")
    return chosen[0]
