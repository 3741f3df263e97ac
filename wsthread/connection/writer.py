"""The one way bytes leave a connection: runs on whichever thread writes (or the write pump).

A :class:`Writer` owns, for one connection:

* the **writer lock**, held while frames are built *and* handed to the
  transport, so that frames from two threads never interleave (the
  protocol's sending half is only ever used under it);
* the **outbox** of messages queued by ``broadcast()``, which never waits
  (an :class:`Outbox`, made by the first broadcast), and the **direct
  write** that lets a broadcast skip it when the writer is idle;
* the **write-pump step**, with which the process-wide
  :class:`~wsthread.connection.threads.WritePump` finishes what a socket did not take.

Every byte goes through :meth:`Writer.write`, and :meth:`Writer._transfer`
is the only code that calls the transport's output methods. Its error
policy is the same for every caller: a failed write (an ``OSError``, or no
progress for ``write_timeout`` seconds while waiting) shuts the transport
down once, logs once, and raises the connection's
:class:`~wsthread.exceptions.ConnectionClosed`. Shutting the transport down
wakes the thread reading the socket, which then ends the connection and
wakes every other waiter.

The write path::

    send()/ping()/close()/replies ─ with writer: writer.write(frame) ─┐
    keepalive ping ─ writer.lock (if free) ─ writer.write(frame, wait=False)
    broadcast ─ writer.send_prepared() ─ idle? ─ yes: writer.write(frame, wait=False)
                                              └─ no: Outbox ─ drain() (if lock free)
                                                                      v
                   _transfer(): transport.write() ── flush (wait=True)
                                                 └── WritePump (wait=False)

``write(data, wait=False)`` and :meth:`flush` are separate steps, so that a
policy that gathers several writes before one system call can sit between
them without touching any caller.

Gathering (write coalescing): ``write(data, gather=True)`` may keep small
frames in memory instead of making one ``send()`` system call per frame;
the connection asks for it only when its rule allows (see
:meth:`Connection.send` and ``docs/explanation/messages.md``: replies sent
while more received messages wait to be taken). Gathered bytes go out

* with the next write of any kind (a ping, a pong, a close frame, a send
  that is not gathered, a broadcast): they are never overtaken, and control
  frames are never held back;
* at :meth:`flush` (the connection calls it before its receiving thread
  waits for more data);
* at the latest :data:`GATHER_DELAY` seconds after the first of them, from
  the process-wide timer thread, if the sending thread went off to do
  something else;
* at once when :data:`GATHER_LIMIT` bytes are gathered, or when the socket
  has not taken earlier bytes yet (then the sender waits, as always:
  gathering never hides back-pressure).
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, List, Optional

from ..exceptions import ConnectionClosed
from ..sansio.frames import CloseCode
from ..sansio.prepared import PreparedMessage
from ..sansio.protocol import Protocol, State
from .threads import ReaderStarter, WritePump, shared
from .transport import Transport

__all__ = ["Writer", "Outbox", "GATHER_DELAY", "GATHER_LIMIT", "GATHER_FRAME"]

#: The longest gathered bytes may wait for a thread that went off to compute.
GATHER_DELAY = 0.001
#: Gathered bytes beyond this are written at once.
GATHER_LIMIT = 64 * 1024
#: Frames larger than this are never gathered (one system call is cheap next to them).
GATHER_FRAME = 4096


class Writer:
    """Writes a connection's frames to its transport, from any thread.

    Use it as a context manager to hold the writer lock; leaving the block
    also writes the outbox if a broadcast queued messages meanwhile::

        with writer:
            writer.write(protocol.send_text(data))

    Args:
        transport: the connection's transport.
        protocol: the connection's protocol; its sending half is used only
            under the writer lock.
        write_timeout: how long a write may make no progress at all (the
            peer takes no bytes) before the connection is failed; ``None``
            waits for ever.
        write_limit: how many bytes :meth:`enqueue` may leave waiting before
            the connection is closed with 1013; ``None`` for no limit.
        logger: where to log (the connection's logger).
        on_fail: called by :meth:`fail`, before the transport is shut down
            (the connection stops its reader from waiting on a full queue).
    """

    def __init__(
        self,
        transport: Transport,
        protocol: Protocol,
        *,
        write_timeout: Optional[float],
        write_limit: Optional[int],
        logger: Any,
        on_fail: Optional[Callable[[], None]] = None,
    ) -> None:
        # Kept as given: alike in Reader and Closing on purpose (each part holds
        # its own references to the connection's pieces).
        self.transport = transport
        self.protocol = protocol
        self.write_timeout = write_timeout
        self.write_limit = write_limit
        self.logger = logger
        self._on_fail = on_fail
        self.lock = threading.Lock()
        # Guards the shutdown flag and the making of the outbox; never held while writing.
        self._state_lock = threading.Lock()
        self._closed = False
        self.gave_up: Optional[int] = None
        """The close code :meth:`fail` gave up with (1013, 1011...), whether or not its frame
        could be sent; ``None`` until then."""
        self.outbox: Optional[Outbox] = None
        """Messages waiting for the writer lock (see :meth:`enqueue`); made by a first broadcast."""
        # For the write pump: whether it watches this writer, and when the
        # transport last made progress on a write that did not wait.
        self._pumped = False
        self._progress = 0.0
        # For Connection.stats(): bumped under the writer lock, read without it.
        self.messages_sent = 0
        self.bytes_sent = 0
        # Frames gathered for one later system call (under the writer lock).
        self.gather_delay = GATHER_DELAY  # tests lengthen it to look at gathered bytes
        self.gathered: List[bytes] = []
        """Frames kept for the next write (under the writer lock; read it as a hint only)."""
        self.gathered_bytes = 0

    def __enter__(self) -> Writer:
        self.lock.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        # release(), inlined: this runs for every message sent.
        self.lock.release()
        if self.outbox is not None and self.outbox.items:
            self.outbox.drain()

    def release(self) -> None:
        """Release the writer lock, then write the outbox if a broadcast queued messages meanwhile.

        Whoever took :attr:`lock` with ``lock.acquire(blocking=False)``
        releases it with this: a broadcast that found the lock busy left its
        messages to the holder (see :meth:`Outbox.drain <Outbox.drain>`).
        """
        self.lock.release()
        if self.outbox is not None and self.outbox.items:
            self.outbox.drain()

    @property
    def closed(self) -> bool:
        """Whether the transport was shut down (nothing more can be written)."""
        return self._closed

    @property
    def buffered_amount(self) -> int:
        """Bytes waiting for the peer: queued in the outbox, gathered, or in the transport.

        Read from any thread without a lock (each term is one integer, read
        once); like the browser's ``WebSocket.bufferedAmount``, a snapshot
        that may be stale by the time it is used. Queued messages count
        their payload (they are framed when written); bytes in the
        transport count as they go on the wire (after compression, and
        encrypted with TLS).
        """
        outbox = self.outbox
        queued = 0 if outbox is None else outbox.queued_bytes
        return queued + self.gathered_bytes + self.transport.unsent

    # -- writing -------------------------------------------------------------

    def write(self, data: bytes, *, wait: bool = True, gather: bool = False) -> None:
        """Write ``data``; the caller holds the writer lock.

        With ``wait``, return once the socket has taken every byte written so
        far; without, return at once and let the write pump send the rest.
        With ``gather``, a small frame may be kept for the next write
        instead (see the module's docstring for when it goes out); any
        write sends the gathered bytes first.

        Raises:
            ConnectionClosed: the transport is shut down, or this write
                failed (and shut it down).
        """
        if self._closed:
            raise self.protocol.close_exception()
        self.bytes_sent += len(data)
        gathered = self.gathered
        if (
            gather
            and len(data) <= GATHER_FRAME
            and self.gathered_bytes + len(data) <= GATHER_LIMIT
            and not self.transport.unsent
        ):
            if not gathered:
                shared(ReaderStarter).schedule(
                    time.monotonic() + self.gather_delay, self._flush_late
                )
            gathered.append(data)
            self.gathered_bytes += len(data)
            return
        if gathered:
            gathered.append(data)
            data = b"".join(gathered)
            gathered.clear()
            self.gathered_bytes = 0
        self._transfer(data, wait, self.write_timeout)

    @property
    def gathering(self) -> bool:
        """Whether gathered bytes wait for a later write (read without the lock: a hint)."""
        return bool(self.gathered)

    def _flush_late(self) -> None:
        """The timer's call, :data:`GATHER_DELAY` after a first gathered frame: send them."""
        if not self.gathered:
            return
        if not self.lock.acquire(blocking=False):
            # A writer is busy (and will send them); look again soon.
            shared(ReaderStarter).schedule(time.monotonic() + self.gather_delay, self._flush_late)
            return
        try:
            if self.gathered and not self._closed:
                self.write(b"", wait=False)
        except ConnectionClosed:
            pass
        finally:
            self.release()

    def send_http(self, data: bytes, timeout: Optional[float], last: bool = False) -> None:
        """Send bytes of the opening handshake; takes the lock itself.

        Waits until the socket took them, at most ``timeout`` seconds without
        progress. With ``last`` (an HTTP answer that ends the connection),
        then closes this side's direction, so the peer reads the answer
        before its end of the stream (closing with unread request bytes
        would reset the connection).

        Raises:
            ConnectionClosed: as :meth:`write`.
        """
        with self.lock:
            if self._closed:
                raise self.protocol.close_exception()
            self._transfer(data, True, timeout)
            if last:
                try:
                    self.transport.socket.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def flush(self) -> None:
        """Wait until the socket has taken every byte written; the caller holds the lock.

        Raises:
            ConnectionClosed: as :meth:`write`.
        """
        self.write(b"", wait=True)

    def write_parts(self, header: bytes, payload: bytes) -> None:
        """Write a large frame given as header and payload, and wait; the caller holds the lock.

        The two (behind any gathered bytes) go to the transport as separate
        buffers, written with one ``sendmsg()`` on a plain socket: the
        payload is never copied into a joined frame.

        Raises:
            ConnectionClosed: as :meth:`write`.
        """
        if self._closed:
            raise self.protocol.close_exception()
        self.bytes_sent += len(header) + len(payload)
        gathered = self.gathered
        if gathered:
            gathered.append(header)
            header = b"".join(gathered)
            gathered.clear()
            self.gathered_bytes = 0
        self._transfer(header, True, self.write_timeout, payload=payload)

    def _transfer(
        self,
        data: bytes,
        wait: bool,
        timeout: Optional[float],
        pumping: bool = False,
        payload: Optional[bytes] = None,
    ) -> None:
        """Hand ``data``, then ``payload`` if any, to the transport: its only output calls.

        Bytes the socket does not take are waited for (``wait``: at most
        ``timeout`` seconds without progress), or left to the write pump
        (which passes ``pumping``: it is already on it). The one error
        policy: shut down once, log once, raise the connection's
        ``ConnectionClosed``.
        """
        transport = self.transport
        try:
            if payload is not None:
                left = transport.write_parts((data, payload))
            elif data:
                left = transport.write(data)
            else:
                left = transport.send_some()
            if left:
                if wait:
                    transport.flush(timeout)
                elif not pumping:
                    self._hand_to_pump()
        except socket.timeout as exc:
            if self.shutdown():
                self.logger.warning(
                    "client took no data for %s seconds: closing the connection", timeout
                )
            raise self.protocol.close_exception() from exc
        except OSError as exc:
            if self.shutdown():
                self.logger.debug("write failed: %s", exc)
            raise self.protocol.close_exception() from exc

    def shutdown(self) -> bool:
        """Shut the transport down, which also wakes a reader blocked in ``recv``.

        Returns whether this call did it (``False`` if it was done already).
        Gathered bytes not sent yet are dropped, like bytes in a socket's
        buffer when the connection fails.
        """
        with self._state_lock:
            if self._closed:
                return False
            self._closed = True
        self.transport.shutdown()
        return True

    def fail(self, code: int, reason: str) -> None:
        """Give up on the connection: send a close frame if that needs no waiting, shut down.

        Never blocks: the close frame goes out only if the writer lock is
        free and the socket takes it at once.
        """
        if self.gave_up is None:
            self.gave_up = code
        if self._on_fail is not None:
            self._on_fail()
        self.send_close(code, reason, block=False)
        self.shutdown()

    def send_close(self, code: int, reason: str, *, block: bool = True) -> bool:
        """Send a close frame unless one went out (or the transport is shut down).

        With ``block``, wait for the writer lock and for the socket to take
        the frame. Without, never block: what the socket does not take at
        once is left to the write pump, and ``False`` says another thread
        holds the writer lock (a send under way) and nothing was done.
        """
        if not self.lock.acquire(blocking=block):
            return False
        try:
            if self.protocol.close_sent is None and not self._closed:
                self.write(self.protocol.send_close(code, reason), wait=block)
        except ConnectionClosed:
            pass
        finally:
            self.release()  # a broadcast queued meanwhile is dropped: the close went first
        return True

    # -- messages that never wait (broadcast) ------------------------------

    def enqueue(self, is_text: bool, payload: bytes) -> bool:
        """Send one message to this connection only, never blocking the caller.

        The same as :meth:`send_prepared` for a message prepared for this
        connection alone.
        """
        return self.send_prepared(PreparedMessage(payload, is_text))

    def send_prepared(self, message: PreparedMessage) -> bool:
        """Send a message framed once for many connections, never blocking the caller.

        When the writer is idle (its lock free and nothing queued in the
        outbox), the calling thread writes the frame itself, through
        :meth:`write` under the lock like any other write: one non-blocking
        ``send()``, and what the socket does not take waits in the
        transport for the write pump. Otherwise the message goes to the
        :class:`Outbox`, behind what is queued there, and whoever holds the
        lock writes it when letting go. Either way it never overtakes a
        message queued before it, and never lands between the frames of a
        fragmented message (those are sent under the lock).

        The frame is the prepared message's shared wire form where this
        connection can use one (see
        :meth:`Protocol.send_prepared() <wsthread.sansio.protocol.Protocol.send_prepared>`).

        Returns ``False`` when the connection is closing, or when the peer has
        let more than ``write_limit`` bytes pile up: then it is closed with 1013.
        """
        # This runs once per connection per broadcast: the common case (an
        # idle, open connection) is spelled out with as few steps as it takes.
        protocol = self.protocol
        if self._closed or protocol.close_sent is not None or protocol.receiving_done:
            return False  # not State.OPEN (receiving_done: a close, an error or EOF came)
        outbox = self.outbox
        lock = self.lock
        if (outbox is not None and outbox.items) or not lock.acquire(False):
            return (outbox or self._make_outbox()).put(message)
        # The writer is idle: write it from this thread.
        backlog = 0
        try:
            outbox = self.outbox  # again: made meanwhile by a thread that found the lock busy?
            if outbox is not None and outbox.items:  # queued between the look and the lock
                outbox.write_queued()
            transport = self.transport
            backlog = transport.unsent + self.gathered_bytes
            limit = self.write_limit
            if not backlog or limit is None or backlog <= limit:
                backlog = 0
                if protocol.sends_plain_shared:
                    frame = message.frame
                else:
                    frame = protocol.send_prepared(message)
                self.messages_sent += 1
                if self.gathered:
                    self.write(frame, wait=False)
                else:  # write(), without what only gathered bytes need
                    self.bytes_sent += len(frame)
                    self._transfer(frame, False, None)
        except ConnectionClosed:
            return False
        finally:
            lock.release()
            outbox = self.outbox
            if outbox is not None and outbox.items:  # queued meanwhile (the lock kept them out)
                outbox.drain()
        if backlog:  # over write_limit
            self.too_slow(backlog)
            return False
        return True

    def _make_outbox(self) -> Outbox:
        with self._state_lock:
            if self.outbox is None:
                self.outbox = Outbox(self, self.write_limit)
            return self.outbox

    def too_slow(self, backlog: int) -> None:
        """Close the peer with 1013: ``backlog`` bytes wait, more than ``write_limit``.

        Never blocks (see :meth:`fail`); the caller does not hold the lock.
        """
        self.logger.warning(
            "client too slow: %d bytes waiting (write_limit %s): closing with 1013",
            backlog,
            self.write_limit,
        )
        self.fail(CloseCode.TRY_AGAIN_LATER, "client too slow")

    # -- the write pump's side ---------------------------------------------

    def _hand_to_pump(self) -> None:
        """Let the process-wide :class:`WritePump` finish what the socket did not take."""
        if not self._pumped:
            self._pumped = True
            self._progress = time.monotonic()
        shared(WritePump).watch(self)

    def pump_socket(self) -> Optional[socket.socket]:
        """The socket the write pump waits on; ``None`` once it is shut down."""
        return None if self._closed else self.transport.socket

    def pump(self, now: float) -> bool:
        """Send what the socket takes now (the write pump's step); ``True`` when done."""
        done = self._pump_step(now)
        if done:
            self._pumped = False
        return done

    def _pump_step(self, now: float) -> bool:
        if self._closed:
            return True
        if not self.lock.acquire(blocking=False):
            return False  # a writer is busy with this connection; look again later
        try:
            before = self.transport.unsent
            try:
                self._transfer(b"", False, None, pumping=True)
            except ConnectionClosed:
                return True
            if self.transport.unsent < before:
                self._progress = now
        finally:
            self.release()
        if self.transport.unsent == 0:
            return True
        timeout = self.write_timeout
        if timeout is not None and now - self._progress > timeout:
            self.logger.warning("client took no data for %s seconds: closing with 1011", timeout)
            self.fail(CloseCode.INTERNAL_ERROR, "write timeout")
            return True
        return False

    def __repr__(self) -> str:
        return f"<Writer {self.transport.socket!r}>"


# -- the broadcast outbox ----------------------------------------------------
#
# A connection's broadcast outbox: filled by any thread, written by whoever frees the writer lock.
#
# ``broadcast()`` must never wait for a slow connection. So it never waits
# for the connection's writer lock: when the lock is free and nothing is
# queued, it writes the frame at once (Writer.send_prepared); otherwise it
# puts the message in that connection's :class:`Outbox` and writes the
# outbox only if the lock happens to be free.
# Otherwise the thread holding the lock writes it when it lets the lock go
# (:meth:`Writer.__exit__ <Writer>`, :meth:`Writer.release`,
# the write pump's step). Either way the frames go out through
# :meth:`Writer.write <Writer.write>` (never around it) and
# without waiting for the socket: what it does not take is left to the write
# pump. A peer that lets more than ``write_limit`` bytes pile up is closed
# with 1013.


class Outbox:
    """Messages queued for one connection by threads that must not wait for it.

    A writer makes its outbox with the first broadcast it gets (most
    connections never get one, and an idle connection should cost little).

    Args:
        writer: the connection's writer: its lock, its protocol's sending
            half and its :meth:`~Writer.write`.
        limit: how many bytes may wait (here and in the transport) before
            the peer is closed with 1013; ``None`` for no limit.
    """

    def __init__(self, writer: Writer, limit: Optional[int]) -> None:
        self.writer = writer
        self.limit = limit
        # Guards items and their size; never held while writing.
        self._lock = threading.Lock()
        self.items: Deque[PreparedMessage] = deque()
        """The messages waiting; read without the lock as a hint."""
        self._bytes = 0

    @property
    def queued_bytes(self) -> int:
        """The payload bytes of the messages waiting (a snapshot, read without the lock)."""
        return self._bytes

    def put(self, message: PreparedMessage) -> bool:
        """Queue a message and write the outbox if the writer lock is free; never blocks.

        Returns ``False`` when the connection is closing, or when the peer has
        let more than ``limit`` bytes pile up: then it is closed with 1013.
        """
        writer = self.writer
        if writer.closed or writer.protocol.state is not State.OPEN:
            return False
        limit = self.limit
        with self._lock:
            backlog = self._bytes + writer.transport.unsent + writer.gathered_bytes
            overflow = limit is not None and backlog > limit
            if not overflow:
                self.items.append(message)
                self._bytes += len(message.payload)
        if overflow:
            writer.too_slow(backlog)
            return False
        self.drain()
        return True

    def drain(self) -> None:
        """Frame and write the queued messages if the writer lock is free; never blocks.

        Whoever holds the lock calls this after letting it go, so a message
        queued while the lock was busy is never left behind.
        """
        lock = self.writer.lock
        while self.items:
            if not lock.acquire(blocking=False):
                return  # its holder drains when it lets go
            try:
                self.write_queued()
            finally:
                lock.release()

    def _take_all(self) -> List[PreparedMessage]:
        """Empty the outbox; return what it held."""
        with self._lock:
            items = list(self.items)
            self.items.clear()
            self._bytes = 0
        return items

    def write_queued(self) -> None:
        """Frame every queued message and write them in one go; the writer lock is held."""
        writer = self.writer
        protocol = writer.protocol
        frames = []
        try:
            for message in self._take_all():
                frames.append(protocol.send_prepared(message))
        except ConnectionClosed:
            pass  # closing: what is left is dropped, as after a close frame
        if frames:
            writer.messages_sent += len(frames)
            try:
                writer.write(b"".join(frames), wait=False)
            except ConnectionClosed:
                pass

    def __repr__(self) -> str:
        return f"<Outbox {len(self.items)} messages for {self.writer!r}>"
