"""The WebSocket server on socketserver.ThreadingTCPServer: accept thread, a thread per connection.

The life of a connection::

    accept thread ── handle_request(): get_request(), verify_request(),
                     process_request() starts the connection's thread ──┐
                                                                        v
    connection thread: socketserver's process_request_thread():
      finish_request() ── the request handler (_RequestHandler):
        setup():   TLS handshake, if serving wss:// (within open_timeout)
        handle():  ServerConnection.handshake(): read the HTTP request
                     process_request hook ── a Response: send it, close
                     validate it (sans-I/O) ── reject: 4xx/503 answer, close
                     write 101 Switching Protocols
                   handler(connection)          <- your code, blocking;
                                                   recv() reads the socket
                                                   (a reader thread takes
                                                   over when it does not)
                   close(1000), or close(1011) if the handler raised
        finish():  forget the connection
      shutdown_request(): close the socket

Which parts of :mod:`socketserver` are used, and which are not:

* Used as designed: ``TCPServer``'s listening socket (``server_bind``,
  ``server_activate``, ``allow_reuse_address``, ``request_queue_size``),
  its accept step (``handle_request``: ``get_request``, ``verify_request``,
  ``process_request``, ``handle_error``, ``shutdown_request``),
  ``ThreadingMixIn.process_request_thread`` on each connection's thread, and
  a ``BaseRequestHandler`` whose ``setup``/``handle``/``finish`` do the TLS
  handshake, the opening handshake and the handler, and the teardown.
* Replaced: ``serve_forever`` (so that :meth:`WebSocketServer.shutdown`
  works from any thread, the serving one and a signal handler included)
  and ``ThreadingMixIn.process_request`` (to set each thread's stack size
  and name, and to keep each thread with its socket, so that shutdown can
  wake a thread still waiting in the opening handshake).
* Not used: ``ThreadingMixIn``'s thread tracking (``daemon_threads``,
  ``block_on_close``): :meth:`WebSocketServer.shutdown` closes every
  connection with 1001 and then waits for the threads, within
  ``close_timeout``, which ``server_close()`` joining blindly could not.

Nothing slow runs on the accept thread: the handshakes, like the handler, run
on the connection's own thread, so a client that sends nothing delays nobody.
:meth:`WebSocketServer.broadcast` sends one message to many connections
without waiting for any of them (see :mod:`wsthread.connection.writer`).

Three parts of the server live in modules of their own:
:mod:`wsthread.server.registry` (its connections and connection threads,
``stats()``, and the shutdown sequence), :mod:`wsthread.server.serving` (the
accept loop's thread, and stopping it from any thread) and
:mod:`wsthread.server.broadcast` (broadcasts, and the hub).
"""

from __future__ import annotations

import atexit
import dataclasses
import errno
import logging
import os
import socket
import socketserver
import ssl as ssl_module
import threading
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    FrozenSet,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from ..connection import parking
from ..connection.connection import (
    Connection,
    Data,
    dump_json,
    format_address,
    peer_address,
)
from ..connection.fragments import refuse_message
from ..connection.threads import Keepalive, start_thread
from ..connection.trace import CLIENT_TO_SERVER, SERVER_TO_CLIENT, Tracer
from ..connection.transport import TLSTransport, Transport
from ..exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    ServiceUnavailable,
)
from ..options import ReceiveBudgetOption, ServerOptions
from ..runtime.deadline import Deadline
from ..runtime.fdlimit import AcceptGuard, is_resource_error
from ..runtime.forks import ForkGuard
from ..sansio.deflate import (
    CompressionOption,
    DeflateParameters,
)
from ..sansio.frames import CloseCode
from ..sansio.handshake import (
    Request,
    RequestParser,
    Response,
    check_header,
    header_pairs,
)
from ..sansio.opening import Reject, ServerOpening
from ..sansio.protocol import Protocol, Side
from ..sansio.routing import Routes, is_upgrade
from .broadcast import Broadcaster
from .http import HTTPConnections, serve_wsgi
from .registry import Registry, asked_to_close
from .serving import ServingState
from .stats import LogLimiter, ServerCounters
from .topics import Topics

__all__ = [
    "ServerConnection",
    "WebSocketServer",
    "DetachedServer",
    "serve",
    "Handler",
    "ProcessRequest",
    "SelectSubprotocol",
    "HeadersLike",
    "ProcessResponse",
    "unix_serve",
    "DEFAULT_SERVER_HEADER",
]

logger = logging.getLogger("wsthread")

HeadersLike = Union[Mapping[str, str], Iterable[Tuple[str, str]]]
"""HTTP headers given as a mapping or as ``(name, value)`` pairs."""

DEFAULT_SERVER_HEADER = "wsthread"
"""The ``Server`` header a server sends by default (no version: nothing to fingerprint)."""


