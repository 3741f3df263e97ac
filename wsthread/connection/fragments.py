"""Sending one message as several frames: runs on the application thread that calls ``send()``.

``Connection.send(iterable)`` sends a fragmented message: one frame per
piece, under the writer lock for the whole message, so that no other
message can slip between its frames. The frames go out through
:meth:`Writer.write <wsthread.connection.writer.Writer.write>` like any other.

A message left half sent (the iterable raised, or gave a piece of the
wrong type, after the first frame went out) cannot be finished, and any
later message would break the protocol: the connection is then closed
with 1011.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Optional, Tuple, Union

from ..exceptions import ConnectionClosed
from ..sansio.frames import CloseCode

if TYPE_CHECKING:  # only for the type hints: writer.py imports this module
    from .writer import Writer

__all__ = ["send_fragments"]


def _piece_bytes(piece: object) -> Tuple[bytes, type]:
    """A piece's payload and its kind (``str`` or ``bytes``).

    Raises:
        TypeError: the piece is neither ``str`` nor bytes-like.
    """
    if isinstance(piece, str):
        return piece.encode("utf-8"), str
    if isinstance(piece, (bytes, bytearray, memoryview)):
        return bytes(piece), bytes
    raise TypeError(f"cannot send a fragment of type {type(piece).__name__}")


def send_fragments(
    writer: Writer, fragments: Iterable[Union[str, bytes]], text: Optional[bool]
) -> None:
    """Send one fragmented message, a frame per piece; takes the writer lock for all of it.

    ``text`` as for ``Connection.send()``: ``None`` sends text for ``str``
    pieces and binary for bytes.

    Raises:
        TypeError: a piece is neither ``str`` nor bytes-like, or the
            pieces mix the two.
        ConnectionClosed: as :meth:`Writer.write <wsthread.connection.writer.Writer.write>`.

    Whatever is raised once the first frame went out (those errors, or one
    from the iterable itself) closes the connection with 1011 before it
    propagates.
    """
    protocol = writer.protocol
    with writer:
        kind: Optional[type] = None
        try:
            for piece in fragments:
                data, piece_kind = _piece_bytes(piece)
                if kind is None:
                    kind = piece_kind
                    as_text = kind is str if text is None else text
                    frame = (
                        protocol.send_text(data, fin=False)
                        if as_text
                        else protocol.send_binary(data, fin=False)
                    )
                elif piece_kind is not kind:
                    raise TypeError("all fragments of a message must be str, or all bytes")
                else:
                    frame = protocol.send_continuation(data, fin=False)
                writer.write(frame)
        except BaseException:
            if kind is not None:
                _abandon_message(writer)
            raise
        if kind is not None:
            writer.write(protocol.send_continuation(b"", fin=True))
            writer.messages_sent += 1


def _abandon_message(writer: Writer) -> None:
    """A message was left half sent: close with 1011; the writer lock is held."""
    protocol = writer.protocol
    if protocol.close_sent is None and not writer.closed:
        try:
            writer.write(protocol.send_close(CloseCode.INTERNAL_ERROR, "message abandoned"))
        except ConnectionClosed:
            pass
