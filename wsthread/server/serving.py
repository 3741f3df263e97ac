"""Whether a server accepts, on which thread, and how it stops: the accept thread and any caller.

:class:`ServingState` keeps the few facts that let
:meth:`WebSocketServer.shutdown() <wsthread.WebSocketServer.shutdown>` work from
any thread, the accept thread itself (a signal handler) included::

    serve_forever():  begin() ── while not stopping: accept step ── end()
    start():          start_thread(serve_forever) on "wsthread-accept"
    shutdown():       stop() ── first call? ── wait_loop(wake): wake the
                      accept loop (unless it is this thread) and wait until it ended

socketserver's own ``serve_forever()``/``shutdown()`` pair cannot do this:
its ``shutdown()`` waits for the loop to end, so called on the loop's thread
it waits forever.
"""

from __future__ import annotations

import threading
from typing import Callable, Optional

__all__ = ["ServingState"]


class ServingState:
    """A server's accept loop: started once, served by one thread at a time, stopped once.

    Args:
        lock: the server's state lock (reentrant: ``shutdown()`` may run on a
            thread that a signal interrupted while it held it).
    """

    def __init__(self, lock: threading.RLock) -> None:
        self.lock = lock
        self.closed = False
        self._stopping = threading.Event()
        self._serving: Optional[threading.Thread] = None
        self._loop_done = threading.Event()
        self._loop_done.set()
        self._started: Optional[threading.Thread] = None

    @property
    def stopping(self) -> bool:
        """Whether the accept loop should end (checked between accept steps)."""
        return self._stopping.is_set()

    def begin(self) -> bool:
        """The calling thread starts the accept loop; ``False`` if the server is closed already.

        Raises:
            RuntimeError: another thread runs the loop already.
        """
        with self.lock:
            if self.closed:
                return False
            if self._serving is not None:
                raise RuntimeError("the server is already serving")
            self._serving = threading.current_thread()
            self._loop_done.clear()
        return True

    def end(self) -> None:
        """The accept loop ended (whatever the reason)."""
        with self.lock:
            self._serving = None
        self._loop_done.set()

    def start_thread(self, target: Callable[[], None]) -> None:
        """Run ``target`` (the accept loop) on a daemon thread, ``wsthread-accept``.

        Raises:
            RuntimeError: it was started before.
        """
        with self.lock:
            if self._started is not None:
                raise RuntimeError("the server is already started")
            self._started = threading.Thread(target=target, name="wsthread-accept", daemon=True)
        self._started.start()

    def stop(self) -> bool:
        """Mark the server closed and the loop stopping; ``True`` for the first call only."""
        with self.lock:
            already_closed = self.closed
            self.closed = True
        self._stopping.set()
        return not already_closed

    def wait_loop(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` and wait until the accept loop ended, unless it runs on this thread.

        On the loop's own thread (``shutdown()`` from a signal handler or
        from a handler run by the loop) there is nothing to wait for: the
        loop ends when the current accept step returns.
        """
        with self.lock:
            serving = self._serving
        if serving is not None and serving is not threading.current_thread():
            wake()
            self._loop_done.wait()
