"""The Writer on a fake transport: partial writes, timeouts, failures mid-frame, the pump step.

The broadcast outbox and fragmented messages have their own files
(``test_outbox.py``, ``test_send_fragments.py``), on the fake transport from here.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import List, Optional, Tuple

import pytest

from conftest import parse_frames
from wsthread.connection.pings import Pings
from wsthread.connection.writer import Writer
from wsthread.exceptions import ConnectionClosed
from wsthread.sansio.frames import Frame, Opcode
from wsthread.sansio.protocol import Protocol, Side

WAIT = 10.0


class FakeTransport:
    """Takes at most ``take`` bytes per send; can fail after ``fail_after`` bytes or time out."""

    def __init__(self, take: int = 1 << 30, fail_after: Optional[int] = None) -> None:
        self.take = take
        self.fail_after = fail_after
        self.flush_times_out = False
        self.sent = bytearray()
        self.out = bytearray()
        self.shutdowns = 0
        self.socket, self.peer = socket.socketpair()  # only for the write pump to poll

    def readable(self) -> bool:
        """Whether the peer's bytes wait unread: never, on this fake."""
        return False

    @property
    def unsent(self) -> int:
        return len(self.out)

    def _send(self) -> None:
        chunk = bytes(self.out[: self.take])
        if self.fail_after is not None and len(self.sent) + len(chunk) > self.fail_after:
            cut = max(0, self.fail_after - len(self.sent))
            self.sent += chunk[:cut]
            del self.out[:cut]
            raise ConnectionResetError("reset by the fake peer")
        self.sent += chunk
        del self.out[: len(chunk)]

    def write(self, data: bytes) -> int:
        self.out += data
        self._send()
        return len(self.out)

    def send_some(self) -> int:
        self._send()
        return len(self.out)

    def flush(self, timeout: Optional[float]) -> None:
        while self.out:
            if self.flush_times_out:
                raise socket.timeout(f"no write progress for {timeout} seconds")
            self._send()

    def shutdown(self) -> None:
        self.shutdowns += 1

    def close(self) -> None:
        self.socket.close()
        self.peer.close()


def frames_written(data: bytes) -> List[Frame]:
    """The frames a server wrote, in order."""
    return parse_frames(data, expect_masked=False)


def opcodes_and_payloads(data: bytes) -> List[Tuple[Opcode, bytes]]:
    """The opcode and payload of each frame a server wrote."""
    return [(frame.opcode, frame.payload) for frame in frames_written(data)]


def frames_in(data: bytes) -> List[bytes]:
    """The payloads of the data and close frames a server wrote."""
    frames = opcodes_and_payloads(data)
    assert all(opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CLOSE) for opcode, _ in frames)
    return [payload for _, payload in frames]


def make(transport: FakeTransport, **options: object) -> Writer:
    settings: dict = {"write_timeout": 1.0, "write_limit": 1 << 20}
    settings.update(options)
    return Writer(
        transport,  # type: ignore[arg-type]
        Protocol(Side.SERVER),
        logger=logging.getLogger("wsthread.test_writer"),
        **settings,  # type: ignore[arg-type]
    )


def test_partial_writes_are_finished_before_write_returns() -> None:
    """A socket that takes 7 bytes at a time still gets every frame whole, in order."""
    transport = FakeTransport(take=7)
    writer = make(transport)
    with writer:
        writer.write(writer.protocol.send_text("hello " * 100))
        writer.write(writer.protocol.send_binary(b"\x00" * 300))
    assert transport.unsent == 0
    assert frames_in(bytes(transport.sent)) == [b"hello " * 100, b"\x00" * 300]
    transport.close()


