"""Annotated traces of what goes over the wire: the opening handshake and every frame.

A :class:`Tracer` turns each frame into one readable line, and each
handshake message into a short block::

    [127.0.0.1:50312] client -> server  HTTP request, 212 bytes
    [127.0.0.1:50312]   GET / HTTP/1.1
    [127.0.0.1:50312]   Host: 127.0.0.1:8765
    ...
    [127.0.0.1:50312] client -> server  TEXT FIN=1 RSV=000 MASK=1 key=8d41e6a2 len=5  text 'hello'
    [127.0.0.1:50312] server -> client  TEXT FIN=1 RSV=000 MASK=0 len=5  text 'hello'

Give one to :func:`wsthread.serve` or :func:`wsthread.connect` as
``trace=``, or pass ``--trace`` to ``python -m wsthread.echo`` and
``python -m wsthread URI``. Lines go to a text stream (``Tracer(sys.stderr)``)
or, by default, to the ``wsthread.trace`` logger at DEBUG level; subclass
:class:`Tracer` and override :meth:`Tracer.emit` to send them elsewhere.

The server and the client call :meth:`Tracer.connection` once per
connection, with the peer's address (server) or the URI (client), and hand
what it returns the opening handshake (the request and the response, as
parsed and serialised again) and every frame. The sans-I/O
:class:`~wsthread.sansio.protocol.Protocol` takes any object with the
methods of :class:`TraceHook`.

Tracing costs nothing when it is off: the protocol checks
``if self._trace is not None`` once per frame and does nothing else.
"""

from __future__ import annotations

import logging
import threading
import zlib
from typing import Dict, List, Optional, TextIO, Tuple

from ..exceptions import ProtocolError
from ..sansio.frames import CONTROL_OPCODES, CloseCode, Frame, Opcode, parse_close
from ..sansio.protocol import TraceHook

__all__ = [
    "CLIENT_TO_SERVER",
    "SERVER_TO_CLIENT",
    "TraceHook",
    "Tracer",
    "FrameFormatter",
    "format_frame",
    "format_handshake",
    "close_code_name",
]

#: The direction of bytes sent by the client (always masked).
CLIENT_TO_SERVER = "client -> server"
#: The direction of bytes sent by the server (never masked).
SERVER_TO_CLIENT = "server -> client"

#: The logger a :class:`Tracer` writes to when it is given no stream.
logger = logging.getLogger("wsthread.trace")

# How much of a payload a trace line shows.
_TEXT_EXCERPT = 60
_HEX_EXCERPT = 24


def close_code_name(code: int) -> str:
    """Name a close code: ``1000`` gives ``"NORMAL_CLOSURE"``.

    1004 is ``"RESERVED"`` (RFC 6455 gives it no meaning); codes 3000-3999
    are registered by libraries and frameworks, 4000-4999 are private to
    applications; others without a name are ``"UNKNOWN"``.
    """
    try:
        return CloseCode(code).name
    except ValueError:
        if code == 1004:
            return "RESERVED"
        if 3000 <= code <= 3999:
            return "REGISTERED"
        if 4000 <= code <= 4999:
            return "PRIVATE"
        return "UNKNOWN"


def _hex_excerpt(data: bytes, limit: int = _HEX_EXCERPT) -> str:
    shown = " ".join(f"{byte:02x}" for byte in data[:limit])
    if len(data) > limit:
        shown += f" ... (+{len(data) - limit} bytes)"
    return shown


def _text_excerpt(data: bytes, limit: int = _TEXT_EXCERPT) -> str:
    # A fragment may end in the middle of a character: show it, never fail.
    text = data.decode("utf-8", errors="replace")
    if len(text) > limit:
        return repr(text[:limit]) + f" ... (+{len(text) - limit} characters)"
    return repr(text)


def _is_readable(data: bytes) -> bool:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return text.isprintable()


def _length_note(length: int) -> str:
    if length < 126:
        return ""
    return " (16-bit length)" if length < 65536 else " (64-bit length)"


