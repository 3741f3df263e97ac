"""A test client for handlers and WSGI apps, in-process; the server side runs on its own thread.

::

    from wsthread.testing import connect

    def test_echo():
        with connect(echo) as ws:          # a handler, {path: handler}, or a WSGI app
            ws.send("hi")
            assert ws.recv() == "hi"

:func:`connect` makes a connected socket pair, serves one end exactly as
a listening server would serve an accepted connection (handshake, limits,
routing, ``wsgi=`` serving, the :mod:`wsthread.wsgi` middleware), and
opens a :class:`~wsthread.ClientConnection` on the other end. No port is
opened, so tests can run in parallel; the bytes still cross a real socket,
so the code under test is the code that runs in production.

The pytest fixture ``ws_connect`` (enable it with ``pytest_plugins =
["wsthread.testing"]`` in a ``conftest.py``) is the same function, and it
closes every connection and server it opened when the test ends.
"""

from __future__ import annotations

import inspect
import logging
import socket
import threading
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from ..client.client import ClientConnection, open_connection
from ..options import ClientOptions, HeadersLike, ReceiveBudgetOption
from ..sansio.deflate import CompressionOption
from ..server.server import DetachedServer, WebSocketServer

__all__ = ["connect", "TestConnection", "ws_connect"]

_SERVER_NAME = "testserver"


class TestConnection(ClientConnection):
    """The :class:`~wsthread.ClientConnection` returned by :func:`connect`.

    Closing it also shuts down the server side made for it.

    Attributes:
        server: the :class:`~wsthread.WebSocketServer` serving the other end
            (``server.connections`` holds the handler's connection while it
            is open).
    """

    __test__ = False  # not a pytest test class, despite its name
    server: WebSocketServer

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the WebSocket, then shut down its server."""
        try:
            super().close(code, reason)
        finally:
            self.server.shutdown()


def is_wsgi_app(target: Any) -> bool:
    """Whether ``target`` looks like a WSGI application (two positional parameters)."""
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(positional) == 2


def connect(
    target: Any,
    path: str = "/ws",
    *,
    server_options: Optional[Mapping[str, Any]] = None,
    # -- parameters of ClientOptions for testing --
    open_timeout: Optional[float] = 10,
    close_timeout: Optional[float] = 10,
    write_timeout: Optional[float] = 10,
    max_size: Optional[int] = 2**20,
    max_queue: Optional[int] = 16,
    receive_budget: ReceiveBudgetOption = "auto",
    trace: Optional[Any] = None,
    logger: Optional[logging.Logger] = None,
    json_dumps: Optional[Callable[[Any], Union[str, bytes]]] = None,
    json_loads: Optional[Callable[[Any], Any]] = None,
    compression: CompressionOption = "deflate",
    origin: Optional[str] = None,
    subprotocols: Optional[Sequence[str]] = None,
    additional_headers: Optional[HeadersLike] = None,
    # -- end of ClientOptions parameters, written by tools/options.py --
) -> TestConnection:
    """Connect a client to ``target`` in this process, over a socket pair.

    Args:
        target: a handler (``handler(ws)``), a mapping ``{path: handler}``,
            or a WSGI application (a callable taking ``environ`` and
            ``start_response``), such as one wrapped by
            :func:`wsthread.wsgi.middleware`.
        path: the request target, query string included (``"/ws?room=1"``).
        server_options: options of :func:`wsthread.serve` for the server
            side of a handler or mapping (``origins``, ``max_size``...).
        origin: and the other options, as for :func:`wsthread.connect`
            (no keepalive pings are sent, no ``User-Agent``, no TLS).

    Returns:
        The open connection; its ``server`` attribute is the server side.

    Raises:
        InvalidStatus: the server answered with another status than 101
            (``exc.status``: 403 for a refused origin, 404 for an unknown path...).
        InvalidResponse: the answer breaks the protocol.
        TimeoutError: no answer within ``open_timeout``.
    """
    server, client_sock = _serve_one_end(target, server_options)
    try:  # wsthread.connect()'s handshake and options (the same keywords, on purpose)
        options = ClientOptions(
            ping_interval=None,
            user_agent_header=None,
            # -- arguments of ClientOptions for testing --
            open_timeout=open_timeout,
            close_timeout=close_timeout,
            write_timeout=write_timeout,
            max_size=max_size,
            max_queue=max_queue,
            receive_budget=receive_budget,
            trace=trace,
            logger=logger,
            json_dumps=json_dumps,
            json_loads=json_loads,
            compression=compression,
            origin=origin,
            subprotocols=subprotocols,
            additional_headers=additional_headers,
            # -- end of ClientOptions arguments, written by tools/options.py --
        )
        connection = open_connection(
            TestConnection, client_sock, f"ws://{_SERVER_NAME}{path}", options
        )
    except BaseException:
        server.shutdown()
        raise
    connection.server = server
    return connection


def _serve_one_end(
    target: Any, server_options: Optional[Mapping[str, Any]]
) -> Tuple[WebSocketServer, socket.socket]:
    """A server for ``target`` serving one end of a new socket pair; the other end."""
    options: Dict[str, Any] = dict(server_options or {})
    options.setdefault("ping_interval", None)
    if isinstance(target, Mapping) or not is_wsgi_app(target):
        server: WebSocketServer = DetachedServer(target, "127.0.0.1", 0, **options)
    else:
        server = DetachedServer({}, "127.0.0.1", 0, wsgi=target, **options)
    client_sock, server_sock = socket.socketpair()
    try:
        server.process_request(server_sock, "testing")
    except BaseException:
        client_sock.close()
        server.shutdown()
        raise
    return server, client_sock


class _Connector:
    """What the ``ws_connect`` fixture gives a test: :func:`connect`, cleaned up afterwards."""

    def __init__(self) -> None:
        self._opened: List[TestConnection] = []
        self._lock = threading.Lock()

    def __call__(self, target: Any, path: str = "/ws", **options: Any) -> TestConnection:
        connection = connect(target, path, **options)
        with self._lock:
            self._opened.append(connection)
        return connection

    def close_all(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            connection.close()


def _fixture() -> Iterator[Callable[..., TestConnection]]:
    connector = _Connector()
    try:
        yield connector
    finally:
        connector.close_all()


try:  # the pytest plugin: only when pytest is there
    import pytest
except ImportError:  # pragma: no cover - pytest is a test dependency only

    def ws_connect() -> Iterator[Callable[..., TestConnection]]:
        """``connect`` for a test, closing what it opened afterwards (needs pytest)."""
        raise RuntimeError("the ws_connect fixture needs pytest")

else:

    @pytest.fixture
    def ws_connect() -> Iterator[Callable[..., TestConnection]]:
        """``connect`` for a test, closing every connection and server it opened afterwards."""
        yield from _fixture()
