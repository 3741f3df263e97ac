"""Tracing: the annotated format, the protocol hook, the frame decoder, and --trace on real runs."""

from __future__ import annotations

import io
import logging
import os
import re
import signal
import sys
import zlib
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

import wsthread
from conftest import ServerFactory, assert_clean_exit, echo_process, python_process, run, run_ok
from wsthread.frames import decode, describe_incomplete, explain, main, parse_hex, violations
from wsthread.sansio.frames import Frame, Opcode, serialize_frame
from wsthread.sansio.handshake import accept_key
from wsthread.sansio.protocol import Protocol, Side
from wsthread.trace import (
    CLIENT_TO_SERVER,
    SERVER_TO_CLIENT,
    FrameFormatter,
    Tracer,
    close_code_name,
    format_frame,
    format_handshake,
)

# The examples of RFC 6455 section 5.7.
RFC_UNMASKED_HELLO = "81 05 48 65 6c 6c 6f"
RFC_MASKED_HELLO = "81 85 37 fa 21 3d 7f 9f 4d 51 58"
RFC_FRAGMENTED_HELLO = "01 03 48 65 6c 80 02 6c 6f"
RFC_PING_HELLO = "89 05 48 65 6c 6c 6f"
RFC_MASKED_PONG_HELLO = "8a 85 37 fa 21 3d 7f 9f 4d 51 58"


class Recorder:
    """A trace hook that keeps what it is given."""

    def __init__(self) -> None:
        self.frames: List[Tuple[str, Frame, Optional[bytes]]] = []
        self.handshakes: List[Tuple[str, bytes]] = []

    def handshake(self, direction: str, data: bytes) -> None:
        """Record a handshake message."""
        self.handshakes.append((direction, data))

    def frame(self, direction: str, frame: Frame, mask: Optional[bytes]) -> None:
        """Record a frame."""
        self.frames.append((direction, frame, mask))


def fixed_mask() -> bytes:
    """The masking key of the RFC examples."""
    return bytes.fromhex("37fa213d")


# -- the format ----------------------------------------------------------------


def test_format_masked_text_frame() -> None:
    """Direction, opcode, FIN, RSV bits, mask and key, length and the text."""
    line = format_frame(CLIENT_TO_SERVER, Frame(Opcode.TEXT, b"Hello"), fixed_mask())
    assert line == "client -> server  TEXT FIN=1 RSV=000 MASK=1 key=37fa213d len=5  text 'Hello'"


def test_format_binary_frame_in_hex_with_a_long_length() -> None:
    """Binary payloads show as hex, cut short; lengths over 125 name their encoding."""
    line = format_frame(SERVER_TO_CLIENT, Frame(Opcode.BINARY, bytes(range(256)) * 2))
    assert "BINARY FIN=1 RSV=000 MASK=0 len=512 (16-bit length)" in line
    assert "hex 00 01 02 03" in line
    assert line.endswith("... (+488 bytes)")
    line = format_frame(SERVER_TO_CLIENT, Frame(Opcode.BINARY, bytes(70000)))
    assert "len=70000 (64-bit length)" in line


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\x03\xe8", "code 1000 NORMAL_CLOSURE reason ''"),
        (b"\x03\xe9bye", "code 1001 GOING_AWAY reason 'bye'"),
        (b"\x03\xf1", "code 1009 MESSAGE_TOO_BIG reason ''"),
        (b"\x0f\xa0", "code 4000 PRIVATE reason ''"),
        (b"", "no status code (1005 NO_STATUS_RCVD for the receiver)"),
        (b"\x03", "invalid close payload (close frame with a one-byte payload) hex 03"),
    ],
)
def test_format_close_frames(payload: bytes, expected: str) -> None:
    """Close frames show their code with its name, and the reason; bad payloads in hex."""
    line = format_frame(SERVER_TO_CLIENT, Frame(Opcode.CLOSE, payload))
    assert line.endswith("  " + expected), line


def test_close_code_names() -> None:
    """Registered codes by name, then the ranges."""
    assert close_code_name(1011) == "INTERNAL_ERROR"
    assert close_code_name(3001) == "REGISTERED"
    assert close_code_name(4999) == "PRIVATE"
    assert close_code_name(1004) == "RESERVED"
    assert close_code_name(1016) == "UNKNOWN"


