"""A message framed once for many connections (a broadcast's wire forms); sans-I/O.

A server broadcasting one message to a thousand connections need not frame
it a thousand times. A :class:`PreparedMessage` holds the message and
builds each distinct wire form of it once:

* the plain frame (unmasked: a server's frames), for every connection
  without compression, and for messages too short to compress, built with
  the message (the one form nearly every broadcast needs);
* one compressed frame per :data:`~wsthread.sansio.deflate.SharedKey`, for
  connections that compress without server context takeover, built when
  first asked: every such connection with the same window, level and
  memory level sends the same bytes
  (:func:`~wsthread.sansio.deflate.compress_message`, which touches no
  connection's compressor).

A connection that compresses with context takeover cannot share: its
output depends on what it sent before, so
:meth:`Protocol.send_prepared() <wsthread.sansio.protocol.Protocol.send_prepared>`
compresses the message with that connection's own codec, as ``send()``
does. A client masks every frame with a fresh key and never shares either.

The compressed forms are kept in a ``dict`` by key. Two threads asking for the
same new form at once may both build it; each gets equal bytes and one of
them is kept, so no lock is needed (and the core takes none).
"""

from __future__ import annotations

from typing import Dict, Tuple

from .deflate import SharedKey, compress_message
from .frames import Opcode, frame_header

__all__ = ["PreparedMessage", "WireForm"]

WireForm = Tuple[bytes, int]
"""A whole frame and its header's length (the payload is what follows it)."""


class PreparedMessage:
    """One text or binary message, with its wire forms built once and kept.

    Args:
        payload: the message's bytes (UTF-8 for text); kept as given, so
            pass ``bytes``, which cannot change.
        text: a text message (opcode 1) rather than binary (opcode 2).
    """

    __slots__ = ("payload", "text", "opcode", "frame", "header_length", "_compressed")

    def __init__(self, payload: bytes, text: bool) -> None:
        self.payload = payload
        self.text = text
        self.opcode = Opcode.TEXT if text else Opcode.BINARY
        header = frame_header(self.opcode, len(payload))
        self.frame = header + payload
        """The uncompressed, unmasked frame, built at once (most broadcasts need it)."""
        self.header_length = len(header)
        self._compressed: Dict[SharedKey, WireForm] = {}

    def plain(self) -> WireForm:
        """The uncompressed, unmasked frame: ``(frame, header length)``."""
        return self.frame, self.header_length

    def compressed(self, key: SharedKey) -> WireForm:
        """The frame compressed on its own for connections sharing ``key``, RSV1 set."""
        form = self._compressed.get(key)
        if form is None:
            data = compress_message(self.payload, key)
            header = frame_header(self.opcode, len(data), rsv1=True)
            form = self._compressed[key] = (header + data, len(header))
        return form

    @property
    def compressed_forms(self) -> int:
        """How many compressed wire forms were built so far (for tests and benchmarks)."""
        return len(self._compressed)

    def __repr__(self) -> str:
        kind = "text" if self.text else "binary"
        forms = self.compressed_forms
        return f"<PreparedMessage {kind}, {len(self.payload)} bytes, {forms} compressed forms>"