class ServerConnection(Connection):
    """A connection accepted by a :class:`WebSocketServer`; handed to your handler.

    It runs its own opening handshake (:meth:`handshake`) with the server's
    settings, on the connection's thread.

    Attributes:
        request: the HTTP request that opened the connection (``path``,
            ``query``, ``headers``, ``cookies``); ``None`` until it is read.
        subprotocol: the subprotocol agreed in the handshake, or ``None``.
        server: the server that accepted the connection.
    """

    def __init__(
        self,
        transport: Transport,
        protocol: Protocol,
        *,
        server: WebSocketServer,
        tracer: Optional[Tracer] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(transport, protocol, **kwargs)
        self.request: Optional[Request] = None
        self.subprotocol: Optional[str] = None
        self.route: Optional[Callable[[Any], None]] = None
        """The handler the request's path was routed to, looked up once in the handshake."""
        self.server = server
        self._tracer = tracer

    @classmethod
    def _accepted(cls, server: WebSocketServer, transport: Transport) -> ServerConnection:
        """A connection over ``transport``, with ``server``'s settings."""
        peer = format_address(peer_address(transport.socket))
        trace = server.options.trace
        tracer = None if trace is None else trace.connection(peer)
        return cls(
            transport,
            Protocol(Side.SERVER, max_size=server.options.max_size, trace=tracer),
            options=server.options,
            server=server,
            tracer=tracer,
        )

    @property
    def client_host(self) -> str:
        """The client's address as a string.

        The TCP peer's host; or, when that peer is one of the server's
        ``trusted_proxies``, the nearest address in ``X-Forwarded-For`` that
        is not itself a trusted proxy. A peer on a Unix socket is ``"unix"``
        (so ``trusted_proxies=["unix"]`` trusts a proxy in front of one).
        """
        address = self.remote_address
        if isinstance(address, tuple):
            peer = str(address[0])
        elif self.socket.family == getattr(socket, "AF_UNIX", None):
            peer = "unix"
        else:
            peer = str(address)
        trusted = self.server.trusted_proxies
        if not trusted or peer not in trusted or self.request is None:
            return peer
        chain = [
            host.strip()
            for value in self.request.headers.get_all("X-Forwarded-For")
            for host in value.split(",")
            if host.strip()
        ]
        for host in reversed(chain):
            if host not in trusted:
                return host
        return chain[0] if chain else peer

    # -- topics ------------------------------------------------------------------

    def subscribe(self, topic: str) -> bool:
        """Watch ``topic``: from now on, :meth:`WebSocketServer.publish` to it reaches this peer.

        Safe from any thread. The connection leaves every topic by itself
        when it ends. With a hub that carries topics, this process starts
        receiving the topic from the others (the first subscriber here makes
        the hub subscribe, shortly after, on its own thread).

        Returns:
            ``True`` if the connection was not subscribed and now is;
            ``False`` if it already was, or is not open (it then watches
            nothing).

        Raises:
            TypeError: ``topic`` is not a ``str``.
            ValueError: ``topic`` is empty or longer than 256 bytes of
                UTF-8, or the connection already watches the server's
                ``max_subscriptions`` topics.
        """
        return self.server._topics.subscribe(self, topic)

    def unsubscribe(self, topic: str) -> bool:
        """Stop watching ``topic``; ``True`` if the connection watched it. Safe from any thread.

        Raises:
            TypeError, ValueError: ``topic`` is not a valid topic name.
        """
        return self.server._topics.unsubscribe(self, topic)

    @property
    def topics(self) -> FrozenSet[str]:
        """The topics this connection watches: a snapshot, empty once it has ended."""
        return self.server._topics.topics_of(self)

    # -- the opening handshake -------------------------------------------------

    def handshake(
        self,
        deadline: Deadline,
        request: Optional[Request] = None,
        trailing_data: bytes = b"",
    ) -> Optional[int]:
        """Read and answer the opening handshake, on the connection's thread, within ``deadline``.

        A request that is not a valid upgrade to one of the routes, or that
        the hooks refuse, gets an HTTP answer and the connection ends here;
        so does a client that leaves, times out, or finds the server full
        (503). With the server's ``wsgi`` application, a request that is not
        such an upgrade goes to it instead. ``request`` is given when
        another server read it already (:meth:`WebSocketServer.serve_upgrade`),
        with ``trailing_data``, what it read beyond the request head.

        Returns:
            The HTTP status answered, 101 when the connection opened (it is
            then registered with the server); ``None`` when nothing was
            answered (the client left, or the WSGI application served it).
        """
        server = self.server
        try:
            if request is None:
                parser = RequestParser()
                request = self.reader.read_http(parser, deadline)
                if request is None:
                    self.logger.debug("closed during the handshake")
                    return None
                trailing_data = parser.trailing_data
            self.request = request
            if self._tracer is not None:
                self._tracer.handshake(CLIENT_TO_SERVER, request.serialize())
            self.route = server.routes.match(request.path)  # the one lookup of the route
            if server.options.wsgi is not None and not (
                is_upgrade(request) and self.route is not None
            ):
                serve_wsgi(server, self.transport, request, trailing_data)
                return None
            return self._answer(request, trailing_data, deadline)
        except InvalidHandshake as exc:
            return self._rejected(server.opening.reject(exc))
        except socket.timeout:
            server._counters.failed("handshake_timeout")
            self._log(
                "handshake timed out",
                logging.DEBUG,
                "handshake timed out after %ss",
                server.options.open_timeout,
            )
        except (OSError, ConnectionClosed) as exc:
            server._counters.failed("handshake_error")
            self._log("handshake failed", logging.DEBUG, "handshake failed: %s", exc)
        return None

    def _answer(self, request: Request, trailing_data: bytes, deadline: Deadline) -> int:
        """Answer a request read whole: a 101 (the connection opens), or plain HTTP that ends it."""
        server = self.server
        response = self._call_hook(server.options.process_request, "process_request", request)
        if response is not None:
            server._counters.http_response(response.status)
        else:
            decision = server.opening.decide(
                request,
                self.route,
                choose_subprotocol=self._subprotocol_hook(),
                extra_headers=self._extra_headers_hook(request),
            )
            if isinstance(decision, Reject):
                return self._rejected(decision)
            self.subprotocol = decision.subprotocol
            response, deflate = decision.response, decision.deflate
            server._registry.reserve(server.options.max_connections)  # 503 when full
            opened = False
            try:
                replaced = self._call_hook(
                    server.options.process_response, "process_response", request, response
                )
                if replaced is not None:
                    response = replaced
                if response.status == 101:
                    self._open(response, deflate, trailing_data, deadline)
                    opened = True
                    return 101
            finally:
                if not opened:
                    server._registry.unreserve()
        self.logger.info("HTTP %s %s -> %d", request.method, request.target, response.status)
        self._refuse(response)
        return response.status

    def _log(self, kind: str, level: int, message: str, *args: Any) -> None:
        """Log a handshake that failed, at most once per kind every few seconds."""
        self.server._log_limiter.log(kind, level, message, *args, logger=self.logger)

    def _open(
        self,
        response: Response,
        deflate: Optional[DeflateParameters],
        trailing_data: bytes,
        deadline: Deadline,
    ) -> None:
        """Send the 101; from then on the connection is open and registered."""
        head = response.serialize()
        if self._tracer is not None:
            self._tracer.handshake(SERVER_TO_CLIENT, head)
        self.writer.send_http(head, deadline.remaining())
        settings = self.server.deflate
        if deflate is not None and settings is not None:
            self.protocol.use_deflate(settings.codec(deflate, is_server=True))
        self.reader.handshake_done(trailing_data)
        self.server._registry.register(self)  # the reserved slot becomes the connection's

    def _run_handler(self) -> None:
        """Run the application's handler for this open connection; close it afterwards.

        The connection is closed with 1000 when the handler returns, 1011
        when it raises; keepalive pings it meanwhile.
        """
        self.start()
        server = self.server
        if server._serving.closed or asked_to_close():  # opened as shutdown began
            self.close(CloseCode.GOING_AWAY, "server shutting down")
            return
        keepalive = server._keepalive
        if keepalive is not None:
            keepalive.add(self)
        assert self.request is not None
        server._counters.opened()
        log = self.logger
        log.info("connection open: %s from %s", self.request.target, self.client_host)
        code, reason = CloseCode.NORMAL_CLOSURE, ""
        try:
            assert self.route is not None  # the handshake answered 404 otherwise
            self.route(self)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("handler failed")
            code, reason = CloseCode.INTERNAL_ERROR, "internal server error"
        finally:
            self.close(code, reason)
            if keepalive is not None:
                keepalive.remove(self)
            # The code this side closed with: its close frame's, or the one the writer gave
            # up with when the frame could not go out (a socket full of a stalled peer's data).
            sent = self.protocol.close_sent
            server._counters.closed(self.close_code, sent[0] if sent else self.writer.gave_up)
            said = self.close_reason
            log.info("connection closed: code %s%s", self.close_code, f" {said}" if said else "")

    def _rejected(self, reject: Reject) -> int:
        """Answer a refused handshake, count it and log it (rate-limited); return its status."""
        status = reject.status
        exc = reject.error
        self.server._counters.rejected(status)
        if exc is not None:
            level = logging.WARNING if isinstance(exc, ServiceUnavailable) else logging.DEBUG
            self._log(
                f"rejected handshake: {status}", level, "rejected handshake: %d %s", status, exc
            )
        self._refuse(reject.response)
        return status

    def _subprotocol_hook(self) -> Optional[Callable[[List[str]], Optional[str]]]:
        """``select_subprotocol``, as the core calls it: offered -> chosen, for this connection."""
        hook = self.server.options.select_subprotocol
        if hook is None:
            return None
        return lambda offered: hook(self, offered)

    def _extra_headers_hook(self, request: Request) -> Callable[[], List[Tuple[str, str]]]:
        """``extra_headers`` as the core calls it; a failure or a bad header is logged (a 500)."""

        def extra_headers() -> List[Tuple[str, str]]:
            headers = self.server.options.extra_headers
            try:
                if callable(headers):
                    headers = headers(self, request)
                pairs = header_pairs(headers)
                for name, value in pairs:
                    check_header(name, value)
            except Exception:
                self.logger.exception("extra_headers failed")
                raise
            return pairs

        return extra_headers

    def _call_hook(
        self, hook: Optional[Callable[..., Any]], name: str, *args: Any
    ) -> Optional[Response]:
        """Call ``process_request`` or ``process_response``; a failure becomes a 500.

        Returns what the hook returned (``None`` or a :class:`Response`), or
        ``None`` when there is no hook.
        """
        if hook is None:
            return None
        try:
            response = hook(self, *args)
        except Exception:
            self.logger.exception("%s failed", name)
            return self.server.opening.internal_error()
        if response is not None and not isinstance(response, Response):
            self.logger.error("%s returned %r, not a wsthread.Response or None", name, response)
            return self.server.opening.internal_error()
        if response is not None:
            try:
                response.serialize()  # a status, reason or header that would break the head
            except (TypeError, ValueError) as exc:
                self.logger.error("%s returned a response that cannot be sent: %s", name, exc)
                return self.server.opening.internal_error()
        return response

    def _refuse(self, response: Response) -> None:
        """Send an HTTP answer that ends the connection, ignoring a peer that left."""
        self.server.opening.add_server_header(response)
        if response.headers.get("Connection") is None:
            response.headers.add("Connection", "close")
        head = response.serialize()
        if self._tracer is not None:
            self._tracer.handshake(SERVER_TO_CLIENT, head)
        try:
            self.writer.send_http(head, 1, last=True)
        except ConnectionClosed:
            pass


Handler = Callable[[ServerConnection], None]
RoutesLike = Union[Handler, Mapping[str, Handler]]
"""One handler for every path, or a mapping of exact paths to handlers."""
ProcessRequest = Callable[[ServerConnection, Request], Optional[Response]]
ProcessResponse = Callable[[ServerConnection, Request, Response], Optional[Response]]
SelectSubprotocol = Callable[[ServerConnection, List[str]], Optional[str]]


class _RequestHandler(socketserver.BaseRequestHandler):
    """One connection's life, on its own thread: socketserver calls setup, handle, finish.

    * :meth:`setup`: ``TCP_NODELAY``, the TLS handshake when serving
      ``wss://`` (within ``open_timeout``), the :class:`ServerConnection`;
    * :meth:`handle`: the opening handshake (:meth:`ServerConnection.handshake`),
      then the application's handler; the connection is closed when it
      returns (1000) or raises (1011);
    * :meth:`finish`: the connection leaves the server's registry.

    socketserver's ``shutdown_request()`` then closes the socket.
    """

    server: WebSocketServer
    connection: Optional[ServerConnection]

    def setup(self) -> None:
        """Prepare the transport and the connection (TLS runs here, never on the accept thread)."""
        self.connection = None
        server = self.server
        sock: socket.socket = self.request
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.deadline = Deadline(server.options.open_timeout)
        peer = format_address(self.client_address)
        transport: Transport
        if server.options.ssl is None:
            transport = Transport(sock)
        else:
            try:
                transport = TLSTransport.handshake(
                    sock, server.options.ssl, server_side=True, deadline=self.deadline
                )
            except (OSError, ValueError) as exc:  # ssl.SSLError and timeouts are OSErrors
                server._counters.failed("tls")
                short = is_resource_error(exc)  # out of memory or descriptors: worth a warning
                server._log_limiter.log(
                    "TLS handshake failed" + (": out of resources" if short else ""),
                    logging.WARNING if short else logging.DEBUG,
                    "[%s] TLS handshake failed: %s",
                    peer,
                    exc,
                )
                return
        self.connection = ServerConnection._accepted(server, transport)

    def handle(self) -> None:
        """Run the opening handshake, then the application's handler."""
        connection = self.connection
        if connection is not None and connection.handshake(self.deadline) == 101:
            connection._run_handler()

    def finish(self) -> None:
        """Forget the connection (its socket is closed next, by socketserver)."""
        if self.connection is not None:
            self.server._registry.forget(self.connection)


def _is_listening(sock: socket.socket) -> bool:
    option = getattr(socket, "SO_ACCEPTCONN", None)
    if option is None:
        return False  # listen() again: harmless on a listening socket
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, option))
    except OSError:
        return False


