"""The broadcast outbox on a fake transport: never waits, drained by whoever frees the lock."""

from __future__ import annotations

import logging
import threading
from typing import List

import pytest
from test_writer import WAIT, FakeTransport, frames_in, make

from wsthread.connection.writer import Outbox
from wsthread.sansio.prepared import PreparedMessage


def test_the_outbox_closes_a_peer_past_write_limit_with_1013(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """enqueue() never waits; past write_limit bytes waiting it fails the peer with 1013."""
    transport = FakeTransport(take=0)  # a peer that reads nothing
    writer = make(transport, write_limit=1000)
    caplog.set_level(logging.WARNING, logger="wsthread.test_writer")
    accepted = [writer.enqueue(False, b"z" * 400) for _ in range(3)]
    assert accepted == [True, True, True]  # 0, 400, 800 bytes waiting: under the limit
    assert writer.enqueue(False, b"z" * 400) is False  # 1,200 waiting: closed
    assert writer.closed and transport.shutdowns == 1
    # fail() never waits for the writer lock: when the write pump holds it at that
    # instant (seen with the GIL off), the peer is dropped without the close frame.
    assert writer.protocol.close_sent in ((1013, "client too slow"), None)
    assert any("closing with 1013" in r.getMessage() for r in caplog.records)
    assert writer.enqueue(False, b"late") is False  # closed: nothing more is queued
    transport.close()


def test_the_outbox_is_written_when_the_lock_is_released() -> None:
    """A broadcast queued while another thread holds the lock goes out when it leaves."""
    transport = FakeTransport()
    writer = make(transport)
    with writer:
        writer.write(writer.protocol.send_text("first"))
        assert writer.enqueue(True, b"queued meanwhile") is True
        assert frames_in(bytes(transport.sent)) == [b"first"]  # not yet: the lock is busy
    assert frames_in(bytes(transport.sent)) == [b"first", b"queued meanwhile"]
    transport.close()


def test_an_idle_connection_has_no_outbox_until_a_broadcast_finds_it_busy() -> None:
    """A broadcast to an idle writer is written at once; the outbox is made only when one waits."""
    transport = FakeTransport()
    writer = make(transport)
    assert writer.enqueue(True, b"one") is True  # idle: written directly
    assert writer.outbox is None
    with writer:  # busy: the next one waits in a new outbox, written when the lock is let go
        assert writer.enqueue(True, b"two") is True
        outbox = writer.outbox
        assert isinstance(outbox, Outbox) and len(outbox.items) == 1
        assert writer.enqueue(True, b"three") is True
        assert writer.outbox is outbox
    assert not outbox.items
    assert frames_in(bytes(transport.sent)) == [b"one", b"two", b"three"]
    transport.close()


def test_messages_queued_behind_a_close_frame_are_dropped() -> None:
    """A broadcast queued while the holder sends the close frame never follows it."""
    transport = FakeTransport()
    writer = make(transport)
    with writer:
        assert writer.enqueue(True, b"queued meanwhile") is True
        writer.write(writer.protocol.send_close(1001, "going away"))
    assert frames_in(bytes(transport.sent)) == [b"\x03\xe9going away"]
    assert writer.outbox is not None and not writer.outbox.items
    assert writer.enqueue(True, b"later") is False  # closing: not even queued
    transport.close()


def test_the_write_pump_step_drains_what_was_left_in_the_outbox() -> None:
    """pump() takes the lock without waiting, and drains the outbox when it lets go."""
    transport = FakeTransport()
    writer = make(transport)
    writer.lock.acquire()  # a holder that let go without draining (not the Writer's way)
    assert writer.enqueue(True, b"left behind") is True
    writer.lock.release()
    assert transport.sent == b""
    assert writer.pump(0.0) is True
    assert frames_in(bytes(transport.sent)) == [b"left behind"]
    transport.close()


def test_broadcasts_from_many_threads_each_go_out_once_and_whole() -> None:
    """Eight threads enqueue while a ninth sends: every frame arrives once, none interleaved."""
    transport = FakeTransport(take=5)
    writer = make(transport, write_limit=None)
    senders = 8
    per_sender = 50
    start = threading.Barrier(senders + 1)
    errors: List[BaseException] = []

    def broadcast(index: int) -> None:
        try:
            start.wait(WAIT)
            for number in range(per_sender):
                assert writer.enqueue(False, b"%d-%d" % (index, number)) is True
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=broadcast, args=(i,)) for i in range(senders)]
    for thread in threads:
        thread.start()
    start.wait(WAIT)
    for number in range(per_sender):
        with writer:
            writer.write(writer.protocol.send_text(f"direct {number}"))
    for thread in threads:
        thread.join(WAIT)
    assert not errors
    assert writer.outbox is not None
    with writer:  # a last enqueue may have found the lock busy: leaving drains it
        writer.flush()
    with writer:
        writer.flush()
    received = frames_in(bytes(transport.sent))
    expected = {b"%d-%d" % (i, n) for i in range(senders) for n in range(per_sender)}
    broadcasts = [payload for payload in received if not payload.startswith(b"direct")]
    assert sorted(broadcasts) == sorted(expected)
    for index in range(senders):  # one sender's messages keep their order
        mine = [p for p in broadcasts if p.startswith(b"%d-" % index)]
        assert mine == [b"%d-%d" % (index, n) for n in range(per_sender)]
    assert [p for p in received if p.startswith(b"direct")] == [
        b"direct %d" % n for n in range(per_sender)
    ]
    assert writer.messages_sent == senders * per_sender
    transport.close()


