"""``python -m wsthread.frames HEX``: decode raw WebSocket frames, for learning.

Give it bytes in hex (from a packet capture, a trace, or typed in by hand)
and it prints each frame in the annotated form of :mod:`wsthread.trace`::

    $ python -m wsthread.frames 81 85 37 fa 21 3d 7f 9f 4d 51 58
    parsing as frames sent by the client (masked), as a server reads them
    frame 1: bytes 0-10 (11 bytes)
      client -> server  TEXT FIN=1 RSV=000 MASK=1 key=37fa213d len=5  text 'Hello'

``--explain`` adds a field-by-field reading of each header. With no HEX
argument (or ``-``) the hex comes from standard input; ``--raw`` reads
binary bytes from standard input instead.

Clients must mask every frame and servers must not, so the bytes are parsed
as one side receives them: ``--from client`` (masked frames, as a server
reads them), ``--from server`` (unmasked, as a client reads them), or
``--from auto``, the default, where the MASK bit of the first frame decides.

The frames are cut by the sans-I/O :class:`~wsthread.sansio.frames.FrameParser`
itself, with every check it makes on a live connection (but no size limit,
and RSV1 allowed, since permessage-deflate may have been agreed), so an
invalid frame is reported with the error a peer would get. The frames are
then checked as a receiving connection checks them (the order of fragments,
UTF-8 in text messages and close reasons, close codes), and every violation
is shown with the close code a receiver would fail the connection with::

    $ python -m wsthread.frames 81 02 c3 28
    parsing as frames sent by the server (unmasked), as a client reads them
    frame 1: bytes 0-3 (4 bytes)
      server -> client  TEXT FIN=1 RSV=000 MASK=0 len=2  text '\ufffd('
      ! invalid UTF-8: invalid continuation byte: a receiver closes with 1007 (INVALID_DATA)

A frame cut short is decoded as far as its header goes, with the number of
payload bytes missing.
"""

from __future__ import annotations

import argparse
import string
import sys
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from ..connection.trace import CLIENT_TO_SERVER, SERVER_TO_CLIENT, FrameFormatter, close_code_name
from ..exceptions import ProtocolError
from ..sansio.frames import Frame, FrameParser, Opcode, apply_mask, parse_close
from ..sansio.utf8 import Utf8Decoder

__all__ = [
    "DecodedFrame",
    "decode",
    "describe_incomplete",
    "explain_header",
    "violations",
    "parse_hex",
    "explain",
    "main",
]


@dataclass(frozen=True)
class DecodedFrame:
    """One frame cut from raw bytes.

    Attributes:
        frame: the frame, payload unmasked.
        start: its first byte's offset in the input.
        raw: its bytes as they were in the input.
        mask: the masking key, or ``None``.
    """

    frame: Frame
    start: int
    raw: bytes
    mask: Optional[bytes]

    @property
    def header(self) -> bytes:
        """The header bytes: everything before the payload."""
        return self.raw[: len(self.raw) - len(self.frame.payload)]


def parse_hex(text: str) -> bytes:
    """Read hex bytes, ignoring spaces, colons, commas and ``0x`` prefixes.

    >>> parse_hex("0x81 0x05 48:65,6c 6c6f")
    b'\\x81\\x05Hello'
    """
    cleaned = text.replace("0x", " ").replace("0X", " ")
    for separator in ":,;-" + string.whitespace:
        cleaned = cleaned.replace(separator, "")
    return bytes.fromhex(cleaned)


def decode(data: bytes, *, masked: bool) -> Tuple[List[DecodedFrame], Optional[str]]:
    """Cut ``data`` into frames with the sans-I/O parser.

    Args:
        data: raw bytes, starting at a frame boundary.
        masked: ``True`` to parse client frames (as a server does), ``False``
            for server frames (as a client does).

    Returns:
        The frames, and ``None`` if every byte was used, or else why the rest
        could not be parsed (a protocol error or an incomplete frame).
    """
    parser = FrameParser(expect_masked=masked, allowed_rsv1=True)
    parser.feed(data)
    frames: List[DecodedFrame] = []
    start = 0
    while True:
        try:
            frame = parser.next_frame(None)
        except ProtocolError as exc:
            return frames, f"byte {start}: invalid frame: {exc}: {_consequence(exc)}"
        if frame is None:
            break
        end = len(data) - parser.buffered
        raw = data[start:end]
        mask = None
        if masked:
            payload_start = len(raw) - len(frame.payload)
            mask = raw[payload_start - 4 : payload_start]
        frames.append(DecodedFrame(frame, start, raw, mask))
        start = end
    if parser.buffered:
        return frames, f"byte {start}: incomplete frame: {describe_incomplete(data[start:])}"
    return frames, None


def _consequence(error: ProtocolError) -> str:
    return f"a receiver closes with {error.code} ({close_code_name(error.code)})"


