"""Strict HTTP/1.1 framing on bytes: request_framing() on parsed heads, ChunkedDecoder on bodies."""

from __future__ import annotations

from http import HTTPStatus
from typing import List

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsthread.exceptions import InvalidHandshake
from wsthread.sansio.handshake import Request, RequestParser
from wsthread.sansio.http11 import MAX_CHUNK_LINE, ChunkedDecoder, request_framing


def head(raw: bytes) -> Request:
    """Parse a whole request head."""
    request = RequestParser().feed(raw)
    assert request is not None
    return request


def refused(raw: bytes) -> int:
    """The status request_framing() refuses the head ``raw`` with."""
    with pytest.raises(InvalidHandshake) as caught:
        request_framing(head(raw))
    return int(caught.value.status)


def decode(raw: bytes, *, cut: int = 0, limit: int = 2**20) -> bytes:
    """Decode a chunked body fed whole or ``cut`` bytes at a time; check it ends."""
    decoder = ChunkedDecoder(limit)
    out = bytearray()
    pieces = [raw[i : i + cut] for i in range(0, len(raw), cut)] if cut else [raw]
    for piece in pieces:
        decoder.feed(piece)
        while True:
            data = decoder.read(7)
            if not data:
                break
            out += data
    assert decoder.done
    return bytes(out)


def decode_error(raw: bytes, limit: int = 2**20) -> int:
    """The status a ChunkedDecoder refuses ``raw`` with."""
    decoder = ChunkedDecoder(limit)
    decoder.feed(raw)
    with pytest.raises(InvalidHandshake) as caught:
        while not decoder.done:
            if not decoder.read(1 << 16):
                break
    return int(caught.value.status)


# -- heads ---------------------------------------------------------------------


def test_a_plain_request_has_its_host_and_no_body() -> None:
    """GET with one Host: no body, the Host header's host."""
    framing = request_framing(head(b"GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n"))
    assert (framing.chunked, framing.length, framing.host) == (False, 0, "example.com:8080")


