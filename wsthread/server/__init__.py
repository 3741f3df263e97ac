"""The WebSocket server: the socketserver base, routing, the registry, broadcast, stats."""

from .server import (
    DEFAULT_SERVER_HEADER,
    DetachedServer,
    Handler,
    HeadersLike,
    ProcessRequest,
    ProcessResponse,
    SelectSubprotocol,
    ServerConnection,
    WebSocketServer,
    serve,
    unix_serve,
)

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
