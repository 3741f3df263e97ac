"""Sending one message as several frames: runs on the application thread that calls ``send()``.

``Connection.send(iterable)`` sends a fragmented message: one frame per
piece, under the writer lock for the whole message, so that no other
message can slip between its frames. The frames go out through
:meth:`Writer.write <wsthread.connection.writer.Writer.write>` like any other.

What cannot be sent is refused before any byte leaves
(:func:`check_message`): a ``dict``, a set, a number, ``None`` or any other
object that is neither ``str``, bytes-like nor an iterable of fragments, and
a list or tuple whose pieces are not all ``str`` or all bytes-like. The
connection stays usable. A message left half sent (a generator raised, or
gave a piece of the wrong type, after the first frame went out) cannot be
finished, and any later message would break the protocol: the connection
is then closed with 1011, logged, and the exception says so.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable as IterableABC
from collections.abc import Mapping, Sequence
from collections.abc import Set as SetABC
from typing import TYPE_CHECKING, Iterable, Optional, Tuple, Union

from ..exceptions import ConnectionClosed
from ..sansio.frames import CloseCode

if TYPE_CHECKING:  # only for the type hints: writer.py imports this module
    from .writer import Writer

__all__ = ["check_message", "refuse_message", "send_fragments"]

_BYTES_LIKE = (bytes, bytearray, memoryview)


def refuse_message(message: object, action: str = "send") -> TypeError:
    """The ``TypeError`` for a message that cannot be sent: what it is, what to do instead.

    ``action`` names the method refused (``"send"``, ``"broadcast"``), so
    that the advice names its JSON sibling (``send_json``, ``broadcast_json``).
    """
    name = type(message).__name__
    json = f"{action}_json(topic, obj)" if action == "publish" else f"{action}_json(obj)"
    if message is None:
        advice = f"None is not a message: {action}('') or {action}(b'') sends an empty one"
    elif isinstance(message, Mapping):
        advice = f"{action}() does not encode a {name}: {json} sends it as JSON"
    elif isinstance(message, SetABC):
        advice = (
            f"a {name} has no order to send its items in: use {json} with a list, "
            f"or {action}() a str or bytes"
        )
    elif isinstance(message, numbers.Number):
        advice = f"send str(value), or {json}"
    elif action != "send":
        advice = f"{action}() takes one str or bytes-like message; for data, use {json}"
    else:
        advice = "expected str, bytes-like, or an iterable of str or of bytes-like fragments"
    shown = "None" if message is None else f"{name} {message!r:.60}"
    return TypeError(f"{action}() got {shown}: {advice}")


def check_message(message: object, action: str = "send") -> None:
    """Raise ``TypeError`` if ``message`` cannot be sent, before anything is written.

    Accepted: ``str``, bytes-like, and iterables of fragments. A sized
    sequence of fragments (a list, a tuple) is checked whole: every piece
    ``str``, or every piece bytes-like. A generator or other iterator can
    only be checked piece by piece as it is sent (:func:`send_fragments`).

    Raises:
        TypeError: a ``dict`` or other mapping, a set, a number, ``None``,
            an object that is not iterable, or a sequence of mixed or
            unsendable pieces; the message says what to do instead.
    """
    if isinstance(message, (str, *_BYTES_LIKE)):
        return
    if (
        message is None
        or isinstance(message, (Mapping, SetABC, numbers.Number))
        or not isinstance(message, IterableABC)
    ):
        raise refuse_message(message, action)
    if isinstance(message, Sequence):
        _check_pieces(message, action)


def _check_pieces(pieces: Sequence[object], action: str) -> None:
    """Every piece ``str``, or every piece bytes-like; else ``TypeError`` naming the culprit."""
    kind: Optional[type] = None
    container = type(pieces).__name__
    for index, piece in enumerate(pieces):
        if isinstance(piece, str):
            piece_kind: type = str
        elif isinstance(piece, _BYTES_LIKE):
            piece_kind = bytes
        else:
            raise TypeError(
                f"{action}() got a {container} whose item {index} is "
                f"{type(piece).__name__}: fragments must be str or bytes-like; "
                f"to send data as JSON, use {action}_json(obj)"
            )
        if kind is None:
            kind = piece_kind
        elif piece_kind is not kind:
            raise TypeError(
                f"{action}() got a {container} mixing str and bytes (item 0 is "
                f"{type(pieces[0]).__name__}, item {index} is {type(piece).__name__}): "
                "the fragments of a message must be all str or all bytes-like; "
                "nothing was sent"
            )


def _piece_bytes(piece: object, started: bool) -> Tuple[bytes, type]:
    """A piece's payload and its kind (``str`` or ``bytes``).

    Raises:
        TypeError: the piece is neither ``str`` nor bytes-like (``started``:
            after the first frame went out, which closes the connection).
    """
    if isinstance(piece, str):
        return piece.encode("utf-8"), str
    if isinstance(piece, _BYTES_LIKE):
        return bytes(piece), bytes
    after = (
        "; the message was left half sent, so the connection is closed with 1011" if started else ""
    )
    raise TypeError(
        f"cannot send a fragment of type {type(piece).__name__}: expected str or bytes-like{after}"
    )


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
    from the iterable itself) closes the connection with 1011 and is logged
    at WARNING before it propagates; such a ``TypeError`` says so. (A list
    or tuple is checked whole first by :func:`check_message` in
    ``Connection.send()``, so only an iterator can get this far.)
    """
    protocol = writer.protocol
    with writer:
        kind: Optional[type] = None
        sent = 0  # frames written so far
        try:
            for piece in fragments:
                data, piece_kind = _piece_bytes(piece, kind is not None)
                if kind is None:
                    kind = piece_kind
                    as_text = kind is str if text is None else text
                    frame = (
                        protocol.send_text(data, fin=False)
                        if as_text
                        else protocol.send_binary(data, fin=False)
                    )
                elif piece_kind is not kind:
                    raise TypeError(
                        f"fragment {sent} is {type(piece).__name__} after "
                        f"{kind.__name__} fragments: the fragments of a message must be "
                        "all str or all bytes-like; the message was left half sent, "
                        "so the connection is closed with 1011"
                    )
                else:
                    frame = protocol.send_continuation(data, fin=False)
                writer.write(frame)
                sent += 1
        except BaseException as exc:
            if kind is not None and not isinstance(exc, ConnectionClosed):
                writer.logger.warning(
                    "a fragmented message failed after %d fragment(s) (%s: %s): closing with 1011",
                    sent,
                    type(exc).__name__,
                    exc,
                )
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
