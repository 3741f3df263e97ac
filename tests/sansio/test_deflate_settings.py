"""wsthread.Deflate: offers, server preferences and the memory-lean codec, on headers and bytes."""

from __future__ import annotations

import json
import random
import zlib
from typing import List

import pytest

from wsthread.exceptions import InvalidResponse
from wsthread.sansio.deflate import (
    DEFAULT_WINDOW_BITS,
    Deflate,
    DeflateParameters,
    PerMessageDeflate,
    client_offer,
    client_settings,
    negotiate_client,
    negotiate_server,
    server_settings,
)
from wsthread.sansio.protocol import Message, Protocol, Side

CHROMIUM_OFFER = "permessage-deflate; client_max_window_bits"


def chat_corpus(count: int = 300) -> List[bytes]:
    """Short JSON chat events, as a chat server would send them.

    benchmarks/compression.py builds a similar corpus on purpose apart from
    this one: the ratios asserted here hold for this seeded corpus, and the
    benchmark stays free to change its own.
    """
    rng = random.Random(7)
    words = [
        "the",
        "a",
        "to",
        "and",
        "of",
        "in",
        "is",
        "it",
        "you",
        "that",
        "was",
        "for",
        "on",
        "are",
        "with",
        "as",
        "hello",
        "world",
    ]
    users = ["alice", "bob", "carol", "dave"]
    return [
        json.dumps(
            {
                "type": "message",
                "room": "general",
                "user": rng.choice(users),
                "text": " ".join(rng.choice(words) for _ in range(rng.randint(3, 15))),
                "id": 1000 + i,
            }
        ).encode()
        for i in range(count)
    ]


def test_chromium_offer_gets_4_kib_windows_by_default() -> None:
    """Chromium's offer is answered with client_max_window_bits=12; the server uses 12 too."""
    header, parameters = negotiate_server([CHROMIUM_OFFER]) or ("", None)
    assert header == "permessage-deflate; client_max_window_bits=12"
    assert parameters == DeflateParameters(server_max_window_bits=12, client_max_window_bits=12)


def test_bare_offer_gets_no_unrequested_server_window() -> None:
    """Firefox's bare offer: the server's smaller window is used silently, not stated."""
    header, parameters = negotiate_server(["permessage-deflate"]) or ("", None)
    assert header == "permessage-deflate"
    assert parameters == DeflateParameters(server_max_window_bits=12, client_max_window_bits=15)


@pytest.mark.parametrize(
    "offer, settings, header, parameters",
    [
        (
            "permessage-deflate; server_max_window_bits=10",
            Deflate(),
            "permessage-deflate; server_max_window_bits=10",
            DeflateParameters(server_max_window_bits=10, client_max_window_bits=15),
        ),
        (
            "permessage-deflate; server_max_window_bits=15",
            Deflate(),
            "permessage-deflate; server_max_window_bits=12",
            DeflateParameters(server_max_window_bits=12),
        ),
        (
            "permessage-deflate; client_max_window_bits=10",
            Deflate(client_max_window_bits=11),
            "permessage-deflate; client_max_window_bits=10",
            DeflateParameters(server_max_window_bits=12, client_max_window_bits=10),
        ),
        (
            CHROMIUM_OFFER,
            Deflate(client_no_context_takeover=True, server_no_context_takeover=True),
            "permessage-deflate; client_no_context_takeover; client_max_window_bits=12",
            DeflateParameters(True, True, 12, 12),
        ),
        (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            Deflate(server_max_window_bits=15),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            DeflateParameters(True, True, 15, 15),
        ),
        (
            CHROMIUM_OFFER,
            Deflate(server_max_window_bits=9, client_max_window_bits=15),
            "permessage-deflate",
            DeflateParameters(server_max_window_bits=9),
        ),
    ],
)
def test_server_settings_shape_the_answer(
    offer: str, settings: Deflate, header: str, parameters: DeflateParameters
) -> None:
    """What the server prefers meets what the client offers, per RFC 7692 §7.1."""
    assert negotiate_server([offer], settings) == (header, parameters)


