"""Byte transports under a connection: plain TCP, or TLS encrypted in memory.

A transport moves bytes and nothing else. Its one rule is that **writing
never blocks**: :meth:`Transport.write` appends to an outgoing buffer and
hands the socket whatever it takes right now; :meth:`Transport.flush` is the
separate, explicit step that waits (with a timeout on progress) for the rest.
That is what lets one thread broadcast to many connections without a slow
client holding it up: it writes, and leaves what did not fit in that
client's own buffer.

Reading blocks as usual: the connection's reader thread sits in
:meth:`Transport.recv`, while any other thread writes. A read that finds
nothing for :data:`wsthread.connection.parking.IDLE` seconds parks (on Linux): the
thread waits on a lock, and one process-wide epoll thread wakes parked
readers a few at a time, so that thousands of connections ending at once do
not wake thousands of threads into a fight for the GIL (see
:mod:`wsthread.connection.parking`). After a wake from parking that brought
the application nothing (a keepalive's pong), the reader calls
:meth:`Transport.quiet`, and the next read parks at once instead of waiting
``IDLE`` seconds in the kernel first.

For TLS, ``ssl.SSLSocket`` cannot offer a non-blocking write next to a
blocking read on the same socket, so :class:`TLSTransport` runs the TLS
state machine on memory buffers (``ssl.MemoryBIO``) under a lock and moves
the encrypted bytes over the plain socket itself. The lock also means reads
and writes never touch the TLS object at the same time.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
from collections import deque
from typing import Deque, List, Optional, Sequence, Union

from ..runtime.deadline import Deadline
from . import parking

__all__ = [
    "OutBuffer",
    "Transport",
    "TLSTransport",
    "wait_writable",
    "wait_readable",
    "wait_any_writable",
]

# A flag that makes one send() call non-blocking on a blocking socket.
# Platforms without it (Windows) fall back to blocking sends.
_DONTWAIT: int = getattr(socket, "MSG_DONTWAIT", 0)

_HANDSHAKE_READ = 65536

# How many buffers one sendmsg() hands the kernel at most (IOV_MAX is 1024 on Linux).
_IOV_BATCH = 64

Buffer = Union[bytes, memoryview]


class OutBuffer:
    """Bytes waiting for the socket, kept as views of the writers' buffers: never copied.

    A 1 MiB frame the socket takes only part of stays where it is; what is
    left goes out later, several buffers per ``sendmsg()`` call (header and
    payload of a large frame are two buffers: they are never joined).
    """

    __slots__ = ("_views", "size")

    def __init__(self) -> None:
        # Made by the first append: most connections never fill their socket,
        # and an empty deque takes about 600 bytes (0.7 KB of each idle
        # connection's cost).
        self._views: Optional[Deque[memoryview]] = None
        #: How many bytes wait (an attribute, not ``len()``: read once per write).
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def append(self, data: Buffer) -> None:
        """Add ``data`` (immutable bytes, or a view of them) behind what waits."""
        if len(data):
            if self._views is None:
                self._views = deque()
            self._views.append(data if isinstance(data, memoryview) else memoryview(data))
            self.size += len(data)

    def send(self, sock: socket.socket) -> int:
        """Send what the socket takes now, without blocking; return how much is left."""
        views = self._views
        while views:
            if len(views) == 1 or not _SENDMSG:
                batch: Sequence[memoryview] = (views[0],)
                try:
                    sent = sock.send(views[0], _DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    break
            else:
                batch = [views[i] for i in range(min(len(views), _IOV_BATCH))]
                try:
                    sent = sock.sendmsg(batch, (), _DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    break
            self._consume(sent)
            if sent < sum(len(view) for view in batch):
                break  # the socket is full
        return self.size

    def _consume(self, sent: int) -> None:
        self.size -= sent
        views = self._views
        assert views is not None  # send() found views to send
        while sent:
            first = views[0]
            if sent >= len(first):
                sent -= len(first)
                views.popleft()
            else:
                views[0] = first[sent:]
                sent = 0


_SENDMSG = hasattr(socket.socket, "sendmsg")


def _wait(sock: socket.socket, write: bool, timeout: Optional[float]) -> bool:
    """Wait until ``sock`` is writable (or readable); ``False`` on timeout."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLOUT if write else select.POLLIN)
        milliseconds = None if timeout is None else max(0, int(timeout * 1000))
        while True:
            try:
                return bool(poller.poll(milliseconds))
            except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                continue
    if write:
        _, ready, _ = select.select([], [sock], [], timeout)
    else:
        ready, _, _ = select.select([sock], [], [], timeout)
    return bool(ready)


def wait_writable(sock: socket.socket, timeout: Optional[float]) -> bool:
    """Wait at most ``timeout`` seconds for ``sock`` to accept data."""
    return _wait(sock, True, timeout)


def wait_any_writable(sockets: List[socket.socket], timeout: float) -> None:
    """Wait at most ``timeout`` seconds for any of ``sockets`` to accept data."""
    if not sockets:
        return
    if hasattr(select, "poll"):
        poller = select.poll()
        for sock in sockets:
            poller.register(sock, select.POLLOUT)
        poller.poll(max(0, int(timeout * 1000)))
    else:
        select.select([], sockets, [], timeout)


