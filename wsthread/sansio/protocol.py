"""The WebSocket connection as a state machine: bytes in, events and bytes out.

:class:`Protocol` knows RFC 6455 once the opening handshake is over. It never
touches a socket, a thread or a clock: the I/O layer hands it received bytes
and writes out the bytes it returns.

Receiving (one thread, the reader)::

    events = protocol.receive_data(data)   # Message, Ping, Pong, CloseReceived
    output = protocol.data_to_send()       # pongs and the close reply, if any
    if protocol.should_close_transport: ... close the TCP connection

Sending (any thread, but serialised by the caller's writer lock)::

    output = protocol.send_text("hello")   # bytes ready for sendall()

The two halves share only the close handshake's state, and each half writes
only its own fields (``close_rcvd`` on the receiving side, ``close_sent`` on
the sending side), so a reader thread and writers behind a lock can drive one
:class:`Protocol` together. :meth:`data_to_send` belongs to the sending half.

The closing handshake::

    OPEN --send_close()--> CLOSING --close frame received--> CLOSED
    OPEN --close frame received--> CLOSING --reply sent---> CLOSED
    any  --protocol error--> CLOSING (close frame with the error code, then
                                      the transport is closed at once)
    any  --receive_eof()--> CLOSED
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple, Union

from ..exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    ProtocolError,
)
from .deflate import COMPRESSION_THRESHOLD, PerMessageDeflate
from .frames import (
    CloseCode,
    Frame,
    FrameParser,
    Opcode,
    parse_close,
    serialize_close,
    serialize_frame,
    serialize_frame_parts,
)
from .utf8 import Utf8Decoder

if TYPE_CHECKING:  # only for the type of the optional trace hook
    from ..trace import TraceHook

__all__ = [
    "Side",
    "State",
    "Message",
    "Fragment",
    "Ping",
    "Pong",
    "CloseReceived",
    "Event",
    "INFLATE_BATCH",
    "Protocol",
]


class Side(enum.Enum):
    """Which end of the connection a :class:`Protocol` plays."""

    SERVER = "server"
    CLIENT = "client"


class State(enum.IntEnum):
    """Where the connection stands in the closing handshake."""

    OPEN = 1
    CLOSING = 2
    CLOSED = 3


@dataclass(frozen=True)
class Message:
    """A complete message: ``str`` for text, ``bytes`` for binary."""

    data: Union[str, bytes]


@dataclass(frozen=True)
class Fragment:
    """One frame of a fragmented message, delivered as it arrives (``fragments=True``).

    ``data`` is ``str`` for a text message (each piece already checked and
    decoded as UTF-8; a character split between frames comes whole in the
    later piece) and ``bytes`` for a binary one; ``fin`` marks the last
    piece. A message sent in one frame still arrives as one :class:`Message`.
    """

    data: Union[str, bytes]
    fin: bool


@dataclass(frozen=True)
class Ping:
    """A ping arrived; the pong is already waiting in :meth:`Protocol.data_to_send`."""

    data: bytes


@dataclass(frozen=True)
class Pong:
    """A pong arrived."""

    data: bytes


@dataclass(frozen=True)
class CloseReceived:
    """The peer started or answered the closing handshake."""

    code: int
    reason: str


#: How many bytes of inflated messages one :meth:`Protocol.receive_data` call
#: returns at most (plus one message): the rest waits, still compressed.
INFLATE_BATCH = 2**16

Event = Union[Message, Fragment, Ping, Pong, CloseReceived]

_OK_CLOSE_CODES = frozenset(
    {CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY, CloseCode.NO_STATUS_RCVD}
)


def _truncate_reason(reason: str, limit: int = 123) -> str:
    encoded = reason.encode("utf-8")
    if len(encoded) <= limit:
        return reason
    return encoded[:limit].decode("utf-8", errors="ignore")


class Protocol:
    """RFC 6455 framing, fragmentation, control frames and the close handshake.

    Args:
        side: :attr:`Side.SERVER` expects masked frames and sends unmasked
            ones; :attr:`Side.CLIENT` does the opposite.
        max_size: the largest message accepted, in bytes; ``None`` for no
            limit. A frame that would take a message over it fails the
            connection with 1009 as soon as its header is read.
        mask_key: where a client gets its 4-byte masking keys (tests may pass
            a fixed one); defaults to :func:`os.urandom`.
        deflate: the permessage-deflate codec, if the handshake agreed on it.
            Messages shorter than ``COMPRESSION_THRESHOLD`` bytes are sent
            uncompressed.
        fragments: deliver a fragmented message frame by frame, as
            :class:`Fragment` events, instead of one :class:`Message` once it
            is complete; ``max_size`` still bounds the whole message and its
            text is still checked as each piece arrives. For streaming large
            messages without holding them in memory.
        trace: an optional :class:`~wsthread.trace.TraceHook`; its ``frame()``
            is called for every frame parsed and every frame serialised, with
            the wire payload (unmasked, not decompressed) and the masking key.
            ``None`` (the default) costs one ``is not None`` check per frame.

    Attributes:
        close_rcvd: the ``(code, reason)`` of the peer's close frame, if any.
        close_sent: the ``(code, reason)`` of this side's close frame, if any.
        failure: the :class:`ProtocolError` that failed the connection, if any.
        eof: whether the peer closed the TCP connection.
    """

    def __init__(
        self,
        side: Side,
        *,
        max_size: Optional[int] = 2**20,
        mask_key: Optional[Callable[[], bytes]] = None,
        deflate: Optional[PerMessageDeflate] = None,
        trace: Optional[TraceHook] = None,
        fragments: bool = False,
    ) -> None:
        self.side = side
        self.fragments = fragments
        self._trace = trace
        peer = Side.CLIENT if side is Side.SERVER else Side.SERVER
        self._trace_in = f"{peer.value} -> {side.value}"
        self._trace_out = f"{side.value} -> {peer.value}"
        self.max_size = max_size
        self.deflate = deflate
        self._mask_key = mask_key if mask_key is not None else (lambda: os.urandom(4))
        self._parser = FrameParser(
            expect_masked=side is Side.SERVER, allowed_rsv1=deflate is not None
        )
        self.close_rcvd: Optional[Tuple[int, str]] = None
        self.close_sent: Optional[Tuple[int, str]] = None
        self.failure: Optional[ProtocolError] = None
        self.eof = False
        #: Whether :meth:`receive_data` left complete frames unparsed (see there).
        self.frames_pending = False
        # The message being assembled from fragments.
        self._message_opcode: Optional[Opcode] = None
        self._message_compressed = False
        self._message_parts: List[Union[str, bytes]] = []
        self._fragmenting = False  # with fragments=True: a message's first Fragment went out
        self._message_size = 0
        self._decoder = Utf8Decoder()
        # The early check of incomplete text frames (see _check_partial_text):
        # how many payload bytes of the frame were checked, and its decoder.
        self._partial_checked = 0
        self._checker = Utf8Decoder()
        # Pongs owed to the peer, written by the receiving half, taken by data_to_send().
        self._pongs_owed: List[bytes] = []
        # Whether the message being sent is compressed (set by its first frame).
        self._sending_compressed = False

    def use_deflate(self, deflate: PerMessageDeflate) -> None:
        """Compress and decompress with ``deflate`` from now on (agreed in the handshake).

        Call it before the first frame is sent or received.
        """
        self.deflate = deflate
        self._parser.allowed_rsv1 = True

    # -- state -------------------------------------------------------------

    @property
    def state(self) -> State:
        """The connection's state in the closing handshake."""
        if self.eof or (self.close_sent is not None and self.close_rcvd is not None):
            return State.CLOSED
        if self.close_sent is not None or self.close_rcvd is not None or self.failure:
            return State.CLOSING
        return State.OPEN

    @property
    def bytes_buffered(self) -> int:
        """Bytes received and held for messages not complete yet.

        The frames not parsed yet plus the earlier fragments of the message
        being assembled (inflated, if compressed): what the I/O layer holds
        on top of the complete messages it queued.
        """
        buffered = self._parser.buffered
        # With fragments=True, the fragments already returned are the I/O layer's to count.
        return buffered if self.fragments else buffered + self._message_size

    @property
    def receiving_done(self) -> bool:
        """Whether no more frames will be read: a close arrived, or an error or EOF."""
        return self.close_rcvd is not None or self.failure is not None or self.eof

    @property
    def should_close_transport(self) -> bool:
        """Whether the I/O layer should close the TCP connection now.

        A server closes it once the closing handshake is complete (RFC 6455
        §7.1.1); either side closes it after failing the connection. A
        client waits for the server to close it first.
        """
        if self.eof:
            return True
        if self.failure is not None:
            return self.close_sent is not None
        if self.close_sent is not None and self.close_rcvd is not None:
            return self.side is Side.SERVER
        return False

    def close_exception(self) -> ConnectionClosed:
        """The exception that describes how the connection closed."""
        if self.close_rcvd is not None:
            code, reason = self.close_rcvd
        else:
            code, reason = CloseCode.ABNORMAL_CLOSURE, ""
        sent_code = self.close_sent[0] if self.close_sent is not None else None
        ok = (
            self.close_rcvd is not None
            and self.close_sent is not None
            and code in _OK_CLOSE_CODES
            and sent_code in _OK_CLOSE_CODES
        )
        cls = ConnectionClosedOK if ok else ConnectionClosedError
        return cls(code, reason, sent_code)

    # -- receiving ---------------------------------------------------------

    def receive_data(self, data: bytes) -> List[Event]:
        """Take bytes from the network and return the events they complete.

        A protocol violation does not raise: it sets :attr:`failure`, queues
        a close frame with the right code in :meth:`data_to_send`, and stops
        reading. Bytes after a close frame are ignored.

        With compression, a few bytes may inflate into many messages: once
        the messages returned reach ``INFLATE_BATCH`` bytes, the remaining
        frames stay unparsed and :attr:`frames_pending` is set; call
        ``receive_data(b"")`` for the next batch (when there is room for it).
        """
        events: List[Event] = []
        self.frames_pending = False
        # receiving_done, spelled out: this runs for every read.
        if self.close_rcvd is not None or self.failure is not None or self.eof:
            return events
        parser = self._parser
        parser.feed(data)
        inflating = self.deflate is not None
        produced = 0
        try:
            while self.close_rcvd is None:  # a failure raises out of the loop
                limit = None if self.max_size is None else self.max_size - self._message_size
                frame = parser.next_frame(limit)
                if frame is None:
                    break
                if self._trace is not None:
                    self._trace_received(frame)
                event = self._receive_frame(frame)
                if event is not None:
                    events.append(event)
                    if inflating and type(event) in (Message, Fragment):
                        produced += len(event.data)  # type: ignore[union-attr]
                        if produced >= INFLATE_BATCH and parser.buffered:
                            self.frames_pending = True
                            break
            if parser.in_payload and self.close_rcvd is None:
                self._check_partial_text()
        except ProtocolError as exc:
            self.failure = exc
            self._message_parts = []
            self._partial_checked = 0
        return events

    def _check_partial_text(self) -> None:
        """Check what has arrived of an incomplete text frame, failing early on bad UTF-8.

        RFC 6455 §8.1 lets an endpoint fail on invalid UTF-8 as soon as it
        sees it; a frame that arrives in pieces is checked piece by piece, so
        a peer cannot hide bad bytes in a frame it takes its time to finish.
        A second decoder, started from the message decoder's state, checks
        the new bytes and throws the text away (the message decoder decodes
        the whole frame once it is complete); pure ASCII is passed over
        without decoding. Only frames that arrive in pieces take this path.
        Compressed frames are checked once inflated, frame by frame.
        """
        pending = self._parser.pending_frame()
        if pending is None:
            return
        opcode, rsv1, received = pending
        checked = self._partial_checked
        if received <= checked:
            return
        if opcode is Opcode.TEXT:
            if rsv1 or self._message_opcode is not None:
                return  # compressed, or a protocol error once the header is judged whole
        elif opcode is not Opcode.CONTINUATION or (
            self._message_opcode is not Opcode.TEXT or self._message_compressed
        ):
            return
        checker = self._checker
        if not checked:  # the frame's first piece: start where the message decoder stands
            checker.setstate(self._decoder.getstate())
        data = self._parser.pending_payload(checked)
        if checker.pending or not data.isascii():
            checker.decode(data)
        self._partial_checked = received

    def _trace_received(self, frame: Frame) -> None:
        assert self._trace is not None
        self._trace.frame(self._trace_in, frame, self._parser.last_mask(frame))

    def receive_eof(self) -> None:
        """Note that the peer closed the TCP connection."""
        self.eof = True

    def _receive_frame(self, frame: Frame) -> Optional[Event]:
        opcode = frame.opcode
        if opcode is Opcode.PING:
            self._pongs_owed.append(frame.payload)
            return Ping(frame.payload)
        if opcode is Opcode.PONG:
            return Pong(frame.payload)
        if opcode is Opcode.CLOSE:
            code, reason = parse_close(frame.payload)
            self.close_rcvd = (code, reason)
            self._message_parts = []
            return CloseReceived(code, reason)

        if opcode is Opcode.CONTINUATION:
            if self._message_opcode is None:
                raise ProtocolError("continuation frame without a message to continue")
            if frame.rsv1:
                raise ProtocolError("RSV1 set on a continuation frame")
        else:
            if self._message_opcode is not None:
                raise ProtocolError("new message started before the previous one ended")
            self._message_opcode = opcode
            self._message_compressed = frame.rsv1
        payload = frame.payload
        if self._message_compressed:
            assert self.deflate is not None  # the parser refuses RSV1 otherwise
            limit = None if self.max_size is None else self.max_size - self._message_size
            payload = self.deflate.decompress(payload, fin=frame.fin, max_length=limit)
        self._message_size += len(payload)
        part: Union[str, bytes]
        if self._message_opcode is Opcode.TEXT:
            part = self._decoder.decode(payload, frame.fin)
            self._partial_checked = 0
        else:
            part = payload
        if self.fragments and (not frame.fin or self._fragmenting):
            self._fragmenting = not frame.fin
            if frame.fin:
                self._message_opcode = None
                self._message_size = 0
            return Fragment(part, frame.fin)
        if not frame.fin:
            self._message_parts.append(part)
            return None

        # The last fragment: assemble the message in one join, never piecewise.
        parts = self._message_parts
        if parts:
            parts.append(part)
            part = "".join(parts) if isinstance(part, str) else b"".join(parts)  # type: ignore[arg-type]
            self._message_parts = []
        self._message_opcode = None
        self._message_size = 0
        return Message(part)

    # -- sending -----------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Return the automatic replies owed: pongs and the close frame.

        Call it after :meth:`receive_data`, under the same lock as the other
        sending methods, and write what it returns.
        """
        if self.close_sent is not None:
            self._pongs_owed = []
            return b""
        pongs, self._pongs_owed = self._pongs_owed, []
        chunks = [self._frame(Opcode.PONG, payload) for payload in pongs]
        if self.failure is not None:
            code = self.failure.code
            chunks.append(self._close_frame(code, _truncate_reason(str(self.failure))))
        elif self.close_rcvd is not None:
            chunks.append(self._close_frame(self.close_rcvd[0], ""))
        return b"".join(chunks)

    def send_message_parts(self, data: bytes, text: bool) -> Tuple[bytes, bytes]:
        """Frame a whole text or binary message as ``(header, payload)``, to be written in turn.

        The same as :meth:`send_text` / :meth:`send_binary` with ``fin``,
        but the two parts are not joined: for a large message, the I/O
        layer hands both to one ``sendmsg()`` and the payload is not copied.
        ``text`` data must be UTF-8 bytes already.
        """
        opcode = Opcode.TEXT if text else Opcode.BINARY
        self._check_open()
        compress = self.deflate is not None and len(data) >= COMPRESSION_THRESHOLD
        self._sending_compressed = compress
        if compress:
            assert self.deflate is not None
            data = self.deflate.compress(data, fin=True)
        mask = self._mask_key() if self.side is Side.CLIENT else None
        frame = Frame(opcode, data, True, compress)
        if self._trace is not None:
            self._trace.frame(self._trace_out, frame, mask)
        return serialize_frame_parts(frame, mask)

    def send_text(self, text: Union[str, bytes], fin: bool = True) -> bytes:
        """Frame a text message (or its first fragment when ``fin`` is false).

        ``text`` may be given already encoded as UTF-8 bytes.
        """
        data = text.encode("utf-8") if isinstance(text, str) else text
        return self._first_frame(Opcode.TEXT, data, fin)

    def send_binary(self, data: bytes, fin: bool = True) -> bytes:
        """Frame a binary message (or its first fragment when ``fin`` is false)."""
        return self._first_frame(Opcode.BINARY, data, fin)

    def send_continuation(self, data: bytes, fin: bool) -> bytes:
        """Frame the next fragment of the message being sent."""
        self._check_open()
        if self._sending_compressed:
            assert self.deflate is not None
            data = self.deflate.compress(data, fin=fin)
        return self._frame(Opcode.CONTINUATION, data, fin)

    def _first_frame(self, opcode: Opcode, data: bytes, fin: bool) -> bytes:
        self._check_open()
        compress = self.deflate is not None and (not fin or len(data) >= COMPRESSION_THRESHOLD)
        self._sending_compressed = compress
        if compress:
            assert self.deflate is not None
            data = self.deflate.compress(data, fin=fin)
        return self._frame(opcode, data, fin, rsv1=compress)

    def send_ping(self, data: bytes = b"") -> bytes:
        """Frame a ping (at most 125 bytes of payload)."""
        return self._control_frame(Opcode.PING, data)

    def send_pong(self, data: bytes = b"") -> bytes:
        """Frame an unsolicited pong (at most 125 bytes of payload)."""
        return self._control_frame(Opcode.PONG, data)

    def send_close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> bytes:
        """Start (or answer) the closing handshake.

        Raises:
            ConnectionClosed: a close frame was sent already.
            ValueError: ``reason`` does not fit in a control frame.
        """
        self._check_open()
        return self._close_frame(code, reason)

    def _check_open(self) -> None:
        if self.close_sent is not None or self.eof:
            raise self.close_exception()

    def _control_frame(self, opcode: Opcode, data: bytes) -> bytes:
        if len(data) > 125:
            raise ValueError("control frame payloads are limited to 125 bytes")
        self._check_open()
        return self._frame(opcode, data)

    def _close_frame(self, code: int, reason: str) -> bytes:
        payload = serialize_close(code, reason)
        self.close_sent = (code, reason)
        return self._frame(Opcode.CLOSE, payload)

    def _frame(self, opcode: Opcode, payload: bytes, fin: bool = True, rsv1: bool = False) -> bytes:
        mask = self._mask_key() if self.side is Side.CLIENT else None
        frame = Frame(opcode, payload, fin, rsv1)
        if self._trace is not None:
            self._trace.frame(self._trace_out, frame, mask)
        return serialize_frame(frame, mask)
