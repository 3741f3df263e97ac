"""A connection's close from this side, and the end that wakes its waiters; on the closing thread.

:class:`Closing` holds the two halves of a connection's end that are not the
reader's:

- :meth:`Closing.close`, on any thread that calls ``Connection.close()``:
  send a close frame (once, through the writer), then wait *outside* the
  writer lock, at most ``close_timeout``, for the end; or the same in two
  steps, :meth:`Closing.begin` and :meth:`Closing.wait`, for a thread that
  closes many connections at once (a server's shutdown);
- :meth:`Closing.release`, the end itself, called once by the
  :class:`~wsthread.connection.reader.Reader`'s one ending path (``on_end``): shut the
  transport down and wake everyone waiting (``recv()``, ``close()``,
  pings).

::

    close() ──send CLOSE──> wait ─────────────┐ (close_timeout: shut down)
    reader: peer's CLOSE / EOF / error ──> Reader._end ──> release() ──> ended
"""

from __future__ import annotations

import threading
from typing import Any, Optional

from ..exceptions import ConnectionClosed
from ..sansio.protocol import Protocol
from .messages import MessageQueue
from .pings import Pings
from .reader import Reader
from .writer import Writer

__all__ = ["Closing"]


class Closing:
    """The closing of one connection: the handshake this side starts, and its end.

    Args:
        protocol: the connection's protocol (it decides what the close was).
        writer: the connection's writer.
        messages: the connection's queue of received messages.
        pings: the connection's pings (woken at the end).
        close_timeout: how long :meth:`close` waits for the end; ``None``
            waits for ever.
        logger: the connection's logger.
    """

    def __init__(
        self,
        protocol: Protocol,
        writer: Writer,
        messages: MessageQueue,
        pings: Pings,
        close_timeout: Optional[float],
        logger: Any,
    ) -> None:
        # The connection's parts, kept as plain attributes like the Writer's
        # and the Reader's (the duplicates tool pairs these assignments with
        # theirs: constructor boilerplate, deliberate).
        self.protocol = protocol
        self.writer = writer
        self.messages = messages
        self.pings = pings
        self.close_timeout = close_timeout
        self.logger = logger
        self._ended = threading.Event()

    @property
    def ended(self) -> bool:
        """Whether the connection has ended (transport released, waiters woken)."""
        return self._ended.is_set()

    def exception(self) -> ConnectionClosed:
        """Wait for the end, then return the exception that says how the connection closed."""
        self._ended.wait()
        return self.protocol.close_exception()

    def close(self, code: int, reason: str, reader: Reader) -> None:
        """Send a close frame unless one went out; wait, at most ``close_timeout``, for the end.

        ``reader`` is the connection's: it reads the peer's answer and ends
        the connection; its thread is started now if it was not running.
        """
        self.messages.stop_waiting()
        writer = self.writer
        writer.send_close(code, reason)
        if threading.current_thread() is reader.thread:
            return  # the reader ends the connection when it returns to its loop
        if not reader.opened and not self._ended.is_set():
            # The connection never opened (the handshake failed): close here.
            writer.shutdown()
            self._ended.set()
            return
        if self._ended.is_set():
            return  # the peer's close (or the end of the stream) came already
        reader.start_thread()  # it reads the peer's close frame and ends the connection
        if not self.wait(self.close_timeout):
            self._ended.wait()  # soon: the reader wakes to the end of the stream

    def begin(self, code: int, reason: str, reader: Reader) -> bool:
        """Start the closing handshake without waiting; :meth:`wait` for its end.

        For closing many connections from one thread (a server's shutdown):
        the close frame goes out now if the writer lock is free (what the
        socket does not take is left to the write pump), and the peer's
        answer will be read: by the application thread reading now, if
        one does, or else by the reader thread, started here. (Leaving that
        start to the reader starter's thread was tried: with the GIL off,
        a shutdown of 100 busy connections then took 7-9 s, not 1.2-2.2.)
        Returns ``False``, having sent nothing, when a send holds the writer
        lock: try again, or :meth:`close` on a thread that may wait for it.
        """
        self.messages.stop_waiting()
        if not self.writer.send_close(code, reason, block=False):
            return False
        if self._ended.is_set():
            return True
        if not reader.opened:
            self.writer.shutdown()  # the handshake failed: nothing to wait for
            self._ended.set()
        elif self.messages.reader_delay() is not None:
            reader.start_thread()  # nobody reads the socket now
        return True

    def wait(self, timeout: Optional[float]) -> bool:
        """Wait, at most ``timeout`` seconds, for the end; return whether it came.

        If it did not, the transport is shut down, so the end comes soon:
        whoever reads wakes to the end of the stream.
        """
        if self._ended.wait(timeout):
            return True
        self.logger.debug("closing handshake timed out; closing the TCP connection")
        self.writer.shutdown()
        return False

    def release(self) -> None:
        """The end: release the transport and wake everyone waiting on the connection.

        Called once, by the reader's ending path.
        """
        self.writer.shutdown()
        self.messages.close()
        self.pings.wake_all()
        self._ended.set()
