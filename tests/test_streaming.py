"""``recv_streaming()`` over real sockets: pieces as they arrive, every limit kept.

The sending side is a raw socket writing frames by hand where the test must
control exactly when each frame leaves, and wsthread's own client
(``send(iterable)``) where it only needs a large fragmented message.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Iterator, List

import pytest

import wsthread
from conftest import ServerFactory, raw_websocket, reap, wait_until
from wsthread import ServerConnection
from wsthread.sansio.frames import Frame, Opcode, serialize_frame

MASK = b"\x0a\x0b\x0c\x0d"


def frame(opcode: Opcode, payload: bytes, fin: bool = True) -> bytes:
    """A masked client frame."""
    return serialize_frame(Frame(opcode, payload, fin), mask=MASK)


def read_until_close(sock: socket.socket) -> int:
    """Read frames until the server's close frame; return its close code."""
    data = b""
    sock.settimeout(10)
    while True:
        chunk = sock.recv(65536)
        assert chunk, "EOF before a close frame"
        data += chunk
        index = data.find(b"\x88")
        if index >= 0 and len(data) >= index + 4:
            return int.from_bytes(data[index + 2 : index + 4], "big")


def test_pieces_arrive_before_the_message_ends(make_server: ServerFactory) -> None:
    """Each frame is yielded as soon as it is read, while the rest is not even sent yet."""
    pieces: List[Any] = []
    got = threading.Semaphore(0)

    def handler(ws: ServerConnection) -> None:
        for piece in ws.recv_streaming():
            pieces.append(piece)
            got.release()
        pieces.append(ws.recv())  # the next message is whole again
        got.release()

    server = make_server(handler)
    sock, _ = raw_websocket(server.port)
    with sock:
        sock.sendall(frame(Opcode.TEXT, "é".encode()[:1], fin=False))
        sock.sendall(frame(Opcode.CONTINUATION, "é".encode()[1:] + b"t", fin=False))
        assert got.acquire(timeout=5)  # "é" split in two: the first piece is empty
        assert got.acquire(timeout=5)
        assert pieces == ["", "ét"]
        sock.sendall(frame(Opcode.CONTINUATION, b"!", fin=True))
        assert got.acquire(timeout=5)
        sock.sendall(frame(Opcode.BINARY, b"next"))
        assert got.acquire(timeout=5)
    assert pieces == ["", "ét", "!", b"next"]


def test_a_whole_message_streams_as_one_piece_and_decode_applies(
    make_server: ServerFactory,
) -> None:
    """An unfragmented message is one piece; decode=False/True convert piece by piece."""
    results: List[Any] = []

    def handler(ws: ServerConnection) -> None:
        results.append(list(ws.recv_streaming()))
        results.append(list(ws.recv_streaming(decode=False)))
        results.append(list(ws.recv_streaming(decode=True)))
        ws.send("done")

    server = make_server(handler)
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        ws.send(b"whole")
        ws.send(["té", "xt"])
        ws.send([b"\xc3", b"\xa9t\xc3", b"\xa9"])  # "été" as binary, cut inside characters
        assert ws.recv(timeout=5) == "done"
    assert results[0] == [b"whole"]
    assert results[1] == ["té".encode(), b"xt", b""]
    assert "".join(results[2]) == "été" and all(isinstance(p, str) for p in results[2])


# Built like test_server.py's test_recv_timeout_does_not_harm_connection on
# purpose: the same recv(timeout) in the handler, but here the timeout falls
# between two fragments of one message, and the first fragment must be kept.
def test_recv_timeout_inside_a_fragmented_message_keeps_its_pieces(
    make_server: ServerFactory,
) -> None:
    """A recv() that times out half way through a message loses nothing; the next one ends it."""
    outcome: List[Any] = []

    def handler(ws: ServerConnection) -> None:
        try:
            ws.recv(timeout=0.3)
        except TimeoutError:
            outcome.append("timeout")
        outcome.append(ws.recv(timeout=10))

    server = make_server(handler)
    sock, _ = raw_websocket(server.port)
    with sock:
        sock.sendall(frame(Opcode.TEXT, b"first half, ", fin=False))
        assert wait_until(lambda: outcome == ["timeout"])
        sock.sendall(frame(Opcode.CONTINUATION, b"second half"))
        assert wait_until(lambda: len(outcome) == 2)
    assert outcome == ["timeout", "first half, second half"]


