"""Fork detection: notice an object used in a process forked from the one that made it.

Runs on two kinds of thread: the one that calls ``os.fork()`` (the after-fork
hook runs on it, in the child, while it is the child's only thread) and any
thread that asks a :class:`ForkGuard` whether its owner was inherited.

Why it matters: ``fork()`` copies a process with only the thread that called
it. A :class:`~wsthread.WebSocketServer` made before the fork (at import time
in an application that gunicorn ``--preload`` loads in its master, say) is
copied into every worker without its accept thread, its connection threads or
its hub; the listening socket and the connections' sockets are shared with
the parent. In the child, ``broadcast()`` would reach nobody and ``close()``
would write into the parent's streams. The server asks its guard and refuses,
with a message that names the cause and the fixes.

Processes that never fork pay nothing but one ``os.getpid()`` per check.
"""

from __future__ import annotations

import os
import threading
from typing import Callable, List

__all__ = ["ForkGuard", "fork_generation", "after_fork_in_child"]

# How many fork()s separate this process from the one that imported wsthread.
# Written only by the after-fork hook, in a child that has a single thread.
_generation = 0
_callbacks: List[Callable[[], None]] = []
_callbacks_lock = threading.Lock()


def fork_generation() -> int:
    """How many ``fork()`` calls this process descends through since wsthread was imported."""
    return _generation


def after_fork_in_child(callback: Callable[[], None]) -> None:
    """Call ``callback()`` in every child process forked from now on (on its only thread).

    For process-wide helpers whose threads do not survive a fork: the
    callback forgets them, so that the child starts its own when needed.
    """
    with _callbacks_lock:
        _callbacks.append(callback)


def _forked() -> None:
    global _generation, _callbacks_lock
    _generation += 1
    # The parent may have held the lock at the moment of the fork.
    _callbacks_lock = threading.Lock()
    for callback in list(_callbacks):
        callback()


if hasattr(os, "register_at_fork"):  # every POSIX platform; Windows cannot fork
    os.register_at_fork(after_in_child=_forked)


class ForkGuard:
    """Remembers the process that made its owner; says whether it is still that one.

    Args:
        what: how to name the owner in the message of :meth:`check`, such as
            ``"WebSocketServer on port 8765"``.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.pid = os.getpid()
        self._generation = _generation

    @property
    def inherited(self) -> bool:
        """Whether this process was forked from the one that made the owner."""
        return self._generation != _generation or self.pid != os.getpid()

    def message(self, action: str) -> str:
        """Why ``action`` cannot work in this process, and what to do instead."""
        return (
            f"{action}: this {self.what} was created in process {self.pid} and inherited "
            f"by process {os.getpid()} through fork() (a pre-fork server such as gunicorn "
            f"with --preload, multiprocessing, os.fork). Its accept loop and its connections "
            f"live in process {self.pid}, so here it would reach nobody. Create the server "
            f"in the process that serves it: on first use, or in a post-fork hook; when "
            f"several processes serve, give each its own server with reuse_port=True and a "
            f"hub (wsthread.hubs.RedisHub) so that broadcasts reach every process. See the "
            f"how-to 'Reloaders and pre-fork servers'."
        )

    def check(self, action: str) -> None:
        """Raise if the owner was inherited across ``fork()``.

        Raises:
            RuntimeError: this process is a fork of the one that made the owner;
                the message names ``action``, the cause and the fixes.
        """
        if self.inherited:
            raise RuntimeError(self.message(action))
