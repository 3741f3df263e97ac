"""One WebSocket connection over a socket: transport, writer, message queue, reader, pings, close.

The threaded I/O layer over :mod:`wsthread.sansio`. It knows nothing of servers
or clients; :mod:`wsthread.server` and :mod:`wsthread.client` build on it.
"""

from .connection import Connection, Data

__all__ = ["Connection", "Data"]
