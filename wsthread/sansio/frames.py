"""WebSocket frames (RFC 6455 §5): opcodes, close codes, parsing, serialising, masking.

A frame on the wire::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-------+-+-------------+-------------------------------+
    |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
    |I|S|S|S|  (4)  |A|     (7)     |            (16/64)            |
    |N|V|V|V|       |S|             |   (if payload len==126/127)   |
    | |1|2|3|       |K|             |                               |
    +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
    |     Extended payload length continued, if payload len == 127  |
    + - - - - - - - - - - - - - - - +-------------------------------+
    |                               | Masking-key, if MASK set to 1 |
    +-------------------------------+-------------------------------+
    | Masking-key (continued)       |          Payload Data         |
    +-------------------------------- - - - - - - - - - - - - - - - +

This module touches no socket: :class:`FrameParser` takes bytes as they
arrive and hands out whole :class:`Frame` objects, checking every rule that
can be checked from the header *before* the payload is read, so a peer that
announces a huge frame is refused without a byte of it being buffered.
"""

from __future__ import annotations

import enum
import os
import struct
from typing import Callable, List, NamedTuple, Optional, Tuple, Union

from ..exceptions import InvalidUTF8, PayloadTooBig, ProtocolError

__all__ = [
    "Opcode",
    "CloseCode",
    "Frame",
    "FrameParser",
    "apply_mask",
    "SPEEDUPS",
    "frame_header",
    "serialize_frame",
    "serialize_frame_parts",
    "parse_close",
    "serialize_close",
    "is_valid_close_code",
    "CONTROL_OPCODES",
    "DATA_OPCODES",
]


MaskKey = Union[bytes, bytearray, memoryview]


class Opcode(enum.IntEnum):
    """The frame types of RFC 6455 §5.2."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


DATA_OPCODES = frozenset({Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY})
CONTROL_OPCODES = frozenset({Opcode.CLOSE, Opcode.PING, Opcode.PONG})


class CloseCode(enum.IntEnum):
    """Close codes of RFC 6455 §7.4.1 and the IANA registry."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005  # never on the wire: "the close frame had no code"
    ABNORMAL_CLOSURE = 1006  # never on the wire: "no close frame at all"
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015  # never on the wire


# Codes a peer may put in a close frame: the registered ones that are meant
# for the wire, plus 3000-4999 (libraries, frameworks and applications).
_WIRE_CLOSE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)


def is_valid_close_code(code: int) -> bool:
    """Tell whether ``code`` may appear in a close frame on the wire."""
    return code in _WIRE_CLOSE_CODES or 3000 <= code <= 4999


class Frame(NamedTuple):
    """One WebSocket frame, with its payload already unmasked.

    Attributes:
        opcode: the frame type.
        payload: the application or control data.
        fin: whether this is the last frame of a message.
        rsv1: the first reserved bit (used by permessage-deflate).
        rsv2: the second reserved bit (no extension here uses it).
        rsv3: the third reserved bit (no extension here uses it).
    """

    opcode: Opcode
    payload: bytes = b""
    fin: bool = True
    rsv1: bool = False
    rsv2: bool = False
    rsv3: bool = False

    def __repr__(self) -> str:
        data = self.payload if len(self.payload) <= 32 else self.payload[:29] + b"..."
        bits = "".join(name for name, on in (("FIN ", self.fin), ("RSV1 ", self.rsv1)) if on)
        return f"Frame({self.opcode.name} {bits}{len(self.payload)} bytes {data!r})"


# Payloads longer than this are masked in slices of this size: one big
# integer per slice stays in the CPU cache, where one for the whole payload
# does not (measured here on 1 MiB: ~750 MB/s sliced against ~250 MB/s whole).
_MASK_SLICE = 4096