def test_client_offers_in_order_of_preference() -> None:
    """A list of Deflate gives one header with every offer, each with its parameters."""
    offers = [
        Deflate(server_no_context_takeover=True, server_max_window_bits=9),
        Deflate(client_no_context_takeover=True, client_max_window_bits=10),
        Deflate(),
    ]
    assert client_offer(offers) == (
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=9;"
        " client_max_window_bits, "
        "permessage-deflate; client_no_context_takeover; client_max_window_bits=10, "
        "permessage-deflate; client_max_window_bits"
    )
    assert client_offer([]) == CHROMIUM_OFFER


def test_client_matches_the_answer_to_the_first_offer_it_fits() -> None:
    """The answer is checked against each offer in turn; the first it fits is used."""
    strict = Deflate(server_no_context_takeover=True, server_max_window_bits=9, level=9)
    plain = Deflate()
    offers = [strict, plain]
    answer = "permessage-deflate; server_no_context_takeover; server_max_window_bits=9"
    assert negotiate_client([answer], offers) == (
        DeflateParameters(True, False, 9, DEFAULT_WINDOW_BITS),
        strict,
    )
    assert negotiate_client(["permessage-deflate; client_max_window_bits=10"], offers) == (
        DeflateParameters(False, False, 15, 10),
        plain,
    )
    assert negotiate_client([], offers) is None


@pytest.mark.parametrize(
    "answer",
    [
        "permessage-deflate",  # server_no_context_takeover was required
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=10",  # > 9
        "permessage-deflate; server_no_context_takeover",  # the window was not bounded
    ],
)
def test_client_refuses_an_answer_that_fits_no_offer(answer: str) -> None:
    """An answer ignoring what the only offer asked for fails the handshake."""
    with pytest.raises(InvalidResponse, match="none of the offers"):
        negotiate_client(
            [answer], [Deflate(server_no_context_takeover=True, server_max_window_bits=9)]
        )


def test_client_refuses_a_client_window_larger_than_offered() -> None:
    """client_max_window_bits=10 in the offer: an answer of 12 is a broken answer."""
    with pytest.raises(InvalidResponse):
        negotiate_client(
            ["permessage-deflate; client_max_window_bits=12"], [Deflate(client_max_window_bits=10)]
        )


def test_client_keeps_its_promise_of_no_context_takeover() -> None:
    """Offering client_no_context_takeover binds the client even if the answer omits it."""
    parameters, _ = negotiate_client(
        ["permessage-deflate"], [Deflate(client_no_context_takeover=True)]
    ) or (None, None)
    assert parameters is not None and parameters.client_no_context_takeover


@pytest.mark.parametrize(
    "kwargs",
    [
        {"server_max_window_bits": 8},
        {"client_max_window_bits": 16},
        {"client_max_window_bits": True},
        {"level": 10},
        {"mem_level": 0},
    ],
)
def test_deflate_refuses_impossible_settings(kwargs: dict) -> None:  # type: ignore[type-arg]
    """Windows outside 9-15, levels outside zlib's ranges: ValueError at construction."""
    with pytest.raises(ValueError):
        Deflate(**kwargs)


