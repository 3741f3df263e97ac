"""The opening handshake's decisions, made by the core on bytes: no socket, no thread."""

from __future__ import annotations

from typing import List, Optional

import pytest

from wsthread.exceptions import InvalidResponse, InvalidStatus
from wsthread.sansio.deflate import Deflate
from wsthread.sansio.handshake import RequestParser, Response, ResponseParser, accept_key
from wsthread.sansio.opening import Accept, ClientOpening, Reject, ServerOpening

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def route(ws: object) -> None:
    """A handler to route to."""


def request(*extra: str, method: str = "GET", drop: str = "", version: str = "13") -> bytes:
    """An upgrade request's bytes, with extra header lines, one header dropped, another version."""
    lines = [
        f"{method} /chat HTTP/1.1",
        "Host: example.com",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        f"Sec-WebSocket-Version: {version}",
        *extra,
    ]
    lines = [line for line in lines if not drop or not line.startswith(drop + ":")]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def decide(data: bytes, opening: Optional[ServerOpening] = None, **kwargs: object):  # type: ignore[no-untyped-def]
    parsed = RequestParser().feed(data)
    assert parsed is not None
    target = kwargs.pop("route", route)
    return (opening or ServerOpening()).decide(parsed, target, **kwargs)  # type: ignore[arg-type]


def status_of(decision: object) -> int:
    assert isinstance(decision, Reject), decision
    return decision.status


def head(decision: Accept) -> bytes:
    return decision.response.serialize()


def test_accept_builds_the_101() -> None:
    """A valid request gets a 101 with the accept key, the route and the Server header."""
    decision = decide(request())
    assert isinstance(decision, Accept) and decision.route is route
    data = head(decision)
    assert data.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert f"Sec-WebSocket-Accept: {accept_key(KEY)}\r\n".encode() in data
    assert b"Server: wsthread\r\n" in data


def test_no_route_is_404() -> None:
    """A path no route takes gets 404, before anything else is checked."""
    assert status_of(decide(request(drop="Sec-WebSocket-Key"), route=None)) == 404


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (request(method="POST"), 405),
        (request(drop="Upgrade"), 426),
        (request(drop="Sec-WebSocket-Key"), 400),
        (request(drop="Connection"), 400),
        (request(version="8"), 426),
        (request("Sec-WebSocket-Key: again"), 400),
    ],
)
def test_invalid_upgrades(data: bytes, status: int) -> None:
    """Method, Upgrade, Connection, key and version are checked, each with its status."""
    decision = decide(data)
    assert status_of(decision) == status
    assert isinstance(decision, Reject) and decision.error is not None


def test_a_wrong_version_says_which_one_to_use() -> None:
    """426 for another version names version 13."""
    decision = decide(request(version="8"))
    assert isinstance(decision, Reject)
    assert decision.response.headers.get("Sec-WebSocket-Version") == "13"


@pytest.mark.parametrize(
    ("origins", "line", "accepted"),
    [
        (["https://a.example"], "Origin: https://a.example", True),
        (["https://a.example"], "Origin: https://evil.example", False),
        (["https://a.example"], "", False),
        (["https://a.example", None], "", True),
        (None, "Origin: https://anything.example", True),
    ],
)
def test_origin(origins: Optional[List[Optional[str]]], line: str, accepted: bool) -> None:
    """Only listed origins pass (``None`` listed: no Origin header); others get 403."""
    extra = [line] if line else []
    decision = decide(request(*extra), ServerOpening(origins=origins))
    if accepted:
        assert isinstance(decision, Accept)
    else:
        assert status_of(decision) == 403


def test_subprotocol_in_the_servers_order() -> None:
    """The server's first supported subprotocol that was offered is chosen and stated."""
    opening = ServerOpening(subprotocols=("chat.v2", "chat.v1"))
    decision = decide(request("Sec-WebSocket-Protocol: chat.v1, chat.v2"), opening)
    assert isinstance(decision, Accept) and decision.subprotocol == "chat.v2"
    assert b"Sec-WebSocket-Protocol: chat.v2\r\n" in head(decision)


def test_subprotocol_none_offered_and_none_supported() -> None:
    """No offer: no subprotocol; an offer of only unsupported ones: 400."""
    opening = ServerOpening(subprotocols=("chat",))
    decision = decide(request(), opening)
    assert isinstance(decision, Accept) and decision.subprotocol is None
    assert b"Sec-WebSocket-Protocol" not in head(decision)
    assert status_of(decide(request("Sec-WebSocket-Protocol: other"), opening)) == 400