class RecordingTransport(FakeTransport):
    """Also keeps each buffer handed to write(), to see which bytes object it was."""

    def __init__(self, take: int = 1 << 30) -> None:
        super().__init__(take)
        self.buffers: List[bytes] = []

    def write(self, data: bytes) -> int:
        self.buffers.append(data)
        return super().write(data)


def test_an_idle_writer_sends_the_shared_frame_from_the_broadcasting_thread() -> None:
    """Lock free, nothing queued: the prepared frame itself goes to the transport at once."""
    message = PreparedMessage(b"tick", text=False)
    transports = [RecordingTransport() for _ in range(3)]
    writers = [make(transport) for transport in transports]
    assert all(writer.send_prepared(message) for writer in writers)
    frame = message.plain()[0]
    for writer, transport in zip(writers, transports):
        assert transport.buffers == [frame] and transport.buffers[0] is frame
        assert writer.outbox is None  # never made: nothing had to wait
        assert writer.messages_sent == 1 and writer.buffered_amount == 0
        transport.close()


def test_a_prepared_frame_never_overtakes_what_is_queued() -> None:
    """With messages still queued (the lock free), a new one goes behind them, not around."""
    transport = FakeTransport()
    writer = make(transport)
    writer.lock.acquire()  # a holder that let go without draining (not the Writer's way)
    assert writer.enqueue(False, b"first") is True
    writer.lock.release()
    assert writer.send_prepared(PreparedMessage(b"second", text=False)) is True
    assert frames_in(bytes(transport.sent)) == [b"first", b"second"]
    transport.close()


def test_what_the_socket_does_not_take_waits_in_the_transport_and_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A direct write the socket takes part of leaves the rest to the pump, in buffered_amount."""
    transport = FakeTransport(take=3)
    writer = make(transport, write_limit=50)
    caplog.set_level(logging.WARNING, logger="wsthread.test_writer")
    assert writer.send_prepared(PreparedMessage(b"x" * 40, text=False)) is True
    assert writer.buffered_amount == 42 - 3 and transport.unsent == 39
    assert writer.send_prepared(PreparedMessage(b"y" * 40, text=False)) is True  # 39 <= 50
    assert writer.send_prepared(PreparedMessage(b"z", text=False)) is False  # 78 > 50: 1013
    assert writer.closed  # with 1013, or dropped if the pump held the lock (see above)
    assert writer.protocol.close_sent in ((1013, "client too slow"), None)
    assert any("closing with 1013" in r.getMessage() for r in caplog.records)
    transport.close()
