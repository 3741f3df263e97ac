"""Prepared messages: a broadcast's wire forms built once and shared, on bytes only."""

from __future__ import annotations

from typing import List, Optional, Tuple

import pytest

from wsthread.exceptions import ConnectionClosed
from wsthread.sansio.deflate import (
    COMPRESSION_THRESHOLD,
    DeflateParameters,
    PerMessageDeflate,
    compress_message,
)
from wsthread.sansio.frames import Frame, Opcode
from wsthread.sansio.prepared import PreparedMessage
from wsthread.sansio.protocol import Message, Protocol, Side

NO_TAKEOVER = DeflateParameters(server_no_context_takeover=True, server_max_window_bits=12)
TAKEOVER = DeflateParameters(server_max_window_bits=12)
TEXT = '{"order": 123, "status": "shipped", "items": [1, 2, 3]}' * 4


def server(
    parameters: Optional[DeflateParameters] = None, level: int = 1, trace: object = None
) -> Protocol:
    deflate = None
    if parameters is not None:
        deflate = PerMessageDeflate(parameters, is_server=True, level=level)
    return Protocol(Side.SERVER, deflate=deflate, trace=trace)  # type: ignore[arg-type]


def client(parameters: Optional[DeflateParameters] = None) -> Protocol:
    deflate = None if parameters is None else PerMessageDeflate(parameters, is_server=False)
    return Protocol(Side.CLIENT, deflate=deflate)


def test_the_plain_frame_is_built_once_and_is_what_send_message_gives() -> None:
    """Without compression every connection gets the same bytes object: send_message's frame."""
    message = PreparedMessage(b"\x00\x01tick", text=False)
    first, second = server(), server()
    frame = first.send_prepared(message)
    assert frame == server().send_message(b"\x00\x01tick", False)
    assert second.send_prepared(message) is frame
    assert message.compressed_forms == 0
    assert client().receive_data(frame) == [Message(b"\x00\x01tick")]


def test_text_keeps_its_opcode() -> None:
    """A text message goes out with opcode 1 and arrives as str."""
    message = PreparedMessage("héllo".encode(), text=True)
    frame = server().send_prepared(message)
    assert frame[0] == 0x80 | Opcode.TEXT
    assert client().receive_data(frame) == [Message("héllo")]


def test_a_compressed_form_is_shared_without_context_takeover() -> None:
    """Connections that reset their compressor share one compressed frame, equal to their own."""
    message = PreparedMessage(TEXT.encode(), text=True)
    one, two = server(NO_TAKEOVER), server(NO_TAKEOVER)
    frame = one.send_prepared(message)
    assert frame[0] == 0x80 | 0x40 | Opcode.TEXT  # FIN, RSV1, text
    assert two.send_prepared(message) is frame
    assert message.compressed_forms == 1
    assert frame == server(NO_TAKEOVER).send_message(TEXT.encode(), True)
    assert len(frame) < len(TEXT) // 2
    peer = client(NO_TAKEOVER)
    assert peer.receive_data(frame + frame) == [Message(TEXT), Message(TEXT)]


def test_one_compressed_form_per_window_and_level() -> None:
    """Each distinct (window, level, mem_level) gets its own form, built once."""
    message = PreparedMessage(TEXT.encode(), text=False)
    narrow = DeflateParameters(server_no_context_takeover=True, server_max_window_bits=9)
    protocols = [server(NO_TAKEOVER), server(narrow), server(NO_TAKEOVER, level=9)]
    protocols += [server(NO_TAKEOVER), server(narrow)]
    frames = [protocol.send_prepared(message) for protocol in protocols]
    assert message.compressed_forms == 3
    assert frames[3] is frames[0] and frames[4] is frames[1]
    for parameters, frame in [(NO_TAKEOVER, frames[0]), (narrow, frames[1])]:
        assert client(parameters).receive_data(frame) == [Message(TEXT.encode())]


