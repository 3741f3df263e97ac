"""A connection's broadcast outbox: filled by any thread, written by whoever frees the writer lock.

``broadcast()`` must never wait for a slow connection. So it does not take
the connection's writer lock: it puts the message in that connection's
:class:`Outbox` and writes the outbox only if the lock happens to be free.
Otherwise the thread holding the lock writes it when it lets the lock go
(:meth:`Writer.__exit__ <wsthread.writer.Writer>`, :meth:`Writer.release`,
the write pump's step). Either way the frames go out through
:meth:`Writer.write <wsthread.writer.Writer.write>` (never around it) and
without waiting for the socket: what it does not take is left to the write
pump. A peer that lets more than ``write_limit`` bytes pile up is closed
with 1013.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING, Deque, List, Optional, Tuple

from .exceptions import ConnectionClosed
from .sansio.frames import CloseCode
from .sansio.protocol import State

if TYPE_CHECKING:  # only for the type hints: writer.py imports this module
    from .writer import Writer

__all__ = ["Outbox"]


class Outbox:
    """Messages queued for one connection by threads that must not wait for it.

    A writer makes its outbox with the first broadcast it gets (most
    connections never get one, and an idle connection should cost little).

    Args:
        writer: the connection's writer: its lock, its protocol's sending
            half and its :meth:`~wsthread.writer.Writer.write`.
        limit: how many bytes may wait (here and in the transport) before
            the peer is closed with 1013; ``None`` for no limit.
    """

    def __init__(self, writer: Writer, limit: Optional[int]) -> None:
        self.writer = writer
        self.limit = limit
        # Guards items and their size; never held while writing.
        self._lock = threading.Lock()
        self.items: Deque[Tuple[bool, bytes]] = deque()
        """The messages waiting, as ``(is_text, payload)``; read without the lock as a hint."""
        self._bytes = 0

    def put(self, is_text: bool, payload: bytes) -> bool:
        """Queue a message and write the outbox if the writer lock is free; never blocks.

        Returns ``False`` when the connection is closing, or when the peer has
        let more than ``limit`` bytes pile up: then it is closed with 1013.
        """
        writer = self.writer
        if writer.closed or writer.protocol.state is not State.OPEN:
            return False
        limit = self.limit
        with self._lock:
            backlog = self._bytes + writer.transport.unsent
            overflow = limit is not None and backlog > limit
            if not overflow:
                self.items.append((is_text, payload))
                self._bytes += len(payload)
        if overflow:
            writer.logger.warning(
                "client too slow: %d bytes waiting (write_limit %d): closing with 1013",
                backlog,
                limit,
            )
            writer.fail(CloseCode.TRY_AGAIN_LATER, "client too slow")
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
                self._write()
            finally:
                lock.release()

    def _take_all(self) -> List[Tuple[bool, bytes]]:
        """Empty the outbox; return what it held."""
        with self._lock:
            items = list(self.items)
            self.items.clear()
            self._bytes = 0
        return items

    def _write(self) -> None:
        """Frame every queued message and write them in one go; the writer lock is held."""
        writer = self.writer
        protocol = writer.protocol
        frames = []
        try:
            for is_text, payload in self._take_all():
                frames.append(
                    protocol.send_text(payload) if is_text else protocol.send_binary(payload)
                )
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