class _Inflater:
    """Inflate one direction's permessage-deflate messages, for display only.

    One raw-deflate stream per direction, as RFC 7692 defines it (the
    largest window decodes any window size, with or without context
    takeover). Bounded: a message that inflates past ``LIMIT`` bytes, or
    that does not inflate, stops the display of inflated text for the rest
    of the connection rather than costing memory or time.
    """

    LIMIT = 2**20

    def __init__(self) -> None:
        self._stream = zlib.decompressobj(-15)
        self._parts: List[bytes] = []
        self._size = 0
        self.broken = False

    def feed(self, data: bytes, fin: bool) -> Optional[bytes]:
        """Take a frame's payload; return the whole inflated message on its last frame."""
        if self.broken:
            return None
        if fin:
            data += b"\x00\x00\xff\xff"  # the tail that RFC 7692 has senders strip
        try:
            chunk = self._stream.decompress(data, self.LIMIT - self._size + 1)
        except zlib.error:
            self.broken = True
            return None
        self._size += len(chunk)
        if self._stream.unconsumed_tail or self._size > self.LIMIT:
            self.broken = True
            return None
        self._parts.append(chunk)
        if not fin:
            return None
        message, self._parts, self._size = b"".join(self._parts), [], 0
        return message


class FrameFormatter:
    """Turn frames into annotated lines, remembering what each message is.

    A continuation frame does not say whether it continues text or binary,
    nor whether its message is compressed: the formatter remembers the first
    frame of the message in each direction, as a receiver does. Compressed
    messages (permessage-deflate) are inflated, for display only, and shown
    on their last frame.
    """

    def __init__(self) -> None:
        # direction -> (opcode of the message in progress, compressed?)
        self._messages: Dict[str, Tuple[Opcode, bool]] = {}
        self._inflaters: Dict[str, _Inflater] = {}

    def format(self, direction: str, frame: Frame, mask: Optional[bytes]) -> str:
        """Return the annotated line for one frame."""
        opcode = frame.opcode
        payload = frame.payload
        bits = f"{int(frame.rsv1)}{int(frame.rsv2)}{int(frame.rsv3)}"
        masking = f"MASK=1 key={mask.hex()}" if mask is not None else "MASK=0"
        head = (
            f"{direction}  {opcode.name} FIN={int(frame.fin)} RSV={bits} {masking} "
            f"len={len(payload)}{_length_note(len(payload))}"
        )
        return f"{head}  {self._describe(direction, frame)}"

    def _describe(self, direction: str, frame: Frame) -> str:
        opcode = frame.opcode
        payload = frame.payload
        if opcode in CONTROL_OPCODES:
            if opcode is Opcode.CLOSE:
                return _describe_close(payload)
            if not payload:
                return "(empty)"
            if _is_readable(payload):
                return f"data {_text_excerpt(payload)}"
            return f"hex {_hex_excerpt(payload)}"

        if opcode is Opcode.CONTINUATION:
            message = self._messages.get(direction)
            kind, compressed = message if message is not None else (None, False)
            note = f" (continues {kind.name})" if kind is not None else " (continues ?)"
        else:
            kind, compressed = opcode, frame.rsv1
            note = ""
        if frame.fin:
            self._messages.pop(direction, None)
        elif kind is not None:
            self._messages[direction] = (kind, compressed)

        if compressed:
            return self._describe_compressed(direction, frame, kind) + note
        if not payload:
            return "(empty)" + note
        if kind is Opcode.TEXT:
            return f"text {_text_excerpt(payload)}{note}"
        return f"hex {_hex_excerpt(payload)}{note}"

    def _describe_compressed(self, direction: str, frame: Frame, kind: Optional[Opcode]) -> str:
        inflater = self._inflaters.get(direction)
        if inflater is None:
            inflater = self._inflaters[direction] = _Inflater()
        message = inflater.feed(frame.payload, frame.fin)
        shown = f"compressed (permessage-deflate) hex {_hex_excerpt(frame.payload)}"
        if message is None:
            return shown
        if kind is Opcode.TEXT:
            inflated = f"text {_text_excerpt(message)}"
        else:
            inflated = f"hex {_hex_excerpt(message)}"
        return f"compressed (permessage-deflate), inflates to {len(message)} bytes: {inflated}"