def test_compression_option_forms() -> None:
    """'deflate', a Deflate, a list of them and None are the accepted forms."""
    assert server_settings("deflate") == Deflate()
    assert server_settings(None) is None
    assert server_settings(Deflate(level=6)) == Deflate(level=6)
    assert client_settings("deflate") == [Deflate()]
    assert client_settings(None) == []
    assert client_settings([Deflate(level=6), Deflate()]) == [Deflate(level=6), Deflate()]
    for bad in ("gzip", [], ["deflate"]):
        with pytest.raises(ValueError):
            client_settings(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        server_settings([Deflate()])  # type: ignore[arg-type]


def sync_flush(compressor: zlib._Compress, data: bytes) -> bytes:
    """Compress one message with a kept compressor, without the sync tail."""
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def test_released_codec_is_read_by_a_long_lived_decompressor() -> None:
    """With a 4 KiB window the codec keeps only bytes between messages; a peer that keeps
    one zlib object for the whole stream (context takeover) reads every message."""
    codec = PerMessageDeflate(DeflateParameters(False, False, 12, 12), is_server=True)
    peer = zlib.decompressobj(wbits=-15)
    for message in chat_corpus():
        wire = codec.compress(message, fin=True)
        assert peer.decompress(wire + b"\x00\x00\xff\xff") == message
        assert 0 < codec.idle_state <= 2**12 and not codec.holds_zlib  # the history only


def test_released_codec_reads_a_long_lived_compressor() -> None:
    """A peer compressing with one zlib object and a 4 KiB window is read message by message."""
    codec = PerMessageDeflate(DeflateParameters(False, False, 12, 12), is_server=True)
    peer = zlib.compressobj(6, zlib.DEFLATED, -12)
    corpus = chat_corpus()
    for i, message in enumerate(corpus):
        wire = sync_flush(peer, message)
        if i % 3 == 0:  # in two frames, sometimes
            half = len(wire) // 2
            assert (
                codec.decompress(wire[:half], fin=False, max_length=None)
                + codec.decompress(wire[half:], fin=True, max_length=None)
                == message
            )
        else:
            assert codec.decompress(wire, fin=True, max_length=None) == message
        assert codec.idle_state <= 2**12 and not codec.holds_zlib


def test_released_codec_compresses_as_well_as_context_takeover() -> None:
    """On the chat corpus, the primed per-message compressor is within 5% of a kept one."""
    corpus = chat_corpus()
    codec = PerMessageDeflate(DeflateParameters(False, False, 12, 12), is_server=True)
    released = sum(len(codec.compress(message, fin=True)) for message in corpus)
    kept = zlib.compressobj(1, zlib.DEFLATED, -15)
    reference = sum(len(sync_flush(kept, message)) for message in corpus)
    alone = sum(len(sync_flush(zlib.compressobj(1, zlib.DEFLATED, -15), m)) for m in corpus)
    assert released <= reference * 1.05
    assert released < alone * 0.6  # and it does use the history


def test_no_context_takeover_keeps_nothing_and_wide_windows_keep_zlib() -> None:
    """No context takeover: nothing held between messages. 15-bit windows: zlib objects kept."""
    message = chat_corpus(1)[0]
    reset = PerMessageDeflate(DeflateParameters(True, True, 15, 15), is_server=True)
    wide = PerMessageDeflate(DeflateParameters(), is_server=True)
    for codec in (reset, wide):
        wire = codec.compress(message, fin=True)
        assert zlib.decompressobj(wbits=-15).decompress(wire + b"\x00\x00\xff\xff") == message
    assert reset.idle_state == 0 and not reset.holds_zlib
    assert wide.idle_state == 0 and wide.holds_zlib


def test_negotiated_pair_exchanges_messages_both_ways() -> None:
    """A server and a client configured with Deflate, negotiated on headers, talk both ways."""
    server_settings_ = Deflate(client_max_window_bits=10, level=6, mem_level=8)
    offers = [Deflate(server_no_context_takeover=True, server_max_window_bits=11), Deflate()]
    header, server_parameters = negotiate_server([client_offer(offers)], server_settings_) or (
        "",
        DeflateParameters(),
    )
    client_parameters, offer = negotiate_client([header], offers) or (
        DeflateParameters(),
        offers[1],
    )
    assert offer is offers[0]
    assert server_parameters == client_parameters == DeflateParameters(True, False, 11, 10)
    server = Protocol(
        Side.SERVER,
        max_size=2**20,
        deflate=server_settings_.codec(server_parameters, is_server=True),
    )
    client = Protocol(
        Side.CLIENT, max_size=2**20, deflate=offer.codec(client_parameters, is_server=False)
    )
    for message in chat_corpus(50):
        text = message.decode()
        assert server.receive_data(client.send_text(text)) == [Message(text)]
        assert client.receive_data(server.send_text(text)) == [Message(text)]


def test_history_accepts_any_bytes_like() -> None:
    """Messages given as bytearray or memoryview are compressed and remembered alike."""
    codec = PerMessageDeflate(DeflateParameters(False, False, 12, 12), is_server=True)
    peer = zlib.decompressobj(wbits=-12)
    for message in (
        bytearray(b"hello hello hello!"),
        memoryview(b"hello hello hello!"),
        b"x" * 5000,
    ):
        wire = codec.compress(message, fin=True)  # type: ignore[arg-type]
        assert peer.decompress(wire + b"\x00\x00\xff\xff") == bytes(message)
    assert codec.idle_state == 2**12
