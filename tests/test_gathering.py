"""Write coalescing ("gathering"): replies wait for one system call only while the rule allows.

The rule (docs/explanation/messages.md): a reply sent by the thread that
receives, while more received messages wait to be taken, may be gathered;
gathered bytes go out with the next write of any kind, before the receiving
thread waits for data, or after ``gather_delay`` (1 ms by default). These
tests use a real socket pair and lengthen ``gather_delay`` where they need
to see gathered bytes still in memory.
"""

from __future__ import annotations

import os
import select
import socket
import threading
from typing import Iterator, List, Tuple

import pytest

from conftest import wait_until
from wsthread.connection import Connection
from wsthread.connection.transport import Transport
from wsthread.exceptions import ConnectionClosed
from wsthread.sansio.frames import Frame, FrameParser, Opcode, serialize_frame
from wsthread.sansio.protocol import Protocol, Side


def client_frame(text: str) -> bytes:
    """A masked text frame, as a client sends it."""
    return serialize_frame(Frame(Opcode.TEXT, text.encode()), os.urandom(4))


def readable(sock: socket.socket) -> bool:
    """Whether ``sock`` has bytes to read right now."""
    return bool(select.select([sock], [], [], 0)[0])


def read_frames(sock: socket.socket, count: int) -> List[Frame]:
    """Read ``count`` server frames from ``sock`` (5 s at most)."""
    parser = FrameParser(expect_masked=False)
    frames: List[Frame] = []
    sock.settimeout(5)
    while len(frames) < count:
        frame = parser.next_frame()
        if frame is None:
            data = sock.recv(65536)
            assert data, f"EOF after {len(frames)} frames"
            parser.feed(data)
            continue
        frames.append(frame)
    return frames


@pytest.fixture
def pair() -> Iterator[Tuple[Connection, socket.socket]]:
    """A server-side Connection on one end of a socket pair, the peer's raw socket on the other."""
    ours, peer = socket.socketpair()
    connection = Connection(
        Transport(ours), Protocol(Side.SERVER), close_timeout=1, write_timeout=2
    )
    connection.start()
    connection.writer.gather_delay = 60.0  # only the rule's other events send them
    yield connection, peer
    peer.close()
    connection.writer.shutdown()
    ours.close()


def queue_messages(connection: Connection, peer: socket.socket, count: int) -> None:
    """Have ``count`` messages received and waiting, the first one taken."""
    peer.sendall(b"".join(client_frame(f"m{i}") for i in range(count)))
    assert connection.recv(timeout=5) == "m0"
    assert wait_until(lambda: connection.stats()["queued"] == count - 1)


def test_replies_gather_while_messages_wait_and_go_out_in_one_write(pair) -> None:  # type: ignore[no-untyped-def]
    """Replies to a backlog stay in memory until the last one, then leave together, in order."""
    connection, peer = pair
    queue_messages(connection, peer, 5)
    connection.send("r0")
    for i in range(1, 5):
        assert not readable(peer), f"reply {i - 1} left before the backlog was answered"
        assert connection.recv(timeout=5) == f"m{i}"
        connection.send(f"r{i}")  # the last one: nothing waits, so everything goes
    assert [f.payload for f in read_frames(peer, 5)] == [b"r0", b"r1", b"r2", b"r3", b"r4"]


def test_recv_that_must_wait_sends_gathered_replies_first(pair) -> None:  # type: ignore[no-untyped-def]
    """A gathered reply goes out before recv() waits for data (and times out)."""
    connection, peer = pair
    queue_messages(connection, peer, 2)
    connection.send("r0")
    assert not readable(peer)
    assert connection.recv(timeout=5) == "m1"
    assert not readable(peer)  # not sent yet: recv() had a message for us without waiting
    with pytest.raises(TimeoutError):
        connection.recv(timeout=0.2)
    assert [f.payload for f in read_frames(peer, 1)] == [b"r0"]


def test_control_frames_are_never_delayed_and_never_overtake(pair) -> None:  # type: ignore[no-untyped-def]
    """A ping goes out at once, behind the gathered reply it must not overtake."""
    connection, peer = pair
    queue_messages(connection, peer, 3)
    connection.send("r0")
    assert not readable(peer)
    connection.ping(b"now")
    frames = read_frames(peer, 2)
    assert [(f.opcode, f.payload) for f in frames] == [(Opcode.TEXT, b"r0"), (Opcode.PING, b"now")]


def test_another_threads_send_is_not_gathered(pair) -> None:  # type: ignore[no-untyped-def]
    """Only the receiving thread's replies gather: a send from another thread leaves at once."""
    connection, peer = pair
    queue_messages(connection, peer, 3)
    thread = threading.Thread(target=connection.send, args=("from elsewhere",))
    thread.start()
    thread.join(5)
    assert [f.payload for f in read_frames(peer, 1)] == [b"from elsewhere"]


def test_a_thread_that_goes_off_to_compute_has_its_replies_sent_anyway(pair) -> None:  # type: ignore[no-untyped-def]
    """With the default bound, a gathered reply leaves without any further call."""
    connection, peer = pair
    connection.writer.gather_delay = 0.001
    queue_messages(connection, peer, 3)
    connection.send("r0")  # then this thread neither sends nor receives again
    assert [f.payload for f in read_frames(peer, 1)] == [b"r0"]
    assert connection.stats()["queued"] == 2  # the backlog is still there


def test_send_keeps_back_pressure_and_fails_on_a_stalled_peer() -> None:
    """Gathering never hides back-pressure: a peer that reads nothing fails send() on time."""
    ours, peer = socket.socketpair()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    connection = Connection(
        Transport(ours), Protocol(Side.SERVER), close_timeout=1, write_timeout=0.5
    )
    connection.start()
    try:
        queue_messages(connection, peer, 3)
        with pytest.raises(ConnectionClosed):
            for _ in range(1_000_000):  # at most 16 MB: the socket's buffers are far smaller
                connection.send("x" * 16)  # gathered while the socket keeps up, then waits
    finally:
        peer.close()
        connection.writer.shutdown()
        ours.close()


def test_send_on_a_closed_connection_raises(pair) -> None:  # type: ignore[no-untyped-def]
    """send() raises ConnectionClosed once the connection is closed, gathered or not."""
    connection, peer = pair
    queue_messages(connection, peer, 3)
    connection.writer.shutdown()
    with pytest.raises(ConnectionClosed):
        connection.send("too late")
