"""One message to many connections, never waiting: run by the caller's thread, or a hub's.

:class:`Broadcaster` is the broadcast side of a
:class:`~wsthread.server.WebSocketServer`. Without a hub, a broadcast is
delivered at once: the message is encoded once and queued on each
connection's writer (:meth:`wsthread.connection.writer.Writer.enqueue`), which sends
it in the background. With a hub, it is published to the hub, which hands
it back to every server attached to it, this one included, through
:meth:`Broadcaster.deliver` (on the hub's own thread)::

    broadcast(message) ── hub? ── no ── deliver(): encode once, enqueue on each writer
                              └── yes ── hub.publish() ... hub thread ── deliver()
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Optional, Sequence

from ..connection.connection import Connection, Data

__all__ = ["Broadcaster"]


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
        """Queue ``message`` on each connection's writer; how many took it (the hub calls this)."""
        if isinstance(message, str):
            is_text, payload = True, message.encode("utf-8")
        else:
            is_text, payload = False, bytes(message)
        targets = self._connections() if connections is None else list(connections)
        return sum(1 for connection in targets if connection.writer.enqueue(is_text, payload))

    def close(self, log: logging.Logger) -> None:
        """Close the hub, if any; a failure is logged."""
        if self.hub is not None:
            try:
                self.hub.close()
            except Exception:
                log.exception("closing the hub failed")
