"""``Protocol(fragments=True)``: a fragmented message comes out frame by frame, limits kept."""

from __future__ import annotations

from wsthread.exceptions import InvalidUTF8, PayloadTooBig
from wsthread.sansio.frames import CloseCode, Frame, Opcode, serialize_frame
from wsthread.sansio.protocol import Fragment, Message, Ping, Protocol, Side

MASK = b"\x01\x02\x03\x04"


def frame(opcode: Opcode, payload: bytes, fin: bool = True) -> bytes:
    """A masked frame as a client sends it."""
    return serialize_frame(Frame(opcode, payload, fin), mask=MASK)


def streaming_server(max_size: int = 2**20) -> Protocol:
    """A server protocol that delivers fragments."""
    return Protocol(Side.SERVER, max_size=max_size, fragments=True)


def test_each_frame_is_a_fragment_as_it_arrives() -> None:
    """Each frame gives a Fragment at once; the last has fin; one-frame messages stay Messages."""
    server = streaming_server()
    assert server.receive_data(frame(Opcode.BINARY, b"ab", fin=False)) == [Fragment(b"ab", False)]
    assert server.receive_data(frame(Opcode.CONTINUATION, b"cd", fin=False)) == [
        Fragment(b"cd", False)
    ]
    assert server.receive_data(frame(Opcode.CONTINUATION, b"", fin=True)) == [Fragment(b"", True)]
    assert server.receive_data(frame(Opcode.TEXT, b"whole")) == [Message("whole")]


def test_text_fragments_are_decoded_pieces() -> None:
    """A character split between frames comes whole in the later piece."""
    server = streaming_server()
    data = "a😀b".encode()
    wire = (
        frame(Opcode.TEXT, data[:2], fin=False)
        + frame(Opcode.CONTINUATION, data[2:4], fin=False)
        + frame(Opcode.CONTINUATION, data[4:])
    )
    events = server.receive_data(wire)
    assert events == [Fragment("a", False), Fragment("", False), Fragment("😀b", True)]


def test_invalid_utf8_in_the_middle_fails_with_1007_at_that_frame() -> None:
    """The pieces before the bad frame are delivered; the bad one fails the connection (1007)."""
    server = streaming_server()
    wire = (
        frame(Opcode.TEXT, b"good ", fin=False)
        + frame(Opcode.CONTINUATION, b"\xff\xfe", fin=False)
        + frame(Opcode.CONTINUATION, b"never seen")
    )
    assert server.receive_data(wire) == [Fragment("good ", False)]
    assert isinstance(server.failure, InvalidUTF8)
    assert server.failure.code == CloseCode.INVALID_DATA == 1007


def test_max_size_bounds_the_whole_message() -> None:
    """Fragments within max_size pass; the frame that would pass it fails with 1009."""
    server = streaming_server(max_size=10)
    wire = frame(Opcode.BINARY, b"12345", fin=False) + frame(Opcode.CONTINUATION, b"12345", False)
    assert server.receive_data(wire) == [Fragment(b"12345", False), Fragment(b"12345", False)]
    assert server.receive_data(frame(Opcode.CONTINUATION, b"x")) == []
    assert isinstance(server.failure, PayloadTooBig)
    assert server.failure.code == 1009
    # The reason is about the message: 10 bytes received and 1 more announced.
    assert str(server.failure) == "message of at least 11 bytes exceeds max_size=10"


def test_the_1009_reason_names_a_single_frame_message_exactly() -> None:
    """One final frame over the limit: its exact size and max_size, in the close frame too."""
    server = streaming_server(max_size=10)
    assert server.receive_data(frame(Opcode.TEXT, b"x" * 25)) == []
    assert str(server.failure) == "message of 25 bytes exceeds max_size=10"
    assert b"message of 25 bytes exceeds max_size=10" in server.data_to_send()


def test_size_count_restarts_with_the_next_message() -> None:
    """After a streamed message ends, the next one has the whole max_size again."""
    server = streaming_server(max_size=10)
    wire = (
        frame(Opcode.BINARY, b"1234567890", fin=False)
        + frame(Opcode.CONTINUATION, b"")
        + frame(Opcode.BINARY, b"abcdefghij", fin=False)
        + frame(Opcode.CONTINUATION, b"")
    )
    assert len(server.receive_data(wire)) == 4
    assert server.failure is None


def test_control_frames_between_fragments() -> None:
    """A ping between fragments is its own event; the message goes on."""
    server = streaming_server()
    wire = (
        frame(Opcode.TEXT, b"a", fin=False)
        + frame(Opcode.PING, b"p")
        + frame(Opcode.CONTINUATION, b"b")
    )
    assert server.receive_data(wire) == [Fragment("a", False), Ping(b"p"), Fragment("b", True)]


def test_a_new_message_inside_a_fragmented_one_is_refused() -> None:
    """RFC 6455: no data frame may start before the previous message ended (1002)."""
    server = streaming_server()
    wire = frame(Opcode.TEXT, b"a", fin=False) + frame(Opcode.TEXT, b"b")
    assert server.receive_data(wire) == [Fragment("a", False)]
    assert server.failure is not None and server.failure.code == 1002