def test_content_length_and_chunked_are_read() -> None:
    """One Content-Length: that length; Transfer-Encoding: chunked (any case): chunked."""
    assert (
        request_framing(head(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\n")).length
        == 12
    )
    framing = request_framing(
        head(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n")
    )
    assert framing.chunked


@pytest.mark.parametrize(
    "headers",
    [
        b"Host: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n",
        b"Host: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n",
        b"Host: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n",
        b"Host: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n",
        b"Host: h\r\nContent-Length: 3, 3\r\n",
        b"Host: h\r\nContent-Length: +3\r\n",
        b"Host: h\r\nContent-Length: 0x3\r\n",
        b"Host: h\r\nContent-Length: 1234567890123456789\r\n",
        b"Host: h\r\nTransfer-Encoding: chunked, identity\r\n",
        b"Host: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        b"Host: h\r\nTransfer-Encoding: chunked, chunked\r\n",
        b"Host: h\r\nTransfer-Encoding: ,chunked\r\n",
        b"Host: h\r\nTransfer-Encoding: identity\r\n",
        b"Host: h\r\nTransfer-Encoding: xchunked\r\n",
        b"Host: h\r\nTransfer-Encoding: chunked;q=1\r\n",
    ],
)
def test_ambiguous_body_framing_is_400(headers: bytes) -> None:
    """CL+TE, repeated or odd CL, TE lists not ending in one chunked."""
    assert refused(b"POST / HTTP/1.1\r\n" + headers + b"\r\n") == 400


def test_an_unknown_coding_before_chunked_is_501() -> None:
    """gzip, chunked: well framed, but not a coding this server decodes."""
    assert refused(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n") == 501


def test_transfer_encoding_in_http10_is_400() -> None:
    """HTTP/1.0 has no chunked: its framing would be guesswork."""
    assert refused(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n") == 400


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n",
    ],
)
def test_host_missing_repeated_or_malformed_is_400(raw: bytes) -> None:
    """HTTP/1.1 needs exactly one valid Host."""
    assert refused(raw) == 400


def test_http10_may_omit_host() -> None:
    """HTTP/1.0 without Host: no host."""
    assert request_framing(head(b"GET / HTTP/1.0\r\n\r\n")).host is None


def test_an_absolute_form_target_sets_the_host() -> None:
    """The URI's authority wins over the Host header (RFC 9112 §3.2.2)."""
    framing = request_framing(head(b"GET http://real.example:81/x HTTP/1.1\r\nHost: other\r\n\r\n"))
    assert framing.host == "real.example:81"


@pytest.mark.parametrize(
    "target", [b"ftp://h/x", b"http:///x", b"http://u@h/x", b"h/x", b"*", b"http://a b/"]
)
def test_bad_targets_are_400(target: bytes) -> None:
    """Other schemes, no authority, userinfo, relative targets, * outside OPTIONS."""
    if b" " in target:
        with pytest.raises(InvalidHandshake):
            head(b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n")
        return
    assert refused(b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n") == 400


def test_options_star_is_accepted() -> None:
    """OPTIONS * is the one use of the asterisk form."""
    assert request_framing(head(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")).host == "h"


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/1.7", b"HTTP/0.9", b"HTTP/3.0"])
def test_other_versions_are_505(version: bytes) -> None:
    """Only HTTP/1.0 and HTTP/1.1."""
    assert refused(b"GET / " + version + b"\r\nHost: h\r\n\r\n") == 505


def test_connect_is_501_and_pri_is_400() -> None:
    """CONNECT is not served; PRI (HTTP/2's preface) is refused whatever its version."""
    assert refused(b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n") == 501
    assert refused(b"PRI * HTTP/2.0\r\n\r\n") == 400
    assert refused(b"PRI * HTTP/1.1\r\nHost: h\r\n\r\n") == 400


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\nX: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX: 1\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\n Host: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\rX: 1\r\n\r\n",
    ],
)
def test_the_head_parser_refuses_bare_lf_obs_fold_and_space_before_colon(raw: bytes) -> None:
    """The lines of the head itself: 400 from RequestParser."""
    with pytest.raises(InvalidHandshake) as caught:
        RequestParser().feed(raw)
    assert caught.value.status == HTTPStatus.BAD_REQUEST


# -- chunked bodies --------------------------------------------------------------


@pytest.mark.parametrize("cut", [0, 1, 2, 5, 64])
def test_chunks_decode_at_any_cut(cut: int) -> None:
    """Sizes, extensions (token and quoted), data, trailers, cut anywhere."""
    raw = b'5;a=1;b="x; y"\r\nhello\r\n000006;flag\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n'
    assert decode(raw, cut=cut) == b"hello world"


def test_the_bytes_after_the_body_are_kept() -> None:
    """The next pipelined request is trailing data, not body."""
    decoder = ChunkedDecoder()
    decoder.feed(b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n")
    assert decoder.read(100) == b"abc" and decoder.read(100) == b""
    assert decoder.done and decoder.trailing_data == b"GET / HTTP/1.1\r\n"


@pytest.mark.parametrize(
    "raw",
    [
        b"5\nhello\n0\n\n",  # bare LF everywhere (the example)
        b"5\nhello\r\n0\r\n\r\n",  # bare LF after the size
        b"5\r\nhello\n0\r\n\r\n",  # bare LF after the data
        b"5\r\nhello\r\n0\r\n\n",  # bare LF at the end
        b"5 \r\nhello\r\n0\r\n\r\n",  # whitespace after the size
        b" 5\r\nhello\r\n0\r\n\r\n",  # before it
        b"5 ;a\r\nhello\r\n0\r\n\r\n",  # before an extension
        b"5; a\r\nhello\r\n0\r\n\r\n",  # after ;
        b"5;a = b\r\nhello\r\n0\r\n\r\n",  # around =
        b"5;\r\nhello\r\n0\r\n\r\n",  # an empty extension
        b"5;a=\r\nhello\r\n0\r\n\r\n",  # an empty value
        b'5;a="unterminated\r\nhello\r\n0\r\n\r\n',
        b"5;a\x00\r\nhello\r\n0\r\n\r\n",  # a control character
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"+5\r\nhello\r\n0\r\n\r\n",
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"5_0\r\nhello\r\n0\r\n\r\n",
        b"\r\nhello\r\n0\r\n\r\n",  # no size
        b"10000000000000000\r\n",  # 17 hex digits
        b"5\r\nhelloXX0\r\n\r\n",  # data longer than its size
        b"5\r\nhello\r\r\n0\r\n\r\n",  # CR CR LF
        b"5\r\nhello\r\n0\r\nX: 1\n\r\n",  # a bare LF in a trailer
        b"5\r\nhello\r\n0\r\n folded\r\n\r\n",  # obs-fold in the trailers
        b"5\r\nhello\r\n0\r\nno colon\r\n\r\n",
        b"5\r\nhello\r\n0\r\nX : 1\r\n\r\n",
    ],
)
def test_malformed_chunked_bodies_are_400(raw: bytes) -> None:
    """Every lenient reading a proxy might make differently is refused."""
    assert decode_error(raw) == 400


def test_chunk_extensions_are_bounded() -> None:
    """A long extension line, and many moderate ones, are 400 before they cost memory."""
    assert decode_error(b"1;" + b"a" * MAX_CHUNK_LINE + b"\r\n") == 400
    many = b"".join(b"1;" + b"e" * 1000 + b"\r\nx\r\n" for _ in range(20))
    assert decode_error(many + b"0\r\n\r\n") == 400


def test_a_line_that_never_ends_is_refused_at_its_limit() -> None:
    """Size digits without a line end: 400 once past MAX_CHUNK_LINE, not a growing buffer."""
    decoder = ChunkedDecoder()
    decoder.feed(b"1;" + b"a" * (MAX_CHUNK_LINE - 10))
    assert decoder.read(10) == b""
    decoder.feed(b"a" * 100)
    with pytest.raises(InvalidHandshake):
        decoder.read(10)


def test_trailers_are_bounded() -> None:
    """More than 64 trailer lines: 400."""
    raw = b"0\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(65)) + b"\r\n"
    assert decode_error(raw) == 400


def test_the_limit_is_checked_from_the_chunk_size_before_its_data() -> None:
    """413 as soon as a size passes the limit, with none of its data yet."""
    decoder = ChunkedDecoder(limit=10)
    decoder.feed(b"6\r\nabcdef\r\n")
    assert decoder.read(100) == b"abcdef"
    decoder.feed(b"5\r\n")
    with pytest.raises(InvalidHandshake) as caught:
        decoder.read(100)
    assert caught.value.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE


def test_an_error_is_raised_again() -> None:
    """A decoder that failed stays failed: feed() and read() raise the same error."""
    decoder = ChunkedDecoder()
    decoder.feed(b"5\nhello")
    with pytest.raises(InvalidHandshake) as first:
        decoder.read(10)
    for call in (lambda: decoder.read(10), lambda: decoder.feed(b"x")):
        with pytest.raises(InvalidHandshake) as again:
            call()
        assert again.value is first.value


def test_data_is_given_out_as_it_arrives() -> None:
    """Part of a chunk is readable before the rest of it arrives (streaming)."""
    decoder = ChunkedDecoder()
    decoder.feed(b"a\r\nhel")
    pieces: List[bytes] = [decoder.read(100)]
    decoder.feed(b"lo worl")
    pieces.append(decoder.read(100))
    assert pieces == [b"hel", b"lo worl"] and not decoder.done


# -- properties -------------------------------------------------------------------


@given(
    pieces=st.lists(st.binary(min_size=1, max_size=300), max_size=8),
    cuts=st.lists(st.integers(1, 50), min_size=1, max_size=20),
    extension=st.sampled_from([b"", b";a", b";a=b", b';q="x y"']),
)
def test_any_well_formed_chunked_body_decodes_to_its_data_at_any_cuts(
    pieces: List[bytes], cuts: List[int], extension: bytes
) -> None:
    """Chunks of any sizes, fed in pieces of any sizes, decode to exactly their data."""
    raw = b"".join(b"%x%s\r\n%s\r\n" % (len(p), extension, p) for p in pieces) + b"0\r\n\r\nNEXT"
    decoder = ChunkedDecoder()
    out = bytearray()
    position = 0
    index = 0
    while position < len(raw):
        step = cuts[index % len(cuts)]
        index += 1
        decoder.feed(raw[position : position + step])
        position += step
        while True:
            data = decoder.read(64)
            if not data:
                break
            out += data
    assert decoder.done and bytes(out) == b"".join(pieces)
    assert decoder.trailing_data == b"NEXT"


@given(st.binary(max_size=400))
def test_garbage_is_refused_with_an_http_error_or_waits_for_more(raw: bytes) -> None:
    """Random bytes never raise anything but an HTTP error (400 or 413)."""
    decoder = ChunkedDecoder(limit=1000)
    decoder.feed(raw)
    try:
        while decoder.read(100):
            pass
    except InvalidHandshake as exc:
        assert int(exc.status) in (400, 413)
