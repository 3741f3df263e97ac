"""The WebSocket server: a :class:`socketserver.ThreadingTCPServer` that speaks RFC 6455.

The life of a connection::

    accept thread ── get_request() ── process_request() starts a thread ──┐
                                                                          v
    connection thread: read the HTTP request (bounded by open_timeout)
                       validate it (sans-I/O) ── reject: 4xx answer, close
                       write 101 Switching Protocols
                       start the reader thread
                       handler(connection)          <- your code, blocking
                       close(1000), or close(1011) if the handler raised
                       close the socket, forget the connection

Nothing slow runs on the accept thread: the handshake, like the handler, runs
on the connection's own thread, so a client that sends nothing delays nobody.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl as ssl_module
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .connection import Connection, Keepalive
from .deadline import Deadline
from .exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidOrigin,
    InvalidRequest,
)
from .sansio.deflate import DeflateParameters, PerMessageDeflate, negotiate_server
from .sansio.frames import CloseCode
from .sansio.handshake import (
    Request,
    RequestParser,
    accept_response,
    error_response,
    parse_tokens,
    validate_request,
)
from .sansio.protocol import Protocol, Side

__all__ = ["ServerConnection", "WebSocketServer", "serve", "Handler"]

logger = logging.getLogger("wsthread")


class ServerConnection(Connection):
    """A connection accepted by a :class:`WebSocketServer`; handed to your handler.

    Attributes:
        request: the HTTP request that opened the connection (``path``,
            ``query``, ``headers``, ``cookies``).
        subprotocol: the subprotocol agreed in the handshake, or ``None``.
        server: the server that accepted the connection.
    """

    def __init__(
        self,
        sock: socket.socket,
        protocol: Protocol,
        *,
        request: Request,
        subprotocol: Optional[str],
        server: WebSocketServer,
        **kwargs: Any,
    ) -> None:
        super().__init__(sock, protocol, **kwargs)
        self.request = request
        self.subprotocol = subprotocol
        self.server = server


Handler = Callable[[ServerConnection], None]


class _RequestHandler(socketserver.BaseRequestHandler):
    """socketserver's per-connection object; the work is in the server."""

    server: WebSocketServer

    def handle(self) -> None:
        self.server._serve_connection(self.request, self.client_address)


