"""The opening handshake decided: request and settings in, a 101 or a refusal out; sans-I/O.

The server side, :class:`ServerOpening`, takes a parsed request and makes
every decision of RFC 6455 §4.2 in one place, in this order::

    request ── route for the path? ───────────── no: 404
            ── a valid upgrade (GET, HTTP/1.1,
               Upgrade, Connection, key, version 13)? no: 400, 405, 426
            ── Origin acceptable? ─────────────── no: 403
            ── subprotocol (the application's
               choice, or the first supported) ── not offered: 400
            ── permessage-deflate offer ───────── the parameters agreed
            ── extra headers, Server header ───── a bad one: 500
            ── the 101, as :class:`Accept`; or a :class:`Reject` with its answer

The client side, :class:`ClientOpening`, builds the upgrade request and
checks the server's answer (:meth:`ClientOpening.check`): the 101, the
accept key, the subprotocol, the extension. Neither touches a socket: the
I/O layer (``wsthread/server/server.py``, ``wsthread/client/client.py``)
reads and writes the bytes, calls the application's hooks
(``process_request``, ``process_response``) around these decisions, and
hands the core what the other hooks give (``select_subprotocol``,
``extra_headers``) as plain callables. ``tests/sansio/test_opening.py``
tests every decision on bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple, Union

from ..exceptions import InvalidHandshake, InvalidOrigin, InvalidRequest
from . import deflate as deflate_module
from .deflate import (
    DeflateParameters,
    client_offer,
    negotiate_client,
    negotiate_server,
)
from .handshake import (
    Request,
    Response,
    accept_response,
    build_request,
    check_header,
    error_response,
    generate_key,
    http_response,
    parse_tokens,
    validate_request,
    validate_response,
)

__all__ = [
    "Accept",
    "Reject",
    "ServerOpening",
    "ClientOpening",
    "Opened",
    "offered_subprotocols",
]

#: What the application's ``select_subprotocol`` becomes for the core: offered -> chosen.
ChooseSubprotocol = Callable[[List[str]], Optional[str]]
#: What ``extra_headers`` becomes for the core: a call that returns the pairs to add.
ExtraHeaders = Callable[[], Iterable[Tuple[str, str]]]


@dataclass(frozen=True)
class Accept:
    """The upgrade is accepted: send :attr:`response`, a 101; frames follow.

    Attributes:
        response: the ``101 Switching Protocols`` answer (``process_response``
            may still change it in place, or replace it).
        route: the handler the request's path was routed to.
        subprotocol: the subprotocol agreed, or ``None``.
        deflate: the permessage-deflate parameters agreed, or ``None``.
    """

    response: Response
    route: Any
    subprotocol: Optional[str] = None
    deflate: Optional[DeflateParameters] = None


@dataclass(frozen=True)
class Reject:
    """The upgrade is refused: send :attr:`response` and end the connection.

    Attributes:
        response: the HTTP answer (404, 400, 403, 426, 500...).
        error: the reason, as the exception the I/O layer logs and counts;
            ``None`` for a 500 caused by the application's own hook.
    """

    response: Response
    error: Optional[InvalidHandshake] = None

    @property
    def status(self) -> int:
        """The HTTP status of the refusal."""
        return self.response.status


def offered_subprotocols(request: Request) -> List[str]:
    """The subprotocols a request offers, in its order (every ``Sec-WebSocket-Protocol``)."""
    offered: List[str] = []
    for value in request.headers.get_all("Sec-WebSocket-Protocol"):
        offered.extend(parse_tokens(value))
    return offered


@dataclass(frozen=True)
class ServerOpening:
    """A server's settings for the opening handshake, and the decision they give.

    Args:
        origins: acceptable ``Origin`` values (``None`` in the list: no
            header); ``None`` accepts any.
        subprotocols: supported subprotocols, in order of preference.
        deflate: the permessage-deflate settings, or ``None`` to decline it.
        server_header: the ``Server`` header of every answer, or ``None``.
    """

    origins: Optional[Sequence[Optional[str]]] = None
    subprotocols: Sequence[str] = ()
    deflate: Optional[deflate_module.Deflate] = None
    server_header: Optional[str] = "wsthread"

    def decide(
        self,
        request: Request,
        route: Any,
        *,
        choose_subprotocol: Optional[ChooseSubprotocol] = None,
        extra_headers: Optional[ExtraHeaders] = None,
    ) -> Union[Accept, Reject]:
        """Accept or refuse an upgrade request.

        Args:
            request: the request, parsed.
            route: the handler routed to for ``request.path`` (``None``: 404).
            choose_subprotocol: the application's choice among the offered
                subprotocols, instead of :attr:`subprotocols`; it must pick
                one that was offered, or ``None``.
            extra_headers: a call returning the headers to add to the 101;
                when it raises, or returns a header that cannot be sent,
                the answer is a 500 (the exception propagates to nobody:
                see :attr:`Reject.error`).

        Returns:
            An :class:`Accept` with the 101, or a :class:`Reject` with the
            answer to send.
        """
        try:
            if route is None:
                raise InvalidHandshake(
                    f"no WebSocket endpoint at {request.path[:200]}", status=HTTPStatus.NOT_FOUND
                )
            key = validate_request(request)
            self._check_origin(request)
            subprotocol = self._subprotocol(request, choose_subprotocol)
            extensions, deflate = self._deflate(request)
        except InvalidHandshake as exc:
            return self.reject(exc)
        extra: List[Tuple[str, str]] = []
        if extra_headers is not None:
            try:
                for name, value in extra_headers():
                    check_header(name, value)
                    extra.append((name, value))
            except Exception:
                return Reject(self.internal_error())
        response = accept_response(
            key, subprotocol=subprotocol, extensions=extensions, extra_headers=extra
        )
        self.add_server_header(response)
        return Accept(response, route, subprotocol, deflate)

    def reject(self, exc: InvalidHandshake) -> Reject:
        """The refusal that ``exc`` calls for: its status, one line of text, the Server header."""
        response = error_response(exc)
        self.add_server_header(response)
        return Reject(response, exc)

    def internal_error(self) -> Response:
        """A 500, for a hook of the application that failed."""
        response = http_response(500, b"internal server error\n")
        self.add_server_header(response)
        return response

    def add_server_header(self, response: Response) -> None:
        """Add the ``Server`` header to ``response`` unless it has one, or the server sends none."""
        if self.server_header is not None and "Server" not in response.headers:
            response.headers.add("Server", self.server_header)

    def _check_origin(self, request: Request) -> None:
        if self.origins is None:
            return
        origin = request.headers.get("Origin")
        if origin not in self.origins:
            raise InvalidOrigin(
                "origin not allowed" if origin is not None else "missing Origin header"
            )

    def _subprotocol(self, request: Request, choose: Optional[ChooseSubprotocol]) -> Optional[str]:
        offered = offered_subprotocols(request)
        if choose is not None:
            chosen = choose(offered)
            if chosen is not None and chosen not in offered:
                raise InvalidRequest(f"subprotocol {chosen!r} was not offered by the client")
            return chosen
        if not self.subprotocols or not offered:
            return None
        for subprotocol in self.subprotocols:
            if subprotocol in offered:
                return subprotocol
        raise InvalidRequest("no supported subprotocol offered")

    def _deflate(self, request: Request) -> Tuple[Optional[str], Optional[DeflateParameters]]:
        if self.deflate is None:
            return None, None
        agreed = negotiate_server(request.headers.get_all("Sec-WebSocket-Extensions"), self.deflate)
        if agreed is None:
            return None, None
        return agreed


@dataclass(frozen=True)
class Opened:
    """What the client's opening handshake agreed.

    Attributes:
        subprotocol: the subprotocol the server chose, or ``None``.
        deflate: the permessage-deflate parameters agreed, and the offer
            they answer (its settings build the codec), or ``None``.
    """

    subprotocol: Optional[str] = None
    deflate: Optional[Tuple[DeflateParameters, deflate_module.Deflate]] = None


class ClientOpening:
    """A client's upgrade request and the check of the server's answer.

    Args:
        host, port, resource, secure: where the request goes (``resource``
            is the path and query; it is percent-encoded where it must be).
        origin: the ``Origin`` header, or ``None``.
        subprotocols: the subprotocols offered, in order of preference.
        offers: the permessage-deflate offers, in order of preference.
        extra_headers: more headers for the request.
        key: the ``Sec-WebSocket-Key`` (a fresh random one by default).

    Raises:
        ValueError, TypeError: a header would break the request (see
            :func:`~wsthread.sansio.handshake.check_header`).
    """

    def __init__(
        self,
        host: str,
        port: int,
        resource: str,
        *,
        secure: bool,
        origin: Optional[str] = None,
        subprotocols: Sequence[str] = (),
        offers: Sequence[deflate_module.Deflate] = (),
        extra_headers: Iterable[Tuple[str, str]] = (),
        key: Optional[str] = None,
    ) -> None:
        self.key = key if key is not None else generate_key()
        self.subprotocols = list(subprotocols)
        self.offers = list(offers)
        self.request = build_request(
            host,
            port,
            resource,
            self.key,
            secure=secure,
            origin=origin,
            subprotocols=self.subprotocols,
            extensions=client_offer(self.offers) if self.offers else None,
            extra_headers=extra_headers,
        )

    def check(self, response: Response) -> Opened:
        """Check the server's answer to :attr:`request`.

        Raises:
            InvalidStatus: the status is not 101.
            InvalidResponse: the 101 breaks the protocol: no Upgrade or
                Connection, a wrong accept key, a subprotocol or an
                extension that was not offered.
        """
        subprotocol = validate_response(response, self.key, subprotocols=self.subprotocols)
        agreed = negotiate_client(response.headers.get_all("Sec-WebSocket-Extensions"), self.offers)
        return Opened(subprotocol, agreed)