def test_a_write_that_times_out_fails_the_connection_once(caplog: pytest.LogCaptureFixture) -> None:
    """No progress for write_timeout: shut down once, one WARNING, ConnectionClosed every time."""
    transport = FakeTransport(take=10)
    transport.flush_times_out = True
    writer = make(transport)
    caplog.set_level(logging.DEBUG, logger="wsthread.test_writer")
    for _ in range(3):
        with pytest.raises(ConnectionClosed), writer:
            writer.write(writer.protocol.send_binary(b"x" * 100))
    assert writer.closed and transport.shutdowns == 1
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "took no data" in warnings[0].getMessage()
    transport.close()


def test_a_failure_in_the_middle_of_a_frame_wakes_every_writer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The socket breaks mid-frame: that writer and all queued on its lock get ConnectionClosed."""
    transport = FakeTransport(take=50, fail_after=120)
    writer = make(transport)
    caplog.set_level(logging.DEBUG, logger="wsthread.test_writer")
    errors: List[BaseException] = []
    barrier = threading.Barrier(5)

    def send() -> None:
        barrier.wait(WAIT)
        try:
            with writer:
                writer.write(writer.protocol.send_binary(b"y" * 200))
        except ConnectionClosed as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert len(errors) == 5  # the one that broke it, and the four behind it
    assert transport.shutdowns == 1
    assert len(transport.sent) == 120  # nothing was written after the failure
    logged = [r.getMessage() for r in caplog.records if "write failed" in r.getMessage()]
    assert len(logged) == 1
    transport.close()


def test_the_pump_step_gives_up_after_write_timeout_without_progress() -> None:
    """pump(): progress keeps a slow peer alive; none for write_timeout closes it with 1011."""
    transport = FakeTransport(take=0)
    writer = make(transport, write_timeout=5.0)
    # Bytes a non-waiting write left behind (put straight into the fake, so
    # that the process's real write pump does not step this writer too).
    transport.write(writer.protocol.send_binary(b"w" * 100))
    assert transport.unsent > 0
    # The pump's clock, as the test drives it: the writer made progress at 0.
    assert writer.pump(1.0) is False  # nothing taken yet, within write_timeout
    transport.take = 10
    assert writer.pump(4.0) is False  # progress
    transport.take = 0
    assert writer.pump(8.0) is False  # 4 s since the last progress
    assert writer.pump(10.0) is True  # 6 s: given up
    assert writer.closed and writer.protocol.close_sent is not None
    assert writer.protocol.close_sent[0] == 1011
    transport.close()


class EnqueueDuringWrite(FakeTransport):
    """Queues one broadcast on ``writer`` inside its next write, while the lock is held."""

    writer: Optional[Writer] = None

    def write(self, data: bytes) -> None:
        super().write(data)
        writer, self.writer = self.writer, None
        if writer is not None:
            assert writer.enqueue(True, b"queued meanwhile") is True


def test_a_broadcast_queued_during_a_keepalive_ping_is_written_when_it_ends() -> None:
    """The keepalive tick takes the lock without waiting; releasing it writes the outbox."""
    transport = EnqueueDuringWrite()
    writer = make(transport)
    pings = Pings(writer, writer.protocol, writer.logger, writer.fail)
    pings.tick(0.0, 1.0, None)  # arms the schedule
    transport.writer = writer
    pings.tick(2.0, 1.0, None)  # due: sends the ping, a broadcast arrives meanwhile
    sent = opcodes_and_payloads(bytes(transport.sent))
    assert [opcode for opcode, _ in sent] == [Opcode.PING, Opcode.TEXT]
    assert sent[1][1] == b"queued meanwhile"
    transport.close()


def test_a_broadcast_queued_during_the_late_flush_of_gathered_bytes_is_written() -> None:
    """The gathering timer takes the lock without waiting; releasing it writes the outbox."""
    transport = EnqueueDuringWrite()
    writer = make(transport)
    writer.gather_delay = 60.0  # the test calls the timer's function itself
    with writer:
        writer.write(writer.protocol.send_text("gathered"), gather=True)
    assert transport.sent == b""
    transport.writer = writer
    writer._flush_late()
    assert frames_in(bytes(transport.sent)) == [b"gathered", b"queued meanwhile"]
    transport.close()
