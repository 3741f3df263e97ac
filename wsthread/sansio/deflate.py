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
from typing import List, Optional, Sequence, Tuple, Union

from ..exceptions import InvalidRequest, InvalidResponse, PayloadTooBig, ProtocolError

__all__ = [
    "Deflate",
    "DEFAULT_WINDOW_BITS",
    "RELEASE_MAX_WINDOW_BITS",
    "CompressionOption",
    "server_settings",
    "client_settings",
    "negotiate_client",
    "EXTENSION_NAME",
    "COMPRESSION_THRESHOLD",
    "COMPRESSION_LEVEL",
    "DeflateParameters",
    "PerMessageDeflate",
    "parse_extensions",
    "negotiate_server",
    "client_offer",
    "accept_client",
    "SharedKey",
    "compress_message",
    "compressed_bound",
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


def compressed_bound(length: int) -> int:
    """The most bytes a compressed frame may take on the wire for ``length`` bytes inflated.

    ``max_size`` bounds a message once inflated; this bounds the frames that
    carry it, so that a message that does not compress (random bytes, media)
    still fits at exactly ``max_size``. DEFLATE can make data longer: stored
    blocks add 5 bytes per 64 KiB, fixed Huffman codes spend up to 9 bits on
    a byte, and a sender that flushes often adds an empty block each time.
    The bound allows an eighth and a sixty-fourth more, and 64 bytes, as
    zlib's own most conservative ``deflateBound()`` does (a 2**20-byte
    message may come in up to 1,196,096 bytes); past it, the frame is
    refused with 1009 as soon as its header is read, as in a connection
    without compression.
    """
    return length + ((length + 7) >> 3) + ((length + 63) >> 6) + 64


Parameter = Tuple[str, Optional[str]]
Extension = Tuple[str, List[Parameter]]
SharedKey = Tuple[int, int, int]
"""``(window bits, level, mem_level)``: see :attr:`PerMessageDeflate.shared_key`."""

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
class Deflate:
    """permessage-deflate settings: what a client offers, or what a server accepts.

    Pass one to ``serve(compression=...)`` or ``connect(compression=...)``
    (the client may pass a list: several offers, in order of preference).
    ``compression="deflate"`` means ``Deflate()``, whose defaults were chosen
    for memory (see the compression page of the docs for the measurements).

    The four RFC 7692 parameters mean, for a client's offer and for a
    server's settings:

    - ``server_no_context_takeover``: the client asks the server to compress
      each message on its own; a server resets its compressor after every
      message (and says so only when asked).
    - ``client_no_context_takeover``: the client promises to compress each
      message on its own; a server asks the client to do so.
    - ``server_max_window_bits``: the client asks the server for a window of
      at most ``2**N`` bytes; a server uses at most this window (less if
      asked for less), stated in its answer only when asked.
    - ``client_max_window_bits``: the client uses at most ``2**N`` bytes
      (the offer always says that it can bound its window, so the server
      may ask for less); a server asks a client whose offer allows it for
      at most ``2**N`` bytes.

    A ``*_max_window_bits`` of ``None`` means wsthread's default,
    ``DEFAULT_WINDOW_BITS`` (12: 4 KiB), for the window this side compresses
    with. Whatever is negotiated, a side may always compress with a smaller
    window than agreed or reset its context more often: the peer's
    decompressor is unaffected. wsthread does so to bound its own memory.

    Attributes:
        server_no_context_takeover: see above.
        client_no_context_takeover: see above.
        server_max_window_bits: 9 to 15 (8 is valid on the wire, but zlib
            cannot compress with it), or ``None``.
        client_max_window_bits: 9 to 15, or ``None``.
        level: zlib's compression level for what this side sends, 0
            (store) to 9 (smallest); 1, the fastest, by default.
        mem_level: zlib's ``memLevel``, 1 to 9: memory for the compressor's
            hash table while it works (``2**(mem_level + 9)`` bytes, plus
            as much for its buffers); only held during a message with the
            default windows.
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: Optional[int] = None
    client_max_window_bits: Optional[int] = None
    level: int = COMPRESSION_LEVEL
    mem_level: int = 5

    def __post_init__(self) -> None:
        for name in ("server_max_window_bits", "client_max_window_bits"):
            bits = getattr(self, name)
            if bits is not None and (isinstance(bits, bool) or not 9 <= bits <= 15):
                raise ValueError(f"{name} must be 9 to 15 or None, not {bits!r}")
        if not -1 <= self.level <= 9:
            raise ValueError(f"level must be -1 to 9, not {self.level!r}")
        if not 1 <= self.mem_level <= 9:
            raise ValueError(f"mem_level must be 1 to 9, not {self.mem_level!r}")

    def offer(self) -> str:
        """This offer as one element of a client's ``Sec-WebSocket-Extensions``."""
        parts = [EXTENSION_NAME]
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.server_max_window_bits is not None:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        if self.client_max_window_bits is None:
            parts.append("client_max_window_bits")
        else:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        return "; ".join(parts)

    def codec(self, parameters: DeflateParameters, *, is_server: bool) -> PerMessageDeflate:
        """The codec for a connection that agreed on ``parameters``, with this level."""
        return PerMessageDeflate(
            parameters, is_server=is_server, level=self.level, mem_level=self.mem_level
        )


# The window wsthread compresses with unless told otherwise, and asks a client
# to compress with: 2**12 = 4 KiB. On a chat-like stream of short JSON
# messages it compresses within 1% of a 32 KiB window (the dictionary is
# mostly the keys of the last few messages), and a window this small can be
# kept between messages as plain bytes instead of a zlib object (see
# RELEASE_MAX_WINDOW_BITS). Measured in docs/explanation/compression.md.
DEFAULT_WINDOW_BITS = 12

# Up to this window, a codec is not kept between messages: only the last
# 2**bits bytes of the stream are, and the next message builds a fresh zlib
# object primed with them as a preset dictionary, which gives the same
# output as context takeover. An idle connection then holds a few KiB of
# bytes instead of two zlib states (about 280 KiB at zlib's defaults). Above
# it, priming the compressor costs more CPU per message (about 100 us for
# 32 KiB) than keeping the objects costs memory, so they are kept.
RELEASE_MAX_WINDOW_BITS = 12


CompressionOption = Union[str, Deflate, Sequence[Deflate], None]


def server_settings(compression: CompressionOption) -> Optional[Deflate]:
    """What ``serve(compression=...)`` accepts, as one :class:`Deflate` or ``None``.

    Raises:
        ValueError: not ``"deflate"``, a :class:`Deflate` or ``None``.
    """
    if compression is None:
        return None
    if compression == "deflate":
        return Deflate()
    if isinstance(compression, Deflate):
        return compression
    raise ValueError(
        f"unsupported compression {compression!r}: use 'deflate', wsthread.Deflate(...) or None"
    )


def client_settings(compression: CompressionOption) -> List[Deflate]:
    """The offers ``connect(compression=...)`` makes, in order (empty: none).

    Raises:
        ValueError: not ``"deflate"``, a :class:`Deflate`, a non-empty list of
            them, or ``None``.
    """
    if compression is None:
        return []
    if compression == "deflate":
        return [Deflate()]
    if isinstance(compression, Deflate):
        return [compression]
    if not isinstance(compression, str):
        offers = list(compression)
        if offers and all(isinstance(offer, Deflate) for offer in offers):
            return offers
    raise ValueError(
        f"unsupported compression {compression!r}: use 'deflate', wsthread.Deflate(...),"
        " a list of them, or None"
    )


@dataclass(frozen=True)
class DeflateParameters:
    """The permessage-deflate parameters in use on one connection.

    Each side's window and reset are what that side compresses with: what
    was agreed in the handshake, or less where the side chose so on its own.

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


@dataclass(frozen=True)
class _Offer:
    """One client offer as read by the server."""

    server_no_context_takeover: bool
    client_no_context_takeover: bool
    server_max_window_bits: Optional[int]
    client_bits_offered: bool
    client_max_window_bits: Optional[int]


def _read_offer(parameters: List[Parameter]) -> _Offer:
    """Check one client offer and return what it says."""
    seen = set()
    server_nct = client_nct = False
    server_bits: Optional[int] = None
    client_bits: Optional[int] = None
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
    return _Offer(server_nct, client_nct, server_bits, client_bits_offered, client_bits)


def negotiate_server(
    header_values: Sequence[str], settings: Optional[Deflate] = None
) -> Optional[Tuple[str, DeflateParameters]]:
    """Pick the first acceptable permessage-deflate offer (server side).

    ``settings`` say what the server prefers (``Deflate()`` if omitted):

    - its own window is ``settings.server_max_window_bits`` (default 12),
      or less if the offer asks for less; it is stated in the answer only
      when the offer asked (some clients, Firefox among them, fail on an
      unrequested ``server_max_window_bits``);
    - the client is asked for ``client_max_window_bits`` (default 12) when
      its offer says it can bound its window, else its window is 15;
    - ``server_no_context_takeover`` is honoured when asked, and applied
      silently when set in ``settings``; ``client_no_context_takeover`` is
      stated when set in ``settings`` or promised in the offer.

    Returns the response header value and the parameters in use, or
    ``None`` when nothing acceptable was offered. An offer with invalid or
    duplicate parameters is declined; the next one is considered.

    Raises:
        InvalidRequest: the header is not well-formed at all (400).
    """
    if settings is None:
        settings = Deflate()
    try:
        extensions = parse_extensions(header_values)
    except ValueError as exc:
        raise InvalidRequest(f"malformed Sec-WebSocket-Extensions header: {exc}") from None
    for name, parameters in extensions:
        if name != EXTENSION_NAME:
            continue
        try:
            offer = _read_offer(parameters)
        except ValueError:
            continue
        return _answer(offer, settings)
    return None


def _answer(offer: _Offer, settings: Deflate) -> Tuple[str, DeflateParameters]:
    parts = [EXTENSION_NAME]
    server_nct = offer.server_no_context_takeover or settings.server_no_context_takeover
    if offer.server_no_context_takeover:
        parts.append("server_no_context_takeover")
    client_nct = offer.client_no_context_takeover or settings.client_no_context_takeover
    if client_nct:
        parts.append("client_no_context_takeover")
    server_bits = settings.server_max_window_bits or DEFAULT_WINDOW_BITS
    if offer.server_max_window_bits is not None:
        server_bits = min(server_bits, offer.server_max_window_bits)
        parts.append(f"server_max_window_bits={server_bits}")
    client_bits = 15
    if offer.client_bits_offered:
        wanted = settings.client_max_window_bits or DEFAULT_WINDOW_BITS
        client_bits = min(wanted, offer.client_max_window_bits or 15)
        if client_bits != 15:
            parts.append(f"client_max_window_bits={client_bits}")
    return "; ".join(parts), DeflateParameters(server_nct, client_nct, server_bits, client_bits)


def client_offer(offers: Sequence[Deflate] = ()) -> str:
    """The ``Sec-WebSocket-Extensions`` value a client sends for ``offers``.

    With no offers given, ``Deflate()``'s: deflate, letting the server bound
    our window (``permessage-deflate; client_max_window_bits``, as Chromium).
    """
    return ", ".join(offer.offer() for offer in (offers or [Deflate()]))


@dataclass(frozen=True)
class _Answer:
    """A server's permessage-deflate answer as read by the client."""

    server_no_context_takeover: bool
    client_no_context_takeover: bool
    server_max_window_bits: Optional[int]
    client_max_window_bits: Optional[int]


def _read_answer(header_values: Sequence[str]) -> Optional[_Answer]:
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
            else None
        )
        client_bits = (
            _window_bits(values["client_max_window_bits"])
            if "client_max_window_bits" in values
            else None
        )
    except ValueError as exc:
        raise InvalidResponse(f"invalid permessage-deflate parameters: {exc}") from None
    if client_bits == 8:
        # zlib cannot write raw DEFLATE with a 256-byte window: refuse rather
        # than send data the server may not be able to inflate.
        raise InvalidResponse("server asked for client_max_window_bits=8, which zlib cannot do")
    return _Answer(
        "server_no_context_takeover" in values,
        "client_no_context_takeover" in values,
        server_bits,
        client_bits,
    )


