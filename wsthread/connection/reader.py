"""The receiving half of a connection and its one way to end: on the reader thread or an app thread.

A :class:`Reader` reads its connection's socket, feeds the sans-I/O
protocol and puts what comes out where it belongs: messages (and the
pieces of fragmented ones) in the :class:`~wsthread.connection.messages.MessageQueue`,
pongs to the connection's pings, pings answered through the
:class:`~wsthread.connection.writer.Writer`. Which thread reads::

    application thread in recv(), nothing queued, socket free
        └─ read_directly(): read once, here (no thread switch per message)
    nobody has read for HOLD seconds (ReaderStarter checks), a ping waits
    for its pong (read_soon), or the end came
        └─ the reader thread (_run): reads whenever no application thread does

Whichever thread reads the end of the stream (a close frame, a protocol
error, EOF, a broken socket) ends the connection, in :meth:`Reader._end`:
it answers the peer, lets the protocol decide whether to wait for the
peer's TCP close (``Protocol.should_close_transport``), and then calls the
connection's release, which wakes every waiter.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable, Optional

from ..exceptions import ConnectionClosed
from ..runtime.deadline import Deadline
from ..sansio.protocol import CloseReceived, Fragment, Message, Ping, Pong, Protocol
from .messages import HOLD, MessageQueue
from .threads import ReaderStarter, shared, start_thread
from .transport import Transport
from .writer import Writer

__all__ = ["Reader"]

# How much one recv() asks for.
# 64 KiB stays under glibc's mmap threshold: a blocked recv() of 256 KiB
# held a fresh mapping per idle connection (measured: 40 KB -> 37 KB of RSS).
_RECV_SIZE = 64 * 1024
_HANDSHAKE_READ = 65536


class Reader:
    """Reads one connection's socket, on the reader thread or an application thread.

    Args:
        transport: the connection's transport.
        protocol: the connection's protocol; its receiving half is used only
            by the thread that holds the read turn.
        messages: where received messages go.
        writer: for the automatic replies (pongs, the close reply).
        close_timeout: how long to wait for the application to take the
            messages before a close, and for a server's TCP close.
        logger: the connection's logger.
        on_pong: called with a pong's payload, on the reading thread.
        on_end: releases the connection and wakes its waiters; called once,
            at the end.
        name: the reader thread's name.
        stack_size: the reader thread's stack size (``None``: the default).
    """

    def __init__(
        self,
        transport: Transport,
        protocol: Protocol,
        messages: MessageQueue,
        writer: Writer,
        *,
        close_timeout: Optional[float],
        logger: Any,
        on_pong: Callable[[bytes], None],
        on_end: Callable[[], None],
        name: str,
        stack_size: Optional[int] = None,
    ) -> None:
        # The parts it works with, kept as given: alike in Writer and Closing on
        # purpose (each part holds its own references; none reaches through another).
        self.transport = transport
        self.protocol = protocol
        self.messages = messages
        self.writer = writer
        self.close_timeout = close_timeout
        self.logger = logger
        self._on_pong = on_pong
        self._on_end = on_end
        self._name = name
        self._stack_size = stack_size
        self.thread: Optional[threading.Thread] = None  # made when needed
        """The reader thread, once it was started (it never is on many connections)."""
        self.opened = False
        """Whether :meth:`begin` was called (the opening handshake succeeded)."""
        # Counters for Connection.stats(), written only by the thread holding the turn.
        self.messages_received = 0
        self.bytes_received = 0
        # Bytes read from the socket and not handed to the protocol yet: those
        # that came behind the handshake, or those a KeyboardInterrupt kept
        # from it (see _process). Whoever reads next feeds them first.
        self._unfed = b""
        self._read_error: Optional[OSError] = None
        self._started = False
        self._start_lock = threading.Lock()
        self._check_pending = False
        self._buffered = 0  # the protocol's bytes_buffered, as last told to the queue

    # -- the opening handshake ------------------------------------------------

    def read_http(self, parser: Any, deadline: Deadline) -> Any:
        """Read the peer's handshake until ``parser.feed()`` returns it; ``None`` at EOF.

        The opening handshake's read loop, for both sides.

        Raises:
            socket.timeout: the deadline passed.
            InvalidHandshake: what ``parser.feed()`` raises for a bad message.
            OSError: the connection failed.
        """
        while True:
            data = self.transport.recv(_HANDSHAKE_READ, deadline.remaining())
            if not data:
                return None
            message = parser.feed(data)
            if message is not None:
                return message

    def handshake_done(self, trailing_data: bytes) -> None:
        """Keep the bytes that came right behind the handshake: the reader thread's first."""
        if trailing_data:
            self._unfed = trailing_data
            self.messages.reader_first()

    # -- who reads -------------------------------------------------------------

    def begin(self) -> None:
        """Begin receiving: the reader thread starts now only if bytes are waiting."""
        self.opened = True
        if self._unfed:
            self.start_thread()  # the bytes behind the handshake are the reader's
        else:
            self._arm_check(HOLD)

    def start_thread(self) -> None:
        """Start the reader thread unless it runs (or ran) already."""
        with self._start_lock:
            if self._started:
                return
            self._started = True
            self.thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        start_thread(self.thread, self._stack_size)

    def after_take(self) -> None:
        """After an application thread took (or waited for) a message: check on the socket soon."""
        if not self._started:
            if self.messages.pong_awaited:
                self.read_soon()
            elif not self._check_pending:
                self._arm_check(HOLD)

    def read_soon(self) -> None:
        """A ping waits for its pong: have the socket read now, not ``HOLD`` seconds later.

        Starts the reader thread unless an application thread reads (it will
        read the pong itself, and calls :meth:`after_take` when it stops).
        """
        if self._started or not self.opened:
            return
        delay = self.messages.reader_delay()
        if delay is not None and delay <= 0:
            self.start_thread()

    def _arm_check(self, delay: float) -> None:
        """Ask :class:`ReaderStarter` to look at this connection in ``delay`` seconds."""
        self._check_pending = True
        shared(ReaderStarter).schedule(time.monotonic() + delay, self._check)

    def _check(self) -> None:
        """Start the reader thread if nobody has read for a while (called by ReaderStarter)."""
        self._check_pending = False
        if self._started:
            return
        delay = self.messages.reader_delay()
        if delay is None:
            return  # an application thread reads; it arms a check when it stops
        if delay <= 0:
            self.start_thread()
        else:
            self._arm_check(delay)

    # -- reading -----------------------------------------------------------------

    def _run(self) -> None:
        """The reader thread: read whenever it is its turn until the stream ends, then end."""
        protocol = self.protocol
        inbox = self.messages
        transport = self.transport
        try:
            # The reader starts with the turn when bytes came behind the handshake.
            if self._unfed and self._process(block=True):
                inbox.reader_done()
            # An application thread that read the end of the stream leaves the
            # rest to this thread: reader_turn() then returns False.
            while not protocol.receiving_done and inbox.reader_turn():
                # No recv when frames were left unparsed (compression) or an
                # interrupted application thread left bytes unfed.
                if not (protocol.frames_pending or self._unfed):
                    try:
                        data = transport.recv(_RECV_SIZE)
                    except OSError as exc:
                        self._read_error = exc
                        break
                    if not data:
                        protocol.receive_eof()
                        break
                    self._unfed = data
                if not self._process(block=True):
                    break
                inbox.reader_done()
        except Exception:  # a bug; never let it pass silently
            self.logger.exception("unexpected error in the reader thread")
        self._end()

    def read_directly(self, timeout: Optional[float]) -> bool:
        """Read and process once on an application thread waiting in ``recv()``.

        Returns ``False`` at the end of the stream (a close frame, an error,
        EOF): the connection is then ended here, or by the reader thread if
        messages are still queued (it is started if it is not running yet).

        Raises:
            socket.timeout: nothing arrived within ``timeout`` seconds.
        """
        # One read, inlined: this runs for every message an application thread reads.
        protocol = self.protocol
        if protocol.receiving_done:
            going_on = False
        elif protocol.frames_pending or self._unfed:
            # Frames left unparsed (compression), or bytes an interrupt kept
            # from the protocol: no recv this time.
            going_on = self._process(block=False)
        else:
            try:
                data = self.transport.recv(_RECV_SIZE, timeout)
            except socket.timeout:
                raise
            except OSError as exc:
                self._read_error = exc
                data = None
            if data:
                # Kept at once, until the protocol has them (on CPython 3.11+
                # nothing between the return and this store checks for signals).
                self._unfed = data
                going_on = self._process(block=False)
            else:
                if data is not None:
                    protocol.receive_eof()
                going_on = False
        if not going_on and not self._end_on_this_thread():
            self.start_thread()
        return going_on

    def _process(self, block: bool) -> bool:
        """Feed the protocol the unfed bytes, dispatch its events; ``False`` once receiving ends.

        The bytes stay in ``_unfed`` until the line that hands them over: a
        KeyboardInterrupt raised on the main thread between the read and
        that line (at any call before it) leaves them for the next read,
        which feeds them first, so the stream stays whole. Not covered: an
        interrupt at the very start of ``receive_data`` (the bytes are
        handed over, not yet buffered), or inside ``Transport.recv`` right
        after its system call; closing those takes the protocol's and the
        transport's help.
        """
        protocol = self.protocol
        data, self._unfed = self._unfed, b""  # no call between the two: one step
        events = protocol.receive_data(data)
        self.bytes_received += len(data)
        ending = protocol.failure is not None or protocol.close_rcvd is not None
        if not ending and Ping in map(type, events):
            self._flush_replies()
        for_application = False
        for event in events:
            kind = type(event)
            if kind is Message:
                for_application = True
                self.messages_received += 1
                if not self.messages.put(event.data, block):  # type: ignore[union-attr]
                    self.logger.debug("message dropped: the connection is closing")
            elif kind is Fragment:
                for_application = True
                if event.fin:  # type: ignore[union-attr]
                    self.messages_received += 1
                if not self.messages.put(event, block):  # type: ignore[arg-type]
                    self.logger.debug("fragment dropped: the connection is closing")
            elif kind is Pong:
                self._on_pong(event.data)  # type: ignore[union-attr, arg-type]
            elif kind is CloseReceived:
                self.logger.debug("close frame received: %s", event)
        buffered = protocol.bytes_buffered
        if buffered != self._buffered:  # most reads end on a frame boundary: no call
            self._buffered = buffered
            self.messages.set_partial(buffered)
        if not (for_application or buffered):
            # Only control frames (a keepalive's pong): an idle connection
            # that woke from parking for them parks again at once.
            self.transport.quiet()
        return not ending

    def _flush_replies(self) -> None:
        """Write the pongs and the close frame the protocol owes the peer."""
        writer = self.writer
        with writer:
            output = self.protocol.data_to_send()
            if output:
                try:
                    writer.write(output)
                except ConnectionClosed:
                    pass

    # -- the end -------------------------------------------------------------

    def _end_on_this_thread(self) -> bool:
        """End the connection on the calling application thread, if nothing needs a reader.

        When no message is left for the application to take, the end needs
        no waiting: answer the close, release everything, here, instead of
        starting a thread only to do that (thousands of clients leaving at
        once would start thousands of threads). Returns whether it did.
        """
        if self.messages.backlog:
            return False  # the reader thread lets the application take them first
        with self._start_lock:
            if self._started:
                return False
            self._started = True  # no reader thread, ever, for this connection
        self._end()
        return True

    def _end(self) -> None:
        """End the connection: the one way, on whichever thread read the end of the stream.

        1. A close frame or a protocol error is answered, once the
           application has taken the messages that came before it (RFC 6455
           allows data frames until this side's close frame).
        2. If the protocol says the TCP connection should not be closed yet
           (``should_close_transport``: a client lets the server close it
           first), wait for the peer's EOF, at most ``close_timeout``.
        3. The connection releases the transport and wakes every waiter:
           ``recv()``, ``close()``, pings.
        """
        protocol = self.protocol
        try:
            if self._read_error is not None:
                if not self.writer.closed:
                    self.logger.debug("connection lost: %s", self._read_error)
            elif not protocol.eof:
                if not self.messages.empty:
                    self.messages.wait_drained(self.close_timeout)
                self._flush_replies()
            if protocol.failure is not None:
                self.logger.info(
                    "failing the connection with %d: %s", protocol.failure.code, protocol.failure
                )
            elif self._read_error is None and not protocol.should_close_transport:
                self._wait_for_eof()
        except Exception:  # a bug; never let it pass silently
            self.logger.exception("unexpected error while ending the connection")
        finally:
            self._on_end()

    def _wait_for_eof(self) -> None:
        """Wait, at most ``close_timeout``, for the peer to close TCP (a client's last step)."""
        deadline = Deadline(self.close_timeout)
        try:
            while self.transport.recv(_RECV_SIZE, deadline.remaining()):
                pass
        except OSError:
            pass
