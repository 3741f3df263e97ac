"""Plain HTTP requests served to a WSGI application, on the connection's own thread.

``serve(handler, wsgi=app)`` sends here every request that is not a
WebSocket upgrade for one of its routes. The request head was already read
by the server's handshake parser; its framing is checked by
:mod:`wsthread.sansio.http11` (400, 501 or 505 for anything a proxy could
read differently); this module reads the body, builds the environ, and runs
the application through the standard library's
:class:`wsgiref.handlers.SimpleHandler`, which writes the status line and
headers. It then waits for the next request on the same connection
(HTTP/1.1 keep-alive)::

    head (parsed, framing checked) ── body: Content-Length or chunked, streamed
        ── environ ── wsgiref runs app(environ, start_response) ── response
        ── keep-alive? next head within open_timeout : end

Bodies are read from the socket as the application reads ``wsgi.input``.
A chunked body whose first 64 KiB hold all of it is read first and given a
``CONTENT_LENGTH``, for applications that need one; a longer one is
streamed, with ``wsgi.input_terminated`` set and no ``CONTENT_LENGTH``.

Limits: every head within ``open_timeout`` (414/431 as for a handshake);
a minimum rate for bodies: each 64 KiB of a request must arrive within
``open_timeout`` of time spent waiting for it (408, or the connection is
closed), so a client trickling bytes is dropped whatever it sent before;
bodies up to ``max_body_size`` (413 before the application, or the
connection closed once a chunked body passes it); at most
``max_http_connections`` plain HTTP connections at once, kept-alive ones
included (503 beyond). A response without ``Content-Length`` ends the
connection, which is what delimits its body; so does the answer to a
request with an ``Upgrade`` header (which was not upgraded), so that
nothing pipelined behind it is served. ``HEAD``, 1xx, 204 and 304
answers carry no body, whatever the application returns.
"""

from __future__ import annotations

import io
import logging
import re
import socket
import sys
import threading
import time
import urllib.parse
import wsgiref.handlers
from http import HTTPStatus
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from ..connection.transport import Transport
from ..exceptions import InvalidHandshake, ServiceUnavailable
from ..runtime.deadline import Deadline
from ..sansio.handshake import Request, RequestParser, check_header, error_response
from ..sansio.http11 import ChunkedDecoder, Framing, request_framing
from ..sansio.routing import is_upgrade

__all__ = ["serve_wsgi", "WSGIApplication", "HIJACKED", "HTTPConnections"]

logger = logging.getLogger("wsthread")

WSGIApplication = Callable[[Dict[str, Any], Callable[..., Any]], Iterable[bytes]]
"""A WSGI application (PEP 3333)."""

HIJACKED = "wsthread.hijacked"
"""The environ key a middleware sets once it has taken the connection over."""

_READ = 65536
# A WSGI status: three digits, a space, a reason without control characters.
_STATUS_LINE = re.compile(r"[0-9]{3} [^\x00-\x08\x0a-\x1f\x7f]*")
_DRAIN = 65536  # unread body bytes skipped to keep a connection alive; beyond, it closes
_RATE_WINDOW = 65536  # each this many bytes of a body must arrive within open_timeout
_READ_AHEAD = 65536  # a chunked body this short is read before the app, and given a length


class HTTPConnections:
    """The plain HTTP connections a server serves at once, against ``max_http_connections``.

    Safe from any thread. Args: ``limit``, the most at once (``None``: no limit).
    """

    def __init__(self, limit: Optional[int]) -> None:
        self.limit = limit
        self._count = 0
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        """How many plain HTTP connections are being served now."""
        with self._lock:
            return self._count

    def acquire(self) -> None:
        """Count one more, or refuse it.

        Raises:
            ServiceUnavailable: ``limit`` connections are served already (503).
        """
        with self._lock:
            if self.limit is not None and self._count >= self.limit:
                raise ServiceUnavailable(
                    f"the server is full ({self.limit} HTTP connections): try again later"
                )
            self._count += 1

    def release(self) -> None:
        """One fewer."""
        with self._lock:
            self._count -= 1


class _BodyTimeout(socket.timeout):
    """The request body stopped arriving for ``open_timeout`` seconds."""


class _ClientGone(ConnectionResetError):
    """The client left, or stopped reading, in the middle of a request or response."""


