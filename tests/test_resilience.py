"""Resource exhaustion against a real server on loopback: the server keeps serving.

Each test attacks a server started on 127.0.0.1:0 with raw sockets (the
attacks are things no well-behaved client library would send) and checks
three things: the attack is answered the way the RFCs and our limits say,
its cost stays bounded, and a normal client is still served. Figures worth
reporting (how long slowloris connections lived, bytes read before a 414)
are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import struct
import threading
import time
import tracemalloc
import zlib
from typing import Callable, Iterator, List, Optional, Tuple

import pytest
from websockets.sync.client import connect

from conftest import UPGRADE_REQUEST, ServerFactory, raw_websocket, thread_count, wait_until
from wsthread.sansio.frames import Frame, FrameParser, Opcode, parse_close, serialize_frame

MASK = b"\x9a\x10\x77\x03"


# -- helpers --------------------------------------------------------------------------


def client_frame(
    opcode: Opcode, payload: bytes = b"", fin: bool = True, rsv1: bool = False
) -> bytes:
    """A masked frame, as a client sends it."""
    return serialize_frame(Frame(opcode, payload, fin, rsv1), MASK)


def read_frames(
    sock: socket.socket, until: Callable[[Frame], bool], timeout: float = 10
) -> List[Frame]:
    """Read server frames until one satisfies ``until`` (or EOF, or ``timeout``)."""
    parser = FrameParser(expect_masked=False)
    frames: List[Frame] = []
    sock.settimeout(timeout)
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            return frames
        if not data:
            return frames
        parser.feed(data)
        while (frame := parser.next_frame()) is not None:
            frames.append(frame)
            if until(frame):
                return frames


def close_code(frames: List[Frame]) -> Optional[int]:
    """The code of the close frame among ``frames``, if any."""
    for frame in frames:
        if frame.opcode is Opcode.CLOSE:
            return parse_close(frame.payload)[0]
    return None


def is_close(frame: Frame) -> bool:
    return frame.opcode is Opcode.CLOSE


def echo_works(port: int) -> bool:
    """A normal client (the websockets library) gets its echo."""
    with connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as ws:
        ws.send("still there?")
        return ws.recv(timeout=10) == "still there?"


def threads_back_to(baseline: int, timeout: float = 10) -> bool:
    """Wait until the process is back to ``baseline`` threads."""
    return wait_until(lambda: thread_count() <= baseline, timeout)


def no_errors_logged(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> List[str]:
    """Records at ``level`` or above, or with a traceback: what an attack must not cause."""
    return [
        f"{r.levelname} {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= level or r.exc_info is not None
    ]


def send_until_refused(
    port: int, head: bytes, filler: Iterator[bytes], limit: int
) -> Tuple[bytes, int]:
    """Send ``head`` then ``filler`` chunks (up to ``limit`` bytes) while reading the answer.

    Returns the server's answer and how many bytes we managed to send before
    the server stopped us (answered and closed, or stopped reading).
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sent = 0
    stop = threading.Event()

    def sender() -> None:
        nonlocal sent
        try:
            sock.sendall(head)
            sent += len(head)
            for chunk in filler:
                if stop.is_set() or sent >= limit:
                    return
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:  # the server closed, reset, or stopped reading (timeout)
            return

    thread = threading.Thread(target=sender)
    thread.start()
    answer = b""
    try:
        while True:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not data:
                break
            answer += data
    finally:
        stop.set()
        thread.join(15)
        sock.close()
    return answer, sent


