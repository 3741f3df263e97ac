"""The synchronous WebSocket client: :func:`connect`, :func:`reconnect`, proxies."""

from .client import (
    DEFAULT_USER_AGENT,
    ClientConnection,
    WebSocketURI,
    connect,
    open_connection,
    parse_uri,
    reconnect,
    unix_connect,
)

__all__ = [
    "ClientConnection",
    "connect",
    "unix_connect",
    "reconnect",
    "open_connection",
    "parse_uri",
    "WebSocketURI",
    "DEFAULT_USER_AGENT",
]