def test_an_abandoned_stream_skips_the_rest_of_its_message(make_server: ServerFactory) -> None:
    """Breaking out of recv_streaming() drops that message's remaining pieces only."""
    outcome: List[Any] = []

    def handler(ws: ServerConnection) -> None:
        stream = ws.recv_streaming()
        outcome.append(next(stream))
        stream.close()  # not interested in the rest
        outcome.append(ws.recv())

    server = make_server(handler)
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        ws.send([b"head", b"body", b"tail"])
        ws.send("the next message")
        assert wait_until(lambda: len(outcome) == 2)
    assert outcome == [b"head", "the next message"]


def test_recv_beside_an_unfinished_stream_of_the_same_thread_raises(
    make_server: ServerFactory,
) -> None:
    """recv() while this thread's stream is half read raises at once instead of waiting for ever."""
    outcome: List[Any] = []

    def handler(ws: ServerConnection) -> None:
        stream = ws.recv_streaming()
        outcome.append(next(stream))
        for receive in (ws.recv, lambda: next(ws.recv_streaming())):
            try:
                receive()
            except RuntimeError as exc:
                outcome.append(str(exc))
        outcome.append(b"".join(stream))  # the stream goes on where it was
        outcome.append(ws.recv())

    server = make_server(handler)
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        ws.send([b"head", b"body", b"tail"])
        ws.send("the next message")
        assert wait_until(lambda: len(outcome) == 5)
    assert outcome[0] == b"head"
    assert "recv_streaming() iterator that is not finished" in outcome[1]
    assert "recv_streaming() iterator that is not finished" in outcome[2]
    assert outcome[3:] == [b"bodytail", "the next message"]


def test_an_iterator_kept_after_its_last_piece_blocks_nobody(make_server: ServerFactory) -> None:
    """Once the last piece is handed over, recv() works even if the iterator is never finished."""
    outcome: List[Any] = []

    def handler(ws: ServerConnection) -> None:
        whole = ws.recv_streaming()
        outcome.append(next(whole))  # a one-frame message: its only piece
        fragmented = ws.recv_streaming()
        # The client sends each piece as a frame, then an empty final one.
        outcome.append([next(fragmented) for _ in range(3)])  # its last piece too
        outcome.append(ws.recv(timeout=5))
        outcome.append(list(whole) + list(fragmented))  # nothing left in either

    server = make_server(handler)
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        ws.send(b"one")
        ws.send([b"two", b"three"])
        ws.send("four")
        assert wait_until(lambda: len(outcome) == 4)
    assert outcome == [b"one", [b"two", b"three", b""], "four", []]


def test_invalid_utf8_in_the_middle_closes_with_1007(make_server: ServerFactory) -> None:
    """The good pieces come out; the invalid one fails the connection with 1007."""
    pieces: List[str] = []
    errors: List[BaseException] = []

    def handler(ws: ServerConnection) -> None:
        try:
            for piece in ws.recv_streaming():
                pieces.append(piece)  # type: ignore[arg-type]
        except wsthread.ConnectionClosed as exc:
            errors.append(exc)
            raise

    def fragments() -> Iterator[bytes]:
        for index in range(1000):
            yield b"\xff\xfe" if index == 500 else f"piece {index:4d}, ".encode()

    server = make_server(handler)
    ws = wsthread.connect(f"ws://127.0.0.1:{server.port}/", close_timeout=2)
    with pytest.raises(wsthread.ConnectionClosed):
        ws.send(fragments(), text=True)  # bytes sent as text, unchecked by the sender
        ws.recv(timeout=10)
    ws.close()
    assert ws.close_code == 1007
    assert wait_until(lambda: bool(errors))
    assert pieces == [f"piece {index:4d}, " for index in range(500)]
    assert errors[0].sent_code == 1007  # type: ignore[attr-defined]