def describe_incomplete(rest: bytes) -> str:
    """Say what the start of a frame announces, and how many bytes it still lacks.

    >>> for part in describe_incomplete(bytes.fromhex("827f0000000000011170")).split("; "):
    ...     print(part)
    header BINARY FIN=1 RSV=000 MASK=0 len=70000 (64-bit length), 10 bytes
    payload: 0 of 70000 bytes here, 70000 missing
    >>> describe_incomplete(bytes.fromhex("81"))
    'only 1 byte of a header (at least 2)'
    """
    if len(rest) < 2:
        return f"only {len(rest)} byte of a header (at least 2)"
    first, second = rest[0], rest[1]
    code = second & 0x7F
    extended = {126: 2, 127: 8}.get(code, 0)
    masked = bool(second & 0x80)
    header_size = 2 + extended + (4 if masked else 0)
    try:
        opcode = Opcode(first & 0x0F).name
    except ValueError:
        opcode = f"opcode 0x{first & 0x0F:x}"
    fields = (
        f"{opcode} FIN={first >> 7} RSV={(first >> 6) & 1}{(first >> 5) & 1}{(first >> 4) & 1}"
        f" MASK={int(masked)}"
    )
    if len(rest) < header_size:
        return (
            f"header {fields}, {len(rest)} of its {header_size} bytes here, "
            f"{header_size - len(rest)} missing"
        )
    length = int.from_bytes(rest[2 : 2 + extended], "big") if extended else code
    size = f" ({8 * extended}-bit length)" if extended else ""
    present = len(rest) - header_size
    return (
        f"header {fields} len={length}{size}, {header_size} bytes; payload: {present} of "
        f"{length} bytes here, {length - present} missing"
    )


def explain_header(rest: bytes) -> List[str]:
    """Read, field by field, the header of a frame whose payload has not all arrived.

    >>> for line in explain_header(bytes.fromhex("827f0000000000011170")):
    ...     print(line)
    byte 0 = 0x82 = 1000 0010: FIN=1 RSV1=0 RSV2=0 RSV3=0 opcode=0x2 (BINARY)
    byte 1 = 0x7f = 0111 1111: MASK=0 length code=127 (a 64-bit length follows)
    bytes 2-9 = 00 00 00 00 00 01 11 70: 64-bit length = 70000
    """
    lines: List[str] = []
    if len(rest) < 2:
        return lines
    first, second = rest[0], rest[1]
    try:
        name = Opcode(first & 0x0F).name
    except ValueError:
        name = "reserved"
    lines.append(
        f"byte 0 = 0x{first:02x} = {_bits(first)}: FIN={first >> 7} RSV1={(first >> 6) & 1} "
        f"RSV2={(first >> 5) & 1} RSV3={(first >> 4) & 1} opcode=0x{first & 0x0F:x} ({name})"
    )
    code = second & 0x7F
    lines.append(
        f"byte 1 = 0x{second:02x} = {_bits(second)}: MASK={second >> 7} "
        f"length code={code}" + _LENGTH_CODES.get(code, " (the length itself)")
    )
    width = {126: 2, 127: 8}.get(code, 0)
    if width and len(rest) >= 2 + width:
        extended = rest[2 : 2 + width]
        lines.append(
            f"bytes 2-{1 + width} = {extended.hex(' ')}: {8 * width}-bit length = "
            f"{int.from_bytes(extended, 'big')}"
        )
    position = 2 + width
    if second & 0x80 and len(rest) >= position + 4:
        key = rest[position : position + 4].hex(" ")
        lines.append(f"bytes {position}-{position + 3} = {key}: masking key")
    return lines


def violations(frames: Sequence[DecodedFrame]) -> List[Tuple[int, ProtocolError]]:
    """Check frames as a receiving connection does, beyond the framing rules.

    Finds what :func:`decode` cannot see one frame at a time: a continuation
    with no message to continue, a new message before the previous one
    ended, text that is not UTF-8 (across fragments too), an invalid close
    frame. Compressed (RSV1) messages are not inflated, so their text is not
    checked. A real receiver stops at the first violation; this goes on, to
    show them all.

    Returns:
        ``(index in frames, error)`` pairs; ``error.code`` is the close code
        a receiver fails the connection with.
    """
    found: List[Tuple[int, ProtocolError]] = []
    message: Optional[Opcode] = None  # the opcode of the message being assembled
    compressed = False
    broken = False  # a violation inside the current message: skip to its end
    decoder = Utf8Decoder()
    for index, decoded in enumerate(frames):
        frame = decoded.frame
        try:
            if frame.opcode is Opcode.CLOSE:
                parse_close(frame.payload)
                continue
            if frame.opcode in (Opcode.PING, Opcode.PONG):
                continue
            if frame.opcode is Opcode.CONTINUATION:
                if message is None:
                    raise ProtocolError("continuation frame without a message to continue")
                if frame.rsv1:
                    raise ProtocolError("RSV1 set on a continuation frame")
            else:
                if message is not None:
                    message = None  # the new message replaces it, for what follows
                    raise ProtocolError("new message started before the previous one ended")
            if frame.opcode is not Opcode.CONTINUATION:
                message, compressed, broken = frame.opcode, frame.rsv1, False
                decoder.reset()
            if message is Opcode.TEXT and not compressed and not broken:
                decoder.decode(frame.payload, frame.fin)
        except ProtocolError as exc:
            found.append((index, exc))
            broken = True
            if frame.opcode is not Opcode.CONTINUATION and frame.opcode.name in ("TEXT", "BINARY"):
                message, compressed = frame.opcode, frame.rsv1
        if frame.fin and frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION):
            message, broken = None, False
    return found