class _Stream:
    """The connection's incoming bytes: what the head parser left over, then the socket.

    Reads are bounded by a minimum rate: the time spent waiting for each
    :data:`_RATE_WINDOW` bytes may not add up to more than ``timeout``.
    """

    def __init__(self, transport: Transport, buffered: bytes, timeout: Optional[float]) -> None:
        self.transport = transport
        self.buffer = bytearray(buffered)
        self.timeout = timeout
        self._window_bytes = 0  # bytes received in the current rate window
        self._window_waited = 0.0  # seconds spent waiting for them

    def new_request(self) -> None:
        """Start the rate window afresh, for a new request."""
        self._window_bytes = 0
        self._window_waited = 0.0

    def recv(self) -> bytes:
        """Bytes from the socket (``b""`` at its end), within what is left of the rate window."""
        timeout: Optional[float] = None
        if self.timeout is not None:
            timeout = self.timeout - self._window_waited
            if timeout <= 0:
                raise _BodyTimeout(f"under {_RATE_WINDOW} bytes in {self.timeout}s")
        started = time.monotonic()
        try:
            data = self.transport.recv(_READ, timeout)
        except socket.timeout:
            raise _BodyTimeout(f"under {_RATE_WINDOW} bytes in {self.timeout}s") from None
        finally:
            self._window_waited += time.monotonic() - started
        self._window_bytes += len(data)
        if self._window_bytes >= _RATE_WINDOW:
            self._window_bytes %= _RATE_WINDOW
            self._window_waited = 0.0
        return data

    def read_some(self, limit: int) -> bytes:
        """Up to ``limit`` bytes (``b""`` at the end of the stream)."""
        if not self.buffer:
            data = self.recv()
            if len(data) <= limit:
                return data  # the common case, without a copy
            self.buffer += memoryview(data)[limit:]
            return data[:limit]
        chunk = bytes(self.buffer[:limit])
        del self.buffer[:limit]
        return chunk


class _LengthBody(io.RawIOBase):
    """``wsgi.input`` for a body of known length, read from the socket as the app asks."""

    def __init__(self, stream: _Stream, length: int) -> None:
        super().__init__()
        self.stream = stream
        self.remaining = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.remaining <= 0:
            return 0
        data = self.stream.read_some(min(len(buffer), self.remaining))
        if not data:
            raise _ClientGone("the client closed the connection in the request body")
        self.remaining -= len(data)
        buffer[: len(data)] = data
        return len(data)