def _apply_mask_python(data: Union[bytes, bytearray, memoryview], mask: MaskKey) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` repeated: the pure-Python version.

    There is no Python loop over bytes: each slice of up to ``_MASK_SLICE``
    bytes is XORed as one big integer with the key repeated as often.
    """
    if len(mask) != 4:
        raise ValueError(f"mask must be 4 bytes long, not {len(mask)}")
    key = bytes(mask)
    length = len(data)
    if length <= _MASK_SLICE:
        if not length:
            return b""
        value = int.from_bytes(data, "little") ^ int.from_bytes(
            (key * ((length + 3) // 4))[:length], "little"
        )
        return value.to_bytes(length, "little")
    with memoryview(data) as outer, outer.cast("B") as view:
        length = len(view)
        step = _MASK_SLICE
        repeated = int.from_bytes(key * (step // 4), "little")
        from_bytes = int.from_bytes
        whole = length - length % step
        parts = [
            (from_bytes(view[start : start + step], "little") ^ repeated).to_bytes(step, "little")
            for start in range(0, whole, step)
        ]
        tail = length - whole
        if tail:
            value = from_bytes(view[whole:], "little") ^ (repeated & ((1 << (8 * tail)) - 1))
            parts.append(value.to_bytes(tail, "little"))
    return b"".join(parts)


def _select_apply_mask() -> Callable[[Union[bytes, bytearray, memoryview], MaskKey], bytes]:
    """The C masking of ``wsthread._speedups`` if it was built, else the Python one.

    Setting the environment variable ``WSTHREAD_NO_SPEEDUPS`` to a non-empty
    value forces the pure-Python version (it is read once, at import).
    """
    if os.environ.get("WSTHREAD_NO_SPEEDUPS"):
        return _apply_mask_python
    try:
        from .._speedups import apply_mask as c_apply_mask
    except ImportError:
        return _apply_mask_python
    return c_apply_mask


#: XOR ``data`` with the 4-byte ``mask`` repeated (masking and unmasking alike);
#: returns new ``bytes``. This is the C version from ``wsthread._speedups``
#: when it was built at install time (tens of GB/s), else the pure-Python one
#: (several hundred MB/s); the two give identical results. Raises
#: :class:`ValueError` if ``mask`` is not 4 bytes long.
apply_mask = _select_apply_mask()

#: Whether :func:`apply_mask` is the C version.
SPEEDUPS = apply_mask is not _apply_mask_python


def frame_header(
    opcode: int,
    length: int,
    *,
    fin: bool = True,
    rsv1: bool = False,
    rsv2: bool = False,
    rsv3: bool = False,
    mask: Optional[bytes] = None,
) -> bytes:
    """The bytes that go before a frame's payload of ``length`` bytes.

    The first two bytes, the extended length if any, and the masking key
    when ``mask`` is given (the payload must then be masked with it). The
    one place a header is built: :class:`~wsthread.sansio.protocol.Protocol`
    calls it once per frame it sends.
    """
    first = (
        (0x80 if fin else 0)
        | (0x40 if rsv1 else 0)
        | (0x20 if rsv2 else 0)
        | (0x10 if rsv3 else 0)
        | opcode
    )
    mask_bit = 0x80 if mask is not None else 0
    if length < 126:
        header = _HEADER_7.pack(first, mask_bit | length)
    elif length < 65536:
        header = _HEADER_16.pack(first, mask_bit | 126, length)
    else:
        header = _HEADER_64.pack(first, mask_bit | 127, length)
    return header if mask is None else header + mask


def serialize_frame_parts(frame: Frame, mask: Optional[bytes] = None) -> Tuple[bytes, bytes]:
    """Turn ``frame`` into ``(header, payload)``, masked with ``mask`` when one is given.

    Their concatenation is the frame (see :func:`serialize_frame`). For
    large frames, which the I/O layer can write without joining the two
    (``sendmsg``), saving a copy of the payload. Unmasked, the payload is
    the frame's own object; masked, it is the masked copy, and the header
    ends with the masking key.
    """
    opcode, payload, fin, rsv1, rsv2, rsv3 = frame
    header = frame_header(opcode, len(payload), fin=fin, rsv1=rsv1, rsv2=rsv2, rsv3=rsv3, mask=mask)
    return (header, payload) if mask is None else (header, apply_mask(payload, mask))


def serialize_frame(frame: Frame, mask: Optional[bytes] = None) -> bytes:
    """Turn ``frame`` into bytes, masked with ``mask`` when one is given.

    A client must pass a fresh random 4-byte mask for every frame; a server
    must pass none.
    """
    header, payload = serialize_frame_parts(frame, mask)
    return header + payload


_HEADER_7 = struct.Struct("!BB")
_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")


def parse_close(payload: bytes) -> Tuple[int, str]:
    """Read the code and reason from a close frame's payload (RFC 6455 §5.5.1).

    An empty payload means "no status" (1005). Raises :class:`ProtocolError`
    for a one-byte payload or a code that may not be sent, and
    :class:`InvalidUTF8` for a reason that is not UTF-8.
    """
    if not payload:
        return CloseCode.NO_STATUS_RCVD, ""
    if len(payload) == 1:
        raise ProtocolError("close frame with a one-byte payload")
    (code,) = struct.unpack("!H", payload[:2])
    if not is_valid_close_code(code):
        raise ProtocolError(f"close frame with invalid code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidUTF8("close reason is not valid UTF-8") from exc
    return code, reason


def serialize_close(code: int, reason: str = "") -> bytes:
    """Build a close frame's payload; code 1005 means an empty payload.

    Raises:
        ValueError: ``code`` may not be sent (1006, 1015, 0-999, unassigned
            codes, 5000 and over), or the reason does not fit in 123 bytes.
    """
    if code == CloseCode.NO_STATUS_RCVD:
        return b""
    if not is_valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent in a close frame")
    data = struct.pack("!H", code) + reason.encode("utf-8")
    if len(data) > 125:
        raise ValueError("close reason too long: code and reason must fit in 125 bytes")
    return data


class FrameParser:
    """Cut a byte stream into frames, checking the framing rules as it goes.

    Feed bytes with :meth:`feed`, then call :meth:`next_frame` until it
    returns ``None`` (more bytes needed). Frames come out unmasked.

    Every rule that the header alone decides (opcode, reserved bits, masking,
    control frame limits, the size limit) is checked as soon as the header
    is complete, before any of the payload has to arrive.

    A frame of ``LARGE_FRAME`` bytes or more that arrives in pieces is
    gathered apart from the buffer (see :class:`_LargeFrame`): each piece is
    unmasked as it comes and the pieces are joined once, so a large payload
    costs one allocation of its size, not a buffer grown by copies.

    Args:
        expect_masked: ``True`` on a server (clients must mask every frame),
            ``False`` on a client (servers must not mask).
        allowed_rsv1: whether RSV1 may be set on a data frame (an extension
            such as permessage-deflate was negotiated).
    """

    def __init__(self, *, expect_masked: bool, allowed_rsv1: bool = False) -> None:
        self.expect_masked = expect_masked
        self.allowed_rsv1 = allowed_rsv1
        self._buffer = bytearray()
        self._offset = 0  # where the next frame starts in the buffer
        #: How many received bytes are waiting to be parsed.
        self.buffered = 0
        #: Whether :meth:`next_frame` last returned ``None`` inside a frame's
        #: payload (its header complete); reset by :meth:`feed`.
        self.in_payload = False
        # That frame's header, as next_frame decoded it (see pending_frame()):
        # (opcode, rsv1, where its payload starts, masked).
        self._pending: Optional[Tuple[Opcode, bool, int, bool]] = None
        self._large: Optional[_LargeFrame] = None  # a large frame being gathered
        self._last_large_mask: Optional[bytes] = None  # see last_mask()

    def feed(self, data: bytes) -> None:
        """Add received bytes."""
        large = self._large
        if large is not None:
            data = large.take(data)
        buffer = self._buffer
        if self._offset:
            # Drop the frames already parsed, once per feed rather than per frame.
            del buffer[: self._offset]
            self._offset = 0
        buffer += data
        self.buffered = len(buffer) if large is None else len(buffer) + large.held
        self.in_payload = False
        self._pending = None

    def next_frame(self, max_length: Optional[int] = None) -> Optional[Frame]:
        """Return the next complete frame, or ``None`` if more bytes are needed.

        Args:
            max_length: the largest payload a data frame may announce; a
                larger one raises :class:`PayloadTooBig` as soon as its header
                is read. Control frames are always capped at 125 bytes.

        Raises:
            ProtocolError: the bytes break RFC 6455 framing (close code 1002),
                or the announced length is over ``max_length`` (1009).
        """
        if self._large is not None:
            return self._large_frame()
        available = self.buffered
        if available < 2:
            return None
        buffer = self._buffer
        start = self._offset
        first = buffer[start]
        second = buffer[start + 1]
        length = second & 0x7F
        header_length = 2 if length < 126 else 4 if length == 126 else 10
        masked = second >= 0x80
        if masked:
            header_length += 4
        if available < header_length:
            return None

        opcode = _OPCODES[first & 0x0F]
        if opcode is None:
            raise ProtocolError(f"reserved opcode {first & 0x0F:#x}")
        if length == 126:
            (length,) = _UINT16.unpack_from(buffer, start + 2)
        elif length == 127:
            (length,) = _UINT64.unpack_from(buffer, start + 2)
            if length >> 63:
                raise ProtocolError("payload length with the most significant bit set")
        if (  # anything but a plain data frame, masked as expected, within the limit
            first & 0x70
            or opcode >= 8
            or masked != self.expect_masked
            or (max_length is not None and length > max_length)
        ):
            self._check_header(opcode, first, masked, length, max_length)
        payload_start = start + header_length
        if available < header_length + length:
            self.in_payload = True
            if length >= LARGE_FRAME:
                self._gather(opcode, first, header_length, length, masked)
            else:
                self._pending = (opcode, bool(first & 0x40), payload_start, masked)
            return None
        end = payload_start + length
        payload = _payload(buffer, payload_start, end, masked)
        self._offset = end
        self.buffered = available - header_length - length
        return _new_frame(
            Frame, (opcode, payload, bool(first & 0x80), bool(first & 0x40), False, False)
        )

    def _gather(
        self, opcode: Opcode, first: int, header_length: int, length: int, masked: bool
    ) -> None:
        """Start gathering the large frame at the buffer's head; the buffer holds nothing else."""
        buffer = self._buffer
        payload_start = self._offset + header_length
        key = bytes(buffer[payload_start - 4 : payload_start]) if masked else None
        large = _LargeFrame(opcode, first, header_length, length, key)
        with memoryview(buffer) as view:
            large.take(view[payload_start:])
        buffer.clear()
        self._offset = 0
        self._large = large

    def _large_frame(self) -> Optional[Frame]:
        """The large frame being gathered, once whole; ``None`` before."""
        large = self._large
        assert large is not None
        if large.missing:
            self.in_payload = True
            return None
        self._large = None
        self._last_large_mask = large.key
        self.buffered = len(self._buffer)
        first = large.first
        return _new_frame(
            Frame,
            (large.opcode, large.payload(), bool(first & 0x80), bool(first & 0x40), False, False),
        )

    def _check_header(
        self, opcode: Opcode, first: int, masked: bool, length: int, max_length: Optional[int]
    ) -> None:
        """Apply every rule a frame's header alone decides (RFC 6455 section 5.2)."""
        if masked != self.expect_masked:
            side = "client" if self.expect_masked else "server"
            must = "must" if self.expect_masked else "must not"
            raise ProtocolError(f"a {side} {must} mask its frames")
        if first & 0x30:
            raise ProtocolError("reserved bits RSV2/RSV3 set")
        rsv1 = first & 0x40
        if opcode >= 8:
            if rsv1:
                raise ProtocolError(f"RSV1 set on a {opcode.name} frame")
            if not first & 0x80:
                raise ProtocolError(f"fragmented {opcode.name} frame")
            if length > 125:
                raise ProtocolError(f"{opcode.name} frame of {length} bytes (over 125)")
        else:
            if rsv1 and not self.allowed_rsv1:
                raise ProtocolError("reserved bit RSV1 set, but no extension uses it")
            if max_length is not None and length > max_length:
                raise PayloadTooBig(
                    f"frame of {length} bytes exceeds the limit of {max_length} bytes",
                    size=length,
                    final=bool(first & 0x80),
                )

    def last_mask(self, frame: Frame) -> Optional[bytes]:
        """The masking key of ``frame``, which :meth:`next_frame` has just returned.

        ``None`` for an unmasked frame. Valid until the next :meth:`feed` or
        :meth:`next_frame` (which may drop the buffer to gather a large frame).
        """
        if not self.expect_masked:
            return None
        end = self._offset - len(frame.payload)
        if end < 4:  # a large frame, gathered apart from the buffer
            return self._last_large_mask
        return bytes(self._buffer[end - 4 : end])

    def pending_frame(self) -> Optional[Tuple[Opcode, bool, int]]:
        """Describe the data frame whose header has arrived but whose payload has not, whole.

        Call it after :meth:`next_frame` returned ``None`` (the header's
        checks have then passed). Nothing is consumed: the frame still comes
        out of :meth:`next_frame`, whole, once its last byte arrives.

        Returns:
            ``(opcode, rsv1, received)``, ``received`` being how many payload
            bytes are buffered; or ``None`` when no data frame is in progress
            (less than a header is buffered, or a control frame).
        """
        large = self._large
        if large is not None:
            return (
                (large.opcode, bool(large.first & 0x40), large.received)
                if self.in_payload
                else None
            )
        header = self._pending_header()
        if header is None:
            return None
        opcode, rsv1, payload_start, _ = header
        return opcode, rsv1, len(self._buffer) - payload_start

    def pending_payload(self, skip: int = 0) -> bytes:
        """The payload of the incomplete data frame received so far, past its first ``skip`` bytes.

        Unmasked; empty when nothing new arrived or no data frame is in
        progress (see :meth:`pending_frame`). Only those bytes are unmasked,
        so looking at each new piece as it arrives costs one pass in all.
        """
        if self._large is not None:
            return self._large.received_since(skip) if self.in_payload else b""
        header = self._pending_header()
        if header is None:
            return b""
        _, _, payload_start, masked = header
        start = payload_start + skip
        buffer = self._buffer
        if len(buffer) <= start:
            return b""
        with memoryview(buffer) as view, view[start:] as data:
            if not masked:
                return bytes(data)
            key = bytes(view[payload_start - 4 : payload_start])
            turn = skip % 4
            return apply_mask(data, key[turn:] + key[:turn])

    def _pending_header(self) -> Optional[Tuple[Opcode, bool, int, bool]]:
        """``(opcode, rsv1, payload start, masked)`` of the data frame at the buffer's head.

        Decoded once, by :meth:`next_frame`, when it stopped inside the frame.
        """
        pending = self._pending
        if pending is None or pending[0] >= 8:
            return None
        return pending


class _LargeFrame:
    """A large frame's payload, gathered piece by piece as it arrives, unmasked.

    The alternative, appending every read to the parser's buffer, grows one
    ``bytearray`` by copies and reallocations up to the frame's size, then
    copies the payload out of it once more; with many connections receiving
    large frames at once that is the pattern that fragments the C heap.
    """

    __slots__ = ("opcode", "first", "header_length", "length", "key", "pieces", "received")

    def __init__(
        self, opcode: Opcode, first: int, header_length: int, length: int, key: Optional[bytes]
    ) -> None:
        self.opcode = opcode
        self.first = first  # the header's first byte: FIN and RSV1
        self.header_length = header_length
        self.length = length
        self.key = key  # None: not masked
        self.pieces: List[Union[bytes, bytearray]] = []
        self.received = 0  # payload bytes so far

    @property
    def missing(self) -> int:
        """Payload bytes still to come."""
        return self.length - self.received

    @property
    def held(self) -> int:
        """The bytes of the frame received so far, header included."""
        return self.header_length + self.received

    def take(self, data: Union[bytes, memoryview]) -> bytes:
        """Keep what ``data`` holds of the payload; return the bytes after the frame."""
        missing = self.missing
        rest = b""
        if len(data) > missing:
            rest = bytes(data[missing:])
            data = data[:missing]
        if data:
            key = self.key
            if key is None:
                piece = bytes(data)
            else:
                turn = self.received % 4
                piece = apply_mask(data, key[turn:] + key[:turn])
            self.received += len(piece)
            pieces = self.pieces
            if len(piece) < LARGE_FRAME and pieces and len(pieces[-1]) < LARGE_FRAME:
                # Small reads (a peer sending in small segments) go into one
                # bytearray of up to LARGE_FRAME bytes: a bytes object each
                # would cost tens of bytes of overhead per read.
                last = pieces[-1]
                if type(last) is bytes:
                    last = pieces[-1] = bytearray(last)
                last += piece
            else:
                pieces.append(piece)
        return rest

    def received_since(self, skip: int) -> bytes:
        """The payload received so far, unmasked, past its first ``skip`` bytes."""
        tail: List[Union[bytes, bytearray]] = []
        wanted = self.received - skip
        for piece in reversed(self.pieces):
            if wanted <= 0:
                break
            tail.append(piece if len(piece) <= wanted else piece[len(piece) - wanted :])
            wanted -= len(piece)
        return b"".join(reversed(tail))

    def payload(self) -> bytes:
        """The whole payload (call once every byte has arrived)."""
        pieces = self.pieces
        return pieces[0] if len(pieces) == 1 and type(pieces[0]) is bytes else b"".join(pieces)


def _payload(buffer: bytearray, start: int, end: int, masked: bool) -> bytes:
    """The payload at ``buffer[start:end]``, unmasked with the 4 bytes before it if ``masked``."""
    if end - start <= _SMALL_PAYLOAD:
        # Copying a small slice costs less than a memoryview and its release.
        if masked:
            return apply_mask(buffer[start:end], buffer[start - 4 : start])
        return bytes(buffer[start:end])
    with memoryview(buffer) as view:
        if masked:
            return apply_mask(view[start:end], view[start - 4 : start])
        return bytes(view[start:end])


_OPCODES: Tuple[Optional[Opcode], ...] = tuple(
    Opcode(value) if value in Opcode._value2member_map_ else None for value in range(16)
)
_UINT16 = struct.Struct("!H")
# Payloads up to this size are sliced out of the buffer by copy, larger ones
# through a memoryview (no copy before the unmasking).
_SMALL_PAYLOAD = 1024
#: Frames of this many bytes or more that arrive in pieces are gathered apart
#: from the parser's buffer (see :class:`_LargeFrame`).
LARGE_FRAME = 64 * 1024
# Frame(...) goes through NamedTuple's Python-level __new__; the parser, which
# always passes every field, builds the tuple directly (same object, faster).
_new_frame = tuple.__new__
_UINT64 = struct.Struct("!Q")