def wait_readable(sock: socket.socket, timeout: Optional[float]) -> bool:
    """Wait at most ``timeout`` seconds for data (or EOF) on ``sock``."""
    return _wait(sock, False, timeout)


class Transport:
    """A plain TCP transport over a connected socket in blocking mode.

    Args:
        sock: the connected socket; the transport keeps it in blocking mode
            and never changes its timeout.
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.settimeout(None)
        self.socket = sock
        self._out = OutBuffer()
        # Output is serialized by its one caller, the connection's writer
        # (under the writer lock), and a plain socket's reads never write:
        # the output methods here take no lock of their own (a broadcast
        # calls one per connection). TLS needs this one: its reads may owe
        # the peer bytes, written by the reading thread (TLSTransport).
        self._lock = threading.Lock()
        # Blocking reads give up after parking.IDLE seconds and park.
        self._parks = parking.park_after_idle(sock)
        # The last read woke from parking; then whether it was quiet().
        self._woke = False
        self._quiet = False

    # -- reading -----------------------------------------------------------

    def recv(self, size: int, timeout: Optional[float] = None) -> bytes:
        """Return up to ``size`` bytes, ``b""`` at the end of the stream.

        Raises:
            socket.timeout: nothing arrived within ``timeout`` seconds.
            OSError: the connection failed.
        """
        if self._woke:  # the last read woke from parking
            quiet = self._quiet and timeout is None
            self._woke = self._quiet = False
            if quiet:
                return self._recv_quietly(size)
        if timeout is None:
            try:
                return self.socket.recv(size)  # the common case: one call
            except BlockingIOError:
                if not self._parks:
                    raise
                self._park()  # idle for parking.IDLE seconds
        elif not self._wait_readable(timeout):
            raise socket.timeout("timed out")
        return self._recv_raw(size)

    def quiet(self) -> None:
        """Say that what the last read brought was nothing for the application.

        If that read woke from parking (a pong on an idle connection), the
        next read parks at once when nothing waits, instead of blocking
        :data:`~wsthread.connection.parking.IDLE` seconds in the kernel
        first: that timeout would wake the thread once more, for every
        keepalive round (at 20,000 idle connections pinged every 20 s, a
        thousand wakes a second). Otherwise this does nothing.
        """
        if self._woke:
            self._quiet = True

    def _recv_quietly(self, size: int) -> bytes:
        """Read what waits now; if nothing does, park at once, then read what came."""
        try:
            return self.socket.recv(size, _DONTWAIT)
        except BlockingIOError:
            self._park()
        return self._recv_raw(size)

    def readable(self) -> bool:
        """Whether bytes (or the end) are waiting to be read now; never blocks.

        For the keepalive: a pong may be waiting unread behind a reader that
        has not had its turn yet, which is this side's delay, not the peer's.
        """
        return wait_readable(self.socket, 0)

    def _recv_raw(self, size: int) -> bytes:
        """One read of the socket, parking while it stays idle (see :mod:`.parking`)."""
        while True:
            try:
                return self.socket.recv(size)
            except BlockingIOError:
                if not self._parks:
                    raise
                self._park()  # SO_RCVTIMEO: idle for parking.IDLE seconds

    def _wait_readable(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for data or EOF, parking past ``parking.IDLE``."""
        if not self._parks or timeout <= parking.IDLE:
            return wait_readable(self.socket, timeout)
        if wait_readable(self.socket, parking.IDLE):
            return True
        return self._park(timeout - parking.IDLE)

    def _park(self, timeout: Optional[float] = None) -> bool:
        """Wait, parked, until the socket is readable: ``True``; ``False`` after ``timeout``.

        Parking needs a descriptor for its epoll set when it starts. At the
        open-files limit there is none: this thread then waits in ``poll()``
        itself (no descriptor needed) rather than fail a healthy connection.
        """
        try:
            lot = parking.Parking.instance()
        except OSError:
            return wait_readable(self.socket, timeout)
        self._woke = readable = lot.wait(self.socket, timeout)
        self._quiet = False
        return readable

    # -- writing -------------------------------------------------------------

    @property
    def unsent(self) -> int:
        """How many bytes are waiting in the outgoing buffer."""
        return self._out.size

    def write(self, data: bytes) -> int:
        """Queue ``data`` and send what the socket accepts now; never blocks.

        What the socket does not take is kept as a view of ``data`` (so it
        must not change afterwards: pass ``bytes``). Returns how many bytes
        wait (:attr:`unsent`).

        Raises:
            OSError: the connection failed.
        """
        out = self._out
        if out.size:  # behind earlier bytes: keep the order
            out.append(data)
            return out.send(self.socket)
        try:
            sent = self.socket.send(data, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent < len(data):
            out.append(memoryview(data)[sent:])
        return out.size

    def write_parts(self, parts: Sequence[bytes]) -> int:
        """Like :meth:`write` for the concatenation of ``parts``, without concatenating them.

        Used for a large frame's header and payload: one ``sendmsg()``
        system call, and no copy of the payload. Returns how many bytes wait.

        Raises:
            OSError: the connection failed.
        """
        for part in parts:
            self._out.append(part)
        return self._send_locked()

    def send_some(self) -> int:
        """Send what the socket accepts now from the buffer; return what is left.

        Raises:
            OSError: the connection failed.
        """
        return self._send_locked()

    def _send_locked(self) -> int:
        """Send from the buffer; the caller serializes (the writer lock, and TLS's own lock)."""
        return self._out.send(self.socket)

    def flush(self, timeout: Optional[float]) -> None:
        """Wait until the outgoing buffer is empty.

        Args:
            timeout: how long the socket may accept nothing at all before
                giving up; every byte that goes out starts it again, so a
                large message over a slow but live link is not cut off.

        Raises:
            socket.timeout: no progress for ``timeout`` seconds.
            OSError: the connection failed.
        """
        left = self.send_some()
        while left:
            if not wait_writable(self.socket, timeout):
                raise socket.timeout(f"no write progress for {timeout} seconds")
            left = self.send_some()

    # -- ending --------------------------------------------------------------

    def shutdown(self) -> None:
        """Shut both directions down; wakes a reader blocked in :meth:`recv`."""
        try:
            self.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        """Release the socket."""
        self.socket.close()


class TLSTransport(Transport):
    """A TLS transport: the TLS state machine on memory buffers, the socket below.

    Build it with :meth:`handshake`, which runs the TLS handshake.
    """

    def __init__(
        self,
        sock: socket.socket,
        tls: ssl.SSLObject,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
    ) -> None:
        super().__init__(sock)
        self.tls = tls
        self._incoming = incoming
        self._outgoing = outgoing

    @classmethod
    def handshake(
        cls,
        sock: socket.socket,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: Optional[str] = None,
        deadline: Optional[Deadline] = None,
    ) -> TLSTransport:
        """Run the TLS handshake over ``sock`` within ``deadline``.

        Raises:
            ssl.SSLError: the handshake failed (bad certificate, not TLS...).
            socket.timeout: the deadline passed.
            OSError: the connection failed or closed during the handshake.
        """
        deadline = deadline if deadline is not None else Deadline(None)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(
            incoming, outgoing, server_side=server_side, server_hostname=server_hostname
        )
        try:
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    pass
                cls._send_blocking(sock, outgoing.read(), deadline)
                sock.settimeout(deadline.remaining())
                data = sock.recv(_HANDSHAKE_READ)
                if not data:
                    raise ConnectionResetError("the peer closed the connection during TLS setup")
                incoming.write(data)
            cls._send_blocking(sock, outgoing.read(), deadline)
        finally:
            sock.settimeout(None)
        return cls(sock, tls, incoming, outgoing)

    @staticmethod
    def _send_blocking(sock: socket.socket, data: bytes, deadline: Deadline) -> None:
        if data:
            sock.settimeout(deadline.remaining())
            sock.sendall(data)

    def recv(self, size: int, timeout: Optional[float] = None) -> bytes:
        """Return up to ``size`` decrypted bytes, ``b""`` at the end of the stream.

        Raises:
            socket.timeout: nothing arrived within ``timeout`` seconds.
            OSError: the connection failed (``ssl.SSLError`` included).
        """
        quiet = self._woke and self._quiet and timeout is None
        self._woke = self._quiet = False
        deadline = Deadline(timeout)
        while True:
            with self._lock:
                data = self._read_decrypted(size)
                if self._outgoing.pending:
                    # Reading can make TLS owe the peer bytes (a key update).
                    self._out.append(self._outgoing.read())
                    self._send_locked()
            if data is not None:
                return data
            remaining = deadline.remaining()
            if remaining is not None and not self._wait_readable(remaining):
                raise socket.timeout("timed out")
            raw = self._recv_quietly(size) if quiet else self._recv_raw(size)
            quiet = False
            with self._lock:
                if raw:
                    self._incoming.write(raw)
                else:
                    self._incoming.write_eof()

    def _read_decrypted(self, size: int) -> Optional[bytes]:
        """What TLS can decrypt now; ``None`` if it needs more bytes."""
        chunks: List[bytes] = []
        total = 0
        while total < size:
            try:
                chunk = self.tls.read(size - total)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                chunk = b""
            if not chunk:
                if not chunks:
                    return b""  # the end of the stream
                break
            chunks.append(chunk)
            total += len(chunk)
        if not chunks:
            return None
        return b"".join(chunks)

    def write(self, data: bytes) -> int:
        """Encrypt ``data``, queue it and send what the socket accepts now; return what waits."""
        with self._lock:
            self.tls.write(data)
            self._out.append(self._outgoing.read())
            return self._send_locked()

    def write_parts(self, parts: Sequence[bytes]) -> int:
        """Encrypt each part in turn (TLS copies every byte anyway: nothing to save here)."""
        with self._lock:
            for part in parts:
                self.tls.write(part)
            self._out.append(self._outgoing.read())
            return self._send_locked()

    def send_some(self) -> int:
        """Send what the socket accepts now; under the lock, as the reading thread may send too."""
        with self._lock:
            return self._send_locked()
