"""Headers as a mapping, and the one check for every header, status and request line; no socket."""

from __future__ import annotations

import pytest

from wsthread.sansio.handshake import (
    Headers,
    MultipleValuesError,
    Request,
    Response,
    build_request,
    check_header,
    encode_target,
    http_response,
)

BAD_VALUES = ["a\r\nSet-Cookie: x=1", "a\nb", "a\rb", "a\x00b", "a\x1bb", "a\x7fb", "é\u2028"]


def test_getitem_is_the_only_value() -> None:
    """``headers[name]`` is case-insensitive and returns the one value."""
    headers = Headers([("Authorization", "Bearer t")])
    assert headers["authorization"] == "Bearer t"


def test_getitem_missing_and_repeated() -> None:
    """A missing name is a KeyError; a repeated one a MultipleValuesError, itself a KeyError."""
    headers = Headers([("X", "1"), ("x", "2")])
    with pytest.raises(KeyError):
        headers["Y"]
    with pytest.raises(MultipleValuesError):
        headers["X"]
    assert issubclass(MultipleValuesError, KeyError)
    assert headers.get("X") == "1" and headers.get_all("X") == ["1", "2"]


def test_setitem_adds_and_delitem_removes_every_value() -> None:
    """``headers[n] = v`` appends (as websockets' Headers does); ``del`` removes all of ``n``."""
    headers = Headers([("X", "1")])
    headers["X"] = "2"
    assert headers.get_all("x") == ["1", "2"]
    del headers["x"]
    assert "X" not in headers and len(headers) == 0
    with pytest.raises(KeyError):
        del headers["X"]


def test_mapping_methods() -> None:
    """``in``, iteration over the names as received, items() in order, update() and pop()."""
    headers = Headers([("A", "1"), ("B", "2")])
    assert "a" in headers and "c" not in headers and 1 not in headers
    assert list(headers) == ["A", "B"]
    assert headers.items() == [("A", "1"), ("B", "2")]
    headers.update({"C": "3"})
    assert headers.pop("c") == "3" and "C" not in headers


@pytest.mark.parametrize("value", BAD_VALUES)
def test_bad_values_are_refused(value: str) -> None:
    """CR, LF, NUL, other controls and non-Latin-1 raise ValueError, by add() and by []=."""
    with pytest.raises(ValueError):
        check_header("X", value)
    headers = Headers()
    with pytest.raises(ValueError):
        headers["X"] = value
    with pytest.raises(ValueError):
        Headers([("X", value)])
    assert len(headers) == 0


@pytest.mark.parametrize("name", ["", "X Y", "X:", "X\r\nY", "é", "(x)"])
def test_bad_names_are_refused(name: str) -> None:
    """A name must be an RFC 9110 token."""
    with pytest.raises(ValueError):
        check_header(name, "v")


def test_tab_and_latin1_are_allowed() -> None:
    """HTAB and Latin-1 letters are legal in a value."""
    check_header("X", "a\tb é")


def test_wrong_types() -> None:
    """A name or value that is not str is a TypeError."""
    with pytest.raises(TypeError):
        check_header("X", b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        check_header(1, "v")  # type: ignore[arg-type]


def test_http_response_refuses_a_bad_header_at_its_call() -> None:
    """``http_response(headers=...)`` raises when it is built, not when it is sent."""
    with pytest.raises(ValueError):
        http_response(200, b"body", [("X", "a\r\nSet-Cookie: evil=1")])


@pytest.mark.parametrize("reason", ["OK\r\nSet-Cookie: x=1", "OK\n", "\x00"])
def test_response_reason_is_checked(reason: str) -> None:
    """A reason phrase with a line break never serialises."""
    with pytest.raises(ValueError):
        Response(200, reason).serialize()


@pytest.mark.parametrize("status", [99, 1000, True])
def test_response_status_is_checked(status: int) -> None:
    """A status that is not three digits never serialises."""
    with pytest.raises(ValueError):
        Response(status, "X").serialize()


@pytest.mark.parametrize(
    ("method", "target", "version"),
    [
        ("GET", "/a b", "HTTP/1.1"),
        ("GET", "/a\r\nX: y", "HTTP/1.1"),
        ("G ET", "/", "HTTP/1.1"),
        ("GET", "/", "HTTP/1.1\r\nX: y"),
        ("GET", "", "HTTP/1.1"),
    ],
)
def test_request_line_is_checked(method: str, target: str, version: str) -> None:
    """A request line with a space, control or line break in a part never serialises."""
    with pytest.raises(ValueError):
        Request(method, target, version).serialize()


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ("/a b", "/a%20b"),
        ("/a\r\nX: y", "/a%0D%0AX:%20y"),
        ("/é?q=é", "/%C3%A9?q=%C3%A9"),
        ("/a%20b?x=1&y=2", "/a%20b?x=1&y=2"),
        ("/chat#fragment", "/chat"),
    ],
)
def test_build_request_encodes_the_target(resource: str, expected: str) -> None:
    """The client's path and query are percent-encoded; legal bytes and escapes are kept."""
    assert encode_target(resource) == expected
    request = build_request("h", 80, resource, "a2V5a2V5a2V5a2V5a2V5aw==", secure=False)
    assert request.target == expected
    line = request.serialize().split(b"\r\n", 1)[0]
    assert line == f"GET {expected} HTTP/1.1".encode()


def test_build_request_refuses_bad_headers() -> None:
    """additional headers and the Origin are checked as they are added."""
    key = "a2V5a2V5a2V5a2V5a2V5aw=="
    with pytest.raises(ValueError):
        build_request("h", 80, "/", key, secure=False, origin="http://a\r\nX: y")
    with pytest.raises(ValueError):
        build_request("h", 80, "/", key, secure=False, extra_headers=[("X", "a\nb")])