def test_compress_message_leaves_every_codec_alone() -> None:
    """Compressing once for a key touches no connection's compressor, and matches its output."""
    codec = PerMessageDeflate(TAKEOVER, is_server=True)
    codec.compress(b"history " * 100, fin=True)
    history = codec.idle_state
    reset = PerMessageDeflate(NO_TAKEOVER, is_server=True)
    key = reset.shared_key
    assert key == (12, 1, 5)
    data = compress_message(TEXT.encode(), key)
    assert codec.idle_state == history and not codec.holds_zlib
    assert data == reset.compress(TEXT.encode(), fin=True)
    assert codec.shared_key is None  # context takeover: nothing to share


def test_context_takeover_compresses_with_the_connections_own_codec() -> None:
    """With context takeover the frame comes from that connection's history; nothing shared."""
    message = PreparedMessage(TEXT.encode(), text=True)
    sender, twin = server(TAKEOVER), server(TAKEOVER)
    peer = client(TAKEOVER)
    frames = [sender.send_prepared(message) for _ in range(3)]
    assert frames == [twin.send_message(TEXT.encode(), True) for _ in range(3)]
    assert len(frames[1]) < len(frames[0])  # the second one refers to the first
    assert message.compressed_forms == 0
    assert peer.receive_data(b"".join(frames)) == [Message(TEXT)] * 3


def test_short_messages_use_the_plain_form_even_with_compression() -> None:
    """Under COMPRESSION_THRESHOLD bytes a message is not compressed, shared or not."""
    message = PreparedMessage(b"x" * (COMPRESSION_THRESHOLD - 1), text=False)
    plain = server().send_prepared(message)
    assert server(NO_TAKEOVER).send_prepared(message) is plain
    assert server(TAKEOVER).send_prepared(message) is plain
    assert message.compressed_forms == 0


def test_a_client_masks_each_frame_and_shares_nothing() -> None:
    """A client's frames are masked with a fresh key each: never the shared form."""
    message = PreparedMessage(b"payload", text=False)
    sending = client()
    first, second = sending.send_prepared(message), sending.send_prepared(message)
    assert first[1] & 0x80 and message.compressed_forms == 0
    assert server().receive_data(first + second) == [Message(b"payload")] * 2


def test_the_trace_hook_sees_the_shared_frame() -> None:
    """The trace hook gets the frame as sent: opcode, wire payload, RSV1, no mask."""
    seen: List[Tuple[str, Frame, Optional[bytes]]] = []

    class Hook:
        def handshake(self, direction: str, data: bytes) -> None:
            pass

        def frame(self, direction: str, frame: Frame, mask: Optional[bytes]) -> None:
            seen.append((direction, frame, mask))

    message = PreparedMessage(TEXT.encode(), text=True)
    frame = server(NO_TAKEOVER, trace=Hook()).send_prepared(message)
    ((direction, traced, mask),) = seen
    assert direction == "server -> client" and mask is None
    assert traced.opcode is Opcode.TEXT and traced.rsv1 and traced.fin
    assert frame.endswith(traced.payload) and len(traced.payload) < len(TEXT)


def test_nothing_is_framed_after_the_close_frame() -> None:
    """A closing connection refuses a prepared message as it refuses send_message."""
    protocol = server()
    protocol.send_close(1001)
    with pytest.raises(ConnectionClosed):
        protocol.send_prepared(PreparedMessage(b"late", text=False))


def test_sends_plain_shared_only_where_send_prepared_gives_the_plain_frame() -> None:
    """The writer's fast path takes ``message.frame`` only where send_prepared would too."""
    message = PreparedMessage(TEXT.encode(), text=True)

    class Hook:
        def handshake(self, direction: str, data: bytes) -> None:
            pass

        def frame(self, direction: str, frame: Frame, mask: Optional[bytes]) -> None:
            pass

    plain = server()
    assert plain.sends_plain_shared and plain.send_prepared(message) is message.frame
    for other in (server(NO_TAKEOVER), server(TAKEOVER), server(trace=Hook()), client()):
        assert not other.sends_plain_shared
    negotiated = server()
    negotiated.use_deflate(PerMessageDeflate(NO_TAKEOVER, is_server=True))
    assert not negotiated.sends_plain_shared
    assert negotiated.send_prepared(message) is not message.frame
