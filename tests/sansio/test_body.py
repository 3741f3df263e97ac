"""BodyReader on bytes: Content-Length, chunked, until the end of the stream, none, a limit."""

from __future__ import annotations

from typing import List, Tuple

import pytest

from wsthread.sansio.body import BODY_LIMIT, BodyReader
from wsthread.sansio.handshake import Headers


def reader(status: int, *headers: Tuple[str, str], limit: int = BODY_LIMIT) -> BodyReader:
    """A reader for a response with ``status`` and ``headers``."""
    return BodyReader(status, Headers(headers), limit)


def feed_in_pieces(body: BodyReader, data: bytes, size: int) -> List[bool]:
    """Feed ``data`` ``size`` bytes at a time; what each feed() returned."""
    return [body.feed(data[start : start + size]) for start in range(0, len(data), size)]


def test_content_length_ends_the_body_and_extra_bytes_are_dropped() -> None:
    """Done after exactly Content-Length bytes, whatever the cuts."""
    body = reader(401, ("Content-Length", "13"))
    assert feed_in_pieces(body, b"token expired and more", 4) == [False] * 3 + [True] * 3
    assert body.done and body.body == b"token expired" and not body.truncated


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_chunked_is_decoded_at_any_cut(size: int) -> None:
    """Chunk sizes (with an extension), data and the last chunk, cut anywhere."""
    raw = b"6;ext=1\r\ntoken \r\n7\r\nexpired\r\n0\r\n\r\n"
    body = reader(403, ("Transfer-Encoding", "chunked"), ("Content-Length", "3"))
    results = feed_in_pieces(body, raw, size)
    assert results[-1] and body.body == b"token expired"


def test_without_a_length_the_body_ends_with_the_stream() -> None:
    """No Content-Length, not chunked: not done until eof()."""
    body = reader(500)
    assert body.feed(b"some") is False and body.feed(b" text") is False
    body.eof()
    assert body.done and body.body == b"some text"


@pytest.mark.parametrize("status", [100, 204, 304])
def test_statuses_without_a_body(status: int) -> None:
    """1xx, 204 and 304 have no body: done at once."""
    body = reader(status, ("Content-Length", "10"))
    assert body.done and body.feed(b"ignored") and body.body == b""


def test_only_the_first_limit_bytes_are_kept() -> None:
    """Past the limit: done, truncated, the start kept; in chunks too."""
    body = reader(401, ("Content-Length", "100"), limit=10)
    assert body.feed(b"x" * 50) and body.truncated and body.body == b"x" * 10
    chunked = reader(401, ("Transfer-Encoding", "chunked"), limit=10)
    assert chunked.feed(b"20\r\n" + b"y" * 32 + b"\r\n0\r\n\r\n")
    assert chunked.truncated and chunked.body == b"y" * 10


def test_a_chunked_body_that_is_not_chunked_stops_the_reading() -> None:
    """A bad size line ends the reading with what was decoded so far."""
    body = reader(502, ("Transfer-Encoding", "chunked"))
    assert body.feed(b"3\r\nabc\r\nnot a size\r\n")
    assert body.body == b"abc"