def _describe_close(payload: bytes) -> str:
    if not payload:
        return "no status code (1005 NO_STATUS_RCVD for the receiver)"
    try:
        code, reason = parse_close(payload)
    except ProtocolError as exc:  # InvalidUTF8 is a ProtocolError too
        return f"invalid close payload ({exc}) hex {_hex_excerpt(payload)}"
    return f"code {code} {close_code_name(code)} reason {reason!r}"


def format_frame(direction: str, frame: Frame, mask: Optional[bytes] = None) -> str:
    """Return the annotated line for one frame, on its own (no message context).

    >>> from wsthread.sansio.frames import Frame, Opcode
    >>> print(format_frame(SERVER_TO_CLIENT, Frame(Opcode.TEXT, b"Hello")))
    server -> client  TEXT FIN=1 RSV=000 MASK=0 len=5  text 'Hello'
    """
    return FrameFormatter().format(direction, frame, mask)


def format_handshake(direction: str, data: bytes) -> List[str]:
    """Return the lines that show an HTTP request or response of the handshake.

    The first line says what it is and its size; then each line of the head,
    indented; then a body, if any, as an excerpt.

    >>> for line in format_handshake(SERVER_TO_CLIENT, b"HTTP/1.1 426 Upgrade Required\\r\\n"
    ...                              b"Content-Length: 2\\r\\n\\r\\nno"):
    ...     print(line)
    server -> client  HTTP response, 54 bytes
      HTTP/1.1 426 Upgrade Required
      Content-Length: 2
      (body, 2 bytes) 'no'
    """
    head, separator, body = data.partition(b"\r\n\r\n")
    kind = "response" if head.startswith(b"HTTP/") else "request"
    lines = [f"{direction}  HTTP {kind}, {len(data)} bytes"]
    lines += ["  " + line for line in head.decode("latin-1").split("\r\n")]
    if not separator:
        lines.append("  (incomplete: no blank line after the headers)")
    elif body:
        lines.append(f"  (body, {len(body)} bytes) {_text_excerpt(body)}")
    return lines


class Tracer:
    """Write an annotated trace of the handshake and every frame.

    Args:
        stream: a text stream to write to, such as ``sys.stderr``; each
            event is written and flushed at once. ``None`` sends each event
            to the ``wsthread.trace`` logger instead, at ``level``.
        level: the logging level used when there is no stream.
        label: a prefix for every line, such as the peer's address; see
            :meth:`connection`.

    Thread-safe: the reader thread and writers of several connections may
    trace at once, and every event comes out whole.

    Subclass it and override :meth:`emit` to send the lines elsewhere.
    """

    def __init__(
        self,
        stream: Optional[TextIO] = None,
        *,
        level: int = logging.DEBUG,
        label: str = "",
    ) -> None:
        self.stream = stream
        self.level = level
        self.label = label
        self._lock = threading.Lock()
        self._formatter = FrameFormatter()

    def connection(self, label: str) -> Tracer:
        """Return a tracer for one connection: same output, lines prefixed ``[label]``.

        The server calls it with the peer's ``host:port``, the client with
        the URI. Each connection gets its own message context (for
        continuation frames).
        """
        child = type(self).__new__(type(self))
        child.__dict__.update(self.__dict__)
        child.label = label
        child._formatter = FrameFormatter()
        return child

    def handshake(self, direction: str, data: bytes) -> None:
        """Trace an HTTP request or response of the opening handshake."""
        self.emit(format_handshake(direction, data))

    def frame(self, direction: str, frame: Frame, mask: Optional[bytes]) -> None:
        """Trace one frame."""
        self.emit([self._formatter.format(direction, frame, mask)])

    def emit(self, lines: List[str]) -> None:
        """Write the lines of one event: to the stream, or to the logger as one record."""
        prefix = f"[{self.label}] " if self.label else ""
        text = "\n".join(prefix + line for line in lines)
        if self.stream is None:
            logger.log(self.level, "%s", text)
            return
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()
