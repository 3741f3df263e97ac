"""Received data frames made into messages: fragments joined, inflated, UTF-8 checked; sans-I/O.

:class:`MessageAssembler` is the receiving half of
:class:`~wsthread.sansio.protocol.Protocol` for data frames (text, binary,
continuation); the protocol keeps control frames and the closing handshake.
It runs on whichever thread feeds the protocol bytes (the reader's turn) and
touches no socket, thread or clock.

A message on the wire, and what comes out::

    TEXT fin=0 ──> (held)           with fragments=True: Fragment(piece, False)
    CONT fin=0 ──> (held)                                Fragment(piece, False)
    CONT fin=1 ──> Message(joined)                       Fragment(piece, True)
    TEXT fin=1 ──> Message(text)    (a message in one frame is always a Message)
"""

from __future__ import annotations

from typing import List, Optional, Union

from ..exceptions import PayloadTooBig, ProtocolError
from .deflate import PerMessageDeflate
from .events import Fragment, Message
from .frames import Frame, FrameParser, Opcode
from .utf8 import Utf8Decoder

__all__ = ["MessageAssembler"]


class MessageAssembler:
    """Turn data frames into :class:`Message` and :class:`Fragment` events.

    Args:
        deflate: the permessage-deflate codec, if the handshake agreed on it
            (frames with RSV1 set are inflated with it).
        fragments: hand out each frame of a fragmented message as a
            :class:`Fragment` as it arrives, instead of one :class:`Message`.

    Attributes:
        size: bytes of the message being assembled so far (inflated); 0
            between messages. The protocol bounds it by ``max_size``.
    """

    def __init__(
        self, *, deflate: Optional[PerMessageDeflate] = None, fragments: bool = False
    ) -> None:
        self.deflate = deflate
        self.fragments = fragments
        self.size = 0
        self._opcode: Optional[Opcode] = None  # the message's, while one is open
        self._compressed = False
        self._parts: List[Union[str, bytes]] = []
        self._fragmenting = False  # with fragments=True: a message's first Fragment went out
        self._decoder = Utf8Decoder()
        # The early check of incomplete text frames (see check_partial_text):
        # how many payload bytes of the frame were checked, and its decoder.
        self._partial_checked = 0
        self._checker = Utf8Decoder()

    def reset(self) -> None:
        """Drop the pieces held: no more frames will come (a close, or a failure)."""
        self._parts = []
        self._partial_checked = 0

    def add(self, frame: Frame, limit: Optional[int]) -> Union[Message, Fragment, None]:
        """Take the next data frame; return the event it completes, if any.

        ``limit`` is how many more bytes the message may grow by once
        inflated (``None``: no limit).

        Raises:
            ProtocolError: the frame does not fit the message in progress,
                its text is not UTF-8 (1007), or it is, or inflates to, more than
                ``limit`` bytes (1009).
        """
        mismatch = self._mismatch(frame.opcode, frame.rsv1)
        if mismatch is not None:
            raise ProtocolError(mismatch)
        if frame.opcode is not Opcode.CONTINUATION:
            self._opcode = frame.opcode
            self._compressed = frame.rsv1
        payload = frame.payload
        fin = frame.fin
        if self._compressed:
            assert self.deflate is not None  # the parser refuses RSV1 otherwise
            payload = self.deflate.decompress(payload, fin=fin, max_length=limit)
        elif limit is not None and len(payload) > limit:
            # With compression on, the parser let through up to the compressed
            # bound; an uncompressed frame is held to the limit itself.
            raise PayloadTooBig(
                f"frame of {len(payload)} bytes exceeds the limit of {limit} bytes",
                size=len(payload),
                final=fin,
            )
        self.size += len(payload)
        part: Union[str, bytes]
        if self._opcode is Opcode.TEXT:
            part = self._decoder.decode(payload, fin)
            self._partial_checked = 0
        else:
            part = payload
        if self.fragments and (not fin or self._fragmenting):
            self._fragmenting = not fin
            if fin:
                self._opcode = None
                self.size = 0
            return Fragment(part, fin)
        if not fin:
            self._parts.append(part)
            return None
        # The last fragment: assemble the message in one join, never piecewise.
        parts = self._parts
        if parts:
            parts.append(part)
            part = "".join(parts) if isinstance(part, str) else b"".join(parts)  # type: ignore[arg-type]
            self._parts = []
        self._opcode = None
        self.size = 0
        return Message(part)

    def _mismatch(self, opcode: Opcode, rsv1: bool) -> Optional[str]:
        """Why a data frame with this header cannot come next, or ``None`` if it can."""
        if opcode is Opcode.CONTINUATION:
            if self._opcode is None:
                return "continuation frame without a message to continue"
            if rsv1:
                return "RSV1 set on a continuation frame"
        elif self._opcode is not None:
            return "new message started before the previous one ended"
        return None

    def check_partial_text(self, parser: FrameParser) -> None:
        """Check what has arrived of an incomplete text frame, failing early on bad UTF-8.

        RFC 6455 §8.1 lets an endpoint fail on invalid UTF-8 as soon as it
        sees it; a frame that arrives in pieces is checked piece by piece, so
        a peer cannot hide bad bytes in a frame it takes its time to finish.
        A second decoder, started from the message decoder's state, checks
        the new bytes and throws the text away (the message decoder decodes
        the whole frame once it is complete); pure ASCII is passed over
        without decoding. Only frames that arrive in pieces take this path.
        Compressed frames are checked once inflated, frame by frame.

        Call it when ``parser`` stopped inside a frame's payload.

        Raises:
            ProtocolError: the frame's header does not fit the message in
                progress (as :meth:`add` would find), or, as
                :class:`~wsthread.exceptions.InvalidUTF8`, the bytes received
                so far cannot be UTF-8.
        """
        pending = parser.pending_frame()
        if pending is None:
            return
        opcode, rsv1, received = pending
        checked = self._partial_checked
        if received <= checked:
            return
        # Judge the header now, as add() will once the frame is whole: which
        # error is reported must not depend on where the bytes were cut.
        mismatch = self._mismatch(opcode, rsv1)
        if mismatch is not None:
            raise ProtocolError(mismatch)
        if opcode is Opcode.TEXT:
            if rsv1:
                return  # compressed: checked once inflated
        elif opcode is not Opcode.CONTINUATION or (
            self._opcode is not Opcode.TEXT or self._compressed
        ):
            return
        checker = self._checker
        if not checked:  # the frame's first piece: start where the message decoder stands
            checker.setstate(self._decoder.getstate())
        data = parser.pending_payload(checked)
        if checker.pending or not data.isascii():
            checker.decode(data)
        self._partial_checked = received
