"""wsthread: threaded, synchronous WebSockets (RFC 6455) on the standard library.

Serve with :func:`serve`; every connection's handler is plain blocking code::

    import wsthread

    def handler(ws):
        for message in ws:
            ws.send(message)

    with wsthread.serve(handler, "127.0.0.1", 8765) as server:
        server.serve_forever()
"""

from __future__ import annotations

from .client.client import ClientConnection, connect, reconnect, unix_connect
from .connection.connection import Connection
from .exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidJSON,
    InvalidStatus,
    InvalidURI,
    PayloadTooBig,
    ProtocolError,
    ProxyError,
    WebSocketError,
)
from .sansio.deflate import Deflate
from .sansio.handshake import Headers, Request, Response, http_response
from .server.server import ServerConnection, WebSocketServer, serve, unix_serve

__all__ = [
    "serve",
    "unix_serve",
    "connect",
    "unix_connect",
    "reconnect",
    "ClientConnection",
    "WebSocketServer",
    "ServerConnection",
    "Connection",
    "Request",
    "Response",
    "Headers",
    "Deflate",
    "http_response",
    "WebSocketError",
    "ConnectionClosed",
    "ConnectionClosedOK",
    "ConnectionClosedError",
    "InvalidHandshake",
    "InvalidJSON",
    "InvalidStatus",
    "InvalidURI",
    "ProtocolError",
    "ProxyError",
    "PayloadTooBig",
]

__version__ = "0.1.0"