def test_subprotocol_chosen_by_the_application() -> None:
    """The application's choice wins; one that was not offered is a 400."""
    offered: List[List[str]] = []

    def choose(protocols: List[str]) -> Optional[str]:
        offered.append(protocols)
        return protocols[-1]

    decision = decide(request("Sec-WebSocket-Protocol: a, b"), choose_subprotocol=choose)
    assert isinstance(decision, Accept) and decision.subprotocol == "b"
    assert offered == [["a", "b"]]
    bad = decide(request("Sec-WebSocket-Protocol: a"), choose_subprotocol=lambda p: "z")
    assert status_of(bad) == 400


def test_deflate_agreed() -> None:
    """A permessage-deflate offer gets the server's parameters, in the 101 and the decision."""
    offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"
    decision = decide(request(offer), ServerOpening(deflate=Deflate()))
    assert isinstance(decision, Accept) and decision.deflate is not None
    assert b"Sec-WebSocket-Extensions: permessage-deflate" in head(decision)


def test_deflate_declined_when_off_and_malformed_is_400() -> None:
    """Without settings the offer is ignored; a malformed header is a 400."""
    offer = "Sec-WebSocket-Extensions: permessage-deflate"
    decision = decide(request(offer), ServerOpening(deflate=None))
    assert isinstance(decision, Accept) and decision.deflate is None
    assert b"Sec-WebSocket-Extensions" not in head(decision)
    broken = "Sec-WebSocket-Extensions: permessage-deflate; =="
    assert status_of(decide(request(broken), ServerOpening(deflate=Deflate()))) == 400


def test_extra_headers_and_their_failures() -> None:
    """Extra headers go into the 101; one that raises or cannot be sent makes a 500."""
    decision = decide(request(), extra_headers=lambda: [("X-Room", "7")])
    assert isinstance(decision, Accept) and b"X-Room: 7\r\n" in head(decision)

    def broken() -> List[tuple]:  # type: ignore[type-arg]
        raise LookupError("the application's bug")

    for extra in (broken, lambda: [("X", "a\r\nSet-Cookie: x=1")]):
        refused = decide(request(), extra_headers=extra)
        assert status_of(refused) == 500
        assert isinstance(refused, Reject) and refused.error is None
        assert b"Set-Cookie" not in refused.response.serialize()


def test_no_server_header() -> None:
    """``server_header=None`` sends none, on the 101 and on refusals."""
    opening = ServerOpening(server_header=None)
    accepted = decide(request(), opening)
    assert isinstance(accepted, Accept) and b"Server:" not in head(accepted)
    refused = decide(request(method="POST"), opening)
    assert isinstance(refused, Reject) and b"Server:" not in refused.response.serialize()


def response_to(
    opening: ClientOpening, *extra: str, status: str = "101 Switching Protocols"
) -> Response:
    lines = [
        f"HTTP/1.1 {status}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(opening.key)}",
        *extra,
    ]
    parsed = ResponseParser().feed(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert parsed is not None
    return parsed


def test_client_request_and_check() -> None:
    """The client's request carries its key, offers and subprotocols; a right 101 passes."""
    opening = ClientOpening(
        "example.com", 8765, "/chat?x=1", secure=False, subprotocols=["chat"], offers=[Deflate()]
    )
    data = opening.request.serialize()
    assert data.startswith(b"GET /chat?x=1 HTTP/1.1\r\nHost: example.com:8765\r\n")
    assert f"Sec-WebSocket-Key: {opening.key}\r\n".encode() in data
    assert b"Sec-WebSocket-Protocol: chat\r\n" in data
    assert b"Sec-WebSocket-Extensions: permessage-deflate" in data
    opened = opening.check(
        response_to(
            opening,
            "Sec-WebSocket-Protocol: chat",
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=12",
        )
    )
    assert opened.subprotocol == "chat" and opened.deflate is not None


@pytest.mark.parametrize(
    ("extra", "status", "error"),
    [
        ((), "401 Unauthorized", InvalidStatus),
        (("Sec-WebSocket-Protocol: other",), "101 Switching Protocols", InvalidResponse),
        (("Sec-WebSocket-Extensions: x-unknown",), "101 Switching Protocols", InvalidResponse),
    ],
)
def test_client_check_refuses(extra: tuple, status: str, error: type) -> None:  # type: ignore[type-arg]
    """Another status, an unoffered subprotocol or extension: the client's errors."""
    opening = ClientOpening("h", 80, "/", secure=False, subprotocols=["chat"])
    with pytest.raises(error):
        opening.check(response_to(opening, *extra, status=status))


def test_client_check_wrong_accept_key() -> None:
    """A 101 whose accept key does not match the request's key is refused."""
    opening = ClientOpening("h", 80, "/", secure=False)
    other = ClientOpening("h", 80, "/", secure=False)
    with pytest.raises(InvalidResponse):
        opening.check(response_to(other))
