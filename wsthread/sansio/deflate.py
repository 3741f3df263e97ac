"""permessage-deflate (RFC 7692): negotiation and the per-message codec.

Negotiation happens in the ``Sec-WebSocket-Extensions`` header. The client
offers, for example::

    Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits

and the server accepts one offer, answering with the parameters agreed::

    Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=15

Then a compressed message is sent with RSV1 set on its first frame; its
payload is the raw DEFLATE data with the final ``00 00 ff ff`` of a sync
flush removed, which the receiver puts back before inflating. The
``*_no_context_takeover`` parameters reset the compressor between messages;
``*_max_window_bits`` bound the LZ77 window (and the memory it takes).

Decompression is bounded: the inflater never produces more than the bytes
left under ``max_size``, so a few KiB that would inflate to gigabytes fail
the connection with 1009 instead of filling memory.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from ..exceptions import InvalidRequest, InvalidResponse, PayloadTooBig, ProtocolError

__all__ = [
    "EXTENSION_NAME",
    "COMPRESSION_THRESHOLD",
    "COMPRESSION_LEVEL",
    "DeflateParameters",
    "PerMessageDeflate",
    "parse_extensions",
    "negotiate_server",
    "client_offer",
    "accept_client",
]

EXTENSION_NAME = "permessage-deflate"

# Messages shorter than this are sent uncompressed: below 16 bytes DEFLATE can
# save a few bytes at best (its block header and Huffman codes cost about as
# much) and only burns CPU. From 16 bytes on, compression pays more often than
# one would think, because with context takeover a short message is mostly
# back-references to earlier ones (a chat line, a JSON event of a known shape).
COMPRESSION_THRESHOLD = 16

# zlib's fastest level. On typical text it compresses about four times faster
# than the default level 6 (about 60 MB/s against 14 MB/s here) for output
# about 20% larger: the right trade for a server on small machines, where
# CPU, not bandwidth, runs out first. Inflating is equally fast either way.
COMPRESSION_LEVEL = 1

_SYNC_TAIL = b"\x00\x00\xff\xff"

Parameter = Tuple[str, Optional[str]]
Extension = Tuple[str, List[Parameter]]

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PARAM = re.compile(rf"\s*({_TOKEN})\s*(?:=\s*({_TOKEN}|{_QUOTED}))?\s*")


def parse_extensions(values: Sequence[str]) -> List[Extension]:
    """Parse ``Sec-WebSocket-Extensions`` header values (RFC 6455 §9.1).

    Returns ``(name, [(parameter, value or None), ...])`` for each extension,
    in order. Quoted values are unquoted.

    Raises:
        ValueError: the header does not follow the grammar.
    """
    extensions: List[Extension] = []
    for value in values:
        for item in _split_outside_quotes(value, ","):
            if not item.strip():
                continue
            pieces = _split_outside_quotes(item, ";")
            name = pieces[0].strip()
            if not re.fullmatch(_TOKEN, name):
                raise ValueError(f"invalid extension name {name!r}")
            parameters: List[Parameter] = []
            for piece in pieces[1:]:
                match = _PARAM.fullmatch(piece)
                if match is None:
                    raise ValueError(f"invalid extension parameter {piece.strip()!r}")
                key, raw = match.group(1), match.group(2)
                if raw is not None and raw.startswith('"'):
                    raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
                    if not re.fullmatch(_TOKEN, raw):
                        raise ValueError(f"invalid quoted parameter value {raw!r}")
                parameters.append((key, raw))
            extensions.append((name, parameters))
    return extensions


def _split_outside_quotes(text: str, separator: str) -> List[str]:
    parts: List[str] = []
    current: List[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted:
        raise ValueError("unterminated quoted string in extension header")
    parts.append("".join(current))
    return parts


@dataclass(frozen=True)
class DeflateParameters:
    """The permessage-deflate parameters agreed for one connection.

    Attributes:
        server_no_context_takeover: the server resets its compressor after
            every message.
        client_no_context_takeover: the client resets its compressor after
            every message.
        server_max_window_bits: the server's LZ77 window (base-2 log, 8-15).
        client_max_window_bits: the client's LZ77 window (base-2 log, 8-15).
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = 15
    client_max_window_bits: int = 15

    def header(self, *, client_bits_explicit: bool = True) -> str:
        """The ``Sec-WebSocket-Extensions`` value that states these parameters."""
        parts = [EXTENSION_NAME]
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.server_max_window_bits != 15:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        if client_bits_explicit and self.client_max_window_bits != 15:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        return "; ".join(parts)