def test_format_compressed_frame_and_continuations() -> None:
    """RSV1 marks a compressed message; continuations say what they continue."""
    tracer_output = io.StringIO()
    tracer = Tracer(tracer_output)
    deflated = zlib.compressobj(wbits=-15)
    message = deflated.compress(b"Hello") + deflated.flush(zlib.Z_SYNC_FLUSH)[:-4]
    head, tail = message[:2], message[2:]
    tracer.frame(SERVER_TO_CLIENT, Frame(Opcode.TEXT, head, fin=False, rsv1=True), None)
    tracer.frame(SERVER_TO_CLIENT, Frame(Opcode.CONTINUATION, tail), None)
    tracer.frame(CLIENT_TO_SERVER, Frame(Opcode.BINARY, b"\x01", fin=False), b"abcd")
    tracer.frame(CLIENT_TO_SERVER, Frame(Opcode.PING, b"\xff"), b"abcd")
    tracer.frame(CLIENT_TO_SERVER, Frame(Opcode.CONTINUATION, b"\x02"), b"abcd")
    lines = tracer_output.getvalue().splitlines()
    assert lines[0].endswith(
        f"RSV=100 MASK=0 len=2  compressed (permessage-deflate) hex {head.hex(' ')}"
    )
    assert lines[1].endswith(
        "compressed (permessage-deflate), inflates to 5 bytes: text 'Hello' (continues TEXT)"
    )
    assert lines[2].endswith("MASK=1 key=61626364 len=1  hex 01")
    assert lines[3].endswith("PING FIN=1 RSV=000 MASK=1 key=61626364 len=1  hex ff")
    assert lines[4].endswith("len=1  hex 02 (continues BINARY)")


def test_format_handshake_lines() -> None:
    """A handshake message: a title with its size, then each header line indented."""
    request = (
        b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\n\r\n"
    )
    lines = format_handshake(CLIENT_TO_SERVER, request)
    assert lines == [
        f"client -> server  HTTP request, {len(request)} bytes",
        "  GET /chat HTTP/1.1",
        "  Host: example.com",
        "  Upgrade: websocket",
        "  Connection: Upgrade",
    ]


def test_tracer_labels_each_connection_and_logs_by_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """connection(label) prefixes lines; without a stream, events go to wsthread.trace."""
    tracer = Tracer()
    child = tracer.connection("127.0.0.1:5000")
    with caplog.at_level(logging.DEBUG, logger="wsthread.trace"):
        child.frame(SERVER_TO_CLIENT, Frame(Opcode.PONG, b""), None)
    assert [record.name for record in caplog.records] == ["wsthread.trace"]
    assert caplog.records[0].levelno == logging.DEBUG
    assert caplog.records[0].getMessage() == (
        "[127.0.0.1:5000] server -> client  PONG FIN=1 RSV=000 MASK=0 len=0  (empty)"
    )


# -- the protocol hook -----------------------------------------------------


def test_protocol_traces_frames_both_ways_with_the_real_masking_key() -> None:
    """Every frame serialised or parsed reaches the hook, with the key that is on the wire."""
    client_trace, server_trace = Recorder(), Recorder()
    client = Protocol(Side.CLIENT, mask_key=fixed_mask, trace=client_trace)
    server = Protocol(Side.SERVER, trace=server_trace)
    wire = client.send_text("Hello")
    assert wire == bytes.fromhex(RFC_MASKED_HELLO.replace(" ", ""))
    server.receive_data(wire[:3])  # a frame split across two reads
    assert server_trace.frames == []
    server.receive_data(wire[3:] + client.send_ping(b"p"))
    reply = server.send_binary(b"\x00\x01") + server.data_to_send()
    client.receive_data(reply)

    hello = (Frame(Opcode.TEXT, b"Hello"), fixed_mask())
    ping = (Frame(Opcode.PING, b"p"), fixed_mask())
    binary = (Frame(Opcode.BINARY, b"\x00\x01"), None)
    pong = (Frame(Opcode.PONG, b"p"), None)
    assert client_trace.frames == [
        (CLIENT_TO_SERVER, *hello),
        (CLIENT_TO_SERVER, *ping),
        (SERVER_TO_CLIENT, *binary),
        (SERVER_TO_CLIENT, *pong),
    ]
    assert server_trace.frames == client_trace.frames
    assert client_trace.handshakes == server_trace.handshakes == []