def _matches(answer: _Answer, offer: Deflate) -> bool:
    """Whether ``answer`` is a valid acceptance of ``offer`` (RFC 7692 §7.1)."""
    if offer.server_no_context_takeover and not answer.server_no_context_takeover:
        return False
    if offer.server_max_window_bits is not None and (
        answer.server_max_window_bits is None
        or answer.server_max_window_bits > offer.server_max_window_bits
    ):
        return False
    return not (
        answer.client_max_window_bits is not None
        and offer.client_max_window_bits is not None
        and answer.client_max_window_bits > offer.client_max_window_bits
    )


def negotiate_client(
    header_values: Sequence[str], offers: Sequence[Deflate]
) -> Optional[Tuple[DeflateParameters, Deflate]]:
    """Check the server's answer to ``offers`` (client side).

    Returns the parameters in use and the offer they accept (the first one
    the answer is valid for), or ``None`` if the server declined.

    Raises:
        InvalidResponse: the server accepted something that was not offered,
            matches none of the offers, or gave invalid parameters.
    """
    answer = _read_answer(header_values)
    if answer is None:
        return None
    if not offers:
        raise InvalidResponse("the server accepted an extension that was not offered")
    for offer in offers:
        if _matches(answer, offer):
            break
    else:
        raise InvalidResponse(
            "the server's permessage-deflate parameters match none of the offers: "
            + ", ".join(header_values)
        )
    own_bits = offer.client_max_window_bits or DEFAULT_WINDOW_BITS
    parameters = DeflateParameters(
        answer.server_no_context_takeover,
        answer.client_no_context_takeover or offer.client_no_context_takeover,
        answer.server_max_window_bits or 15,
        min(answer.client_max_window_bits or 15, own_bits),
    )
    return parameters, offer


