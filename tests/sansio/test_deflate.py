"""permessage-deflate negotiation and codec, without sockets (RFC 7692)."""

from __future__ import annotations

import os
import zlib
from typing import List, Optional, Tuple

import pytest

from conftest import parse_frames
from wsthread.exceptions import InvalidRequest, InvalidResponse, PayloadTooBig
from wsthread.sansio.deflate import (
    COMPRESSION_THRESHOLD,
    Deflate,
    DeflateParameters,
    PerMessageDeflate,
    accept_client,
    client_offer,
    compressed_bound,
    negotiate_server,
    parse_extensions,
)
from wsthread.sansio.frames import Frame, Opcode, serialize_frame
from wsthread.sansio.protocol import Message, Protocol, Side


def test_parse_extensions_several_offers_parameters_and_quotes() -> None:
    """Several offers, several parameters, quoted values and several header lines parse."""
    parsed = parse_extensions(
        [
            "permessage-deflate; client_max_window_bits, "
            'permessage-deflate; server_max_window_bits="10"',
            "x-other; a=b",
        ]
    )
    assert parsed == [
        ("permessage-deflate", [("client_max_window_bits", None)]),
        ("permessage-deflate", [("server_max_window_bits", "10")]),
        ("x-other", [("a", "b")]),
    ]


@pytest.mark.parametrize(
    "header", ["permessage-deflate; =1", "a b", 'permessage-deflate; x="unterminated', "@bad"]
)
def test_parse_extensions_rejects_malformed_headers(header: str) -> None:
    """Headers that break the RFC 6455 §9.1 grammar raise ValueError."""
    with pytest.raises(ValueError):
        parse_extensions([header])


# Server settings that accept every offer as it is (zlib's 32 KiB windows).
WIDE = Deflate(server_max_window_bits=15, client_max_window_bits=15)


def test_server_accepts_plain_offer() -> None:
    """A bare offer is accepted with default parameters."""
    result = negotiate_server(["permessage-deflate"], WIDE)
    assert result == ("permessage-deflate", DeflateParameters())


@pytest.mark.parametrize(
    "offer, response, parameters",
    [
        (
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover",
            DeflateParameters(server_no_context_takeover=True),
        ),
        (
            "permessage-deflate; client_no_context_takeover",
            "permessage-deflate; client_no_context_takeover",
            DeflateParameters(client_no_context_takeover=True),
        ),
        (
            "permessage-deflate; server_max_window_bits=9",
            "permessage-deflate; server_max_window_bits=9",
            DeflateParameters(server_max_window_bits=9),
        ),
        (
            "permessage-deflate; client_max_window_bits=10",
            "permessage-deflate; client_max_window_bits=10",
            DeflateParameters(client_max_window_bits=10),
        ),
        (
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate",
            DeflateParameters(),
        ),
    ],
)
def test_server_honours_each_parameter(
    offer: str, response: str, parameters: DeflateParameters
) -> None:
    """Each RFC 7692 parameter in an offer is honoured and stated in the answer."""
    assert negotiate_server([offer], WIDE) == (response, parameters)


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; client_max_window_bits=abc",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; unknown_parameter",
        "permessage-deflate; server_max_window_bits=8",
    ],
)
def test_invalid_offer_is_declined_not_fatal(offer: str) -> None:
    """An offer with a bad or duplicate parameter is declined; the handshake goes on."""
    assert negotiate_server([offer]) is None


def test_first_acceptable_offer_wins() -> None:
    """With several offers, the first acceptable one is chosen."""
    result = negotiate_server(
        [
            "permessage-deflate; server_max_window_bits=99, permessage-deflate; "
            "client_no_context_takeover, permessage-deflate"
        ],
        WIDE,
    )
    assert result is not None
    assert result[1] == DeflateParameters(client_no_context_takeover=True)


def test_other_extensions_are_ignored() -> None:
    """Unknown extensions are skipped, not accepted."""
    assert negotiate_server(["x-webkit-deflate-frame"]) is None


def test_malformed_header_is_a_400() -> None:
    """A header that is not even well-formed fails the handshake with 400."""
    with pytest.raises(InvalidRequest):
        negotiate_server(['permessage-deflate; a="open'])


def test_client_accepts_valid_answers() -> None:
    """The client reads the server's parameters; no header means no compression."""
    assert "permessage-deflate" in client_offer()
    assert accept_client([]) is None
    assert accept_client(["permessage-deflate; server_no_context_takeover"]) == (
        DeflateParameters(server_no_context_takeover=True)
    )
    assert accept_client(["permessage-deflate; client_max_window_bits=12"]) == (
        DeflateParameters(client_max_window_bits=12)
    )


@pytest.mark.parametrize(
    "answer",
    [
        "x-unknown",
        "permessage-deflate, permessage-deflate",
        "permessage-deflate; server_max_window_bits=20",
        "permessage-deflate; mystery",
        "permessage-deflate; client_no_context_takeover=yes",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits=8",
    ],
)
def test_client_rejects_answers_that_break_the_offer(answer: str) -> None:
    """A response the client did not offer, or with bad parameters, fails the handshake."""
    with pytest.raises(InvalidResponse):
        accept_client([answer])


