"""Running out of file descriptors (or socket memory): what the accept thread does about it.

When the process reaches its open-files limit, ``accept()`` fails with
EMFILE, and the pending connection stays in the kernel's queue: the
listening socket stays readable, so a naive accept loop spins at 100% CPU
and the client waits for nothing. :class:`AcceptGuard`, used by the
server's accept thread, does this instead:

- it keeps one **reserve descriptor** open (on ``/dev/null``); at the
  limit it closes it, accepts the waiting client with the freed slot,
  answers ``503 Service Unavailable`` without reading the request, closes,
  and takes the reserve back. So a client arriving at the limit gets a
  prompt answer rather than a hang, and the queue drains at the pace the
  clients arrive: no spinning;
- when even that is impossible (the reserve could not be taken back, or the
  error is ENFILE, ENOBUFS or ENOMEM, which a descriptor of ours does not
  cure), it **backs off**: the accept loop waits, 10 ms at first, doubling
  up to 0.5 s, and is woken **at once** when one of the server's own
  connections ends and so frees a descriptor;
- it logs **one WARNING per episode**, with the limit and how to raise it,
  and one INFO line when accepting works again; every failed ``accept()``
  is counted in ``server.stats()["accept_errors"]``.

Which thread: the server's accept thread calls :meth:`AcceptGuard.failed`
and :meth:`AcceptGuard.accepted`; connection threads call
:meth:`AcceptGuard.descriptor_freed`. State is guarded by a lock.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from typing import Any, Callable, Optional

__all__ = ["AcceptGuard", "RESOURCE_ERRNOS", "describe_limit", "is_resource_error"]

#: The ``accept()``/``socket()`` errors that mean "out of descriptors or memory".
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 44\r\n"
    b"Connection: close\r\n"
    b"Retry-After: 1\r\n"
    b"\r\n"
    b"the server is out of resources: retry later\n"
)

_FIRST_PAUSE = 0.01
_LONGEST_PAUSE = 0.5


def is_resource_error(exc: BaseException) -> bool:
    """Whether ``exc`` is an OSError meaning the process is out of descriptors or memory."""
    return isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS


def describe_limit() -> str:
    """The open-files limit of this process and how to raise it, in one sentence."""
    try:
        import resource
    except ImportError:  # not on Unix
        return "raise the process's limit on open files"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    shown = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    return (
        f"open-files limit: {soft} (hard limit {shown}); raise it with `ulimit -n N` in the "
        f"shell that starts the server, LimitNOFILE=N in a systemd unit, or "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, (N, hard)) at startup"
    )


class AcceptGuard:
    """Keep an accept loop calm and useful at the open-files limit.

    Args:
        logger: where the once-per-episode WARNING goes.
        count: called with the errno's name (``"EMFILE"``) for each failure.
    """

    def __init__(self, logger: Any, count: Optional[Callable[[str], None]] = None) -> None:
        self.logger = logger
        self._count = count
        self._lock = threading.Lock()
        self._freed = threading.Event()
        self._reserve: Optional[int] = None
        self._episode_started: Optional[float] = None
        self._refused = 0
        self._pause = 0.0
        self._closed = False
        self._take_reserve()

    # -- the accept thread ---------------------------------------------------

    def failed(self, exc: OSError, listener: socket.socket) -> None:
        """``accept()`` on ``listener`` failed with ``exc``: log, answer with the reserve, or pause.

        Errors other than :data:`RESOURCE_ERRNOS` are ignored (socketserver
        drops them, as before).
        """
        if exc.errno not in RESOURCE_ERRNOS:
            return
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        if self._count is not None:
            self._count(name)
        with self._lock:
            first = self._episode_started is None
            if first:
                self._episode_started = time.monotonic()
                self._refused = 0
            self._freed.clear()
        if first:
            limit = describe_limit() if exc.errno == errno.EMFILE else _system_hint(exc.errno)
            self.logger.warning(
                "cannot accept connections: %s (%s); answering new clients with 503 "
                "and retrying as connections close. %s",
                os.strerror(exc.errno or 0),
                name,
                limit,
            )
        if exc.errno == errno.EMFILE and self._answer_with_reserve(listener):
            self._pause = 0.0
            return
        self._pause = min(_LONGEST_PAUSE, max(_FIRST_PAUSE, self._pause * 2))

    def accepted(self) -> None:
        """``accept()`` worked: end the episode, if one was going on."""
        if self._episode_started is None:
            return
        with self._lock:
            started, self._episode_started = self._episode_started, None
            refused = self._refused
        self._pause = 0.0
        if self._reserve is None:
            self._take_reserve()
        if started is not None:
            self.logger.info(
                "accepting connections again after %.1f s (%d clients answered 503 meanwhile)",
                time.monotonic() - started,
                refused,
            )

    def pause(self) -> float:
        """Seconds the accept loop should wait before trying again (0: go on)."""
        return self._pause

    def wait(self, seconds: float) -> None:
        """Wait ``seconds``, or less if a descriptor is freed or :meth:`close` is called."""
        self._freed.wait(seconds)
        self._freed.clear()

    @property
    def at_limit(self) -> bool:
        """Whether an episode is going on."""
        return self._episode_started is not None

    # -- any thread ------------------------------------------------------------

    def descriptor_freed(self) -> None:
        """One of the server's connections closed: an accept loop that waits tries again now."""
        if self._episode_started is not None:
            self._freed.set()

    def close(self) -> None:
        """Give the reserve descriptor back and wake the accept loop."""
        with self._lock:
            self._closed = True
            reserve, self._reserve = self._reserve, None
        if reserve is not None:
            os.close(reserve)
        self._freed.set()

    # -- helpers -----------------------------------------------------------------

    def _take_reserve(self) -> None:
        with self._lock:
            if self._closed or self._reserve is not None:
                return
            try:
                self._reserve = os.open(os.devnull, os.O_RDONLY)
            except OSError:
                self._reserve = None

    def _answer_with_reserve(self, listener: socket.socket) -> bool:
        """Accept one client on the reserve descriptor and answer 503.

        Returns whether the reserve is held again afterwards (``False``: the
        accept loop should back off).
        """
        with self._lock:
            reserve, self._reserve = self._reserve, None
        if reserve is None:
            self._take_reserve()  # perhaps a descriptor was freed since
            return False
        os.close(reserve)
        try:
            self._answer_one(listener)
        finally:
            self._take_reserve()
        return self._reserve is not None

    def _answer_one(self, listener: socket.socket) -> None:
        timeout = listener.gettimeout()
        listener.setblocking(False)  # the client may have given up meanwhile
        try:
            client, _ = listener.accept()
        except OSError:
            return
        finally:
            listener.settimeout(timeout)
        with client:
            client.setblocking(False)
            try:
                client.send(_BUSY_RESPONSE)
                # Drain what the client already sent, so that closing does
                # not reset the connection before it reads the 503.
                client.recv(65536)
            except OSError:
                pass
            try:
                client.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        with self._lock:
            self._refused += 1


def _system_hint(code: Optional[int]) -> str:
    if code == errno.ENFILE:
        return "the whole system is out of file descriptors (see /proc/sys/fs/file-max)"
    return "the system is short of memory for sockets"
