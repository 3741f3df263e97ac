"""Fragmented messages on a fake transport: a frame per piece, one lock, 1011 when abandoned."""

from __future__ import annotations

from typing import Iterator, List

import pytest
from test_writer import FakeTransport, frames_written, make, opcodes_and_payloads

from wsthread.connection.fragments import send_fragments
from wsthread.exceptions import ConnectionClosed
from wsthread.sansio.frames import Opcode


def test_each_piece_is_a_frame_and_an_empty_final_frame_ends_the_message() -> None:
    """str pieces: TEXT, CONTINUATION..., then an empty CONTINUATION with FIN."""
    transport = FakeTransport()
    writer = make(transport)
    send_fragments(writer, iter(["hel", "lo ", "there"]), None)
    sent = opcodes_and_payloads(bytes(transport.sent))
    assert sent == [
        (Opcode.TEXT, b"hel"),
        (Opcode.CONTINUATION, b"lo "),
        (Opcode.CONTINUATION, b"there"),
        (Opcode.CONTINUATION, b""),
    ]
    fins = [frame.fin for frame in frames_written(bytes(transport.sent))]
    assert fins == [False, False, False, True]
    assert writer.messages_sent == 1
    transport.close()


@pytest.mark.parametrize(
    ("pieces", "text", "opcode"),
    [
        ([b"ab", bytearray(b"cd"), memoryview(b"ef")], None, Opcode.BINARY),
        ([b"ab", b"cd", b"ef"], True, Opcode.TEXT),
        (["ab", "cd", "ef"], False, Opcode.BINARY),
    ],
)
def test_text_chooses_the_opcode_and_any_bytes_like_piece_is_sent(
    pieces: List[object], text: object, opcode: Opcode
) -> None:
    """``text=None`` follows the pieces' type; True/False override it."""
    transport = FakeTransport()
    writer = make(transport)
    send_fragments(writer, pieces, text)  # type: ignore[arg-type]
    sent = opcodes_and_payloads(bytes(transport.sent))
    assert sent[0][0] == opcode
    assert b"".join(payload for _, payload in sent) == b"abcdef"
    transport.close()


def test_nothing_is_sent_for_no_pieces_or_a_bad_first_piece() -> None:
    """An empty iterable sends nothing; a bad first piece raises before any frame, no close."""
    transport = FakeTransport()
    writer = make(transport)
    send_fragments(writer, [], None)
    with pytest.raises(TypeError):
        send_fragments(writer, [42], None)  # type: ignore[list-item]
    assert transport.sent == b""
    assert writer.protocol.close_sent is None and writer.messages_sent == 0
    transport.close()


def test_the_writer_lock_is_held_for_the_whole_message() -> None:
    """No other frame can go out between two pieces: the lock is busy while the iterable runs."""
    transport = FakeTransport()
    writer = make(transport)
    seen: List[bool] = []

    def pieces() -> Iterator[str]:
        for piece in ("a", "b", "c"):
            seen.append(writer.lock.acquire(blocking=False))
            yield piece

    send_fragments(writer, pieces(), None)
    assert seen == [False, False, False]
    assert writer.lock.acquire(blocking=False)  # and let go at the end
    writer.lock.release()
    transport.close()


@pytest.mark.parametrize("failure", ["the iterable raises", "a piece of another type"])
def test_a_fragmented_message_left_half_sent_closes_with_1011(failure: str) -> None:
    """An error once the first fragment went out closes with 1011: no later frame may follow."""
    transport = FakeTransport()
    writer = make(transport)

    def pieces() -> Iterator[object]:
        yield "first"
        if failure == "the iterable raises":
            raise LookupError("the application's generator failed")
        yield 42

    error = LookupError if failure == "the iterable raises" else TypeError
    with pytest.raises(error):
        send_fragments(writer, pieces(), None)  # type: ignore[arg-type]
    sent = opcodes_and_payloads(bytes(transport.sent))
    assert [opcode for opcode, _ in sent] == [Opcode.TEXT, Opcode.CLOSE]
    assert writer.protocol.close_sent is not None and writer.protocol.close_sent[0] == 1011
    with pytest.raises(ConnectionClosed), writer:  # nothing more goes out
        writer.write(writer.protocol.send_text("later"))
    transport.close()