class WebSocketServer(socketserver.ThreadingTCPServer):
    """A threaded WebSocket server; see :func:`serve` for the options.

    Each connection runs on its own thread (the handshake, then your
    handler) plus a reader thread. :meth:`shutdown` stops accepting, closes
    every connection with 1001 and waits for their threads.
    """

    allow_reuse_address = True
    daemon_threads = True
    block_on_close = False
    # socketserver's default backlog of 5 stalls a burst of connections.
    request_queue_size = 1024

    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        *,
        origins: Optional[Sequence[Optional[str]]] = None,
        subprotocols: Optional[Sequence[str]] = None,
        open_timeout: Optional[float] = 10,
        ping_interval: Optional[float] = 20,
        ping_timeout: Optional[float] = 20,
        close_timeout: Optional[float] = 10,
        max_size: Optional[int] = 2**20,
        max_queue: Optional[int] = 16,
        logger: Optional[logging.Logger] = None,
        ssl: Optional[ssl_module.SSLContext] = None,
        compression: Optional[str] = "deflate",
    ) -> None:
        if compression not in ("deflate", None):
            raise ValueError(f"unsupported compression {compression!r}: use 'deflate' or None")
        self.handler = handler
        self.ssl_context = ssl
        self.compression = compression
        self.origins = None if origins is None else list(origins)
        self.subprotocols = list(subprotocols) if subprotocols else []
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.max_size = max_size
        self.max_queue = max_queue
        self.logger = logger if logger is not None else globals()["logger"]
        self._keepalive = (
            Keepalive(ping_interval, ping_timeout) if ping_interval is not None else None
        )
        self._connections: Dict[ServerConnection, None] = {}
        self._connection_threads: Dict[threading.Thread, None] = {}
        self._state_lock = threading.Lock()
        self._serving = False
        self._closed = False
        self._serve_thread: Optional[threading.Thread] = None
        if ":" in host and self.address_family == socket.AF_INET:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _RequestHandler)

    # -- information --------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the server listens on (useful after binding port 0)."""
        return int(self.server_address[1])

    @property
    def connections(self) -> List[ServerConnection]:
        """A snapshot of the open connections."""
        with self._state_lock:
            return list(self._connections)

    # -- running ------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Accept connections until :meth:`shutdown` is called."""
        with self._state_lock:
            if self._closed:
                return
            self._serving = True
        try:
            super().serve_forever(poll_interval)
        finally:
            with self._state_lock:
                self._serving = False

    def start(self) -> WebSocketServer:
        """Serve from a background thread and return at once."""
        with self._state_lock:
            if self._serve_thread is not None:
                raise RuntimeError("the server is already started")
            self._serve_thread = threading.Thread(
                target=self.serve_forever, name="wsthread-accept", daemon=True
            )
        self._serve_thread.start()
        return self

    def shutdown(self) -> None:
        """Stop accepting, close every connection with 1001, wait for their threads.

        Idempotent, and callable from any thread except the one running
        :meth:`serve_forever`. Returns within about ``close_timeout`` (plus
        the time handlers take to notice their connection closed).
        """
        with self._state_lock:
            already_closed = self._closed
            self._closed = True
            serving = self._serving
        if serving:
            super().shutdown()
        if already_closed:
            return
        self.server_close()
        serve_thread = self._serve_thread
        if serve_thread is not None and serve_thread is not threading.current_thread():
            serve_thread.join()
        connections = self.connections
        closers = [
            threading.Thread(
                target=self._close_quietly,
                args=(connection, CloseCode.GOING_AWAY, "server shutting down"),
                daemon=True,
            )
            for connection in connections
        ]
        for closer in closers:
            closer.start()
        for closer in closers:
            closer.join()
        deadline = Deadline(self.close_timeout)
        with self._state_lock:
            threads = list(self._connection_threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(deadline.remaining())
                if thread.is_alive():
                    self.logger.warning("%s is still running after shutdown", thread.name)
        if self._keepalive is not None:
            self._keepalive.stop()

    @staticmethod
    def _close_quietly(connection: Connection, code: int, reason: str) -> None:
        try:
            connection.close(code, reason)
        except Exception:
            logger.exception("error while closing %r", connection)

    def server_close(self) -> None:
        """Close the listening socket (connections are closed by :meth:`shutdown`)."""
        socketserver.TCPServer.server_close(self)

    def __enter__(self) -> WebSocketServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    # -- socketserver hooks --------------------------------------------------

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start the connection's thread (on the accept thread: nothing slow here)."""
        thread = threading.Thread(
            target=self._connection_thread,
            args=(request, client_address),
            name=f"wsthread-conn-{client_address}",
            daemon=True,
        )
        with self._state_lock:
            self._connection_threads[thread] = None
        thread.start()

    def _connection_thread(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self._state_lock:
                self._connection_threads.pop(threading.current_thread(), None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log an unexpected error in a connection thread (never print it)."""
        self.logger.exception("unexpected error serving %s", client_address)

    # -- one connection --------------------------------------------------

    def _serve_connection(self, sock: socket.socket, address: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        deadline = Deadline(self.open_timeout)
        if self.ssl_context is None:
            self._serve_websocket(sock, address, deadline)
            return
        tls = self._tls_handshake(sock, address, deadline)
        if tls is None:
            return
        try:
            self._serve_websocket(tls, address, deadline)
        finally:
            tls.close()

    def _tls_handshake(
        self, sock: socket.socket, address: Any, deadline: Deadline
    ) -> Optional[ssl_module.SSLSocket]:
        """Run the TLS handshake on this connection's thread, within ``open_timeout``."""
        assert self.ssl_context is not None
        try:
            tls = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        except OSError as exc:
            self.logger.debug("TLS setup for %s failed: %s", address, exc)
            return None
        try:
            tls.settimeout(deadline.remaining())
            tls.do_handshake()
        except (OSError, ValueError) as exc:  # ssl.SSLError and timeouts are OSErrors
            self.logger.debug("TLS handshake with %s failed: %s", address, exc)
            tls.close()
            return None
        return tls

    def _serve_websocket(self, sock: socket.socket, address: Any, deadline: Deadline) -> None:
        handshake = self._handshake(sock, address, deadline)
        if handshake is None:
            return
        request, subprotocol, deflate, initial_data = handshake
        codec = None if deflate is None else PerMessageDeflate(deflate, is_server=True)
        connection = ServerConnection(
            sock,
            Protocol(Side.SERVER, max_size=self.max_size, deflate=codec),
            request=request,
            subprotocol=subprotocol,
            server=self,
            close_timeout=self.close_timeout,
            max_queue=self.max_queue,
            initial_data=initial_data,
            logger=self.logger,
        )
        with self._state_lock:
            closing = self._closed
            if not closing:
                self._connections[connection] = None
        if closing:
            connection.start()
            connection.close(CloseCode.GOING_AWAY, "server shutting down")
            return
        connection.start()
        if self._keepalive is not None:
            self._keepalive.add(connection)
        self.logger.info("connection open: %s %s", address, request.target)
        code, reason = CloseCode.NORMAL_CLOSURE, ""
        try:
            self.handler(connection)
        except ConnectionClosed:
            pass
        except Exception:
            self.logger.exception("handler failed for %s", address)
            code, reason = CloseCode.INTERNAL_ERROR, "internal server error"
        finally:
            connection.close(code, reason)
            if self._keepalive is not None:
                self._keepalive.remove(connection)
            with self._state_lock:
                self._connections.pop(connection, None)
            self.logger.info("connection closed: %s code %s", address, connection.close_code)

    def _handshake(
        self, sock: socket.socket, address: Any, deadline: Deadline
    ) -> Optional[Tuple[Request, Optional[str], Optional[DeflateParameters], bytes]]:
        """Read and answer the opening handshake; ``None`` if it failed."""
        parser = RequestParser()
        try:
            request = None
            while request is None:
                sock.settimeout(deadline.remaining())
                data = sock.recv(65536)
                if not data:
                    self.logger.debug("%s closed the connection during the handshake", address)
                    return None
                request = parser.feed(data)
            key = validate_request(request)
            self._check_origin(request)
            subprotocol = self._select_subprotocol(request)
            extensions: Optional[str] = None
            deflate: Optional[DeflateParameters] = None
            if self.compression == "deflate":
                agreed = negotiate_server(request.headers.get_all("Sec-WebSocket-Extensions"))
                if agreed is not None:
                    extensions, deflate = agreed
            response = accept_response(key, subprotocol=subprotocol, extensions=extensions)
            sock.sendall(response.serialize())
            sock.settimeout(None)
        except InvalidHandshake as exc:
            self.logger.info("rejected handshake from %s: %d %s", address, int(exc.status), exc)
            self._send_quietly(sock, error_response(exc).serialize())
            return None
        except socket.timeout:
            self.logger.info("handshake from %s timed out after %ss", address, self.open_timeout)
            return None
        except OSError as exc:
            self.logger.debug("handshake from %s failed: %s", address, exc)
            return None
        return request, subprotocol, deflate, parser.trailing_data

    @staticmethod
    def _send_quietly(sock: socket.socket, data: bytes) -> None:
        try:
            sock.settimeout(1)
            sock.sendall(data)
        except OSError:
            pass

    def _check_origin(self, request: Request) -> None:
        if self.origins is None:
            return
        origin = request.headers.get("Origin")
        if origin not in self.origins:
            raise InvalidOrigin(
                "origin not allowed" if origin is not None else "missing Origin header"
            )

    def _select_subprotocol(self, request: Request) -> Optional[str]:
        offered: List[str] = []
        for value in request.headers.get_all("Sec-WebSocket-Protocol"):
            offered.extend(parse_tokens(value))
        if not self.subprotocols or not offered:
            return None
        for subprotocol in self.subprotocols:
            if subprotocol in offered:
                return subprotocol
        raise InvalidRequest("no supported subprotocol offered")


def serve(
    handler: Handler,
    host: str = "127.0.0.1",
    port: int = 8765,
    **options: Any,
) -> WebSocketServer:
    """Create a WebSocket server listening on ``host:port``, ready to serve.

    Args:
        handler: called with a :class:`ServerConnection` on the connection's
            own thread; the connection closes (1000) when it returns, or with
            1011 if it raises.
        host: the address to bind; ``port`` 0 picks a free port (see
            :attr:`WebSocketServer.port`).
        origins: the acceptable ``Origin`` values (``None`` in the list means
            "no Origin header"); others get 403. ``None`` accepts all.
        subprotocols: the subprotocols supported, in order of preference.
        open_timeout: seconds a client has to complete the handshake.
        ping_interval: seconds between keepalive pings; ``None`` disables them.
        ping_timeout: seconds to wait for a pong before closing with 1011.
        close_timeout: seconds to wait for the closing handshake.
        max_size: the largest message accepted (1009 beyond); ``None``: no limit.
        max_queue: received messages buffered before reading pauses.
        logger: the logger to use instead of ``logging.getLogger("wsthread")``.
        ssl: an :class:`ssl.SSLContext` to serve ``wss://``; the TLS handshake
            runs on the connection's thread within ``open_timeout``.
        compression: ``"deflate"`` (the default) accepts permessage-deflate
            when a client offers it; ``None`` disables it. Messages under 16
            bytes are sent uncompressed; ``max_size`` bounds the inflated size.

    Returns:
        The listening server: call ``serve_forever()`` or ``start()``; use it
        as a context manager to shut it down on exit.
    """
    return WebSocketServer(handler, host, port, **options)