def test_protocol_traces_the_close_frame_it_sends_on_a_protocol_error() -> None:
    """A frame the parser refuses is not traced, but the 1002 close it causes is."""
    trace = Recorder()
    server = Protocol(Side.SERVER, trace=trace)
    server.receive_data(b"\x83\x80abcd")  # reserved opcode 3
    server.data_to_send()
    assert len(trace.frames) == 1
    direction, frame, mask = trace.frames[0]
    assert (direction, frame.opcode, mask) == (SERVER_TO_CLIENT, Opcode.CLOSE, None)
    assert frame.payload[:2] == b"\x03\xea"  # 1002


def test_hook_is_never_called_when_tracing_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """With trace=None the protocol never reaches any tracing code."""

    def forbidden(*args: object) -> None:
        raise AssertionError("tracing code ran while tracing was off")

    monkeypatch.setattr(Protocol, "_trace_received", forbidden)
    monkeypatch.setattr(Tracer, "frame", forbidden)
    monkeypatch.setattr(Tracer, "handshake", forbidden)
    client = Protocol(Side.CLIENT)
    server = Protocol(Side.SERVER)
    assert client._trace is None and server._trace is None
    data = client.send_text("x" * 300) + client.send_ping(b"") + client.send_close(1000)
    events = server.receive_data(data)
    assert len(events) == 3
    client.receive_data(server.send_text("y") + server.data_to_send())
    assert client.state.name == "CLOSED"


# -- the decoder ---------------------------------------------------------------


def run_decoder(*args: str, stdin: str = "") -> Tuple[int, str]:
    """Run ``python -m wsthread.frames`` in-process; return its status and output."""
    out = io.StringIO()
    old_stdout, old_stdin = sys.stdout, sys.stdin
    sys.stdout, sys.stdin = out, io.StringIO(stdin)
    try:
        status = main(list(args))
    finally:
        sys.stdout, sys.stdin = old_stdout, old_stdin
    return status, out.getvalue()


def test_decoder_rfc_masked_frame() -> None:
    """RFC 6455 5.7: the masked "Hello" is read as a client frame with its key."""
    status, output = run_decoder(*RFC_MASKED_HELLO.split())
    assert status == 0
    assert output.splitlines() == [
        "parsing as frames sent by the client (masked), as a server reads them",
        "frame 1: bytes 0-10 (11 bytes)",
        "  client -> server  TEXT FIN=1 RSV=000 MASK=1 key=37fa213d len=5  text 'Hello'",
    ]


def test_decoder_rfc_unmasked_and_fragmented_frames_from_stdin() -> None:
    """RFC 6455 5.7: server frames, a fragmented message and a ping, read from stdin."""
    status, output = run_decoder(
        stdin=" ".join([RFC_UNMASKED_HELLO, RFC_FRAGMENTED_HELLO, RFC_PING_HELLO]) + "\n"
    )
    assert status == 0
    lines = output.splitlines()
    assert lines[0] == "parsing as frames sent by the server (unmasked), as a client reads them"
    assert lines[2].endswith("TEXT FIN=1 RSV=000 MASK=0 len=5  text 'Hello'")
    assert lines[4].endswith("TEXT FIN=0 RSV=000 MASK=0 len=3  text 'Hel'")
    assert lines[6].endswith("CONTINUATION FIN=1 RSV=000 MASK=0 len=2  text 'lo' (continues TEXT)")
    assert lines[8].endswith("PING FIN=1 RSV=000 MASK=0 len=5  data 'Hello'")
    assert lines[7] == "frame 4: bytes 16-22 (7 bytes)"


