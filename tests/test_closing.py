"""Closing on a fake transport and a fake reader: the close frame, the wait, the end."""

from __future__ import annotations

import logging
import threading
from typing import Callable, Iterator, List, Optional

import pytest
from test_writer import FakeTransport, make, opcodes_and_payloads

from wsthread.connection.closing import Closing
from wsthread.connection.messages import MessageQueue
from wsthread.connection.pings import Pings
from wsthread.connection.writer import Writer
from wsthread.exceptions import ConnectionClosedOK
from wsthread.sansio.frames import Opcode

WAIT = 10.0


class FakeReader:
    """What Closing asks of a Reader: its thread, whether it opened, start_thread()."""

    def __init__(self, opened: bool = True, on_start: Optional[Callable[[], None]] = None) -> None:
        self.thread: Optional[threading.Thread] = None
        self.opened = opened
        self.starts = 0
        self._on_start = on_start

    def start_thread(self) -> None:
        self.starts += 1
        if self._on_start is not None and self.thread is None:
            self.thread = threading.Thread(target=self._on_start)
            self.thread.start()


@pytest.fixture
def transport() -> Iterator[FakeTransport]:
    fake = FakeTransport()
    yield fake
    fake.close()


def closing_for(writer: Writer, close_timeout: Optional[float] = WAIT) -> Closing:
    logger = logging.getLogger("wsthread.test_closing")
    pings = Pings(writer, writer.protocol, logger, writer.fail)
    return Closing(writer.protocol, writer, MessageQueue(16), pings, close_timeout, logger)


def close_frames(transport: FakeTransport) -> List[bytes]:
    return [
        payload
        for opcode, payload in opcodes_and_payloads(bytes(transport.sent))
        if opcode is Opcode.CLOSE
    ]


def test_a_connection_that_never_opened_is_closed_at_once(transport: FakeTransport) -> None:
    """Before the reader began, close() sends the frame, shuts down and ends without waiting."""
    writer = make(transport)
    closing = closing_for(writer)
    reader = FakeReader(opened=False)
    closing.close(1000, "bye", reader)  # type: ignore[arg-type]
    assert close_frames(transport) == [b"\x03\xe8bye"]
    assert transport.shutdowns == 1
    assert closing.ended
    assert reader.starts == 0


def test_close_waits_for_the_reader_to_end_the_connection(transport: FakeTransport) -> None:
    """close() starts the reader thread and returns once release() ran there."""
    writer = make(transport)
    closing = closing_for(writer)
    protocol = writer.protocol
    peer_closed = threading.Event()

    def reader_thread() -> None:  # reads the peer's close frame, then ends the connection
        peer_closed.wait(WAIT)
        protocol.receive_data(bytes([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8]))
        closing.release()

    reader = FakeReader(on_start=reader_thread)
    closer = threading.Thread(target=closing.close, args=(1000, "", reader))
    closer.start()
    assert not closing.ended
    peer_closed.set()
    closer.join(WAIT)
    assert not closer.is_alive()
    assert closing.ended
    assert reader.starts == 1
    assert isinstance(closing.exception(), ConnectionClosedOK)
    assert closing.exception().code == 1000


def test_a_silent_peer_gets_its_transport_shut_after_close_timeout(
    transport: FakeTransport,
) -> None:
    """Past close_timeout, the transport is shut down, which lets the reader end."""
    writer = make(transport)
    closing = closing_for(writer, close_timeout=0.01)

    def reader_thread() -> None:  # a reader blocked in recv() until the shutdown wakes it
        while not writer.closed:
            threading.Event().wait(0.01)
        closing.release()

    closing.close(1001, "", FakeReader(on_start=reader_thread))  # type: ignore[arg-type]
    assert closing.ended
    assert transport.shutdowns == 1
    assert close_frames(transport) == [b"\x03\xe9"]


def test_only_the_first_close_sends_a_frame(transport: FakeTransport) -> None:
    """A second close() sends nothing more and returns, the connection having ended."""
    writer = make(transport)
    closing = closing_for(writer)
    reader = FakeReader(opened=False)
    closing.close(1000, "", reader)  # type: ignore[arg-type]
    closing.close(4000, "again", reader)  # type: ignore[arg-type]
    assert close_frames(transport) == [b"\x03\xe8"]


def test_close_on_the_reader_thread_does_not_wait(transport: FakeTransport) -> None:
    """Called on the reader's own thread, close() sends the frame and returns at once."""
    writer = make(transport)
    closing = closing_for(writer)
    reader = FakeReader()
    reader.thread = threading.current_thread()
    closing.close(1000, "", reader)  # type: ignore[arg-type]
    assert close_frames(transport) == [b"\x03\xe8"]
    assert not closing.ended
    assert reader.starts == 0


def test_release_wakes_pings_and_receivers(transport: FakeTransport) -> None:
    """The end sets every waiting ping's event and shuts the transport down."""
    writer = make(transport)
    closing = closing_for(writer)
    waiter = closing.pings.send(b"ping")
    assert not waiter.is_set()
    closing.release()
    assert waiter.is_set()
    assert closing.ended
    assert transport.shutdowns == 1