def accept_client(
    header_values: Sequence[str], offers: Optional[Sequence[Deflate]] = None
) -> Optional[DeflateParameters]:
    """Like :func:`negotiate_client`, returning only the parameters.

    Without ``offers``, the answer is checked against a plain offer that
    lets the server choose every parameter, and the client's window is what
    the server says (15 if it says nothing).
    """
    if offers is None:
        offers = [Deflate(client_max_window_bits=15)]
    agreed = negotiate_client(header_values, offers)
    return None if agreed is None else agreed[0]


class PerMessageDeflate:
    """The permessage-deflate codec of one side of one connection.

    Between messages it keeps as little as it can. With context takeover
    and a window of up to ``RELEASE_MAX_WINDOW_BITS``, it keeps only the
    last window of the stream, as bytes, and primes a fresh zlib object with
    them for the next message (a preset dictionary): the output is the same
    as with a long-lived zlib object, and an idle connection holds a few KiB
    instead of two zlib states. Without context takeover it keeps nothing.
    With a larger window, the zlib objects are kept.

    Args:
        parameters: what is in use (see :class:`DeflateParameters`).
        is_server: which side this codec runs on.
        level: zlib's compression level for what this side sends.
        mem_level: zlib's ``memLevel`` for this side's compressor.
    """

    def __init__(
        self,
        parameters: DeflateParameters,
        *,
        is_server: bool,
        level: int = COMPRESSION_LEVEL,
        mem_level: int = 5,
    ) -> None:
        self.parameters = parameters
        self.level = level
        self.mem_level = mem_level
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
        self._send_keep = not self._send_reset and self._send_bits > RELEASE_MAX_WINDOW_BITS
        self._receive_keep = (
            not self._receive_reset and self._receive_bits > RELEASE_MAX_WINDOW_BITS
        )
        self._compressor: Optional[zlib._Compress] = None
        self._decompressor: Optional[zlib._Decompress] = None
        self._send_history = b""
        self._receive_history = b""

    @property
    def idle_state(self) -> int:
        """Bytes of history this codec holds between messages (for tests and benchmarks).

        Zlib objects kept between messages (:attr:`holds_zlib`) come on top.
        """
        return len(self._send_history) + len(self._receive_history)

    @property
    def shared_key(self) -> Optional[SharedKey]:
        """What this side's compressed messages depend on, if not on the connection's history.

        Without context takeover on the sending side, a message compresses
        to the same bytes on every connection with the same window, level
        and memory level: ``(window bits, level, mem_level)``, the key under
        which a prepared message keeps that wire form (see
        :mod:`wsthread.sansio.prepared` and :func:`compress_message`).
        ``None`` with context takeover: each connection compresses with its
        own history.
        """
        if not self._send_reset:
            return None
        return (self._send_bits, self.level, self.mem_level)

    @property
    def holds_zlib(self) -> bool:
        """Whether a zlib compressor or decompressor is held right now."""
        return self._compressor is not None or self._decompressor is not None

    def compress(self, data: bytes, *, fin: bool) -> bytes:
        """Compress one frame's worth of a message; ``fin`` marks its last frame."""
        compressor = self._compressor
        if compressor is None:
            if self._send_history:
                compressor = zlib.compressobj(
                    self.level,
                    zlib.DEFLATED,
                    -self._send_bits,
                    self.mem_level,
                    zlib.Z_DEFAULT_STRATEGY,
                    self._send_history,
                )
            else:
                compressor = zlib.compressobj(
                    self.level, zlib.DEFLATED, -self._send_bits, self.mem_level
                )
            self._compressor = compressor
        output = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if not self._send_reset and not self._send_keep:
            self._send_history = _last_window(self._send_history, data, self._send_bits)
        if fin:
            if output.endswith(_SYNC_TAIL):
                output = output[:-4]
            if not self._send_keep:
                self._compressor = None
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
        if decompressor is None:
            if self._receive_history:
                decompressor = zlib.decompressobj(
                    wbits=-self._receive_bits, zdict=self._receive_history
                )
            else:
                decompressor = zlib.decompressobj(wbits=-self._receive_bits)
            self._decompressor = decompressor
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
        if decompressor.eof:
            # A peer may end a message with a BFINAL block (RFC 7692 §7.2.3.4);
            # what follows it starts a new DEFLATE stream, with no history.
            self._decompressor = None
            self._receive_history = b""
        elif not self._receive_reset and not self._receive_keep:
            self._receive_history = _last_window(self._receive_history, output, self._receive_bits)
        if fin and not self._receive_keep:
            self._decompressor = None
        return output


def compress_message(data: bytes, key: SharedKey) -> bytes:
    """Compress a whole message on its own, as a sender without context takeover does.

    The result is what :meth:`PerMessageDeflate.compress` gives for
    ``data`` as one final frame on any codec whose :attr:`~PerMessageDeflate.shared_key`
    is ``key``, without touching any codec's state: a broadcast compresses
    once for every connection that shares the key.
    """
    bits, level, mem_level = key
    compressor = zlib.compressobj(level, zlib.DEFLATED, -bits, mem_level)
    output = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    if output.endswith(_SYNC_TAIL):
        output = output[:-4]
    return output


def _last_window(history: bytes, data: bytes, bits: int) -> bytes:
    """The last ``2**bits`` bytes of ``history`` followed by ``data``."""
    size = 1 << bits
    if len(data) >= size:
        return bytes(data[-size:])
    return (history + bytes(data))[-size:]