def test_decoder_explains_a_header_field_by_field() -> None:
    """--explain shows the bits of the first two bytes, the key and the XOR."""
    status, output = run_decoder("--explain", *RFC_MASKED_PONG_HELLO.split())
    assert status == 0
    assert "    byte 0 = 0x8a = 1000 1010: FIN=1 RSV1=0 RSV2=0 RSV3=0 opcode=0xa (PONG)" in output
    assert "    byte 1 = 0x85 = 1000 0101: MASK=1 length code=5 (the length itself)" in output
    assert "    bytes 2-5 = 37 fa 21 3d: masking key" in output
    assert "      unmasked:    48 65 6c 6c 6f" in output


def test_decoder_long_lengths() -> None:
    """RFC 6455 5.7: 256 bytes take a 16-bit length, 64 KiB a 64-bit one."""
    for length, code, bits, width in ((256, "7e", 16, 2), (65536, "7f", 64, 8)):
        data = bytes.fromhex(f"82{code}") + length.to_bytes(width, "big") + bytes(length)
        frames, problem = decode(data, masked=False)
        assert problem is None
        (decoded,) = frames
        assert decoded.frame == Frame(Opcode.BINARY, bytes(length))
        assert decoded.header == data[: 2 + width]
        assert f"{bits}-bit length = {length}" in explain(decoded)[2]


def test_decoder_side_option_and_errors() -> None:
    """--from decides the side; a wrong side or a cut frame is reported, status 1."""
    status, output = run_decoder("--from", "server", *RFC_MASKED_HELLO.split())
    assert status == 1
    assert output.splitlines()[-1] == (
        "byte 0: invalid frame: a server must not mask its frames: "
        "a receiver closes with 1002 (PROTOCOL_ERROR)"
    )
    status, output = run_decoder(*RFC_MASKED_HELLO.split()[:-1])
    assert status == 1
    assert output.splitlines()[-1] == (
        "byte 0: incomplete frame: header TEXT FIN=1 RSV=000 MASK=1 len=5, 6 bytes; "
        "payload: 4 of 5 bytes here, 1 missing"
    )
    status, output = run_decoder("--from", "client", *RFC_UNMASKED_HELLO.split())
    assert status == 1
    assert "a client must mask its frames" in output


def test_decoder_reads_the_header_of_a_cut_frame() -> None:
    """A header-only frame is decoded: its length, and how many payload bytes are missing."""
    status, output = run_decoder("--explain", "82 7f 00 00 00 00 00 01 11 70")
    assert status == 1
    assert output.splitlines()[1:] == [
        "byte 0: incomplete frame: header BINARY FIN=1 RSV=000 MASK=0 len=70000 "
        "(64-bit length), 10 bytes; payload: 0 of 70000 bytes here, 70000 missing",
        "    byte 0 = 0x82 = 1000 0010: FIN=1 RSV1=0 RSV2=0 RSV3=0 opcode=0x2 (BINARY)",
        "    byte 1 = 0x7f = 0111 1111: MASK=0 length code=127 (a 64-bit length follows)",
        "    bytes 2-9 = 00 00 00 00 00 01 11 70: 64-bit length = 70000",
    ]
    status, output = run_decoder("--explain", "81 85 37 fa 21 3d 7f 9f")
    assert output.splitlines()[-1] == "    bytes 2-5 = 37 fa 21 3d: masking key"
    assert describe_incomplete(bytes.fromhex("827f0000")) == (
        "header BINARY FIN=1 RSV=000 MASK=0, 4 of its 10 bytes here, 6 missing"
    )
    assert describe_incomplete(b"\x81") == "only 1 byte of a header (at least 2)"
    assert describe_incomplete(bytes.fromhex("c17e")).startswith("header TEXT FIN=1 RSV=100 ")