DEFAULTS = DeflateParameters()


def pair(
    parameters: DeflateParameters = DEFAULTS, max_size: Optional[int] = 2**20
) -> Tuple[Protocol, Protocol]:
    """A server and a client protocol that agreed on ``parameters``."""
    server = Protocol(
        Side.SERVER, max_size=max_size, deflate=PerMessageDeflate(parameters, is_server=True)
    )
    client = Protocol(
        Side.CLIENT, max_size=max_size, deflate=PerMessageDeflate(parameters, is_server=False)
    )
    return server, client


def frames_of(data: bytes, expect_masked: bool) -> List[Frame]:
    """The frames in ``data``, RSV1 (compressed) allowed."""
    return parse_frames(data, expect_masked=expect_masked, allowed_rsv1=True)


@pytest.mark.parametrize(
    "parameters",
    [
        DeflateParameters(),
        DeflateParameters(server_no_context_takeover=True, client_no_context_takeover=True),
        DeflateParameters(server_max_window_bits=9, client_max_window_bits=9),
    ],
)
def test_round_trip_both_ways_with_context_takeover_settings(
    parameters: DeflateParameters,
) -> None:
    """Messages survive compression both ways under each context setting."""
    server, client = pair(parameters)
    texts = ["hello world " * 50, "héllo " * 40, "hello world " * 50]
    for text in texts:
        events = server.receive_data(client.send_text(text))
        assert events == [Message(text)]
        assert client.receive_data(server.send_text(text)) == [Message(text)]


def test_rsv1_only_on_first_frame_of_fragmented_message() -> None:
    """A compressed fragmented message sets RSV1 on its first frame only."""
    server, client = pair()
    data = (
        client.send_binary(b"a" * 300, fin=False)
        + client.send_continuation(b"b" * 300, fin=False)
        + client.send_continuation(b"", fin=True)
    )
    frames = frames_of(data, expect_masked=True)
    assert [f.rsv1 for f in frames] == [True, False, False]  # type: ignore[attr-defined]
    assert server.receive_data(data) == [Message(b"a" * 300 + b"b" * 300)]


def test_tiny_messages_are_not_compressed() -> None:
    """Messages under the threshold go out with RSV1 clear and the payload as is."""
    server, _ = pair()
    small = server.send_text("x" * (COMPRESSION_THRESHOLD - 1))
    large = server.send_text("x" * COMPRESSION_THRESHOLD)
    (small_frame,) = frames_of(small, expect_masked=False)
    (large_frame,) = frames_of(large, expect_masked=False)
    assert not small_frame.rsv1 and small_frame.payload == b"x" * (COMPRESSION_THRESHOLD - 1)  # type: ignore[attr-defined]
    assert large_frame.rsv1  # type: ignore[attr-defined]


def test_sync_tail_is_stripped() -> None:
    """The compressed payload does not end with the 00 00 ff ff of a sync flush."""
    server, _ = pair()
    (frame,) = frames_of(server.send_binary(b"z" * 1000), expect_masked=False)
    assert not frame.payload.endswith(b"\x00\x00\xff\xff")  # type: ignore[attr-defined]


def test_control_frames_are_never_compressed() -> None:
    """Pings and close frames keep RSV1 clear even with deflate agreed."""
    server, _ = pair()
    (ping,) = frames_of(server.send_ping(b"p" * 125), expect_masked=False)
    assert not ping.rsv1 and ping.opcode is Opcode.PING  # type: ignore[attr-defined]


def test_rsv1_on_continuation_frame_is_a_protocol_error() -> None:
    """RSV1 on a continuation frame fails the connection with 1002."""
    server, client = pair()
    first = client.send_binary(b"a" * 300, fin=False)
    # Forge a continuation frame with RSV1 set.
    bad = bytearray(client.send_continuation(b"", fin=True))
    bad[0] |= 0x40
    server.receive_data(first + bytes(bad))
    assert server.failure is not None and server.failure.code == 1002


def test_rsv1_without_deflate_is_a_protocol_error() -> None:
    """RSV1 from a peer that did not negotiate deflate fails with 1002."""
    _, client = pair()
    server = Protocol(Side.SERVER)
    server.receive_data(client.send_binary(b"a" * 300))
    assert server.failure is not None and server.failure.code == 1002


def test_corrupt_compressed_data_fails_the_connection() -> None:
    """Garbage in a compressed frame is a protocol error, not a crash."""
    server, _ = pair()
    client = Protocol(Side.CLIENT)
    frame = bytearray(client.send_binary(b"\xff" * 20))
    frame[0] |= 0x40  # claim it is compressed
    server.receive_data(bytes(frame))
    assert server.failure is not None and server.failure.code in (1002, 1007)


