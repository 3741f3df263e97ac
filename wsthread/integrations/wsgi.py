"""WebSockets in a WSGI app (Flask, Django...): a middleware, run on the WSGI server's threads.

Wrap the application; requests for the WebSocket paths are taken over,
every other request goes to the application unchanged::

    from wsthread.wsgi import middleware

    app = middleware(flask_app, {"/ws": feed})   # feed(ws) as for wsthread.serve

How an upgrade request is served::

    WSGI server thread ── middleware(environ) ── Upgrade: websocket on a route?
        no ── app(environ, start_response), unchanged
        yes ── the server's socket (gunicorn.socket, werkzeug.socket, or
               wsthread's own) ── checks (origins, limits...) ── 101 written
               on the socket ── handler(ws) on this same thread
               ── close ── socket shut down (not closed) ── start_response
               ── the server's own write fails as if the client had left:
               it closes the socket and takes the thread back

Which servers can hand the socket over:

* gunicorn, ``gthread`` workers (each WebSocket holds one of ``--threads``)
  and ``sync`` workers (one WebSocket per process; run with ``--timeout 0``);
* Werkzeug's development server (``flask run``), threaded;
* wsthread's own: ``python -m wsthread.wsgi module:app`` or
  ``wsthread.serve(routes, wsgi=app)``.

Others (waitress, mod_wsgi, wsgiref) do not expose the socket: an upgrade
then gets ``501 Not Implemented`` and one log line naming the servers that
work. TLS must end before the application (a proxy, or wsthread's own
``ssl=``): a WSGI server's TLS socket cannot be shared by two threads.

Also here, for gunicorn: :func:`attach`, to call from the application's own
``post_worker_init`` hook (or :func:`post_worker_init` itself, or
:func:`chain_post_worker_init` to run it before other hooks), which closes
WebSockets with 1001 when a worker stops. In a server of several processes
(gunicorn ``-w N``, ``wsgi.multiprocess``; or the second worker forked from
the process that made the middleware), a middleware without a hub logs one
WARNING per process: its broadcasts reach only that process's clients.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import ssl
import threading
import urllib.parse
import weakref
from http import HTTPStatus
from types import FrameType
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

from ..connection.transport import Transport
from ..options import HeadersLike, ReceiveBudgetOption
from ..runtime.forks import ForkGuard
from ..sansio.deflate import CompressionOption
from ..sansio.handshake import Headers, Request, Response
from ..sansio.routing import Routes, is_upgrade
from ..server.http import HIJACKED, WSGIApplication
from ..server.server import DetachedServer, RoutesLike, ServerConnection, WebSocketServer

__all__ = [
    "middleware",
    "WebSocketMiddleware",
    "request_from_environ",
    "post_worker_init",
    "attach",
    "chain_post_worker_init",
    "shutdown_all",
]

logger = logging.getLogger("wsthread")

WORKING_SERVERS = (
    "gunicorn (gthread or sync workers), Werkzeug (flask run) or python -m wsthread.wsgi"
)

# Options of serve() that belong to the WSGI server when running as middleware.
_SERVER_ONLY = ("ssl", "reuse_port", "wsgi", "max_body_size", "host", "port")

_middlewares: weakref.WeakSet[WebSocketMiddleware] = weakref.WeakSet()
_middlewares_lock = threading.Lock()
_atexit_registered = False

# The process that logged the "no hub" warning, and the one whose stop signals
# attach() handles: a forked worker has another pid, and starts afresh.
_warned_pid = 0
_attached_pid = 0

# How many times this process has forked, counted in the parent before each
# fork: a worker inherits the count, so the second worker a master forks
# sees 2 (the first sees 1, and cannot know whether more will follow).
_forks = 0


def _count_fork() -> None:
    global _forks
    _forks += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_count_fork)


def _warn_without_hub(why: str) -> None:
    """Log, once per process, that broadcasts here cannot reach the other processes."""
    global _warned_pid
    with _middlewares_lock:
        if _warned_pid == os.getpid():
            return
        _warned_pid = os.getpid()
    logger.warning(
        "WebSocketMiddleware in process %d: %s, and no hub is attached: broadcast() "
        "reaches only this process's WebSockets, not the other workers' (pass "
        "hub=wsthread.hubs.RedisHub(...) to middleware(), or run one worker with threads)",
        os.getpid(),
        why,
    )


def request_from_environ(environ: Dict[str, Any]) -> Request:
    """Rebuild the HTTP request head a WSGI server parsed from its ``environ``.

    The target is the raw one when the server kept it (``RAW_URI``,
    ``REQUEST_URI``), else ``SCRIPT_NAME`` + ``PATH_INFO`` quoted again,
    plus the query string.
    """
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not target:
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        target = urllib.parse.quote(path.encode("latin-1")) or "/"
        if environ.get("QUERY_STRING"):
            target += "?" + environ["QUERY_STRING"]
    headers = Headers()
    for key, value in environ.items():
        if key.startswith("HTTP_") and isinstance(value, str):
            headers.add(key[5:].replace("_", "-").title(), value)
    for key, name in (("CONTENT_TYPE", "Content-Type"), ("CONTENT_LENGTH", "Content-Length")):
        if environ.get(key):
            headers.add(name, environ[key])
    return Request(
        environ.get("REQUEST_METHOD", "GET"),
        target,
        environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
        headers,
    )


class _BorrowedTransport(Transport):
    """A transport over a socket that belongs to a WSGI server: shut down, never closed."""

    def close(self) -> None:
        """Shut the socket down; the WSGI server closes it."""
        self.shutdown()


class WebSocketMiddleware:
    """A WSGI application: WebSocket routes taken over, everything else passed to ``app``.

    Build it with :func:`middleware`.

    Attributes:
        app: the wrapped WSGI application.
        routes: the WebSocket routes.
    """

    def __init__(self, app: WSGIApplication, routes: RoutesLike, **options: Any) -> None:
        misplaced = [name for name in _SERVER_ONLY if name in options]
        if misplaced:
            raise TypeError(
                f"middleware() does not take {', '.join(misplaced)}: "
                "that is the WSGI server's business"
            )
        self.app = app
        self.routes = Routes(routes)
        self._routes_given = routes
        self._options = options
        self._server_lock = threading.Lock()
        self._server: WebSocketServer = DetachedServer(routes, "127.0.0.1", 0, **options)
        self._server_guard = ForkGuard("WebSocketMiddleware")
        self._active = 0
        self._idle = threading.Condition()
        self._refusals = 0
        self._multiprocess_checked = 0  # the pid that looked at wsgi.multiprocess
        global _atexit_registered
        with _middlewares_lock:
            _middlewares.add(self)
            if not _atexit_registered:
                # Werkzeug's request threads are daemons: at exit, close
                # their WebSockets with 1001 rather than dropping them.
                atexit.register(shutdown_all)
                _atexit_registered = True

    @property
    def server(self) -> WebSocketServer:
        """The :class:`~wsthread.WebSocketServer` of this process's WebSocket connections.

        A middleware made before a fork (``gunicorn --preload`` imports the
        application in its master) gets a fresh server in each worker, on
        first use: the master's cannot work there. A ``hub`` given to the
        middleware was attached in the master and cannot follow it: create
        the middleware after the fork (without ``--preload``) to use one.
        """
        with self._server_lock:
            if self._server_guard.inherited:
                options = dict(self._options)
                if options.pop("hub", None) is not None:
                    logger.warning(
                        "WebSocketMiddleware: the hub was made before this worker was forked "
                        "and cannot be used here; broadcasts stay in this process (do not "
                        "preload the application to use a hub)"
                    )
                self._server = DetachedServer(self._routes_given, "127.0.0.1", 0, **options)
                self._server_guard = ForkGuard("WebSocketMiddleware")
                if _forks >= 2 and self._server.options.hub is None:
                    _warn_without_hub(f"this process is fork number {_forks} of its parent")
            return self._server

    def check_hub(self, why: str) -> None:
        """Warn (once per process) that ``why`` makes several processes, if there is no hub."""
        if self.server.options.hub is None:
            _warn_without_hub(why)

    def broadcast(self, message: Any) -> int:
        """Send ``message`` to every WebSocket here; see :meth:`WebSocketServer.broadcast`."""
        return self.server.broadcast(message)

    def broadcast_json(self, obj: Any) -> int:
        """Send ``obj`` as JSON to every WebSocket here (:meth:`WebSocketServer.broadcast_json`)."""
        return self.server.broadcast_json(obj)

    @property
    def connections(self) -> List[ServerConnection]:
        """The open WebSocket connections (a snapshot)."""
        return self.server.connections

    def __call__(
        self, environ: Dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """The WSGI entry point."""
        if self._multiprocess_checked != os.getpid():
            self._multiprocess_checked = os.getpid()
            if environ.get("wsgi.multiprocess"):
                self.check_hub("the WSGI server runs several processes (wsgi.multiprocess)")
        path = environ.get("PATH_INFO") or "/"
        if self.routes.match(path) is None:
            return self.app(environ, start_response)
        request = request_from_environ(environ)
        if not is_upgrade(request):
            return self.app(environ, start_response)
        transport = self._take_socket(environ)
        if transport is None:
            return self._refuse(environ, start_response)
        trailing = environ.get("wsthread.trailing_data", b"")
        with self._idle:
            self._active += 1
        try:
            status = self.server.serve_upgrade(transport, request, trailing)
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()
            environ[HIJACKED] = True
            # Whatever the server writes next fails as if the client had
            # left, and it reads nothing more: it closes the connection.
            transport.shutdown()
        if status is None:
            status = 400
        start_response(f"{status} {_phrase(status)}", [])
        return []

    def _take_socket(self, environ: Dict[str, Any]) -> Optional[Transport]:
        own = environ.get("wsthread.connection.transport")
        if isinstance(own, Transport):
            return own  # wsthread's own WSGI serving: its connection thread closes it
        sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
        if not isinstance(sock, socket.socket) or isinstance(sock, ssl.SSLSocket):
            return None
        return _BorrowedTransport(sock)

    def _refuse(
        self, environ: Dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        server = environ.get("SERVER_SOFTWARE", "this WSGI server")
        tls = isinstance(
            environ.get("gunicorn.socket") or environ.get("werkzeug.socket"), ssl.SSLSocket
        )
        reason = (
            "the WSGI server terminates TLS itself; end TLS in a proxy in front of it"
            if tls
            else f"{server} does not hand over its sockets"
        )
        with self._idle:
            self._refusals += 1
            first = self._refusals == 1
        logger.log(
            logging.ERROR if first else logging.DEBUG,
            "WebSocket upgrade to %s refused with 501: %s; run the application under %s",
            environ.get("PATH_INFO"),
            reason,
            WORKING_SERVERS,
        )
        body = f"WebSocket not available: {reason}; use {WORKING_SERVERS}\n".encode()
        start_response(
            "501 Not Implemented",
            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [body]

    def shutdown(self, timeout: Optional[float] = None) -> None:
        """Close every WebSocket with 1001 and wait for their handlers to return.

        Later upgrades get 503. Waits at most ``timeout`` seconds (by
        default the ``close_timeout`` option) for the handlers.
        """
        self.server.shutdown()
        if timeout is None:
            timeout = self.server.options.close_timeout
        with self._idle:
            if not self._idle.wait_for(lambda: self._active == 0, timeout):
                logger.warning("%d WebSocket handlers still running after shutdown", self._active)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def middleware(
    app: WSGIApplication,
    routes: RoutesLike,
    *,
    # -- parameters of ServerOptions for middleware --
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
    max_http_connections: Optional[int] = 1024,
    # -- end of ServerOptions parameters, written by tools/options.py --
) -> WebSocketMiddleware:
    """Add WebSocket routes to a WSGI application.

    Args:
        app: the WSGI application (a Flask app, Django's
            ``get_wsgi_application()``...), which gets every other request.
        routes: ``{"/path": handler}`` (exact paths), or one handler for an
            upgrade on any path. ``handler(ws)`` gets a
            :class:`~wsthread.ServerConnection`, on the WSGI server's
            request thread; ``ws.request.path`` and ``ws.request.query`` tell
            what was asked for.
        options: the WebSocket options of :func:`wsthread.serve`
            (``origins``, ``subprotocols``, ``process_request``,
            ``max_size``, ``ping_interval``, ``max_connections``, ``hub``,
            ``compression``, ``json_dumps``, ``json_loads``...); not those
            of the listening socket (``ssl``, ``reuse_port``), which belong
            to the WSGI server.

    Returns:
        The WSGI application to serve instead of ``app``; its ``server``
        attribute (or :meth:`~WebSocketMiddleware.broadcast`) reaches the
        connections.
    """
    return WebSocketMiddleware(
        app,
        routes,
        # -- arguments of ServerOptions for middleware --
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
        max_http_connections=max_http_connections,
        # -- end of ServerOptions arguments, written by tools/options.py --
    )


def attach(worker: Any = None) -> None:
    """Set wsthread up in a gunicorn worker: call it from your ``post_worker_init`` hook.

    When the worker is told to stop (SIGTERM, SIGINT, SIGQUIT), its
    WebSockets are closed with 1001; without it, a stopping worker waits
    ``graceful_timeout`` for them to end by themselves. The signal handlers
    gunicorn set are kept and called after. With ``worker.cfg.workers``
    over 1, a middleware without a hub logs a WARNING (once per worker).
    Calling it again in the same process does nothing. In
    ``gunicorn.conf.py``::

        import wsthread.wsgi

        def post_worker_init(worker):
            ...  # your own start-up work
            wsthread.wsgi.attach(worker)

    Args:
        worker: the gunicorn worker the hook was given (``None``: no
            check of the number of workers).
    """
    global _attached_pid
    with _middlewares_lock:
        if _attached_pid == os.getpid():
            return
        _attached_pid = os.getpid()
        every = list(_middlewares)
    workers = getattr(getattr(worker, "cfg", None), "workers", 1)
    if isinstance(workers, int) and workers > 1:
        for each in every:
            each.check_hub(f"gunicorn runs {workers} workers")
    _close_on_stop_signals()


def post_worker_init(worker: Any) -> None:
    """A gunicorn hook that does :func:`attach` and nothing else.

    For a ``gunicorn.conf.py`` with no hook of its own::

        from wsthread.wsgi import post_worker_init

    One that has a ``post_worker_init`` already calls :func:`attach` from
    it, or wraps it with :func:`chain_post_worker_init`: gunicorn keeps one
    function per hook, and a second definition silently replaces the first.
    """
    attach(worker)


def chain_post_worker_init(*hooks: Callable[[Any], None]) -> Callable[[Any], None]:
    """A ``post_worker_init`` that runs :func:`attach`, then each of ``hooks`` in order.

    In ``gunicorn.conf.py``, around a hook you already have::

        import wsthread.wsgi

        def my_post_worker_init(worker):
            ...

        post_worker_init = wsthread.wsgi.chain_post_worker_init(my_post_worker_init)
    """

    def post_worker_init(worker: Any) -> None:
        attach(worker)
        for hook in hooks:
            hook(worker)

    return post_worker_init


def _close_on_stop_signals() -> None:
    """On SIGTERM, SIGINT and SIGQUIT: close every middleware's WebSockets, then the old handler."""

    def chain(previous: Any) -> Callable[[int, Optional[FrameType]], None]:
        def on_signal(signum: int, frame: Optional[FrameType]) -> None:
            threading.Thread(target=shutdown_all, name="wsthread-wsgi-stop", daemon=True).start()
            if callable(previous):
                previous(signum, frame)

        return on_signal

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, chain(signal.getsignal(signum)))


def shutdown_all() -> None:
    """Shut down every :class:`WebSocketMiddleware` of this process."""
    with _middlewares_lock:
        every = list(_middlewares)
    for each in every:
        each.shutdown()