@pytest.mark.parametrize(
    "hex_bytes, message, code",
    [
        ("81 02 c3 28", "invalid UTF-8", 1007),  # the example
        ("01 01 c3 80 01 28", "invalid UTF-8", 1007),  # split over two fragments
        ("88 02 03 ec", "invalid code 1004", 1002),  # a reserved close code
        ("88 01 03", "one-byte payload", 1002),
        ("88 03 03 e8 ff", "reason is not valid UTF-8", 1007),
        ("80 01 41", "continuation frame without a message", 1002),
        ("01 01 41 81 01 42", "new message started", 1002),
        ("89 7e 00 7e" + " 00" * 126, "over 125", 1002),  # the framing layer's own check
        ("09 00", "fragmented", 1002),
        ("81 81 00 00 00 00 41", "must not mask", 1002),
    ],
)
def test_decoder_marks_each_violation_with_its_close_code(
    hex_bytes: str, message: str, code: int
) -> None:
    """Every protocol violation is annotated with the close code a receiver would send."""
    status, output = run_decoder("--from", "server", hex_bytes)
    assert status == 1
    marked = [
        line for line in output.splitlines() if "a receiver closes with" in line and message in line
    ]
    assert marked, output
    assert f"a receiver closes with {code} ({close_code_name(code)})" in marked[0]


def test_decoder_valid_utf8_split_over_fragments_is_fine() -> None:
    """A character cut between two fragments is valid: no violation, status 0."""
    frames, problem = decode(bytes.fromhex("0101c38001a9"), masked=False)
    assert problem is None and violations(frames) == []
    status, output = run_decoder("01 01 c3 80 01 a9")
    assert status == 0 and "receiver closes" not in output


def test_frames_page_shows_what_the_decoder_prints() -> None:
    """Every ``$ python -m wsthread.frames`` in frames.md is followed by its real output."""
    page = Path(__file__).resolve().parent.parent / "docs" / "explanation" / "frames.md"
    blocks = re.findall(
        r"```text\n(\$ python -m wsthread\.frames[^\n]*)\n(.*?)```",
        page.read_text(encoding="utf-8"),
        re.S,
    )
    assert len(blocks) >= 4
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for command, shown in blocks:
        result = run(
            ["bash", "-c", command[2:].replace("python ", f"{sys.executable} ", 1)],
            timeout=60,
            env=env,
        )
        assert result.stdout == shown, command


def test_decoder_matches_the_serializer() -> None:
    """What serialize_frame writes, decode reads back, key included."""
    frame = Frame(Opcode.BINARY, bytes(range(200)), fin=False, rsv1=True)
    wire = serialize_frame(frame, b"\x01\x02\x03\x04") + serialize_frame(
        Frame(Opcode.CLOSE, b"\x03\xe8"), b"\x05\x06\x07\x08"
    )
    frames, problem = decode(wire, masked=True)
    assert problem is None
    assert [(d.frame, d.mask) for d in frames] == [
        (frame, b"\x01\x02\x03\x04"),
        (Frame(Opcode.CLOSE, b"\x03\xe8"), b"\x05\x06\x07\x08"),
    ]
    assert b"".join(d.raw for d in frames) == wire


def test_parse_hex_accepts_common_notations() -> None:
    """Spaces, colons, commas and 0x prefixes are all fine."""
    assert parse_hex("0x81,0x05 48:65 6c6c6f") == bytes.fromhex("8105 48656c6c6f")


def test_decoder_as_a_module() -> None:
    """``python -m wsthread.frames`` runs as a program."""
    result = run_ok(
        [sys.executable, "-m", "wsthread.frames", "--from", "auto", RFC_PING_HELLO], timeout=60
    )
    assert "PING FIN=1 RSV=000 MASK=0 len=5  data 'Hello'" in result.stdout


def test_compressed_messages_are_shown_inflated() -> None:
    """A permessage-deflate message shows its inflated text, across fragments and messages."""
    compressor = zlib.compressobj(wbits=-15)

    def deflate(data: bytes) -> bytes:
        return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]

    formatter = FrameFormatter()
    first = deflate(b"Hello, hello, hello")
    second = deflate(b"Hello, hello, hello")  # context takeover: shorter
    assert len(second) < len(first)
    lines = [
        formatter.format(SERVER_TO_CLIENT, Frame(Opcode.TEXT, first, rsv1=True), None),
        formatter.format(SERVER_TO_CLIENT, Frame(Opcode.TEXT, second, rsv1=True), None),
    ]
    for line in lines:
        assert line.endswith(
            "compressed (permessage-deflate), inflates to 19 bytes: text 'Hello, hello, hello'"
        ), line
    # Garbage does not inflate: the hex is shown, and nothing fails.
    line = formatter.format(CLIENT_TO_SERVER, Frame(Opcode.BINARY, b"\xff" * 8, rsv1=True), None)
    assert line.endswith("compressed (permessage-deflate) hex ff ff ff ff ff ff ff ff")