class _ChunkedBody(io.RawIOBase):
    """``wsgi.input`` for a chunked body, decoded (strictly) as the app reads it."""

    def __init__(self, stream: _Stream, decoder: ChunkedDecoder) -> None:
        super().__init__()
        self.stream = stream
        self.decoder = decoder
        self.pending = b""  # decoded bytes read ahead, given out first
        self._returned = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.pending:
            data, self.pending = self.pending[: len(buffer)], self.pending[len(buffer) :]
        else:
            data = self._next(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _next(self, limit: int) -> bytes:
        """Up to ``limit`` decoded bytes, reading the socket as needed; ``b""`` at the end."""
        decoder = self.decoder
        while True:
            data = decoder.read(limit)
            if data:
                return data
            if decoder.done:
                if not self._returned:  # the next request's bytes go back to the stream
                    self.stream.buffer[:0] = decoder.trailing_data
                    self._returned = True
                return b""
            raw = self.stream.read_some(_READ)
            if not raw:
                raise _ClientGone("the client closed the connection in the request body")
            decoder.feed(raw)

    def read_ahead(self, limit: int) -> bytes:
        """Decode up to ``limit`` bytes, fewer if the body ends first (see :attr:`decoder`)."""
        data = bytearray()
        while len(data) < limit:
            piece = self._next(limit - len(data))
            if not piece:
                break
            data += piece
        return bytes(data)

    def drain(self, limit: int) -> bool:
        """Skip what the app did not read, up to ``limit`` bytes; whether the body ended."""
        skipped = len(self.pending)
        self.pending = b""
        while skipped <= limit:
            piece = self._next(_READ)
            if not piece:
                return True
            skipped += len(piece)
        return False


class _Handler(wsgiref.handlers.SimpleHandler):
    """wsgiref's handler, writing to a transport, keeping connections alive when it can."""

    os_environ: Dict[str, str] = {}  # not the process's environment, as CGI would
    http_version = "1.1"
    origin_server = True
    server_software = "wsthread"
    # Set by wsgiref's BaseHandler (typeshed does not declare them).
    status: Optional[str]
    headers: Any
    environ: Dict[str, Any]

    def __init__(
        self,
        transport: Transport,
        stdin: Any,
        environ: Dict[str, Any],
        write_timeout: Optional[float],
        no_body: bool,
        log: logging.Logger,
    ) -> None:
        super().__init__(stdin, io.BytesIO(), sys.stderr, environ, multithread=True)
        self.transport = transport
        self.write_timeout = write_timeout
        self.no_body = no_body
        self.head_sent = False
        self.failed = False
        self.keep_alive = True
        self.log = log
        self.body_expected: Optional[int] = None  # the response's Content-Length, once sent
        self.body_sent = 0
        self.overrun_logged = False

    def finish_response(self) -> None:
        """Send the response; a body shorter than its Content-Length ends the connection."""
        method, path = self.environ.get("REQUEST_METHOD"), self.environ.get("PATH_INFO")
        super().finish_response()  # ends with close(), which drops the environ
        if (
            not self.no_body
            and self.body_expected is not None
            and self.body_sent < self.body_expected
        ):
            self.log.warning(
                "WSGI application sent %d of its Content-Length (%d) on %s %s: connection closed",
                self.body_sent,
                self.body_expected,
                method,
                path,
            )
            self.keep_alive = False

    def cleanup_headers(self) -> None:
        status = int(str(self.status)[:3])
        if status < 200 or status in (204, 304):
            self.no_body = True
            if status != 304:
                del self.headers["Content-Length"]
        else:
            super().cleanup_headers()
        if "Content-Length" not in self.headers and not self.no_body:
            self.keep_alive = False  # the end of the connection delimits the body
        if (self.headers.get("Connection") or "").lower() == "close":
            self.keep_alive = False
        if not self.keep_alive:
            self.headers["Connection"] = "close"

    def start_response(
        self, status: str, headers: List[Tuple[str, str]], exc_info: Any = None
    ) -> Any:
        """PEP 3333's ``start_response``, refusing a status or header that would break the head.

        A CR or LF (or another control character) in the status or in a
        header raises ``ValueError`` in the application's own call, as a
        wrong type does: wsgiref then answers 500 and nothing of it reaches
        the wire.
        """
        if not isinstance(status, str) or not _STATUS_LINE.fullmatch(status):
            raise ValueError(f"invalid WSGI status {str(status)[:60]!r}")
        for name, value in headers:
            check_header(name, value)
        return super().start_response(status, headers, exc_info)

    def send_headers(self) -> None:
        super().send_headers()
        self.head_sent = True
        length = self.headers.get("Content-Length")
        self.body_expected = int(length) if length and length.isdigit() else None
        self.body_sent = 0

    # This module writes to the transport itself, deliberately: these are
    # plain HTTP answers on a connection that is not (yet) a WebSocket, so no
    # Writer (wsthread/writer.py, the one way out for a WebSocket's bytes)
    # exists for it; a connection that upgrades gets one.
    def _write(self, data: bytes) -> None:
        if self.environ.get(HIJACKED) or (self.head_sent and self.no_body):
            return
        if self.head_sent and self.body_expected is not None:
            # Never more body than Content-Length: the rest would be read as
            # the next response on a kept-alive connection.
            room = self.body_expected - self.body_sent
            if len(data) > room:
                if not self.overrun_logged:
                    self.log.warning(
                        "WSGI application sent more than its Content-Length (%d) on %s %s: "
                        "cut, and the connection closed",
                        self.body_expected,
                        self.environ.get("REQUEST_METHOD"),
                        self.environ.get("PATH_INFO"),
                    )
                    self.overrun_logged = True
                self.keep_alive = False
                data = data[:room]
            self.body_sent += len(data)
            if not data:
                return
        try:
            self.transport.write(bytes(data))
        except OSError as exc:
            raise _ClientGone(f"the client left during the response: {exc}") from exc

    def _flush(self) -> None:
        if self.environ.get(HIJACKED):
            return
        try:
            self.transport.flush(self.write_timeout)
        except socket.timeout as exc:
            raise _ClientGone(f"the client took no data for {self.write_timeout}s") from exc
        except OSError as exc:
            raise _ClientGone(f"the client left during the response: {exc}") from exc

    def log_exception(self, exc_info: Any) -> None:
        self.failed = True
        if isinstance(exc_info[1], _BodyTimeout):
            # The client stopped sending its body: not the application's fault.
            self.error_status = "408 Request Timeout"
            self.error_body = b"the request body did not arrive in time\n"
            self.log.debug("HTTP request body timed out")
            return
        if isinstance(exc_info[1], InvalidHandshake):
            # A malformed or oversized chunked body, found as the app read it.
            exc = exc_info[1]
            self.error_status = f"{int(exc.status)} {HTTPStatus(exc.status).phrase}"
            self.error_body = error_response(exc).body
            self.log.debug("rejected HTTP request body: %d %s", int(exc.status), exc)
            return
        if isinstance(exc_info[1], _ClientGone):
            self.log.debug("%s", exc_info[1])
            return
        self.log.error(
            "WSGI application failed on %s %s",
            self.environ.get("REQUEST_METHOD"),
            self.environ.get("PATH_INFO"),
            exc_info=exc_info,
        )


def _environ(
    server: Any, transport: Transport, request: Request, stdin: Any, length: Optional[int]
) -> Dict[str, Any]:
    target = request.target
    if not target.startswith("/") and target != "*":
        parts = urllib.parse.urlsplit(target)  # absolute form, as sent to proxies
        target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    path, _, query = target.partition("?")
    host, port = _server_address(server, request)
    peer = _peer(transport)
    environ: Dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": urllib.parse.unquote(path, "latin-1"),
        "QUERY_STRING": query,
        "SERVER_NAME": host,
        "SERVER_PORT": port,
        "SERVER_PROTOCOL": request.version,
        "REMOTE_ADDR": peer[0],
        "REMOTE_PORT": peer[1],
        "RAW_URI": request.target,
        "wsgi.url_scheme": "https" if getattr(server, "ssl_context", None) else "http",
        "wsthread.connection.transport": transport,
    }
    if length is not None:
        environ["CONTENT_LENGTH"] = str(length)
    for name, value in request.headers.items():
        key = name.upper().replace("-", "_")
        if "_" in name:
            continue  # a header that would alias another once dashes became underscores
        if key == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif key == "CONTENT_LENGTH":
            continue
        else:
            key = "HTTP_" + key
            environ[key] = environ[key] + "," + value if key in environ else value
    return environ