def _window_bits(value: Optional[str]) -> int:
    if value is None or not value.isdigit() or len(value) > 2 or not 8 <= int(value) <= 15:
        raise ValueError(f"window bits must be 8 to 15, not {value!r}")
    return int(value)


def _read_offer(parameters: List[Parameter]) -> Tuple[DeflateParameters, bool]:
    """Check one client offer; return its parameters and whether the client
    sent ``client_max_window_bits`` (which allows the server to set it)."""
    seen = set()
    server_nct = client_nct = False
    server_bits = client_bits = 15
    client_bits_offered = False
    for key, value in parameters:
        if key in seen:
            raise ValueError(f"duplicate parameter {key}")
        seen.add(key)
        if key == "server_no_context_takeover" and value is None:
            server_nct = True
        elif key == "client_no_context_takeover" and value is None:
            client_nct = True
        elif key == "server_max_window_bits":
            server_bits = _window_bits(value)
        elif key == "client_max_window_bits":
            client_bits_offered = True
            if value is not None:
                client_bits = _window_bits(value)
        else:
            raise ValueError(f"unknown or malformed parameter {key}")
    # zlib cannot compress with an 8-bit window; decline rather than lie.
    if server_bits == 8:
        raise ValueError("server_max_window_bits=8 is not supported (zlib needs 9 or more)")
    return (
        DeflateParameters(server_nct, client_nct, server_bits, client_bits),
        client_bits_offered,
    )


def negotiate_server(header_values: Sequence[str]) -> Optional[Tuple[str, DeflateParameters]]:
    """Pick the first acceptable permessage-deflate offer (server side).

    Returns the response header value and the agreed parameters, or ``None``
    when nothing acceptable was offered. An offer with invalid or duplicate
    parameters is declined; the next one is considered.

    Raises:
        InvalidRequest: the header is not well-formed at all (400).
    """
    try:
        extensions = parse_extensions(header_values)
    except ValueError as exc:
        raise InvalidRequest(f"malformed Sec-WebSocket-Extensions header: {exc}") from None
    for name, parameters in extensions:
        if name != EXTENSION_NAME:
            continue
        try:
            agreed, client_bits_offered = _read_offer(parameters)
        except ValueError:
            continue
        return agreed.header(client_bits_explicit=client_bits_offered), agreed
    return None


def client_offer() -> str:
    """The offer a client sends: deflate, letting the server bound our window."""
    return f"{EXTENSION_NAME}; client_max_window_bits"