def test_decompression_bomb_closes_with_1009_without_inflating_it() -> None:
    """256 KiB that inflate to 256 MiB fail with 1009, the inflater bounded by max_size."""
    compressor = zlib.compressobj(wbits=-15)
    bomb = b"".join(compressor.compress(b"\0" * 2**20) for _ in range(256))
    bomb += compressor.flush(zlib.Z_SYNC_FLUSH)
    bomb = bomb[:-4]
    assert len(bomb) < 2**19  # about a thousandth of what it inflates to
    server, _ = pair(max_size=2**20)
    client = Protocol(Side.CLIENT)
    frame = bytearray(client.send_binary(bomb))
    frame[0] |= 0x40
    events = server.receive_data(bytes(frame))
    assert events == []
    assert server.failure is not None and server.failure.code == 1009
    assert str(server.failure) == f"message inflates past max_size={2**20} bytes"
    assert b"\x88" in server.data_to_send()[:1]


def test_decompressor_output_is_bounded() -> None:
    """The codec never returns more than max_length + 1 bytes before raising."""
    codec = PerMessageDeflate(DeflateParameters(), is_server=True)
    compressor = zlib.compressobj(wbits=-15)
    data = compressor.compress(b"\0" * 10**7) + compressor.flush(zlib.Z_SYNC_FLUSH)
    with pytest.raises(PayloadTooBig):
        codec.decompress(data[:-4], fin=True, max_length=1000)


def test_fragmented_compressed_message_with_limit() -> None:
    """A compressed message in many fragments is inflated within max_size."""
    server, client = pair(max_size=10_000)
    data = client.send_text("a" * 5000, fin=False) + client.send_continuation(b"b" * 5000, True)
    assert server.receive_data(data) == [Message("a" * 5000 + "b" * 5000)]
    data = client.send_text("a" * 5000, fin=False) + client.send_continuation(b"b" * 5001, True)
    server.receive_data(data)
    assert server.failure is not None and server.failure.code == 1009


def test_messages_are_compressed_even_after_incompressible_ones() -> None:
    """From the threshold on, every message is compressed, even after random data."""
    import os

    server, _ = pair()
    server.send_binary(os.urandom(4000))
    for wire in (server.send_text("x" * COMPRESSION_THRESHOLD), server.send_binary(os.urandom(99))):
        (frame,) = frames_of(wire, expect_masked=False)
        assert frame.rsv1  # type: ignore[attr-defined]


def test_inflated_messages_come_out_in_batches() -> None:
    """A few KB that inflate to 4 MB of messages come out about INFLATE_BATCH at a time."""
    from wsthread.sansio.protocol import INFLATE_BATCH, Message

    server, client = pair()
    wire = b"".join(client.send_binary(b"%04d" % n + b"z" * 100000) for n in range(40))
    assert len(wire) < 40 * 1000  # it compresses very well
    batches = [server.receive_data(wire)]
    while server.frames_pending:
        batches.append(server.receive_data(b""))
    assert len(batches) >= 10
    for batch in batches:
        assert sum(len(event.data) for event in batch) < INFLATE_BATCH + 100004  # type: ignore[union-attr]
    messages = [event for batch in batches for event in batch]
    assert all(isinstance(event, Message) for event in messages)
    assert [int(event.data[:4]) for event in messages] == list(range(40))  # type: ignore[union-attr]
    assert not server.frames_pending and server.failure is None


def test_max_size_bounds_the_inflated_message_not_its_frame() -> None:
    """An incompressible message of exactly max_size passes though its frame is longer."""
    server, client = pair(max_size=10_000)
    data = os.urandom(10_000)
    wire = client.send_message(data, False)
    assert len(frames_of(wire, expect_masked=True)[0].payload) > 10_000
    assert server.receive_data(wire) == [Message(data)]
    server.receive_data(client.send_message(os.urandom(10_001), False))
    assert isinstance(server.failure, PayloadTooBig)
    assert str(server.failure) == "message inflates past max_size=10000 bytes"


def test_uncompressed_frame_is_held_to_max_size_itself() -> None:
    """With deflate on, a frame sent uncompressed may not use the compressed bound."""
    server, _ = pair(max_size=100)
    wire = serialize_frame(Frame(Opcode.BINARY, b"x" * 101), mask=b"abcd")
    server.receive_data(wire)
    assert isinstance(server.failure, PayloadTooBig)
    assert str(server.failure) == "message of 101 bytes exceeds max_size=100"


def test_compressed_frame_over_the_bound_fails_from_its_header() -> None:
    """A frame longer than compressed_bound(max_size) fails before its payload arrives."""
    server, _ = pair(max_size=100)
    bound = compressed_bound(100)
    header = serialize_frame(Frame(Opcode.BINARY, b"x" * (bound + 1), rsv1=True), mask=b"abcd")
    server.receive_data(header[:8])
    assert isinstance(server.failure, PayloadTooBig)
    assert str(server.failure) == (
        f"frame of {bound + 1} bytes exceeds {bound}, the deflate bound for max_size=100"
    )