def _bind_unix(sock: socket.socket, path: str) -> Tuple[int, int]:
    """Bind ``sock`` to ``path``, taking over a stale socket file; return the file's identity.

    A live server there is left alone (``OSError``, address in use).
    """
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)  # a socket file left behind by a server that is gone
        except OSError:
            pass  # not a socket, or not ours: bind() says why
        else:
            raise OSError(errno.EADDRINUSE, f"a server is listening on {path}")
        finally:
            probe.close()
    sock.bind(path)
    status = os.stat(path)
    return (status.st_dev, status.st_ino)


class _Listener(socketserver.ThreadingTCPServer):
    """The socketserver side of :class:`WebSocketServer`: its listening socket and accept step.

    Runs on the accept thread (``get_request``, ``process_request``) and on
    each connection thread (``_run_request``). Kept apart from the WebSocket
    side so that each is short enough to read at once; the attributes it
    uses and does not set are the server's (``logger``, ``reuse_port``,
    ``thread_stack_size``, ``_registry``, ``_accept_guard``, ``_serving``,
    ``_log_limiter``).
    """

    allow_reuse_address = True
    # socketserver's default backlog of 5 stalls a burst of connections.
    request_queue_size = 1024
    logger: logging.Logger
    reuse_port: bool
    thread_stack_size: Optional[int]
    _registry: Registry[ServerConnection]
    _accept_guard: AcceptGuard
    _serving: ServingState
    _log_limiter: LogLimiter

    def _listen(
        self,
        host: str,
        port: int,
        sock: Optional[socket.socket],
        unix_path: Union[str, os.PathLike[str], None],
    ) -> None:
        """Listen on ``sock``, on the Unix socket ``unix_path``, or on ``host:port``."""
        self._unix_inode: Optional[Tuple[int, int]] = None  # the socket file this server made
        if sock is not None and unix_path is not None:
            raise ValueError("give sock or unix_path, not both")
        if sock is not None:
            self.address_family = sock.family
            socketserver.ThreadingTCPServer.__init__(
                self, sock.getsockname(), _RequestHandler, bind_and_activate=False
            )
            self.socket.close()  # socketserver made one; serve the one given instead
            self.socket = sock
            if not _is_listening(sock):
                sock.listen(self.request_queue_size)
        elif unix_path is not None:
            self.address_family = socket.AF_UNIX
            socketserver.ThreadingTCPServer.__init__(self, os.fspath(unix_path), _RequestHandler)  # type: ignore[arg-type]
        else:
            if ":" in host and self.address_family == socket.AF_INET:
                self.address_family = socket.AF_INET6
            socketserver.ThreadingTCPServer.__init__(self, (host, port), _RequestHandler)

    def server_bind(self) -> None:
        """Bind the listening socket, sharing the port if ``reuse_port`` asks for it.

        A Unix socket's path is taken over if it holds a stale socket file
        (one nobody listens on any more); a live server there is left alone
        (``OSError``, address in use).
        """
        if self.address_family == getattr(socket, "AF_UNIX", None):
            path = str(self.server_address)
            self._unix_inode = _bind_unix(self.socket, path)
            self.server_address = path  # type: ignore[assignment]
            return
        if self.reuse_port:
            option = getattr(socket, "SO_REUSEPORT", None)
            if option is None:
                raise OSError("reuse_port: this platform has no SO_REUSEPORT")
            self.socket.setsockopt(socket.SOL_SOCKET, option, 1)
        try:
            super().server_bind()
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            # The same error, errno kept, with the likely cause for a newcomer.
            where = format_address(self.server_address)
            raise OSError(
                exc.errno,
                f"{exc.strerror}: {where} is taken, by another program or by another "
                f"process of this application: a reloader's watcher process (flask run "
                f"--debug) or another worker that created its server at import time. "
                f"Create the server in the process that serves; several processes share a "
                f"port with reuse_port=True (see the how-to 'Reloaders and pre-fork servers')",
            ) from exc

    # -- the accept step and the accept loop -----------------------------------

    def get_request(self) -> Tuple[socket.socket, Any]:
        """Accept a connection (socketserver hook); at the fd limit: :mod:`.runtime.fdlimit`."""
        try:
            request = self.socket.accept()
        except OSError as exc:
            self._accept_guard.failed(exc, self.socket)
            raise  # socketserver skips this round
        if self._accept_guard.at_limit:
            self._accept_guard.accepted()
        return request

    def server_close(self) -> None:
        """Close the listening socket (connections are closed by :meth:`shutdown`).

        A Unix socket file this server created is removed, unless another
        server has taken its path since.
        """
        socketserver.TCPServer.server_close(self)
        made, self._unix_inode = self._unix_inode, None
        if made is not None:
            path = str(self.server_address)
            try:
                status = os.stat(path)
                if (status.st_dev, status.st_ino) == made:
                    os.unlink(path)
            except OSError:
                pass
        self._accept_guard.close()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start the connection's thread (on the accept thread: nothing slow here)."""
        thread = threading.Thread(
            target=self._run_request,
            args=(request, client_address),
            name=f"wsthread-conn-{client_address}",
            daemon=True,
        )
        self._registry.add_thread(thread, request, started_here=True)
        start_thread(thread, self.thread_stack_size)

    def _run_request(self, request: Any, client_address: Any) -> None:
        """A connection thread: socketserver's own steps, then it leaves the registry."""
        try:
            # finish_request() (the request handler), handle_error(), shutdown_request().
            self.process_request_thread(request, client_address)
        finally:
            self._registry.remove_thread(threading.current_thread())
            self._accept_guard.descriptor_freed()

    def _release_inherited(self) -> None:
        """In a forked child: close our copy of the listening socket, touch nothing shared.

        ``socket.shutdown()`` or a close frame would act on the parent's
        sockets; closing a file descriptor only drops this process's reference.
        """
        self._serving.stop()
        atexit.unregister(self.shutdown)
        self.socket.close()

    def service_actions(self) -> None:
        """Run by the accept loop about twice a second: write the due log summaries."""
        self._log_limiter.flush()

    def _accept_loop(self, poll_interval: float) -> None:
        """Run socketserver's accept step until the server stops (on the accept thread)."""
        if not self._serving.begin():
            return
        self.timeout = poll_interval
        try:
            while not self._serving.stopping:
                # socketserver's accept step: wait at most poll_interval for a
                # client, then get_request(), verify_request(), process_request().
                self.handle_request()
                pause = self._accept_guard.pause()
                if pause:  # out of descriptors: wait, or until a connection ends
                    self._accept_guard.wait(pause)
                self.service_actions()
        finally:
            self._serving.end()

    def _wake_accept_loop(self) -> None:
        """Wake the accept loop now rather than at its next poll.

        On Linux, shutting a listening socket down makes it readable.
        """
        try:
            self.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log an unexpected error in a connection thread (never print it)."""
        self.logger.exception("unexpected error serving %s", client_address)


#: The options a server kept as attributes under other names, for reads by the old name.
_OPTION_ALIASES = {
    "wsgi_app": "wsgi",
    "ssl_context": "ssl",
    "select_subprotocol_hook": "select_subprotocol",
    "process_request_hook": "process_request",
    "process_response_hook": "process_response",
}
_OPTION_NAMES = frozenset(each.name for each in dataclasses.fields(ServerOptions))


class WebSocketServer(_Listener):
    """A threaded WebSocket server; see :func:`serve` for the options.

    Each connection runs on its own thread (the handshake, then your
    handler, which reads its own messages while it waits in ``recv()``),
    plus a reader thread when the handler does not read. :meth:`shutdown`
    stops accepting, closes every connection with 1001 and waits for their
    threads. The module's docstring says which parts of socketserver it
    uses and why.
    """

    def __init__(
        self,
        handler: RoutesLike,
        host: str,
        port: int,
        *,
        sock: Optional[socket.socket] = None,
        unix_path: Union[str, os.PathLike[str], None] = None,
        options: Optional[ServerOptions] = None,
        **changes: Any,
    ) -> None:
        options = options if options is not None else ServerOptions()
        if changes:  # DetachedServer(routes, host, port, close_timeout=2), say
            options = options.replace(**changes)
        self.options: ServerOptions = options
        """The server's options (:class:`~wsthread.options.ServerOptions`), one frozen value."""
        if not callable(options.extra_headers):
            for name, value in header_pairs(options.extra_headers):
                check_header(name, value)  # a bad static header fails here, at serve()
        self.routes = Routes(handler)
        self.deflate = options.deflate
        self.trusted_proxies = frozenset(options.trusted_proxies or ())
        self.logger = options.logger if options.logger is not None else globals()["logger"]
        self.opening = ServerOpening(
            origins=options.origins,
            subprotocols=tuple(options.subprotocols or ()),
            deflate=self.deflate,
            server_header=options.server_header,
        )
        """The opening handshake's decisions, with these settings (:mod:`.sansio.opening`)."""
        self._keepalive = (
            Keepalive(options.ping_interval, options.ping_timeout)
            if options.ping_interval is not None
            else None
        )
        self._set_up()
        self._listen(host, port, sock, unix_path)
        self._attach()

    if not TYPE_CHECKING:  # read-only access by the names the options had as attributes

        def __getattr__(self, name: str) -> Any:
            options = self.__dict__.get("options")
            if options is not None and name in _OPTION_ALIASES:
                return getattr(options, _OPTION_ALIASES[name])
            if options is not None and name in _OPTION_NAMES:
                return getattr(options, name)
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _set_up(self) -> None:
        """The server's own parts, made by ``__init__`` before it listens: counters, registry."""
        # Counters for stats(), and the log lines of repeated events folded into summaries.
        self._counters = ServerCounters()
        self._log_limiter = LogLimiter(self.logger)
        # At the open-files limit: a reserve descriptor, backing off, one warning per episode.
        self._accept_guard = AcceptGuard(self.logger, self._counters.accept_error)
        # The parking lot's epoll descriptor, taken now rather than at the limit.
        parking.prepare()
        # Reentrant: a KeyboardInterrupt that lands while the main thread holds
        # it must not stop shutdown(), run next on that same thread, from taking it.
        self._state_lock = threading.RLock()
        self._serving = ServingState(self._state_lock)
        # Which connection watches which topic; a connection forgotten leaves its topics.
        self._topics: Topics[ServerConnection] = Topics(
            self.broadcast,
            lambda each: self._registry.is_open(each),
            self.options.max_subscriptions,
            self.options.hub,
        )
        self._registry = Registry(
            self._state_lock, lambda: self._serving.closed, self._counters, self._topics.forget
        )
        self.http_connections = HTTPConnections(self.options.max_http_connections)
        """The plain HTTP connections served to ``wsgi`` now, against ``max_http_connections``."""

    def _attach(self) -> None:
        """The parts ``__init__`` makes once listening: the fork guard, broadcasts (and the hub)."""
        # A server copied into a forked child must refuse to work there.
        where = self.unix_path if self.unix_path is not None else f"port {self.port}"
        self._fork_guard = ForkGuard(f"WebSocketServer on {where}")
        self._broadcaster = Broadcaster(lambda: self.connections, self.options.hub)
        try:
            self._topics.attach()  # before the hub's thread starts
            self._broadcaster.attach()
        except BaseException:
            self.server_close()  # do not leave the port bound behind a failed start
            raise

    @property
    def port(self) -> int:
        """The port the server listens on (useful after binding port 0).

        Raises:
            ValueError: the server listens on a Unix socket (see :attr:`unix_path`).
        """
        if not isinstance(self.server_address, tuple):
            raise ValueError(f"a Unix socket server has no port: {self.server_address}")
        return int(self.server_address[1])

    @property
    def unix_path(self) -> Optional[str]:
        """The path of the Unix socket the server listens on, or ``None`` (TCP)."""
        address = self.server_address
        return address if isinstance(address, str) and address else None

    @property
    def connections(self) -> List[ServerConnection]:
        """A snapshot of the open connections (safe to use from any thread).

        Raises:
            RuntimeError: this process was forked from the one that created
                the server (see :mod:`wsthread.runtime.forks`).
        """
        self._fork_guard.check("connections")
        return self._registry.snapshot()

    def stats(self) -> Dict[str, Any]:
        """Counters of what the server did, and what it buffers now; safe from any thread.

        A plain ``dict`` of ``dict`` objects with string keys, ready for
        ``json.dumps`` (a health or metrics endpoint)::

            {
                "connections": {"open": 12, "opening": 1, "opened": 3400, "closed": 3387},
                "closes": {"1000": 3300, "1001": 80, "1006": 7},
                "sent_closes": {"1000": 3380, "1013": 2},
                "rejections": {"503": 1000, "400": 3},
                "http_responses": {"200": 12},
                "failures": {"tls": 2, "handshake_timeout": 5, "handshake_error": 1},
                "accept_errors": {"EMFILE": 151},
                "buffered": {"received": 5242880, "to_send": 0},
                "traffic": {"messages_received": 51200, "bytes_received": 3276800,
                            "messages_sent": 51188, "bytes_sent": 2867000},
                "queued": 3,
                "backpressure": {"buffered_amount": 0, "over_half_write_limit": 0},
                "latency": {"max": 0.0021, "mean": 0.0004},
            }

        ``closes`` counts opened connections by the peer's close code (1006:
        no close frame), ``sent_closes`` by the code this server sent (1013:
        a client dropped for falling behind ``write_limit``); Prometheus can
        scrape them all through :func:`wsthread.stats.render_prometheus`.
        ``rejections`` counts the handshakes refused, by HTTP
        status (503 when full); ``http_responses`` the plain HTTP answers of
        ``process_request``; ``failures`` the connections lost before
        opening; ``accept_errors`` the failed ``accept()`` calls, by errno
        name. ``buffered`` is a snapshot in bytes: ``received``, messages
        received and not yet read by handlers; ``to_send``, bytes written
        but not yet taken by the clients' sockets. Counts start at 0 when
        the server is made and only grow; log lines about repeated events
        are rate-limited, these counts never are.

        ``traffic`` adds up :meth:`Connection.stats() <wsthread.Connection.stats>`
        over every connection the server opened, closed or open (bytes on
        the wire, frame headers included); ``queued`` is how many messages
        (or pieces of fragmented ones) wait for handlers now; ``latency``
        is the largest and the mean :attr:`~wsthread.Connection.latency` of
        the open connections that have one (``None`` when none has).
        ``backpressure`` adds up the open connections'
        :attr:`~wsthread.Connection.buffered_amount` (bytes waiting for
        their peers, queued broadcasts included) and counts those above
        half of ``write_limit``: the clients falling behind, which a
        broadcast closes with 1013 once over the limit. The
        cost is one pass over the open connections per call, and nothing
        per message beyond the connections' own counters.

        ``topics`` counts the topics with subscribers in this process, their
        subscriptions and the :meth:`publish` calls made here; ``hub`` is
        the hub's own ``stats()``, when it has one (a
        :class:`~wsthread.hubs.RedisHub` counts there the topic messages it
        received from Redis, ``topic_received``).
        """
        stats = self._registry.stats()
        stats["topics"] = self._topics.stats()
        hub_stats = getattr(self.options.hub, "stats", None)
        if callable(hub_stats):
            stats["hub"] = hub_stats()
        return stats

    # -- broadcast ------------------------------------------------------------

    def broadcast(
        self, message: Data, connections: Optional[Iterable[ServerConnection]] = None
    ) -> int:
        """Send ``message`` to every open connection, or to ``connections``; never block.

        Safe to call from any thread, a handler included. ``str`` goes out as
        a text message, bytes-like as binary. Each connection keeps its own
        order: two broadcasts reach every client in the order they were made.

        The message is framed once for every connection that can share the
        frame (no compression, or permessage-deflate without server context
        takeover; see :mod:`wsthread.sansio.prepared`), and where a
        connection's writer is idle this thread hands it to the socket
        itself, with one non-blocking send; otherwise it is queued behind
        that connection's earlier messages. A broadcast never waits for a
        client. What a client's socket does not take at once waits in that
        connection's own buffer (see :attr:`Connection.buffered_amount
        <wsthread.Connection.buffered_amount>`) and is sent in the
        background as the client reads. A client that falls behind by
        more than ``write_limit`` bytes is closed with 1013 (Try Again
        Later), one that takes no data for ``write_timeout`` seconds with
        1011; both are logged at WARNING. Clients that keep up are not
        affected and lose nothing.

        With a ``hub`` and no ``connections``, the message goes to the hub,
        which hands it back to every server attached to it, this one
        included.

        Returns:
            How many connections of this process the message was queued for
            (0 when it went through a hub: delivery happens when the hub
            hands it back).

        Raises:
            TypeError: ``message`` is neither ``str`` nor bytes-like (a
                ``dict``, a list, ``None``...: the message says what to do
                instead, such as :meth:`broadcast_json`); nothing is sent.
            RuntimeError: this process was forked from the one that created
                the server, which therefore reaches no client from here (see
                :mod:`wsthread.runtime.forks`).
        """
        if not isinstance(message, (str, bytes, bytearray, memoryview)):
            raise refuse_message(message, "broadcast")  # before the hub or any connection
        self._fork_guard.check("broadcast()")
        return self._broadcaster.broadcast(message, connections)

    def broadcast_json(
        self, obj: Any, connections: Optional[Iterable[ServerConnection]] = None
    ) -> int:
        """:meth:`broadcast` ``obj`` as JSON, in one text message encoded once for all.

        The encoder is the server's ``json_dumps`` option (``json.dumps``,
        compact, by default; ``orjson.dumps`` works too). Otherwise as
        :meth:`broadcast`, which it returns.

        Raises:
            TypeError, ValueError: the encoder cannot encode ``obj``
                (nothing is sent); and what :meth:`broadcast` raises.
        """
        return self.broadcast(dump_json(obj, self.options.json_dumps).decode("utf-8"), connections)

    # -- topics ---------------------------------------------------------------

    def publish(self, topic: str, message: Data) -> int:
        """Send ``message`` to the connections that watch ``topic``; never block on a client.

        Safe to call from any thread. Subscribers get it as from
        :meth:`broadcast` (framed once, queued, ``write_limit`` and
        ``write_timeout`` apply); each subscriber gets each publish once, and
        one publisher's messages to a topic in the order it published them.
        With a hub that carries topics (:class:`~wsthread.hubs.RedisHub`),
        the subscribers of every process attached to it get it too; this
        process's before ``publish()`` returns.

        Returns:
            How many subscribers of this process it was queued for (0 when
            it went through a hub).

        Raises:
            TypeError: ``topic`` is not a ``str``, or ``message`` is neither
                ``str`` nor bytes-like.
            ValueError: ``topic`` is empty or longer than 256 bytes of UTF-8.
            RuntimeError: this process was forked from the one that created
                the server (see :mod:`wsthread.runtime.forks`).
        """
        if not isinstance(message, (str, bytes, bytearray, memoryview)):
            raise refuse_message(message, "publish")  # before the hub or any subscriber
        self._fork_guard.check("publish()")
        return self._topics.publish(topic, message)

    def publish_json(self, topic: str, obj: Any) -> int:
        """:meth:`publish` ``obj`` as JSON, in one text message encoded once for all.

        The encoder is the server's ``json_dumps`` option (``json.dumps``,
        compact, by default), as for :meth:`broadcast_json`.

        Raises:
            TypeError, ValueError: the encoder cannot encode ``obj``
                (nothing is sent); and what :meth:`publish` raises.
        """
        return self.publish(topic, dump_json(obj, self.options.json_dumps).decode("utf-8"))

    # -- running ------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Accept connections until :meth:`shutdown` is called.

        :meth:`shutdown` may be called from any thread, this one included
        (a signal handler, for example): the loop then ends on its own.

        Raises:
            RuntimeError: the server is already serving, or this process
                was forked from the one that created it.
        """
        self._fork_guard.check("serve_forever()")
        self._accept_loop(poll_interval)

    def start(self) -> WebSocketServer:
        """Serve from a background thread and return at once.

        The server is also shut down at interpreter exit (``atexit``) if it
        is still running then.

        Raises:
            RuntimeError: the server is already started, or this process was
                forked from the one that created it.
        """
        self._fork_guard.check("start()")
        atexit.register(self.shutdown)
        self._serving.start_thread(self.serve_forever)
        return self

    def shutdown(self) -> None:
        """Stop accepting, close every connection with 1001, wait for their threads.

        Idempotent, and callable from any thread: the one running
        :meth:`serve_forever` (a signal handler), another one, or ``atexit``.
        Returns within about ``close_timeout`` (plus the time handlers take to
        notice their connection closed).

        In a process forked from the one that created the server (its
        ``atexit`` hook is inherited too), it only closes this process's
        copy of the listening socket: the connections and the accept loop
        belong to the parent, which keeps serving.
        """
        if self._fork_guard.inherited:
            self._release_inherited()
            return
        if not self._serving.stop():
            return  # shut down already, or shutting down on another thread
        self._accept_guard.close()  # wakes an accept loop that backs off
        atexit.unregister(self.shutdown)
        self._serving.wait_loop(self._wake_accept_loop)
        self.server_close()
        self._registry.close_all(
            CloseCode.GOING_AWAY,
            "server shutting down",
            Deadline(self.options.close_timeout),
            self.logger,
        )
        if self._keepalive is not None:
            self._keepalive.stop()
        self._log_limiter.flush(everything=True)
        self._broadcaster.close(self.logger)

    def __exit__(self, *exc_info: object) -> None:  # socketserver's __enter__ returns self
        self.shutdown()

    def serve_upgrade(
        self, transport: Transport, request: Request, trailing_data: bytes = b""
    ) -> Optional[int]:
        """Answer an upgrade request already read by someone else, then run its handler.

        This is how a connection taken over from another server joins this
        one (see :mod:`wsthread.wsgi`): ``request`` was parsed by that
        server, ``trailing_data`` is what it read beyond the request head.
        The request goes through the same checks as one read here
        (routes, ``process_request``, origins, subprotocols, limits); then
        the 101 is written and the handler runs on the calling thread, which
        this call holds until the connection ends. The socket is shut down
        but not closed: closing it is its owner's job.

        Returns:
            The HTTP status answered (101 when a WebSocket opened), or
            ``None`` when the client left before any answer.
        """
        thread = threading.current_thread()
        self._registry.add_thread(thread, transport.socket)
        try:
            connection = ServerConnection._accepted(self, transport)
            status = connection.handshake(
                Deadline(self.options.open_timeout), request, trailing_data
            )
            if status == 101:
                try:
                    connection._run_handler()
                finally:
                    self._registry.forget(connection)
            return status
        finally:
            self._registry.remove_thread(thread)

    def serve_socket(self, sock: socket.socket, address: Any = None) -> None:
        """Serve one connected socket on the calling thread, until its connection ends.

        For a socket the application accepted itself (from another server, a
        ``socketpair()``, a tunnel): the same TLS and opening handshakes,
        limits and handler as a connection this server accepts, and it is
        closed by :meth:`shutdown` like them. The socket is closed on return.

        Args:
            sock: a connected stream socket.
            address: the peer's address, for logs; by default ``getpeername()``.
        """
        if address is None:
            try:
                address = sock.getpeername()
            except OSError:
                address = ""
        self._registry.add_thread(threading.current_thread(), sock)
        self._run_request(sock, address)


class DetachedServer(WebSocketServer):
    """A :class:`WebSocketServer` that listens on nothing: it serves the connections handed to it.

    For connections that come from elsewhere: a WSGI server's
    (:mod:`wsthread.wsgi`, through :meth:`~WebSocketServer.serve_upgrade`),
    or one end of a socket pair (:mod:`wsthread.testing`, through
    :meth:`~WebSocketServer.serve_socket` or ``process_request``). The
    ``host`` and ``port`` are only what logs and the WSGI environ show.
    """

    def server_bind(self) -> None:
        """Bind nothing: release the socket socketserver made."""
        self.socket.close()

    def server_activate(self) -> None:
        """Listen on nothing."""


def serve(
    handler: RoutesLike,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    sock: Optional[socket.socket] = None,
    unix_path: Union[str, os.PathLike[str], None] = None,
    # -- parameters of ServerOptions --
    open_timeout: Optional[float] = 10,
    ping_interval: Optional[float] = 20,
    ping_timeout: Optional[float] = 20,
    close_timeout: Optional[float] = 10,
    write_timeout: Optional[float] = 10,
    max_size: Optional[int] = 2**20,
    max_queue: Optional[int] = 16,
    receive_budget: ReceiveBudgetOption = "auto",
    write_limit: Optional[int] = 2**20,
    trace: Optional[Any] = None,
    logger: Optional[logging.Logger] = None,
    thread_stack_size: Optional[int] = None,
    json_dumps: Optional[Callable[[Any], Union[str, bytes]]] = None,
    json_loads: Optional[Callable[[Any], Any]] = None,
    compression: CompressionOption = "deflate",
    origins: Optional[Sequence[Optional[str]]] = None,
    subprotocols: Optional[Sequence[str]] = None,
    select_subprotocol: Optional[Callable[[Any, List[str]], Optional[str]]] = None,
    process_request: Optional[Callable[[Any, Request], Optional[Response]]] = None,
    process_response: Optional[Callable[[Any, Request, Response], Optional[Response]]] = None,
    server_header: Optional[str] = "wsthread",
    extra_headers: Union[HeadersLike, Callable[[Any, Request], HeadersLike], None] = None,
    max_connections: Optional[int] = 1024,
    max_subscriptions: Optional[int] = 1024,
    trusted_proxies: Optional[Sequence[str]] = None,
    hub: Any = None,
    reuse_port: bool = False,
    ssl: Optional[ssl_module.SSLContext] = None,
    wsgi: Optional[Callable[..., Any]] = None,
    max_body_size: Optional[int] = 2**24,
    max_http_connections: Optional[int] = 1024,
    # -- end of ServerOptions parameters, written by tools/options.py --
) -> WebSocketServer:
    """Create a WebSocket server listening on ``host:port``, ready to serve.

    Args:
        handler: called with a :class:`ServerConnection` on the connection's
            own thread; the connection closes (1000) when it returns, or with
            1011 if it raises. Or a mapping of exact paths to handlers
            (``{"/chat": chat, "/feed": feed}``): an upgrade to another path
            gets 404 (after ``process_request``, before any upgrade); the
            handler reads ``ws.request.path`` and ``ws.request.query``.
        host: the address to bind; ``port`` 0 picks a free port (see
            :attr:`WebSocketServer.port`).
        sock: a listening socket to serve instead of binding ``host:port``:
            one inherited from systemd (``socket.socket(fileno=3)``) or a
            supervisor, or made by the application; ``listen()`` is called
            if it is not listening yet. The server owns it from then on and
            closes it on shutdown.
        unix_path: the path of a Unix socket to listen on instead of
            ``host:port`` (see :func:`unix_serve`). A stale socket file
            there is replaced; the file is removed on shutdown.
        origins: the acceptable ``Origin`` values (``None`` in the list means
            "no Origin header"); others get 403. ``None`` accepts all.
        subprotocols: the subprotocols supported, in order of preference; the
            first one the client also offers is chosen.
        select_subprotocol: ``fn(connection, offered)`` returning the
            subprotocol to use (one of ``offered``) or ``None``; replaces the
            choice by ``subprotocols``.
        process_request: ``fn(connection, request)`` called before the
            upgrade, with the parsed HTTP request; return ``None`` to go on
            with the WebSocket handshake, or a :class:`~wsthread.Response`
            (see :func:`~wsthread.http_response`) to answer with plain HTTP
            instead: a health check, a page, a 401 or 403. Without it, a plain
            HTTP request gets 426 Upgrade Required with a short explanation.
        process_response: ``fn(connection, request, response)`` called with
            the ``101 Switching Protocols`` response about to be sent, after
            the subprotocol and extensions are agreed: change ``response``
            in place (``response.headers.add("Set-Cookie", ...)``) and
            return ``None``, or return another :class:`~wsthread.Response`
            to send instead; one with another status than 101 ends the
            connection. An exception in it answers 500.
        server_header: the ``Server`` header of every response, ``"wsthread"``
            by default; ``None`` sends none.
        extra_headers: headers added to the 101 response: ``(name, value)``
            pairs, a mapping, or ``fn(connection, request)`` returning one.
        open_timeout: seconds a client has for the TLS and HTTP handshakes.
        ping_interval: seconds between keepalive pings; ``None`` disables them.
        ping_timeout: seconds to wait for a pong before closing with 1011.
        close_timeout: seconds to wait for the closing handshake.
        write_timeout: seconds a write may make no progress (the client
            takes no data) before the connection is given up; ``None``: never.
        max_size: the largest message accepted (1009 beyond); ``None``: no limit.
        max_queue: received messages buffered before reading pauses (each
            frame of a fragmented message counts as one).
        receive_budget: bytes of received messages not yet read by handlers,
            across every connection of the process with the same value
            (servers and clients), past which reader threads stop reading
            and TCP pushes back; a handler waiting in ``recv()`` still reads
            its own connection, and no connection is closed for it.
            ``"auto"`` (the default): 1/16 of the machine's memory, at most
            64 MiB; ``None``: no budget.
        write_limit: bytes a :meth:`~WebSocketServer.broadcast` may leave
            waiting for one client before closing it with 1013; ``None``: no limit.
        max_connections: open connections allowed at once; beyond, the
            handshake is answered with 503. ``None``: no limit.
        max_subscriptions: topics one connection may watch at once
            (:meth:`ServerConnection.subscribe` raises ``ValueError``
            beyond); ``None``: no limit.
        trusted_proxies: addresses of reverse proxies whose
            ``X-Forwarded-For`` header is believed, for
            :attr:`ServerConnection.client_host`.
        hub: an object that carries broadcasts between processes
            (``attach(deliver)``, ``publish(message)``, ``close()``), such
            as :class:`wsthread.hubs.RedisHub`; ``None``: this process only.
        reuse_port: set ``SO_REUSEPORT`` so several processes can listen on
            the same port.
        thread_stack_size: the stack, in bytes, of each connection's threads
            (the one that runs the handler, and its reader); ``None`` (the
            default) keeps the platform's (often 8 MiB). Only the pages a
            thread touches cost memory, so this bounds address space, not
            RSS: set it (to 512 KiB, say) where virtual memory is limited
            and many thousands of connections are open. It is applied
            through the process-wide ``threading.stack_size()``, only while
            wsthread starts a thread.
        trace: a :class:`wsthread.trace.Tracer` that writes the opening
            handshake and every frame of every connection, annotated (each
            line prefixed with the peer's address); ``None``: no tracing, at
            no cost.
        logger: the logger to use instead of ``logging.getLogger("wsthread")``.
        ssl: an :class:`ssl.SSLContext` to serve ``wss://``; the TLS handshake
            runs on the connection's thread within ``open_timeout``.
        compression: ``"deflate"`` (the default) accepts permessage-deflate
            when a client offers it, with :class:`wsthread.Deflate`'s
            defaults (4 KiB windows, chosen for memory); a
            :class:`~wsthread.Deflate` sets what is accepted and preferred;
            ``None`` disables it. Messages under 16 bytes are sent
            uncompressed; ``max_size`` bounds the inflated size.
        wsgi: a WSGI application (Flask, Django...) served for every request
            that is not a WebSocket upgrade to one of the routes, through the
            standard library's ``wsgiref`` handlers: HTTP/1.1 keep-alive,
            ``Content-Length`` and chunked bodies (streamed), strict
            HTTP/1.1 framing (400, 501 or 505 for an ambiguous request),
            each request head within ``open_timeout`` and each 64 KiB of a
            body within ``open_timeout`` of waiting for it (see
            :mod:`wsthread.server.http`). An upgrade the
            routes do not take goes to the application too, so one wrapped by
            :func:`wsthread.wsgi.middleware` serves its own routes.
        max_body_size: the largest request body for ``wsgi``, in bytes
            (413 beyond); ``None``: no limit.
        max_http_connections: plain HTTP connections served to ``wsgi`` at
            once, kept-alive ones included; beyond, a request gets 503 and
            the connection ends. Counted apart from ``max_connections``
            (WebSockets). ``None``: no limit.
        json_dumps: the JSON encoder of ``send_json()`` and
            :meth:`~WebSocketServer.broadcast_json`, such as ``orjson.dumps``
            (bytes are sent as text); ``None``: ``json.dumps`` with compact
            separators.
        json_loads: the JSON decoder of ``recv_json()``, such as
            ``orjson.loads``; ``None``: ``json.loads``.

    Returns:
        The listening server: call ``serve_forever()`` or ``start()``; use it
        as a context manager to shut it down on exit.
    """
    options = ServerOptions(
        # -- arguments of ServerOptions --
        open_timeout=open_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        close_timeout=close_timeout,
        write_timeout=write_timeout,
        max_size=max_size,
        max_queue=max_queue,
        receive_budget=receive_budget,
        write_limit=write_limit,
        trace=trace,
        logger=logger,
        thread_stack_size=thread_stack_size,
        json_dumps=json_dumps,
        json_loads=json_loads,
        compression=compression,
        origins=origins,
        subprotocols=subprotocols,
        select_subprotocol=select_subprotocol,
        process_request=process_request,
        process_response=process_response,
        server_header=server_header,
        extra_headers=extra_headers,
        max_connections=max_connections,
        max_subscriptions=max_subscriptions,
        trusted_proxies=trusted_proxies,
        hub=hub,
        reuse_port=reuse_port,
        ssl=ssl,
        wsgi=wsgi,
        max_body_size=max_body_size,
        max_http_connections=max_http_connections,
        # -- end of ServerOptions arguments, written by tools/options.py --
    )
    return WebSocketServer(handler, host, port, sock=sock, unix_path=unix_path, options=options)


def unix_serve(
    handler: RoutesLike,
    path: Union[str, os.PathLike[str]],
    *,
    # -- parameters of ServerOptions --
    open_timeout: Optional[float] = 10,
    ping_interval: Optional[float] = 20,
    ping_timeout: Optional[float] = 20,
    close_timeout: Optional[float] = 10,
    write_timeout: Optional[float] = 10,
    max_size: Optional[int] = 2**20,
    max_queue: Optional[int] = 16,
    receive_budget: ReceiveBudgetOption = "auto",
    write_limit: Optional[int] = 2**20,
    trace: Optional[Any] = None,
    logger: Optional[logging.Logger] = None,
    thread_stack_size: Optional[int] = None,
    json_dumps: Optional[Callable[[Any], Union[str, bytes]]] = None,
    json_loads: Optional[Callable[[Any], Any]] = None,
    compression: CompressionOption = "deflate",
    origins: Optional[Sequence[Optional[str]]] = None,
    subprotocols: Optional[Sequence[str]] = None,
    select_subprotocol: Optional[Callable[[Any, List[str]], Optional[str]]] = None,
    process_request: Optional[Callable[[Any, Request], Optional[Response]]] = None,
    process_response: Optional[Callable[[Any, Request, Response], Optional[Response]]] = None,
    server_header: Optional[str] = "wsthread",
    extra_headers: Union[HeadersLike, Callable[[Any, Request], HeadersLike], None] = None,
    max_connections: Optional[int] = 1024,
    max_subscriptions: Optional[int] = 1024,
    trusted_proxies: Optional[Sequence[str]] = None,
    hub: Any = None,
    reuse_port: bool = False,
    ssl: Optional[ssl_module.SSLContext] = None,
    wsgi: Optional[Callable[..., Any]] = None,
    max_body_size: Optional[int] = 2**24,
    max_http_connections: Optional[int] = 1024,
    # -- end of ServerOptions parameters, written by tools/options.py --
) -> WebSocketServer:
    """Create a WebSocket server listening on the Unix socket ``path``.

    For a server behind a reverse proxy on the same machine (nginx's
    ``proxy_pass http://unix:/run/app.sock;``), or a local sidecar: file
    permissions decide who may connect, and no port is used. A stale socket
    file left at ``path`` is replaced; the file is removed on shutdown.

    Takes the same ``options`` as :func:`serve`. ``connection.client_host``
    is ``"unix"`` for every client (add ``"unix"`` to ``trusted_proxies`` to
    believe the proxy's ``X-Forwarded-For``).
    """
    options = ServerOptions(
        # -- arguments of ServerOptions --
        open_timeout=open_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        close_timeout=close_timeout,
        write_timeout=write_timeout,
        max_size=max_size,
        max_queue=max_queue,
        receive_budget=receive_budget,
        write_limit=write_limit,
        trace=trace,
        logger=logger,
        thread_stack_size=thread_stack_size,
        json_dumps=json_dumps,
        json_loads=json_loads,
        compression=compression,
        origins=origins,
        subprotocols=subprotocols,
        select_subprotocol=select_subprotocol,
        process_request=process_request,
        process_response=process_response,
        server_header=server_header,
        extra_headers=extra_headers,
        max_connections=max_connections,
        max_subscriptions=max_subscriptions,
        trusted_proxies=trusted_proxies,
        hub=hub,
        reuse_port=reuse_port,
        ssl=ssl,
        wsgi=wsgi,
        max_body_size=max_body_size,
        max_http_connections=max_http_connections,
        # -- end of ServerOptions arguments, written by tools/options.py --
    )
    return WebSocketServer(handler, "", 0, unix_path=path, options=options)