def accept_client(header_values: Sequence[str]) -> Optional[DeflateParameters]:
    """Check the server's answer to :func:`client_offer` (client side).

    Returns the agreed parameters, or ``None`` if the server declined.

    Raises:
        InvalidResponse: the server accepted something that was not offered
            or gave invalid parameters.
    """
    try:
        extensions = parse_extensions(header_values)
    except ValueError as exc:
        raise InvalidResponse(f"malformed Sec-WebSocket-Extensions header: {exc}") from None
    if not extensions:
        return None
    if len(extensions) != 1 or extensions[0][0] != EXTENSION_NAME:
        names = ", ".join(name for name, _ in extensions)
        raise InvalidResponse(f"server accepted extensions that were not offered: {names}")
    seen = set()
    values = {}
    for key, value in extensions[0][1]:
        if key in seen:
            raise InvalidResponse(f"duplicate permessage-deflate parameter {key}")
        seen.add(key)
        values[key] = value
    unknown = seen - {
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    }
    if unknown:
        raise InvalidResponse(f"unknown permessage-deflate parameters: {sorted(unknown)}")
    try:
        for flag in ("server_no_context_takeover", "client_no_context_takeover"):
            if flag in values and values[flag] is not None:
                raise ValueError(f"{flag} takes no value")
        server_bits = (
            _window_bits(values["server_max_window_bits"])
            if "server_max_window_bits" in values
            else 15
        )
        client_bits = (
            _window_bits(values["client_max_window_bits"])
            if "client_max_window_bits" in values
            else 15
        )
    except ValueError as exc:
        raise InvalidResponse(f"invalid permessage-deflate parameters: {exc}") from None
    if client_bits == 8:
        # zlib cannot write raw DEFLATE with a 256-byte window: refuse rather
        # than send data the server may not be able to inflate.
        raise InvalidResponse("server asked for client_max_window_bits=8, which zlib cannot do")
    return DeflateParameters(
        "server_no_context_takeover" in values,
        "client_no_context_takeover" in values,
        server_bits,
        client_bits,
    )


class PerMessageDeflate:
    """The permessage-deflate codec of one side of one connection.

    Args:
        parameters: what was negotiated.
        is_server: which side this codec runs on.
    """

    def __init__(self, parameters: DeflateParameters, *, is_server: bool) -> None:
        self.parameters = parameters
        if is_server:
            self._send_bits = parameters.server_max_window_bits
            self._send_reset = parameters.server_no_context_takeover
            self._receive_bits = parameters.client_max_window_bits
            self._receive_reset = parameters.client_no_context_takeover
        else:
            self._send_bits = parameters.client_max_window_bits
            self._send_reset = parameters.client_no_context_takeover
            self._receive_bits = parameters.server_max_window_bits
            self._receive_reset = parameters.server_no_context_takeover
        self._compressor = self._new_compressor()
        self._decompressor = zlib.decompressobj(wbits=-self._receive_bits)

    def _new_compressor(self) -> zlib._Compress:
        return zlib.compressobj(COMPRESSION_LEVEL, zlib.DEFLATED, -self._send_bits)

    def compress(self, data: bytes, *, fin: bool) -> bytes:
        """Compress one frame's worth of a message; ``fin`` marks its last frame."""
        output = self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
        if fin:
            if output.endswith(_SYNC_TAIL):
                output = output[:-4]
            if self._send_reset:
                self._compressor = self._new_compressor()
        return output

    def decompress(self, data: bytes, *, fin: bool, max_length: Optional[int]) -> bytes:
        """Inflate one frame of a compressed message, never past ``max_length`` bytes.

        Raises:
            PayloadTooBig: the message inflates beyond ``max_length`` (1009).
            ProtocolError: the data is not valid DEFLATE (1007 is for text;
                corrupt compression is a protocol error, 1002).
        """
        if fin:
            data += _SYNC_TAIL
        decompressor = self._decompressor
        try:
            if max_length is None:
                output = decompressor.decompress(data)
            else:
                # Ask for one byte more than allowed: getting it proves the bomb.
                output = decompressor.decompress(data, max_length + 1)
                if len(output) > max_length:
                    raise PayloadTooBig(
                        f"message inflates beyond the limit of {max_length} more bytes"
                    )
        except zlib.error as exc:
            raise ProtocolError(f"invalid compressed data: {exc}") from exc
        if (fin and self._receive_reset) or decompressor.eof:
            # A peer may end a message with a BFINAL block (RFC 7692 §7.2.3.4);
            # what follows it starts a new DEFLATE stream.
            self._decompressor = zlib.decompressobj(wbits=-self._receive_bits)
        return output