# -- slowloris ---------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_slowloris_connections_are_dropped_at_open_timeout(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """300 connections dribbling a request line hold their threads only until
    open_timeout, while a normal client is served in the meantime."""
    caplog.set_level(logging.DEBUG, logger="wsthread")
    open_timeout = 2.0
    server = make_server(open_timeout=open_timeout)
    baseline = thread_count()
    count = 300
    slow = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sock.setblocking(False)
        slow.append(sock)
    started = time.monotonic()
    selector = selectors.DefaultSelector()
    for sock in slow:
        selector.register(sock, selectors.EVENT_READ)
    dribble = b"GET /" + b"a" * 5000  # never finishes the request line
    position = 0
    dropped_at: dict = {}
    served_meanwhile = None
    deadline = started + open_timeout + 30
    while len(dropped_at) < count and time.monotonic() < deadline:
        # One byte to every connection still open, every 50 ms.
        byte = dribble[position % len(dribble) : position % len(dribble) + 1]
        position += 1
        for sock in slow:
            if sock not in dropped_at:
                try:
                    sock.send(byte)
                except OSError:
                    dropped_at[sock] = time.monotonic() - started
        for key, _ in selector.select(timeout=0.05):
            sock = key.fileobj  # type: ignore[assignment]
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if not data and sock not in dropped_at:
                dropped_at[sock] = time.monotonic() - started
                selector.unregister(sock)
        if served_meanwhile is None and time.monotonic() - started > open_timeout / 4:
            alive = count - len(dropped_at)
            served_meanwhile = (echo_works(server.port), alive)
    selector.close()
    for sock in slow:
        sock.close()
    assert served_meanwhile is not None
    served, alive_then = served_meanwhile
    assert served, "the normal client was not served during the attack"
    assert alive_then == count, "slow connections were dropped before open_timeout"
    assert len(dropped_at) == count, f"only {len(dropped_at)} of {count} were dropped"
    first, last = min(dropped_at.values()), max(dropped_at.values())
    print(
        f"\nslowloris: {count} connections with open_timeout={open_timeout}s dropped "
        f"between {first:.2f}s and {last:.2f}s after they opened"
    )
    assert threads_back_to(baseline), f"{thread_count()} threads, baseline {baseline}"
    assert echo_works(server.port)
    assert not no_errors_logged(caplog)


# -- oversized handshakes --------------------------------------------------------------


def repeat(chunk: bytes) -> Iterator[bytes]:
    while True:
        yield chunk


LIMIT = 64 * 2**20  # what we would send if nothing stopped us


def test_endless_request_line_gets_414_without_being_read_whole(
    make_server: ServerFactory,
) -> None:
    """A request line that never ends: 414 after about max_line bytes; reading stops."""
    server = make_server()
    answer, sent = send_until_refused(server.port, b"GET /", repeat(b"a" * 65536), LIMIT)
    print(f"\nendless request line: 414 after we sent {sent} bytes")
    assert answer.startswith(b"HTTP/1.1 414 "), answer[:100]
    assert sent < LIMIT
    assert echo_works(server.port)


def test_endless_header_gets_431(make_server: ServerFactory) -> None:
    """A header line that never ends: 431."""
    server = make_server()
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: "
    answer, sent = send_until_refused(server.port, head, repeat(b"b" * 65536), LIMIT)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert sent < LIMIT


def test_too_many_header_bytes_gets_431(make_server: ServerFactory) -> None:
    """Endless headers, each within the line limit: 431 once 64 KiB of headers arrived."""
    server = make_server()
    answer, sent = send_until_refused(
        server.port, b"GET / HTTP/1.1\r\n", repeat(b"X-Filler: " + b"c" * 4000 + b"\r\n"), LIMIT
    )
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert b"too many header bytes" in answer
    assert sent < LIMIT


def test_too_many_headers_gets_431(make_server: ServerFactory) -> None:
    """101 short headers: 431."""
    server = make_server()
    headers = b"".join(b"X-%d: 1\r\n" % i for i in range(101))
    answer, _ = send_until_refused(
        server.port, UPGRADE_REQUEST + headers + b"\r\n", iter(()), LIMIT
    )
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert b"too many headers" in answer


# -- garbage and wrong protocols -----------------------------------------------------

CLIENT_HELLO = (
    bytes.fromhex(
        "16030100c4010000c00303" + "ab" * 32 + "00" + "0020" + "c02b" * 16 + "0100" + "0075"
    )
    + b"\x00" * 117
)


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"\x00\x01\x02garbage\xff\xfe\r\n\r\n", b"400"),
        (b"\x80\x80\x80\x80" * 64 + b"\r\n\r\n", b"400"),
        (CLIENT_HELLO, b"400"),
        (UPGRADE_REQUEST.replace(b"HTTP/1.1", b"HTTP/1.0") + b"\r\n", b"400"),
        (UPGRADE_REQUEST.replace(b"Host: x\r\n", b"") + b"\r\n", b"400"),
        (b"GET / HTTP/1.1\nHost: x\n\n", b"400"),
        (b"POST / HTTP/1.1\r\nHost: x\r\n\r\n", b"405"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"426"),
    ],
    ids=[
        "garbage",
        "binary-noise",
        "tls-client-hello",
        "http-1.0",
        "no-host",
        "bare-lf",
        "post",
        "plain-get",
    ],
)
def test_garbage_gets_a_clear_4xx_and_no_traceback(
    make_server: ServerFactory,
    caplog: pytest.LogCaptureFixture,
    request_bytes: bytes,
    status: bytes,
) -> None:
    """Not-WebSocket input gets a 4xx status line with a text reason; nothing above INFO logged."""
    caplog.set_level(logging.DEBUG, logger="wsthread")
    server = make_server()
    baseline = thread_count()
    answer, _ = send_until_refused(server.port, request_bytes, iter(()), LIMIT)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 " + status + b" "), answer[:200]
    body = rest.partition(b"\r\n\r\n")[2]
    assert body.strip(), "the answer should say what was wrong"
    assert threads_back_to(baseline)
    assert not no_errors_logged(caplog)


# -- frame-level limits ----------------------------------------------------------------


def test_frame_announcing_2_to_62_bytes_closes_1009_at_once(make_server: ServerFactory) -> None:
    """A header announcing 2**62 bytes gets 1009 without a byte of payload being sent."""
    server = make_server(max_size=2**20)
    sock, _ = raw_websocket(server.port)
    with sock:
        sock.sendall(b"\x82\xff" + struct.pack("!Q", 2**62) + MASK)
        frames = read_frames(sock, is_close, timeout=10)
    assert close_code(frames) == 1009
    assert echo_works(server.port)


def test_64_bit_length_with_msb_set_closes_1002(make_server: ServerFactory) -> None:
    """The most significant bit of a 64-bit length must be 0: 1002."""
    server = make_server(max_size=None)
    sock, _ = raw_websocket(server.port)
    with sock:
        sock.sendall(b"\x82\xff" + struct.pack("!Q", 2**63 + 16) + MASK)
        frames = read_frames(sock, is_close, timeout=10)
    assert close_code(frames) == 1002


def test_65536_one_byte_fragments_are_assembled(make_server: ServerFactory) -> None:
    """A message in 65,536 one-byte fragments arrives whole and is echoed once."""
    server = make_server()
    payload = os.urandom(65536)
    fragments = [client_frame(Opcode.BINARY, payload[:1], fin=False)]
    fragments += [
        client_frame(Opcode.CONTINUATION, payload[i : i + 1], fin=False) for i in range(1, 65535)
    ]
    fragments.append(client_frame(Opcode.CONTINUATION, payload[65535:], fin=True))
    assert len(fragments) == 65536
    sock, _ = raw_websocket(server.port)
    with sock:
        sock.sendall(b"".join(fragments))
        frames = read_frames(sock, lambda f: f.fin, timeout=60)
        sock.sendall(client_frame(Opcode.CLOSE, struct.pack("!H", 1000)))
        closing = read_frames(sock, is_close, timeout=10)
    data_frames = [f for f in frames if f.opcode in (Opcode.BINARY, Opcode.CONTINUATION)]
    echoed = b"".join(f.payload for f in data_frames)
    print(f"\n65,536 fragments sent, {len(echoed)} bytes echoed in {len(data_frames)} frame(s)")
    assert echoed == payload
    assert close_code(closing) == 1000


@pytest.mark.timeout(120)
def test_ping_flood_memory_stays_bounded(make_server: ServerFactory) -> None:
    """A client that floods pings and reads no pongs is pushed back by TCP; the
    server's memory stays bounded, and every ping is answered once read."""
    # write_timeout: long enough that the server waits while we stop reading.
    server = make_server(ping_interval=None, write_timeout=60)
    sock, _ = raw_websocket(server.port)
    ping = client_frame(Opcode.PING, b"p" * 125)
    batch = ping * 1000  # 135 KB
    limit = 256 * 2**20
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        sock.setblocking(False)
        sent = 0
        pending = memoryview(batch)
        # Send until the socket stays unwritable for 2 s: the server stopped reading.
        while sent < limit:
            _, writable, _ = select_one(sock, write=True, timeout=2.0)
            if not writable:
                break
            try:
                n = sock.send(pending)
            except BlockingIOError:
                continue
            sent += n
            pending = pending[n:]
            if not pending:
                pending = memoryview(batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    growth = peak - before
    print(
        f"\nping flood: pushed back after {sent / 2**20:.1f} MiB; "
        f"peak traced growth {growth / 2**20:.1f} MiB"
    )
    assert sent < limit, "the server kept reading pings it could not answer"
    assert growth < 32 * 2**20
    # Read every pong (the server catches up) while we finish the ping in flight and close.
    sock.setblocking(True)
    sock.settimeout(30)
    offset = sent % len(ping)
    pings = sent // len(ping) + (1 if offset else 0)
    pongs = 0
    close_seen: List[int] = []

    def reader() -> None:
        nonlocal pongs
        parser = FrameParser(expect_masked=False)
        while True:
            try:
                data = sock.recv(2**20)
            except OSError:
                return
            if not data:
                return
            parser.feed(data)
            while (frame := parser.next_frame()) is not None:
                if frame.opcode is Opcode.PONG and frame.payload == b"p" * 125:
                    pongs += 1
                elif frame.opcode is Opcode.CLOSE:
                    close_seen.append(parse_close(frame.payload)[0])

    thread = threading.Thread(target=reader)
    thread.start()
    sock.sendall(ping[offset:] if offset else b"")
    sock.sendall(client_frame(Opcode.CLOSE, struct.pack("!H", 1000)))
    thread.join(60)
    sock.close()
    print(f"ping flood: {pings} pings sent, {pongs} pongs received")
    assert not thread.is_alive()
    assert pongs == pings
    assert close_seen == [1000]
    assert echo_works(server.port)


def select_one(sock: socket.socket, *, write: bool, timeout: float) -> Tuple[list, list, list]:
    """select() on one socket."""
    import select

    return select.select([], [sock] if write else [], [], timeout)


def test_deflate_bomb_closes_1009(make_server: ServerFactory) -> None:
    """64 MiB of zeros in about 64 KiB of DEFLATE: 1009, and the server keeps serving."""
    server = make_server(max_size=2**20)
    sock, head = raw_websocket(server.port, b"Sec-WebSocket-Extensions: permessage-deflate\r\n")
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = b"".join(compressor.compress(b"\0" * 2**20) for _ in range(64))
    bomb += compressor.flush(zlib.Z_SYNC_FLUSH)
    with sock:
        assert b"permessage-deflate" in head
        sock.sendall(client_frame(Opcode.BINARY, bomb[:-4], rsv1=True))
        frames = read_frames(sock, is_close, timeout=10)
    print(f"\ndeflate bomb: {len(bomb)} bytes that inflate to 64 MiB")
    assert close_code(frames) == 1009
    assert echo_works(server.port)


# -- what is logged ----------------------------------------------------------------------


def test_payloads_and_credentials_never_reach_the_logs(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """At DEBUG, no log line quotes a message, a ping, a broken frame or a header value."""
    caplog.set_level(logging.DEBUG, logger="wsthread")
    server = make_server()
    secret = "s3cr3t-token"
    # A malformed header line carrying a credential: 400, and the value stays out of the logs.
    answer, _ = send_until_refused(
        server.port,
        b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization Bearer " + secret.encode() + b"\r\n\r\n",
        iter(()),
        LIMIT,
    )
    assert answer.startswith(b"HTTP/1.1 400 ")
    # Messages and control frames, then text that is not UTF-8 (1007).
    sock, _ = raw_websocket(server.port)
    with sock:
        sock.sendall(client_frame(Opcode.TEXT, f"message {secret}".encode()))
        sock.sendall(client_frame(Opcode.PING, secret.encode()))
        read_frames(sock, lambda f: f.opcode is Opcode.PONG)
        sock.sendall(client_frame(Opcode.TEXT, secret.encode() + b"\xff\xfe"))
        frames = read_frames(sock, is_close)
    assert close_code(frames) == 1007
    assert wait_until(lambda: any("closed" in r.getMessage() for r in caplog.records), 10)
    leaked = [r.getMessage() for r in caplog.records if secret in r.getMessage()]
    assert leaked == []