_LENGTH_CODES = {126: " (a 16-bit length follows)", 127: " (a 64-bit length follows)"}


def _bits(byte: int) -> str:
    return f"{byte >> 4:04b} {byte & 0xF:04b}"


def explain(decoded: DecodedFrame) -> List[str]:
    """Read a frame's header field by field, pointing at the bytes that hold each."""
    frame, header = decoded.frame, decoded.header
    length = len(frame.payload)
    first, second = header[0], header[1]
    lines = [
        f"byte 0 = 0x{first:02x} = {_bits(first)}: FIN={int(frame.fin)} RSV1={int(frame.rsv1)} "
        f"RSV2={int(frame.rsv2)} RSV3={int(frame.rsv3)} opcode=0x{int(frame.opcode):x} "
        f"({frame.opcode.name})",
        f"byte 1 = 0x{second:02x} = {_bits(second)}: MASK={second >> 7} "
        f"length code={second & 0x7F}" + _LENGTH_CODES.get(second & 0x7F, " (the length itself)"),
    ]
    extended = header[2 : len(header) - (4 if decoded.mask is not None else 0)]
    if extended:
        bits = 16 if len(extended) == 2 else 64
        lines.append(
            f"bytes 2-{1 + len(extended)} = {extended.hex(' ')}: {bits}-bit length = {length}"
        )
    position = len(header)
    if decoded.mask is not None:
        lines.append(f"bytes {position - 4}-{position - 1} = {decoded.mask.hex(' ')}: masking key")
    if length:
        wire = decoded.raw[position:]
        excerpt = 16
        more = " ..." if length > excerpt else ""
        lines.append(
            f"bytes {position}-{position + length - 1}: payload, {length} bytes"
            + (" (masked on the wire)" if decoded.mask is not None else "")
        )
        lines.append(f"  on the wire: {wire[:excerpt].hex(' ')}{more}")
        if decoded.mask is not None:
            # Show the XOR at work, with the library's own function.
            unmasked = apply_mask(wire[:excerpt], decoded.mask)
            lines.append(f"  XOR key:     {(decoded.mask * 4)[: min(length, excerpt)].hex(' ')}")
            lines.append(f"  unmasked:    {unmasked.hex(' ')}{more}")
    else:
        lines.append("no payload")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Decode the frames given on the command line or standard input; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m wsthread.frames",
        description="Decode raw WebSocket frames (RFC 6455) given in hex.",
    )
    parser.add_argument(
        "hex", nargs="*", help="the bytes in hex (spaces allowed); none or '-': standard input"
    )
    parser.add_argument(
        "--from",
        dest="sender",
        choices=["auto", "client", "server"],
        default="auto",
        help="who sent the bytes: client (masked) or server (unmasked); "
        "auto (default): the MASK bit of the first frame",
    )
    parser.add_argument("--explain", action="store_true", help="read every header field by field")
    parser.add_argument(
        "--raw", action="store_true", help="read binary bytes from standard input, not hex"
    )
    args = parser.parse_args(argv)

    if args.raw:
        data = sys.stdin.buffer.read()
    else:
        text = " ".join(args.hex) if args.hex and args.hex != ["-"] else sys.stdin.read()
        try:
            data = parse_hex(text)
        except ValueError as exc:
            parser.error(f"not hex: {exc}")
    if not data:
        parser.error("no bytes to decode")

    sender = args.sender
    if sender == "auto":
        sender = "client" if len(data) > 1 and data[1] & 0x80 else "server"
    masked = sender == "client"
    if masked:
        print("parsing as frames sent by the client (masked), as a server reads them")
        direction = CLIENT_TO_SERVER
    else:
        print("parsing as frames sent by the server (unmasked), as a client reads them")
        direction = SERVER_TO_CLIENT

    frames, problem = decode(data, masked=masked)
    errors = dict(violations(frames))
    formatter = FrameFormatter()
    for number, decoded in enumerate(frames, 1):
        end = decoded.start + len(decoded.raw) - 1
        print(f"frame {number}: bytes {decoded.start}-{end} ({len(decoded.raw)} bytes)")
        print("  " + formatter.format(direction, decoded.frame, decoded.mask))
        error = errors.get(number - 1)
        if error is not None:
            print(f"  ! {error}: {_consequence(error)}")
        if args.explain:
            for line in explain(decoded):
                print("    " + line)
    if problem is not None:
        print(problem)
        if args.explain and "incomplete frame" in problem:
            start = int(problem.split(":", 1)[0].split()[1])
            for line in explain_header(data[start:]):
                print("    " + line)
    return 1 if problem is not None or errors else 0


if __name__ == "__main__":
    sys.exit(main())