def _peer(transport: Transport) -> Tuple[str, str]:
    """The client's address and port as strings, for ``REMOTE_ADDR``/``REMOTE_PORT``."""
    try:
        address = transport.socket.getpeername()
    except OSError:
        return "", ""
    if isinstance(address, tuple):
        return str(address[0]), str(address[1])
    return str(address or ""), ""


def _server_address(server: Any, request: Request) -> Tuple[str, str]:
    address = getattr(server, "server_address", ("", 0))
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), str(address[1])
    return "localhost", "0"


def serve_wsgi(
    server: Any,
    transport: Transport,
    request: Request,
    trailing_data: bytes,
) -> None:
    """Serve ``request``, then every following request of the connection, with the ``wsgi`` app.

    ``server`` provides ``options`` (``wsgi``, ``max_body_size``,
    ``open_timeout``, ``write_timeout``), ``logger``, ``routes`` and
    ``http_connections`` (an :class:`HTTPConnections`, which this
    connection counts against while it is served). Returns when the
    connection should end (the caller closes it), or when a middleware took
    it over for a WebSocket. A later request on the same connection that is
    a WebSocket upgrade to one of the server's routes goes to
    ``server.serve_upgrade()`` instead of the application.
    """
    log: logging.Logger = server.logger
    slots: HTTPConnections = server.http_connections
    try:
        slots.acquire()
    except ServiceUnavailable as exc:
        log.warning("rejected HTTP request: 503 %s", exc)
        _answer_and_end(transport, error_response(exc))
        return
    upgrade: Optional[Request] = None
    stream = _Stream(transport, trailing_data, server.options.open_timeout)
    try:
        upgrade = _serve_all(server, transport, stream, request, log)
    finally:
        slots.release()
    if upgrade is not None:
        server.serve_upgrade(transport, upgrade, bytes(stream.buffer))


def _serve_all(
    server: Any, transport: Transport, stream: _Stream, request: Request, log: logging.Logger
) -> Optional[Request]:
    """Serve the connection's requests; the upgrade request that ends them, if one does."""
    current: Optional[Request] = request
    while current is not None:
        try:
            framing = request_framing(current)
            keep_alive = _serve_one(server, transport, stream, current, framing, log)
        except socket.timeout:
            log.debug("HTTP request body timed out after %ss", server.options.open_timeout)
            return None
        except InvalidHandshake as exc:
            log.debug("rejected HTTP request: %d %s", int(exc.status), exc)
            _answer_and_end(transport, error_response(exc))
            return None
        except OSError as exc:
            log.debug("HTTP connection failed: %s", exc)
            return None
        if not keep_alive:
            return None
        current = _next_request(server, transport, stream, log)
        if current is not None and is_upgrade(current) and server.routes.match(current.path):
            return current
    return None


