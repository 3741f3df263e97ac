"""Every exception wsthread raises, in one tree.

::

    WebSocketError
    ├── ConnectionClosed            the connection is closed; carries the close codes
    │   ├── ConnectionClosedOK      ... after a normal closing handshake (1000/1001)
    │   └── ConnectionClosedError   ... with an error code, or without a handshake
    ├── InvalidURI                  not a ws:// or wss:// URI (also a ValueError)
    ├── InvalidJSON                 recv_json(): a message that is not JSON (also a ValueError)
    ├── InvalidHandshake            the HTTP Upgrade handshake failed; carries an HTTP status
    │   ├── InvalidRequest          400 Bad Request: malformed request or missing header
    │   ├── InvalidMethod           405 Method Not Allowed: not a GET
    │   ├── UpgradeRequired         426 Upgrade Required: plain HTTP, no Upgrade header
    │   ├── InvalidVersion          426 with ``Sec-WebSocket-Version: 13``
    │   ├── InvalidOrigin           403 Forbidden: Origin not in ``origins``
    │   ├── RequestTooLarge         414 or 431: request line or headers over the limits
    │   ├── ServiceUnavailable      503: the server is full or shutting down
    │   ├── InvalidStatus           (client) the server answered with another status
    │   ├── InvalidResponse         (client) a 101 answer that breaks the protocol
    │   └── ProxyError              (client) the proxy did not open a tunnel; carries its status
    └── ProtocolError               the peer broke RFC 6455; carries the close code (1002)
        ├── InvalidUTF8             text that is not UTF-8 (1007)
        └── PayloadTooBig           a message over ``max_size`` (1009)

The handshake errors carry ``status`` (an :class:`http.HTTPStatus`) and
``headers`` to add to the HTTP error response, so the server can turn any of
them into a polite answer; protocol errors carry ``code``, the close code to
send. Both kinds come out of the sans-I/O core, which raises nothing else on
bad input.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Optional, Sequence, Tuple, Union

__all__ = [
    "WebSocketError",
    "ConnectionClosed",
    "ConnectionClosedOK",
    "ConnectionClosedError",
    "InvalidURI",
    "InvalidJSON",
    "InvalidHandshake",
    "InvalidRequest",
    "InvalidMethod",
    "UpgradeRequired",
    "InvalidVersion",
    "InvalidOrigin",
    "RequestTooLarge",
    "ServiceUnavailable",
    "InvalidStatus",
    "InvalidResponse",
    "ProxyError",
    "ProtocolError",
    "InvalidUTF8",
    "PayloadTooBig",
]


class WebSocketError(Exception):
    """Base class of every exception defined by wsthread."""


class ConnectionClosed(WebSocketError):
    """The connection is closed: raised by ``send``, ``recv`` and friends.

    Attributes:
        code: the close code received from the peer; 1005 when its close frame
            had no code, 1006 when no close frame arrived at all.
        reason: the reason received from the peer (may be empty).
        sent_code: the close code this side sent, or ``None`` if it sent none.
        sent_reason: the reason this side sent with ``sent_code`` (may be
            empty): why this side failed the connection, when it did.
    """

    def __init__(
        self,
        code: int,
        reason: str = "",
        sent_code: Optional[int] = None,
        sent_reason: str = "",
    ) -> None:
        self.code = code
        self.reason = reason
        self.sent_code = sent_code
        self.sent_reason = sent_reason
        text = f"connection closed: code {code}"
        if reason:
            text += f" ({reason})"
        if sent_code is not None and sent_code != code:
            text += f"; sent {sent_code}"
            if sent_reason:
                text += f" ({sent_reason})"
        super().__init__(text)


class ConnectionClosedOK(ConnectionClosed):
    """The connection closed with a normal closing handshake (1000 or 1001)."""


class ConnectionClosedError(ConnectionClosed):
    """The connection closed with an error code, or without a closing handshake."""


class InvalidURI(WebSocketError, ValueError):
    """The URI given to the client is not a valid ``ws://`` or ``wss://`` URI."""


class InvalidJSON(WebSocketError, ValueError):
    """A message received by ``recv_json()`` is not valid JSON; the connection stays open.

    Its text names the connection's peer, the decoder's complaint and the
    start of the message; the decoder's own exception is its ``__cause__``.

    Attributes:
        peer: the connection's peer, as its log lines show it (``host:port``).
        data: the message as received (``str`` or ``bytes``).
    """

    def __init__(self, peer: str, data: Union[str, bytes], error: BaseException) -> None:
        self.peer = peer
        self.data = data
        super().__init__(f"invalid JSON from {peer}: {error}; the message began {data[:80]!r}")


Header = Tuple[str, str]


class InvalidHandshake(WebSocketError):
    """The opening handshake failed.

    Attributes:
        status: the HTTP status that answers (server side) or was received
            (client side).
        headers: extra headers for the HTTP error response: the class's
            ``default_headers``, then those given.
    """

    default_status = HTTPStatus.BAD_REQUEST
    default_headers: Tuple[Header, ...] = ()

    def __init__(
        self,
        message: str,
        *,
        status: Optional[HTTPStatus] = None,
        headers: Sequence[Header] = (),
    ) -> None:
        super().__init__(message)
        self.status = status if status is not None else self.default_status
        self.headers = [*self.default_headers, *headers]


