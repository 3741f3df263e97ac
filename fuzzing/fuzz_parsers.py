"""Coverage-guided fuzzing of wsthread's sans-I/O parsers with atheris (libFuzzer).

Run it (see fuzzing/README.md)::

    python fuzzing/fuzz_parsers.py -max_total_time=300

The first input byte picks a target; the next ones pick where the input is
cut into chunks; the rest is the data. Each target feeds the data twice, in
one chunk and cut into pieces, and checks that both give the same result.
Only the library's own errors may come out (ProtocolError, InvalidHandshake
and their subclasses, ValueError from parse_extensions); anything else, or a
disagreement between the two feeds, is a crash that libFuzzer saves as
``crash-<sha1>`` in the current directory. Replay one with
``python fuzzing/fuzz_parsers.py crash-<sha1>``.

With no corpus directory on the command line, new inputs go to a temporary
directory and the seeds in fuzzing/corpus are read, never written.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any, Callable, List, Sequence, Tuple

import atheris

with atheris.instrument_imports(include=["wsthread"]):
    from wsthread.exceptions import InvalidHandshake, ProtocolError
    from wsthread.sansio.deflate import (
        DeflateParameters,
        PerMessageDeflate,
        accept_client,
        negotiate_server,
        parse_extensions,
    )
    from wsthread.sansio.frames import FrameParser, parse_close
    from wsthread.sansio.handshake import (
        RequestParser,
        ResponseParser,
        validate_request,
        validate_response,
    )
    from wsthread.sansio.protocol import Protocol, Side

SEEDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
MASK = b"\x37\xfa\x21\x3d"
EXPECTED = (ProtocolError, InvalidHandshake)


def cut(data: bytes, points: Sequence[int]) -> List[bytes]:
    """Cut ``data`` at ``points`` (taken modulo its length)."""
    if not data:
        return [data]
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in zip(edges, edges[1:])]


def frames(chunks: Sequence[bytes], flags: int) -> Tuple[Any, ...]:
    """FrameParser: the frames and the error, if any."""
    parser = FrameParser(expect_masked=bool(flags & 1), allowed_rsv1=bool(flags & 2))
    limit = None if flags & 4 else 300
    found: List[Any] = []
    for chunk in chunks:
        parser.feed(chunk)
        try:
            while (frame := parser.next_frame(limit)) is not None:
                found.append(frame)
        except ProtocolError as exc:
            return tuple(found), type(exc), str(exc)
    return tuple(found), None, parser.buffered


def protocol(chunks: Sequence[bytes], flags: int) -> Tuple[Any, ...]:
    """Protocol.receive_data: events, failure, close, automatic replies."""
    side = Side.SERVER if flags & 1 else Side.CLIENT
    codec = (
        PerMessageDeflate(DeflateParameters(), is_server=side is Side.SERVER) if flags & 2 else None
    )
    proto = Protocol(
        side, max_size=None if flags & 4 else 500, deflate=codec, mask_key=lambda: MASK
    )
    events: List[Any] = []
    for chunk in chunks:
        events += proto.receive_data(chunk)
    failure = proto.failure
    failure_info = None if failure is None else (type(failure), failure.code, str(failure))
    return tuple(events), failure_info, proto.close_rcvd, proto.data_to_send()


def http(chunks: Sequence[bytes], flags: int) -> Tuple[Any, ...]:
    """RequestParser or ResponseParser, then validation of what they parsed."""
    limits = {} if flags & 2 else {"max_line": 40, "max_headers": 6, "max_header_bytes": 200}
    parser: Any = RequestParser(**limits) if flags & 1 else ResponseParser(**limits)
    head = None
    try:
        for chunk in chunks:
            if head is None:
                head = parser.feed(chunk)
            else:
                parser.feed(chunk)
    except InvalidHandshake as exc:
        return type(exc), str(exc)
    if head is None:
        return (None,)
    try:
        if flags & 1:
            _ = head.path, head.query, head.cookies
            validate_request(head)
        else:
            validate_response(head, "dGhlIHNhbXBsZSBub25jZQ==", subprotocols=["chat"])
    except InvalidHandshake:
        pass
    return repr(head), parser.trailing_data


def close_and_extensions(chunks: Sequence[bytes], flags: int) -> Tuple[Any, ...]:
    """parse_close, and the extension header parser and negotiation on the same bytes."""
    data = b"".join(chunks)
    results: List[Any] = []
    try:
        results.append(parse_close(data))
    except ProtocolError as exc:
        results.append(type(exc))
    text = data.decode("latin-1")
    for run in (
        lambda: parse_extensions([text]),
        lambda: negotiate_server([text]),
        lambda: accept_client([text]),
    ):
        try:
            results.append(run())
        except (ValueError, InvalidHandshake) as exc:
            results.append(type(exc))
    return tuple(results)


TARGETS: List[Callable[[Sequence[bytes], int], Tuple[Any, ...]]] = [
    frames,
    protocol,
    http,
    close_and_extensions,
]


def test_one_input(data: bytes) -> None:
    """libFuzzer's entry point: one input, two feeds, the same outcome."""
    if len(data) < 2:
        return
    selector, cuts, payload = data[0], data[1], data[2:]
    target = TARGETS[selector % len(TARGETS)]
    flags = selector // len(TARGETS)
    points = [cuts * (i + 1) for i in range(cuts % 5)]
    try:
        whole = target([payload], flags)
        pieces = target(cut(payload, points), flags)
    except EXPECTED:
        raise AssertionError("a target let one of the library's errors escape") from None
    if whole != pieces:
        raise AssertionError(f"one chunk and {len(points) + 1} chunks disagree:\n{whole}\n{pieces}")


def main(argv: List[str]) -> None:
    """Start libFuzzer; with no corpus directory given, use a scratch one plus the seeds."""
    args = list(argv)
    if not any(not arg.startswith("-") for arg in args[1:]):
        args += [tempfile.mkdtemp(prefix="wsthread-fuzz-"), SEEDS]
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
