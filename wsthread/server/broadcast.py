"""One message to many connections, never waiting: run by the caller's thread, or a hub's.

:class:`Broadcaster` is the broadcast side of a
:class:`~wsthread.server.WebSocketServer`. Without a hub, a broadcast is
delivered at once: the message is encoded once into a
:class:`~wsthread.sansio.prepared.PreparedMessage`, which frames it once
per distinct wire form, and the same bytes are handed to each connection's
writer (:meth:`wsthread.connection.writer.Writer.send_prepared`): written
at once from this thread where the writer is idle, queued otherwise, and
sent in the background. With a hub, it is published to the hub, which
hands it back to every server attached to it, this one included, through
:meth:`Broadcaster.deliver` (on the hub's own thread), the same path::

    broadcast(message) ── hub? ── no ── deliver(): prepare once, send_prepared on each writer
                              └── yes ── hub.publish() ... hub thread ── deliver()
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Optional, Sequence

from ..connection.connection import Connection, Data
from ..sansio.prepared import PreparedMessage

__all__ = ["Broadcaster", "prepare"]


def prepare(message: Data) -> PreparedMessage:
    """``message`` as a :class:`~wsthread.sansio.prepared.PreparedMessage`: text for ``str``.

    Raises:
        TypeError: ``message`` is neither ``str`` nor bytes-like.
    """
    if isinstance(message, str):
        return PreparedMessage(message.encode("utf-8"), True)
    if isinstance(message, (bytes, bytearray, memoryview)):
        return PreparedMessage(bytes(message), False)
    raise TypeError(f"cannot broadcast {type(message).__name__}: expected str or bytes")


class Broadcaster:
    """Delivers broadcasts to the open connections, through ``hub`` when there is one.

    Args:
        connections: returns the open connections (a snapshot), the
            default targets.
        hub: an object with ``attach(deliver)``, ``publish(message)`` and
            ``close()`` (see :mod:`wsthread.hubs`), or ``None``.
    """

    def __init__(self, connections: Callable[[], Sequence[Connection]], hub: Any = None) -> None:
        self._connections = connections
        self.hub = hub

    def attach(self) -> None:
        """Attach to the hub, which from then on calls :meth:`deliver`."""
        if self.hub is not None:
            self.hub.attach(self.deliver)

    def broadcast(self, message: Data, connections: Optional[Iterable[Connection]] = None) -> int:
        """Send ``message`` to ``connections``, or to every one (through the hub, if any).

        Returns:
            How many connections of this process it was queued for (0 when
            it went through the hub).

        Raises:
            TypeError: ``message`` is neither ``str`` nor bytes-like.
        """
        if not isinstance(message, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"cannot broadcast {type(message).__name__}: expected str or bytes")
        if connections is None and self.hub is not None:
            self.hub.publish(message if isinstance(message, str) else bytes(message))
            return 0
        return self.deliver(message, connections)

    def deliver(self, message: Data, connections: Optional[Iterable[Connection]] = None) -> int:
        """Send ``message`` to each connection here; how many took it (the hub calls this)."""
        return self.deliver_prepared(prepare(message), connections)

    def deliver_prepared(
        self, message: PreparedMessage, connections: Optional[Iterable[Connection]] = None
    ) -> int:
        """Send a prepared message to ``connections`` (default: every open one), never blocking.

        Each connection gets the message's shared wire form where it can
        (built once, on first need), written at once from this thread if
        its writer is idle, queued behind its earlier messages otherwise;
        see :meth:`wsthread.connection.writer.Writer.send_prepared`. Local
        only: the hub is not involved. One ``PreparedMessage`` may be
        passed to several calls (topics that share a message).

        Returns:
            How many connections took it (not closing, not over ``write_limit``).
        """
        targets = self._connections() if connections is None else connections
        taken = 0
        for connection in targets:
            if connection.writer.send_prepared(message):
                taken += 1
        return taken

    def close(self, log: logging.Logger) -> None:
        """Close the hub, if any; a failure is logged."""
        if self.hub is not None:
            try:
                self.hub.close()
            except Exception:
                log.exception("closing the hub failed")