class InvalidRequest(InvalidHandshake):
    """400: the request is malformed or a required header is missing or wrong."""


# One class per HTTP status and reason, each with the header its answer
# needs (RFC 7231 §6.5.5 for Allow, RFC 6455 §4.2.2 for the 426 answers).


class InvalidMethod(InvalidHandshake):
    """405: a WebSocket handshake must be a GET request."""

    default_status = HTTPStatus.METHOD_NOT_ALLOWED
    default_headers = (("Allow", "GET"),)


class UpgradeRequired(InvalidHandshake):
    """426: a plain HTTP request reached a WebSocket endpoint."""

    default_status = HTTPStatus.UPGRADE_REQUIRED
    default_headers = (("Upgrade", "websocket"), ("Connection", "Upgrade"))


class InvalidVersion(InvalidHandshake):
    """426: the client speaks a WebSocket version other than 13."""

    default_status = HTTPStatus.UPGRADE_REQUIRED
    default_headers = (("Sec-WebSocket-Version", "13"),)


class InvalidOrigin(InvalidHandshake):
    """403: the request's Origin is not one the server accepts."""

    default_status = HTTPStatus.FORBIDDEN


class RequestTooLarge(InvalidHandshake):
    """414 (request line) or 431 (headers): the request exceeds a size limit."""

    default_status = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE


class ServiceUnavailable(InvalidHandshake):
    """503: the server cannot take this connection now."""

    default_status = HTTPStatus.SERVICE_UNAVAILABLE


# How much of a refused handshake's body InvalidStatus shows in its text.
_EXCERPT = 200


class InvalidStatus(InvalidHandshake):
    """Client side: the server answered with a status other than 101.

    Its text shows the status and the start of the response body, where a
    server says why (``HTTP 401: token expired``).

    Attributes:
        status: the status received, as an :class:`http.HTTPStatus` (502
            for a code that is not a known one; :attr:`response` has the
            real one).
        headers: the response's headers, as ``(name, value)`` pairs.
        body: the first 64 KiB of the response body (``b""`` if none).
        response: the :class:`~wsthread.Response` itself (its ``status``,
            ``reason``, ``headers`` and ``body``), or ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        status: Optional[HTTPStatus] = None,
        headers: Sequence[Header] = (),
        body: bytes = b"",
        response: Any = None,
    ) -> None:
        excerpt = " ".join(body[:_EXCERPT].decode("utf-8", "replace").split())
        if excerpt:
            message += f": {excerpt}" + ("..." if len(body) > _EXCERPT else "")
        super().__init__(message, status=status, headers=headers)
        self.body = body
        self.response = response


class InvalidResponse(InvalidHandshake):
    """Client side: the server's 101 response breaks the protocol."""


class ProxyError(InvalidHandshake):
    """The proxy did not open a tunnel to the server.

    Attributes:
        proxy: the proxy's URL, without its password.
        status: the HTTP status that best describes the failure: the
            proxy's own for HTTP CONNECT (407: credentials refused; 502,
            503, 504: the server could not be reached), 407 for refused
            SOCKS5 credentials, 403 for a SOCKS5 ruleset refusal, 504 for a
            SOCKS5 TTL expiry, 502 otherwise (including a proxy that
            closed the connection in the middle of its handshake).
        proxy_status: the HTTP status the proxy sent, or ``None``.
        socks_reply: the SOCKS5 reply code (RFC 1928 §6), or ``None``.
    """

    default_status = HTTPStatus.BAD_GATEWAY

    def __init__(
        self,
        message: str,
        *,
        proxy: str,
        status: Optional[HTTPStatus] = None,
        proxy_status: Optional[int] = None,
        socks_reply: Optional[int] = None,
    ) -> None:
        super().__init__(f"proxy {proxy}: {message}", status=status)
        self.proxy = proxy
        self.proxy_status = proxy_status
        self.socks_reply = socks_reply


class ProtocolError(WebSocketError):
    """The peer broke the WebSocket protocol.

    Attributes:
        code: the close code to fail the connection with.
    """

    default_code = 1002

    def __init__(self, message: str, code: Optional[int] = None) -> None:
        super().__init__(message)
        self.code = code if code is not None else self.default_code


class InvalidUTF8(ProtocolError):
    """A text message or close reason is not valid UTF-8 (close code 1007)."""

    default_code = 1007


class PayloadTooBig(ProtocolError):
    """A message exceeds ``max_size`` (close code 1009).

    Attributes:
        size: the bytes announced by the frame that went over the limit,
            when a header told (``None`` for a compressed message, which
            stops inflating at the limit).
        final: whether that frame was the last of its message.
    """

    default_code = 1009

    def __init__(
        self,
        message: str,
        code: Optional[int] = None,
        *,
        size: Optional[int] = None,
        final: bool = True,
    ) -> None:
        super().__init__(message, code)
        self.size = size
        self.final = final
