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
import typing
from typing import Callable, List, Optional, Tuple, Union

from ..exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    PayloadTooBig,
    ProtocolError,
)
from .assembler import MessageAssembler
from .deflate import COMPRESSION_THRESHOLD, PerMessageDeflate, compressed_bound
from .events import CloseReceived, Event, Fragment, Message, Ping, Pong
from .frames import (
    CloseCode,
    Frame,
    FrameParser,
    Opcode,
    apply_mask,
    frame_header,
    parse_close,
    serialize_close,
)
from .prepared import PreparedMessage

__all__ = [
    "TraceHook",
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


class TraceHook(typing.Protocol):
    """What the server, the client and the sans-I/O protocol call while tracing.

    ``direction`` is ``"client -> server"`` or ``"server -> client"``
    (:data:`wsthread.trace.CLIENT_TO_SERVER`, :data:`~wsthread.trace.SERVER_TO_CLIENT`).
    :class:`wsthread.trace.Tracer` is the implementation the I/O layer uses;
    the type is defined here so that the core depends on nothing above it.
    """

    def handshake(self, direction: str, data: bytes) -> None:
        """Called with the raw bytes of the HTTP request or response of the opening handshake."""

    def frame(self, direction: str, frame: Frame, mask: Optional[bytes]) -> None:
        """Called for every frame parsed or serialised.

        ``frame`` carries the payload as it is on the wire, unmasked but not
        decompressed; ``mask`` is the 4-byte masking key, or ``None`` for an
        unmasked frame.
        """


class Side(enum.Enum):
    """Which end of the connection a :class:`Protocol` plays."""

    SERVER = "server"
    CLIENT = "client"


class State(enum.IntEnum):
    """Where the connection stands in the closing handshake."""

    OPEN = 1
    CLOSING = 2
    CLOSED = 3


#: How many bytes of inflated messages one :meth:`Protocol.receive_data` call
#: returns at most (plus one message): the rest waits, still compressed.
INFLATE_BATCH = 2**16

_OK_CLOSE_CODES = frozenset(
    {CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY, CloseCode.NO_STATUS_RCVD}
)


def _random_mask_key() -> bytes:
    """A fresh masking key (the client's default: one module function, not a closure each)."""
    return os.urandom(4)


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
        max_size: the largest message accepted, in bytes (inflated, when
            compressed); ``None`` for no limit. A frame that would take a
            message over it fails the connection with 1009 as soon as its
            header is read; a compressed frame is allowed up to
            :func:`~wsthread.sansio.deflate.compressed_bound` of what is left,
            and fails once it inflates past ``max_size``.
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
        self._trace = trace
        peer = Side.CLIENT if side is Side.SERVER else Side.SERVER
        self._trace_in = f"{peer.value} -> {side.value}"
        self._trace_out = f"{side.value} -> {peer.value}"
        self.max_size = max_size
        self.deflate = deflate
        self._mask_key = mask_key if mask_key is not None else _random_mask_key
        self._parser = FrameParser(
            expect_masked=side is Side.SERVER, allowed_rsv1=deflate is not None
        )
        self.close_rcvd: Optional[Tuple[int, str]] = None
        self.close_sent: Optional[Tuple[int, str]] = None
        self.failure: Optional[ProtocolError] = None
        self.eof = False
        #: Whether no more frames will be read: a close arrived, or an error or
        #: EOF (set where :attr:`close_rcvd`, :attr:`failure` or :attr:`eof` is;
        #: a plain attribute, since the I/O layer reads it for every message).
        self.receiving_done = False
        #: Whether :meth:`receive_data` left complete frames unparsed (see there).
        self.frames_pending = False
        # Data frames go to the assembler; control frames are handled here.
        self._assembler = MessageAssembler(deflate=deflate, fragments=fragments)
        # Pongs owed to the peer, written by the receiving half, taken by data_to_send().
        self._pongs_owed: List[bytes] = []
        # Whether the message being sent is compressed (set by its first frame).
        self._sending_compressed = False
        self.sends_plain_shared = side is Side.SERVER and deflate is None and trace is None
        """Whether every prepared message goes out as its plain shared frame, as it is
        (a server that neither compresses nor traces); the broadcast's fast path reads it."""

    def use_deflate(self, deflate: PerMessageDeflate) -> None:
        """Compress and decompress with ``deflate`` from now on (agreed in the handshake).

        Call it before the first frame is sent or received.
        """
        self.deflate = deflate
        self._assembler.deflate = deflate
        self._parser.allowed_rsv1 = True
        self.sends_plain_shared = False

    @property
    def fragments(self) -> bool:
        """Whether fragmented messages come out frame by frame, as :class:`Fragment` events."""
        return self._assembler.fragments

    @fragments.setter
    def fragments(self, value: bool) -> None:
        self._assembler.fragments = value

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
        assembler = self._assembler
        # With fragments=True, the fragments already returned are the I/O layer's to count.
        return buffered if assembler.fragments else buffered + assembler.size

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
        sent_code, sent_reason = self.close_sent if self.close_sent is not None else (None, "")
        ok = (
            self.close_rcvd is not None
            and self.close_sent is not None
            and code in _OK_CLOSE_CODES
            and sent_code in _OK_CLOSE_CODES
        )
        cls = ConnectionClosedOK if ok else ConnectionClosedError
        return cls(code, reason, sent_code, sent_reason)

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
        if self.receiving_done:
            return events
        parser = self._parser
        parser.feed(data)
        assembler = self._assembler
        inflating = self.deflate is not None
        produced = 0
        try:
            while self.close_rcvd is None:  # a failure raises out of the loop
                limit = None if self.max_size is None else self.max_size - assembler.size
                # A compressed frame may be longer than the message it inflates to.
                frame = parser.next_frame(
                    compressed_bound(limit) if inflating and limit is not None else limit
                )
                if frame is None:
                    break
                if self._trace is not None:
                    self._trace_received(frame)
                if frame.opcode < 8:
                    event: Optional[Event] = assembler.add(frame, limit)
                else:
                    event = self._receive_control(frame)
                if event is not None:
                    events.append(event)
                    if inflating and type(event) in (Message, Fragment):
                        produced += len(event.data)  # type: ignore[union-attr]
                        if produced >= INFLATE_BATCH and parser.buffered:
                            self.frames_pending = True
                            break
                if not parser.buffered:
                    break  # no need to ask the parser again
            if parser.in_payload and self.close_rcvd is None:
                assembler.check_partial_text(parser)
        except PayloadTooBig as exc:  # said in terms of the message, which max_size bounds
            self.failure = self._message_too_big(exc, assembler.size, inflating)
            self.receiving_done = True
            assembler.reset()
        except ProtocolError as exc:
            self.failure = exc
            self.receiving_done = True
            assembler.reset()
        return events

    def _message_too_big(self, exc: PayloadTooBig, received: int, inflating: bool) -> PayloadTooBig:
        """The 1009 failure, its reason naming the message's size and ``max_size``.

        ``received`` is what the message had before the frame that went
        over: a message whose size a single final frame announced is exact,
        one that goes on, or was inflating, is "at least" or "past". With
        compression, a frame over :func:`compressed_bound` is named as a frame.
        """
        bound = None
        if inflating and self.max_size is not None:
            bound = compressed_bound(self.max_size - received)
        if exc.size is None:
            text = f"message inflates past max_size={self.max_size} bytes"
        elif bound is not None and exc.size > bound:
            text = (
                f"frame of {exc.size} bytes exceeds {bound}, "
                f"the deflate bound for max_size={self.max_size}"
            )
        else:
            size = received + exc.size
            exact = received == 0 and exc.final
            text = (
                f"message of {'' if exact else 'at least '}{size} bytes "
                f"exceeds max_size={self.max_size}"
            )
        failure = PayloadTooBig(text, exc.code, size=exc.size, final=exc.final)
        failure.__cause__ = exc
        return failure

    def _trace_received(self, frame: Frame) -> None:
        assert self._trace is not None
        self._trace.frame(self._trace_in, frame, self._parser.last_mask(frame))

    def receive_eof(self) -> None:
        """Note that the peer closed the TCP connection."""
        self.eof = True
        self.receiving_done = True

    def _receive_control(self, frame: Frame) -> Event:
        opcode = frame.opcode
        if opcode is Opcode.PING:
            self._pongs_owed.append(frame.payload)
            return Ping(frame.payload)
        if opcode is Opcode.PONG:
            return Pong(frame.payload)
        code, reason = parse_close(frame.payload)  # the parser lets no other opcode through
        self.close_rcvd = (code, reason)
        self.receiving_done = True
        self._assembler.reset()
        return CloseReceived(code, reason)

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

    def send_message(self, data: bytes, text: bool) -> bytes:
        """Frame a whole text or binary message: what the I/O layer sends for each message.

        The same as :meth:`send_text` or :meth:`send_binary`, for data that
        is bytes already (``text`` data must be UTF-8).
        """
        header, payload = self._first_frame(Opcode.TEXT if text else Opcode.BINARY, data, True)
        return header + payload

    def send_message_parts(self, data: bytes, text: bool) -> Tuple[bytes, bytes]:
        """Frame a whole text or binary message as ``(header, payload)``, to be written in turn.

        The same as :meth:`send_message`, but the two parts are not joined:
        for a large message, the I/O layer hands both to one ``sendmsg()``
        and the payload is not copied.
        """
        return self._first_frame(Opcode.TEXT if text else Opcode.BINARY, data, True)

    def send_prepared(self, message: PreparedMessage) -> bytes:
        """Frame a :class:`~wsthread.sansio.prepared.PreparedMessage` for this connection.

        A server without compression, or compressing without context
        takeover, gets a wire form the message shares with every connection
        like it (the very same ``bytes`` object, built once); a message
        under ``COMPRESSION_THRESHOLD`` bytes goes out uncompressed, as with
        :meth:`send_message`. Otherwise (context takeover, or a client,
        which masks each frame) it is framed as :meth:`send_message` frames
        it, with this connection's own compressor. The trace hook sees the
        frame either way.

        Raises:
            ConnectionClosed: this side sent its close frame, or the peer
                closed TCP.
        """
        if self.close_sent is not None or self.eof:  # _check_open(), spelled out
            raise self.close_exception()
        deflate = self.deflate
        payload = message.payload
        if self.side is Side.CLIENT:
            return self.send_message(payload, message.text)
        if deflate is None or len(payload) < COMPRESSION_THRESHOLD:
            frame, start = message.frame, message.header_length
            rsv1 = False
        else:
            key = deflate.shared_key
            if key is None:
                return self.send_message(payload, message.text)
            frame, start = message.compressed(key)
            rsv1 = True
        self._sending_compressed = rsv1
        if self._trace is not None:
            wire = Frame(message.opcode, frame[start:], True, rsv1)
            self._trace.frame(self._trace_out, wire, None)
        return frame

    def send_text(self, text: Union[str, bytes], fin: bool = True) -> bytes:
        """Frame a text message (or its first fragment when ``fin`` is false).

        ``text`` may be given already encoded as UTF-8 bytes.
        """
        data = text.encode("utf-8") if isinstance(text, str) else text
        header, payload = self._first_frame(Opcode.TEXT, data, fin)
        return header + payload

    def send_binary(self, data: bytes, fin: bool = True) -> bytes:
        """Frame a binary message (or its first fragment when ``fin`` is false)."""
        header, payload = self._first_frame(Opcode.BINARY, data, fin)
        return header + payload

    def send_continuation(self, data: bytes, fin: bool) -> bytes:
        """Frame the next fragment of the message being sent."""
        self._check_open()
        if self._sending_compressed:
            assert self.deflate is not None
            data = self.deflate.compress(data, fin=fin)
        return self._frame(Opcode.CONTINUATION, data, fin)

    def _first_frame(self, opcode: Opcode, data: bytes, fin: bool) -> Tuple[bytes, bytes]:
        """A message's first frame (the whole message if ``fin``) as header and payload."""
        if self.close_sent is not None or self.eof:  # _check_open(), spelled out
            raise self.close_exception()
        compress = self.deflate is not None and (not fin or len(data) >= COMPRESSION_THRESHOLD)
        self._sending_compressed = compress
        if compress:
            assert self.deflate is not None
            data = self.deflate.compress(data, fin=fin)
        return self._frame_parts(opcode, data, fin, compress)

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
        header, payload = self._frame_parts(opcode, payload, fin, rsv1)
        return header + payload

    def _frame_parts(
        self, opcode: Opcode, payload: bytes, fin: bool, rsv1: bool
    ) -> Tuple[bytes, bytes]:
        """Every frame this side sends, as header and (masked, on a client) payload."""
        mask = self._mask_key() if self.side is Side.CLIENT else None
        if self._trace is not None:
            self._trace.frame(self._trace_out, Frame(opcode, payload, fin, rsv1), mask)
        header = frame_header(opcode, len(payload), fin=fin, rsv1=rsv1, mask=mask)
        return (header, payload) if mask is None else (header, apply_mask(payload, mask))
