"""Transport over a socketpair: writes never block, flush waits, shutdown wakes a reader."""

from __future__ import annotations

import socket
import threading
import time
from typing import Iterator, List, Tuple

import pytest

from wsthread.connection.transport import Transport

WAIT = 10.0


@pytest.fixture
def pair() -> Iterator[Tuple[Transport, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        yield Transport(ours), theirs
    finally:
        ours.close()
        theirs.close()


def read_exactly(sock: socket.socket, size: int) -> bytes:
    sock.settimeout(WAIT)
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(65536)
        assert chunk, "the stream ended early"
        data += chunk
    return bytes(data)


def test_write_never_blocks_and_keeps_what_the_socket_did_not_take(
    pair: Tuple[Transport, socket.socket],
) -> None:
    """4 MiB to a peer that reads nothing: write() returns at once, the rest waits in unsent."""
    transport, peer = pair
    payload = bytes(range(256)) * (4 * 4096)
    started = time.monotonic()
    transport.write(payload)
    assert time.monotonic() - started < WAIT
    assert 0 < transport.unsent < len(payload)
    received: List[bytes] = []
    reader = threading.Thread(target=lambda: received.append(read_exactly(peer, len(payload))))
    reader.start()
    transport.flush(WAIT)  # now the peer reads: flush returns once everything went out
    reader.join(WAIT)
    assert transport.unsent == 0
    assert received == [payload]


def test_flush_times_out_when_the_peer_takes_nothing(
    pair: Tuple[Transport, socket.socket],
) -> None:
    """flush(timeout) raises socket.timeout after timeout seconds without progress."""
    transport, _ = pair
    transport.write(b"\x00" * (1 << 22))
    started = time.monotonic()
    with pytest.raises(socket.timeout):
        transport.flush(0.2)
    assert time.monotonic() - started >= 0.2
    assert transport.unsent > 0  # nothing is lost: a later flush could still finish


def test_order_is_kept_behind_unsent_bytes(pair: Tuple[Transport, socket.socket]) -> None:
    """A second write behind a backlog goes out after it, never in the middle."""
    transport, peer = pair
    first = b"a" * (1 << 20)
    transport.write(first)
    transport.write(b"the end")
    received: List[bytes] = []
    reader = threading.Thread(
        target=lambda: received.append(read_exactly(peer, len(first) + len(b"the end")))
    )
    reader.start()
    transport.flush(WAIT)
    reader.join(WAIT)
    assert received == [first + b"the end"]


def test_recv_timeout_and_end_of_stream(pair: Tuple[Transport, socket.socket]) -> None:
    """recv(timeout) raises socket.timeout when nothing comes, returns b'' at the end."""
    transport, peer = pair
    with pytest.raises(socket.timeout):
        transport.recv(100, 0.05)
    peer.sendall(b"hi")
    assert transport.recv(100, WAIT) == b"hi"
    peer.shutdown(socket.SHUT_WR)
    assert transport.recv(100, WAIT) == b""


def test_shutdown_wakes_a_thread_blocked_in_recv(pair: Tuple[Transport, socket.socket]) -> None:
    """shutdown() from another thread ends a recv() that waits without a timeout."""
    transport, _ = pair
    results: List[bytes] = []
    reader = threading.Thread(target=lambda: results.append(transport.recv(100)))
    reader.start()
    time.sleep(0.1)
    assert reader.is_alive()
    transport.shutdown()
    reader.join(WAIT)
    assert not reader.is_alive() and results == [b""]