def _next_request(
    server: Any, transport: Transport, stream: _Stream, log: logging.Logger
) -> Optional[Request]:
    """The next request head on a kept-alive connection, or ``None`` if it ends."""
    deadline = Deadline(server.options.open_timeout)
    parser = RequestParser()
    try:
        request = parser.feed(bytes(stream.buffer)) if stream.buffer else None
        while request is None:
            data = transport.recv(_READ, deadline.remaining())
            if not data:
                return None
            request = parser.feed(data)
    except socket.timeout:
        return None  # an idle kept-alive connection: end it quietly
    except InvalidHandshake as exc:
        log.debug("rejected HTTP request: %d %s", int(exc.status), exc)
        _answer_and_end(transport, error_response(exc))
        return None
    except OSError:
        return None
    stream.buffer = bytearray(parser.trailing_data)
    return request


def _serve_one(
    server: Any,
    transport: Transport,
    stream: _Stream,
    request: Request,
    framing: Framing,
    log: logging.Logger,
) -> bool:
    """Serve one request; whether the connection may carry another."""
    headers = request.headers
    keep_alive = request.version == "HTTP/1.1" and not any(
        token.strip().lower() == "close"
        for value in headers.get_all("Connection")
        for token in value.split(",")
    )
    # An Upgrade answered with anything but 101: a proxy may take the rest of
    # the connection for a tunnel, so nothing after this request is served.
    if "Upgrade" in headers:
        keep_alive = False
    stream.new_request()
    stdin, length, skip = _body(transport, stream, request, framing, server.options.max_body_size)
    environ = _environ(server, transport, request, stdin, length)
    if framing.host is not None:
        environ["HTTP_HOST"] = framing.host  # an absolute-form target's authority wins
    if length is None:
        environ["wsgi.input_terminated"] = True
    no_body = not framing.chunked and framing.length == 0
    environ["wsthread.trailing_data"] = bytes(stream.buffer) if no_body else b""
    handler = _Handler(
        transport,
        stdin,
        environ,
        server.options.write_timeout,
        request.method == "HEAD",
        log,
    )
    handler.run(server.options.wsgi)
    if environ.get(HIJACKED):
        return False
    if handler.failed and handler.head_sent:
        return False  # the response may be cut short: only closing tells the client
    if not handler.keep_alive or not keep_alive:
        return False
    try:
        return skip()
    except (InvalidHandshake, OSError) as exc:  # _BodyTimeout and _ClientGone are OSErrors
        log.debug("HTTP request body left unread failed: %s", exc)
        return False


def _body(
    transport: Transport,
    stream: _Stream,
    request: Request,
    framing: Framing,
    limit: Optional[int],
) -> Tuple[Any, Optional[int], Callable[[], bool]]:
    """``wsgi.input``, the body's length (``None``: streamed chunked), and how to skip the rest.

    A body is read from the socket as the application asks; a chunked one
    that ends within its first 64 KiB is read first, and has a length.
    ``Expect: 100-continue`` is answered once the body is known acceptable.
    The third value skips what the app left unread, and says whether the
    connection can carry another request.
    """
    if framing.chunked:
        _continue(transport, request)
        chunked = _ChunkedBody(stream, ChunkedDecoder(limit))
        start = chunked.read_ahead(_READ_AHEAD)
        if chunked.decoder.done:
            chunked.read_ahead(1)  # hands the bytes after the body back to the stream
            return io.BytesIO(start), len(start), lambda: True
        chunked.pending = start
        return io.BufferedReader(chunked), None, lambda: chunked.drain(_DRAIN)
    length = framing.length
    if limit is not None and length > limit:
        raise InvalidHandshake(
            f"request body over {limit} bytes",
            status=HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )
    if length:
        _continue(transport, request)
    body_reader = _LengthBody(stream, length)
    has_length = bool(request.headers.get_all("Content-Length"))
    return (
        io.BufferedReader(body_reader),
        length if has_length else None,
        lambda: _skip_unread(stream, body_reader.remaining),
    )


def _skip_unread(stream: _Stream, left: int) -> bool:
    """Read past the body bytes the application left; whether the connection can go on."""
    if left > _DRAIN:
        return False
    while left:
        data = stream.read_some(left)
        if not data:
            return False
        left -= len(data)
    return True


def _continue(transport: Transport, request: Request) -> None:
    """Answer ``Expect: 100-continue`` once the body is known to be acceptable."""
    if request.version == "HTTP/1.1" and any(
        value.strip().lower() == "100-continue" for value in request.headers.get_all("Expect")
    ):
        transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")


def _answer_and_end(transport: Transport, response: Any) -> None:
    try:
        transport.write(response.serialize())
        transport.flush(1)
        transport.socket.shutdown(socket.SHUT_WR)
    except OSError:
        pass