def test_a_slow_stream_consumer_pushes_back_on_the_sender() -> None:
    """While the consumer holds on to a piece, the server stops reading and the sender stalls."""
    fragment = 64 * 1024
    total = 32 * 2**20  # the message: far more than every buffer on the way together
    release = threading.Event()
    received: List[int] = []

    def handler(ws: ServerConnection) -> None:
        size = 0
        for index, piece in enumerate(ws.recv_streaming()):
            size += len(piece)
            if index == 0:
                release.wait(30)
        received.append(size)

    # Small kernel buffers on both sides, fixed (no autotuning): what is in
    # flight is then a few hundred KiB, whatever the machine's settings.
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    listener.bind(("127.0.0.1", 0))
    server = wsthread.serve(
        handler, sock=listener, max_size=None, max_queue=4, close_timeout=2
    ).start()
    try:
        sock, _ = raw_websocket(server.port)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        sock.setblocking(False)
        chunks = [frame(Opcode.BINARY, b"\x01" * fragment, fin=False)] + [
            frame(Opcode.CONTINUATION, b"\x01" * fragment, fin=i == total // fragment - 1)
            for i in range(1, total // fragment)
        ]
        wire = b"".join(chunks)
        sent = 0
        last_progress = time.monotonic()
        while time.monotonic() - last_progress < 1.0:  # until a whole second without progress
            try:
                count = sock.send(wire[sent : sent + 65536])
            except BlockingIOError:
                time.sleep(0.01)
                continue
            sent += count
            last_progress = time.monotonic()
        stalled_at = sent
        assert stalled_at < 4 * 2**20, f"the sender was not held back: {stalled_at} bytes taken"
        connection = server.connections[0]
        assert connection.stats()["queued"] <= 4
        release.set()
        sock.setblocking(True)
        sock.settimeout(30)
        sock.sendall(wire[sent:])
        assert wait_until(lambda: bool(received), timeout=30)
        assert received == [total]
        sock.close()
    finally:
        server.shutdown()


SERVER = """
import hashlib, json, sys, wsthread

def rss_peak():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

def handler(ws):
    ws.recv()  # a first small message, to warm everything up
    before = rss_peak()
    digest, size, pieces = hashlib.sha256(), 0, 0
    for piece in ws.recv_streaming():
        digest.update(piece)
        size += len(piece)
        pieces += 1
    ws.send(json.dumps({"sha256": digest.hexdigest(), "size": size, "pieces": pieces,
                        "growth": rss_peak() - before}))
    ws.recv()

server = wsthread.serve(handler, "127.0.0.1", 0, max_size=2**27, close_timeout=2,
                        compression=None)
print(server.port, flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    server.shutdown()
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_64_mib_in_1000_fragments_streams_in_little_memory() -> None:
    """64 MiB in 1,000 fragments: the hash is right; the server's peak RSS grows little."""
    fragment = 67109  # 1,000 of them: 67,109,000 bytes, just over 64 MiB
    child = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        expected = hashlib.sha256()

        def fragments() -> Iterator[bytes]:
            for index in range(1000):
                piece = index.to_bytes(4, "big") * (fragment // 4) + b"x" * (fragment % 4)
                expected.update(piece)
                yield piece

        with wsthread.connect(
            f"ws://127.0.0.1:{port}/", compression=None, close_timeout=5, open_timeout=30
        ) as ws:
            ws.send("warm up")
            ws.send(fragments())
            report = json.loads(ws.recv(timeout=120))
            ws.send("done")
        assert report["size"] == 1000 * fragment >= 64 * 2**20
        assert report["sha256"] == expected.hexdigest()
        assert report["pieces"] == 1001  # each fragment, and the empty final frame
        # "Well under the message size": a quarter of it at most.
        assert report["growth"] < 16 * 2**20, report
        print(f"RSS peak growth while streaming 64 MiB: {report['growth'] / 2**20:.1f} MiB")
    finally:
        reap(child)