# -- real runs: --trace on the command-line tools --------------------------------

FRAME_LINE = re.compile(
    r"^\[(?P<label>[^\]]+)\] (?P<direction>client -> server|server -> client)  "
    r"(?P<opcode>[A-Z]+) FIN=(?P<fin>[01]) RSV=(?P<rsv>[01]{3}) "
    r"(?:MASK=1 key=(?P<key>[0-9a-f]{8})|MASK=0) len=(?P<length>\d+)  (?P<payload>.*)$"
)


def handshake_block(lines: List[str], title: str) -> List[str]:
    """The indented lines under the first trace line that contains ``title``."""
    start = next(index for index, line in enumerate(lines) if title in line)
    label = lines[start].split("]")[0] + "]"
    block = []
    for line in lines[start + 1 :]:
        if not line.startswith(label + "   "):
            break
        block.append(line[len(label) + 3 :])
    return block


def check_trace(lines: List[str], label: str) -> None:
    """Both handshake messages, one text frame each way and the closing handshake."""
    request = handshake_block(lines, f"[{label}] client -> server  HTTP request, ")
    response = handshake_block(lines, f"[{label}] server -> client  HTTP response, ")
    assert request[0] == "GET / HTTP/1.1"
    assert "Upgrade: websocket" in request and "Sec-WebSocket-Version: 13" in request
    assert response[0] == "HTTP/1.1 101 Switching Protocols"
    key = next(line.split(": ")[1] for line in request if line.startswith("Sec-WebSocket-Key"))
    assert f"Sec-WebSocket-Accept: {accept_key(key)}" in response

    frames = [match.groupdict() for match in map(FRAME_LINE.match, lines) if match]
    assert {frame["label"] for frame in frames} == {label}
    summary = [
        (f["direction"], f["opcode"], f["fin"], f["rsv"], f["key"] is not None, f["payload"])
        for f in frames
    ]
    assert summary == [
        (CLIENT_TO_SERVER, "TEXT", "1", "000", True, "text 'Hello'"),
        (SERVER_TO_CLIENT, "TEXT", "1", "000", False, "text 'Hello'"),
        (CLIENT_TO_SERVER, "CLOSE", "1", "000", True, "code 1000 NORMAL_CLOSURE reason ''"),
        (SERVER_TO_CLIENT, "CLOSE", "1", "000", False, "code 1000 NORMAL_CLOSURE reason ''"),
    ]
    assert [frame["length"] for frame in frames] == ["5", "5", "2", "2"]


def test_echo_server_trace_from_a_real_run() -> None:
    """`python -m wsthread.echo --trace`: the handshake and every frame, both directions."""
    with echo_process("--trace") as (process, url):
        with wsthread.connect(url) as ws:
            local = ws.socket.getsockname()
            ws.send("Hello")
            assert ws.recv(timeout=5) == "Hello"
        # The server traces its close frame just before sending it: the
        # client has it, so the trace is complete. Stop the server.
        process.send_signal(signal.SIGINT)
        stderr = assert_clean_exit(process, timeout=15)
    check_trace(stderr.splitlines(), f"{local[0]}:{local[1]}")


def test_interactive_client_trace_from_a_real_run(make_server: ServerFactory) -> None:
    """`python -m wsthread URI --trace`: the same trace, seen from the client, on stderr."""
    server = make_server()
    url = f"ws://127.0.0.1:{server.port}/"
    with python_process("-m", "wsthread", "--trace", url) as process:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write("Hello\n")
        process.stdin.flush()
        assert process.stdout.readline() == "< Hello\n"  # stdout: the messages only
        process.stdin.close()  # end of input: the client closes with 1000
        stderr = assert_clean_exit(process, timeout=15)
    check_trace(stderr.splitlines(), url)
