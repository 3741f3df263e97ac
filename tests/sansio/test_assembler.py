"""MessageAssembler: data frames joined into messages or handed out as fragments, no sockets."""

from __future__ import annotations

from typing import List

import pytest

from wsthread.exceptions import InvalidUTF8, ProtocolError
from wsthread.sansio.assembler import MessageAssembler
from wsthread.sansio.events import Fragment, Message
from wsthread.sansio.frames import Frame, FrameParser, Opcode, serialize_frame

MASK = bytes.fromhex("37fa213d")


def test_a_message_in_one_frame_is_one_message() -> None:
    """A final text frame gives a Message with its decoded text; size is back to 0."""
    assembler = MessageAssembler()
    assert assembler.add(Frame(Opcode.TEXT, "héllo".encode()), None) == Message("héllo")
    assert assembler.size == 0


def test_fragments_are_joined_once_the_last_arrives() -> None:
    """Pieces are held (size counts them) and joined into one Message by the final frame."""
    assembler = MessageAssembler()
    assert assembler.add(Frame(Opcode.BINARY, b"ab", fin=False), None) is None
    assert assembler.add(Frame(Opcode.CONTINUATION, b"cd", fin=False), None) is None
    assert assembler.size == 4
    assert assembler.add(Frame(Opcode.CONTINUATION, b"e"), None) == Message(b"abcde")
    assert assembler.size == 0


def test_a_character_split_between_frames_comes_whole() -> None:
    """With fragments=True, a UTF-8 character cut between frames arrives in the later piece."""
    data = "é".encode()
    assembler = MessageAssembler(fragments=True)
    assert assembler.add(Frame(Opcode.TEXT, b"a" + data[:1], fin=False), None) == Fragment(
        "a", False
    )
    assert assembler.add(Frame(Opcode.CONTINUATION, data[1:]), None) == Fragment("é", True)
    # The next message in one frame is a Message again.
    assert assembler.add(Frame(Opcode.TEXT, b"z"), None) == Message("z")


@pytest.mark.parametrize(
    "frames",
    [
        [Frame(Opcode.CONTINUATION, b"x")],
        [Frame(Opcode.TEXT, b"x", fin=False), Frame(Opcode.BINARY, b"y")],
        [Frame(Opcode.TEXT, b"x", fin=False), Frame(Opcode.CONTINUATION, b"y", rsv1=True)],
    ],
    ids=["continuation-first", "new-message-inside-one", "rsv1-on-continuation"],
)
def test_frames_that_do_not_fit_the_message_raise(frames: List[Frame]) -> None:
    """A continuation without a message, a message inside a message, RSV1 on a continuation."""
    assembler = MessageAssembler()
    with pytest.raises(ProtocolError) as info:
        for frame in frames:
            assembler.add(frame, None)
    assert info.value.code == 1002


def test_reset_drops_the_pieces_held() -> None:
    """After reset(), no piece of the abandoned message is held any more."""
    assembler = MessageAssembler()
    assembler.add(Frame(Opcode.BINARY, b"ab", fin=False), None)
    assembler.reset()
    assert assembler.add(Frame(Opcode.CONTINUATION, b"cd"), None) == Message(b"cd")


def test_check_partial_text_fails_before_the_frame_is_complete() -> None:
    """Bad UTF-8 in the first bytes of a text frame raises while the rest is still missing."""
    wire = serialize_frame(Frame(Opcode.TEXT, b"ok\xff" + b"x" * 100), mask=MASK)
    parser = FrameParser(expect_masked=True)
    parser.feed(wire[:20])
    assert parser.next_frame() is None
    with pytest.raises(InvalidUTF8):
        MessageAssembler().check_partial_text(parser)


def test_check_partial_text_lets_good_text_and_binary_pass() -> None:
    """Valid text so far, and binary frames, pass the early check."""
    for opcode, payload in [(Opcode.TEXT, "é".encode() * 50), (Opcode.BINARY, b"\xff" * 100)]:
        wire = serialize_frame(Frame(opcode, payload), mask=MASK)
        parser = FrameParser(expect_masked=True)
        parser.feed(wire[:30])
        assert parser.next_frame() is None
        MessageAssembler().check_partial_text(parser)


def test_check_partial_text_judges_the_header_as_add_would() -> None:
    """A continuation with RSV1 whose bad text is half here fails on RSV1, wherever it is cut.

    Found by the fuzzer: the early UTF-8 check ran before the header checks
    of add(), so cutting the bytes changed the close code (1007 instead of 1002).
    """
    wire = serialize_frame(Frame(Opcode.TEXT, b"ok", fin=False), mask=MASK)
    wire += serialize_frame(Frame(Opcode.CONTINUATION, b"\x81" * 50, rsv1=True), mask=MASK)
    for cut in range(len(wire) + 1):
        parser = FrameParser(expect_masked=True, allowed_rsv1=True)
        assembler = MessageAssembler()
        with pytest.raises(ProtocolError) as info:
            for piece in (wire[:cut], wire[cut:]):
                parser.feed(piece)
                while (frame := parser.next_frame()) is not None:
                    assembler.add(frame, None)
                if parser.in_payload:
                    assembler.check_partial_text(parser)
        assert (type(info.value), str(info.value)) == (
            ProtocolError,
            "RSV1 set on a continuation frame",
        ), f"cut at {cut}"
