"""Strict HTTP/1.1 request framing (RFC 9112) for plain HTTP, without I/O; any thread.

A server that reads a request's body by other rules than the proxy in
front of it lets one request hide inside another ("request smuggling").
This module decides, from the request head alone, how its body ends, and
refuses every head whose framing is ambiguous:

* the version must be ``HTTP/1.0`` or ``HTTP/1.1`` (505 otherwise);
* ``CONNECT`` gets 501 and ``PRI`` (HTTP/2's preface) 400;
* an ``HTTP/1.1`` request has exactly one valid ``Host`` (400); an
  absolute-form target (``GET http://example.com/ HTTP/1.1``) names the
  host instead, whatever ``Host`` says (RFC 9112 §3.2.2);
* ``Content-Length`` and ``Transfer-Encoding`` together, ``Content-Length``
  repeated or not all digits, a ``Transfer-Encoding`` list whose last
  coding is not ``chunked`` or that names ``chunked`` twice, and
  ``Transfer-Encoding`` in an ``HTTP/1.0`` request: 400; a coding other
  than ``chunked``: 501.

:class:`ChunkedDecoder` then decodes a chunked body as it arrives, as
strictly: each line ends in CRLF (a bare LF is refused), the chunk size is
hex digits with nothing around them, chunk extensions are well formed and
bounded (per line and per body), trailers are checked like headers and
bounded, and the body stays within its size limit (413, from the chunk
size, before the data arrives). The head's own lines (bare LF, obs-fold, a
malformed header) are refused by :class:`~wsthread.sansio.handshake.RequestParser`.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from http import HTTPStatus
from typing import Optional, Tuple

from ..exceptions import InvalidHandshake, InvalidRequest
from .handshake import Request

__all__ = ["Framing", "request_framing", "ChunkedDecoder", "MAX_CHUNK_LINE"]

MAX_CHUNK_LINE = 4096
"""The longest chunk-size line, extensions included (400 beyond)."""

_MAX_EXTENSION_BYTES = 16384  # chunk extensions in one body, in all
_MAX_TRAILERS = 64
_MAX_TRAILER_BYTES = 16384

_TCHAR = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_QUOTED = r'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
# chunk-size [ chunk-ext ] CRLF, with no whitespace anywhere (RFC 9112 §7.1.1
# allows BWS around ";" and "=", which is exactly where parsers disagree).
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})((?:;%s+(?:=(?:%s+|%s))?)*)\r\n"
    % (_TCHAR.encode(), _TCHAR.encode(), _QUOTED.encode("latin-1"))
)
_FIELD = re.compile(rb"(%s+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*\r\n" % _TCHAR.encode())
_DIGITS = re.compile(r"[0-9]{1,18}")
# A Host value: a reg-name, an IPv4 address or a bracketed IPv6 one, and an optional port.
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]{0,5})?")


@dataclass(frozen=True)
class Framing:
    """How a request's body ends, and which host it is for.

    Attributes:
        chunked: the body is chunked (:class:`ChunkedDecoder` reads it).
        length: the body's length (0: no body) when it is not chunked.
        host: the host the request is for: the absolute-form target's
            authority, else the ``Host`` header, else ``None`` (HTTP/1.0).
    """

    chunked: bool
    length: int
    host: Optional[str]


def request_framing(request: Request) -> Framing:
    """Check ``request``'s head for anything that makes its framing ambiguous; say how it ends.

    Raises:
        InvalidHandshake: 400, 501 or 505, with the reason.
    """
    method = request.method
    if method == "PRI":
        raise InvalidRequest("PRI: HTTP/2 is not spoken here")
    if request.version not in ("HTTP/1.0", "HTTP/1.1"):
        raise InvalidHandshake(
            f"{request.version} is not supported: use HTTP/1.1",
            status=HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
        )
    if method == "CONNECT":
        raise InvalidHandshake("CONNECT is not supported", status=HTTPStatus.NOT_IMPLEMENTED)
    host = _host(request)
    chunked, length = _body_framing(request)
    return Framing(chunked, length, host)


def _host(request: Request) -> Optional[str]:
    """The request's host (RFC 9112 §3.2): one valid ``Host``, or the absolute-form URI's."""
    hosts = request.headers.get_all("Host")
    if len(hosts) > 1:
        raise InvalidRequest("repeated Host header")
    if request.version == "HTTP/1.1" and not hosts:
        raise InvalidRequest("missing Host header")
    if hosts and not _HOST.fullmatch(hosts[0]):
        raise InvalidRequest("malformed Host header")
    target = request.target
    if target.startswith("/"):
        return hosts[0] if hosts else None
    if target == "*":
        if request.method != "OPTIONS":
            raise InvalidRequest("the target * is only for OPTIONS")
        return hosts[0] if hosts else None
    parts = urllib.parse.urlsplit(target)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise InvalidRequest("malformed request target")
    if "@" in parts.netloc or not _HOST.fullmatch(parts.netloc):
        raise InvalidRequest("malformed authority in the request target")
    return parts.netloc  # the URI wins over Host


def _body_framing(request: Request) -> Tuple[bool, int]:
    """``(chunked, length)`` from ``Transfer-Encoding`` and ``Content-Length`` (RFC 9112 §6)."""
    headers = request.headers
    lengths = headers.get_all("Content-Length")
    encodings = headers.get_all("Transfer-Encoding")
    if encodings:
        if lengths:
            raise InvalidRequest("both Content-Length and Transfer-Encoding")
        if request.version != "HTTP/1.1":
            raise InvalidRequest("Transfer-Encoding in an HTTP/1.0 request")
        codings = [each.strip(" \t").lower() for each in ",".join(encodings).split(",")]
        if "" in codings or codings[-1] != "chunked" or codings.count("chunked") > 1:
            raise InvalidRequest("Transfer-Encoding must end with chunked, once")
        if len(codings) > 1:
            raise InvalidHandshake(
                f"unsupported transfer coding {codings[0][:40]!r}",
                status=HTTPStatus.NOT_IMPLEMENTED,
            )
        return True, 0
    if not lengths:
        return False, 0
    if len(lengths) > 1:
        raise InvalidRequest("repeated Content-Length header")
    if not _DIGITS.fullmatch(lengths[0]):
        raise InvalidRequest("malformed Content-Length")
    return False, int(lengths[0])


class ChunkedDecoder:
    """Decode one chunked body (RFC 9112 §7.1) as its bytes arrive, strictly and within limits.

    :meth:`feed` takes received bytes; :meth:`read` returns the decoded data
    available so far; :attr:`done` is set once the last chunk and the
    trailers have arrived, and :attr:`trailing_data` then holds the bytes
    after the body (the next request). An error is raised again by every
    later call.

    Args:
        limit: the most body bytes (413 beyond, raised from the chunk size,
            before its data); ``None``: no limit.
    """

    def __init__(self, limit: Optional[int] = None) -> None:
        self.limit = limit
        self.size = 0
        """Decoded body bytes so far (announced by the chunk sizes read)."""
        self.done = False
        self._buffer = bytearray()
        self._left = 0  # data bytes of the current chunk still to come
        self._state = "size"  # size, data, data-end, trailer
        self._extension_bytes = 0
        self._trailers = 0
        self._trailer_bytes = 0
        self._error: Optional[InvalidHandshake] = None

    @property
    def trailing_data(self) -> bytes:
        """Bytes received after the end of the body (only meaningful once :attr:`done`)."""
        return bytes(self._buffer) if self.done else b""

    @property
    def buffered(self) -> int:
        """Bytes fed and not decoded yet (or, once done, after the body)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        """Take bytes received from the peer."""
        if self._error is not None:
            raise self._error
        self._buffer += data

    def read(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` of decoded body available now; ``b""`` if more must be fed.

        Raises:
            InvalidRequest: the body is malformed (400).
            InvalidHandshake: it is larger than ``limit`` (413).
        """
        if self._error is not None:
            raise self._error
        try:
            return self._read(max_bytes)
        except InvalidHandshake as exc:
            self._error = exc
            raise

    def _read(self, max_bytes: int) -> bytes:
        while not self.done:
            if self._state == "data":
                if not self._buffer:
                    return b""
                take = min(self._left, max_bytes, len(self._buffer))
                if take == len(self._buffer):  # all of it: one copy, no move
                    data = bytes(self._buffer)
                    self._buffer.clear()
                else:
                    data = bytes(self._buffer[:take])
                    del self._buffer[:take]
                self._left -= take
                if not self._left:
                    self._state = "data-end"
                return data
            if not self._step():
                return b""
        return b""

    def _step(self) -> bool:
        """Read one line (size, end of data, trailer); ``False`` if it has not all arrived."""
        if self._state == "data-end":
            if len(self._buffer) < 2:
                return False
            if self._buffer[:2] != b"\r\n":
                raise InvalidRequest("chunk data not followed by CRLF")
            del self._buffer[:2]
            self._state = "size"
            return True
        end = self._buffer.find(b"\n", 0, MAX_CHUNK_LINE + 1)
        if end < 0:
            if len(self._buffer) > MAX_CHUNK_LINE:
                raise InvalidRequest("chunk line too long")
            return False
        line = bytes(self._buffer[: end + 1])
        del self._buffer[: end + 1]
        if self._state == "size":
            self._size_line(line)
        else:
            self._trailer_line(line)
        return True

    def _size_line(self, line: bytes) -> None:
        match = _CHUNK_LINE.fullmatch(line)
        if match is None:
            raise InvalidRequest("malformed chunk-size line")
        self._extension_bytes += len(match.group(2))
        if self._extension_bytes > _MAX_EXTENSION_BYTES:
            raise InvalidRequest("too many chunk extension bytes")
        size = int(match.group(1), 16)
        if size == 0:
            self._state = "trailer"
            return
        if self.limit is not None and self.size + size > self.limit:
            raise InvalidHandshake(
                f"request body over {self.limit} bytes",
                status=HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            )
        self.size += size
        self._left = size
        self._state = "data"

    def _trailer_line(self, line: bytes) -> None:
        if line == b"\r\n":
            self.done = True
            return
        self._trailers += 1
        self._trailer_bytes += len(line)
        if self._trailers > _MAX_TRAILERS or self._trailer_bytes > _MAX_TRAILER_BYTES:
            raise InvalidRequest("too many trailers")
        if not _FIELD.fullmatch(line):  # obs-fold, a bare LF, no colon, controls
            raise InvalidRequest("malformed trailer line")
