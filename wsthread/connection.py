"""The public WebSocket connection: recv, send, ping, close; on application threads and its reader.

Threads around one :class:`Connection`::

    socket ──recv──> [whoever has the turn] ──Protocol.receive_data──> events
                │  pongs and the close reply: through the Writer
                └──messages──> MessageQueue ──recv()──> application
    any thread ──send()/ping()/close()──> Writer (lock, write, flush) ──> socket
    broadcast ──Writer.enqueue()──> outbox ──Writer (if the lock is free)──> socket
                                                  └─ what did not fit: WritePump

Reading the socket and feeding the protocol is done by one thread at a
time, and by whoever waits for a message: an application thread blocked in
:meth:`Connection.recv` with nothing queued reads the socket itself, so a
message reaches it without a switch between threads. The connection's
reader thread is started (by :class:`~wsthread.threads.ReaderStarter`) only
when the socket has been left unread for a moment, or when the stream
ended, and then it reads whenever no application thread does: pings are
answered and a close is noticed even while the application is busy
elsewhere. The turn is kept by :class:`~wsthread.messages.MessageQueue`,
which is bounded: when the application falls behind, the reader thread
stops reading and TCP pushes back on the peer.

Every byte goes out through the connection's :class:`~wsthread.writer.Writer`
(see :mod:`wsthread.writer`): one lock covers building the frames *and*
handing them to the transport, so frames from two threads never
interleave, and one error policy applies to every write.
:meth:`Connection.send` (and ``ping``, ``close``) waits until the socket
has taken the frame, at most ``write_timeout`` seconds without progress;
``broadcast()`` never waits.

The connection ends in one place, :meth:`Connection._end_connection`, on
whichever thread read the end of the stream: it answers the peer, lets the
sans-I/O core decide whether to wait for the peer to close TCP
(``Protocol.should_close_transport``), releases the transport and wakes
every waiter.
"""

from __future__ import annotations

import codecs
import logging
import os
import socket
import threading
import time
from typing import (
    Any,
    Dict,
    Iterable,
    Iterator,
    List,
    MutableMapping,
    Optional,
    Tuple,
    Union,
)

from .deadline import Deadline
from .exceptions import ConnectionClosed, ConnectionClosedOK
from .messages import HOLD, Data, Item, MessageQueue, QueueClosed
from .sansio.frames import CloseCode
from .sansio.protocol import CloseReceived, Fragment, Message, Ping, Pong, Protocol, State
from .threads import ReaderStarter, shared, start_thread
from .transport import Transport
from .writer import Writer

__all__ = ["Connection", "Data", "format_address", "peer_address"]

logger = logging.getLogger("wsthread")

# How much one recv() asks for.
# 64 KiB stays under glibc's mmap threshold: a blocked recv() of 256 KiB
# held a fresh mapping per idle connection (measured: 40 KB -> 37 KB of RSS).
_RECV_SIZE = 64 * 1024
_HANDSHAKE_READ = 65536


def peer_address(sock: socket.socket) -> Any:
    """The address of ``sock``'s peer, or ``None`` if it has none (any more)."""
    try:
        return sock.getpeername()
    except OSError:
        return None


def _sockname(sock: socket.socket) -> Any:
    try:
        return sock.getsockname()
    except OSError:
        return None


def format_address(address: Any) -> str:
    """A socket address for logs: ``host:port``, ``[v6 host]:port``, ``unix:path``."""
    if isinstance(address, str):  # a Unix socket: its path, or "" when unnamed
        return f"unix:{address}" if address else "unix"
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address)


_NO_DEADLINE = Deadline(None)  # shared: a Deadline without a timeout never changes


class _PeerLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Put the peer's address at the start of every line a connection logs."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> Tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        return f"[{extra.get('peer')}] {msg}", kwargs


class _Converter:
    """Turn the pieces of one message into the type ``recv_streaming(decode=...)`` asks for."""

    def __init__(self, decode: Optional[bool]) -> None:
        self.decode = decode
        self._decoder: Optional[codecs.IncrementalDecoder] = None

    def __call__(self, piece: Data, final: bool) -> Data:
        if self.decode is None:
            return piece
        if not self.decode:
            return piece.encode("utf-8") if isinstance(piece, str) else piece
        if isinstance(piece, str):
            return piece
        if self._decoder is None:
            self._decoder = codecs.getincrementaldecoder("utf-8")()
        return self._decoder.decode(piece, final)


class Connection:
    """The part of a WebSocket connection shared by servers and clients.

    Use it from any number of threads: :meth:`send`, :meth:`ping` and
    :meth:`close` are thread-safe; :meth:`recv` and iteration hand each
    message to exactly one caller.

    Args:
        transport: the byte transport (plain or TLS), after the opening handshake.
        protocol: the sans-I/O protocol for this side.
        close_timeout: how long :meth:`close` waits for the peer's close
            frame (and a client for the server's TCP close); ``None`` waits
            forever.
        max_queue: how many received messages may wait for :meth:`recv`
            before the reader stops reading; ``None`` for no limit.
        write_timeout: how long a write may make no progress at all (the
            peer takes no bytes) before the connection is failed; ``None``
            waits for ever.
        write_limit: how many bytes a non-blocking send (``broadcast``) may
            leave waiting for this peer before the connection is closed with
            1013; ``None`` for no limit.
        initial_data: bytes that arrived right behind the handshake.
        logger: where this connection logs; defaults to ``wsthread``.
        thread_stack_size: the stack, in bytes, of the reader thread;
            ``None``: the platform's default.
    """

    def __init__(
        self,
        transport: Transport,
        protocol: Protocol,
        *,
        close_timeout: Optional[float] = 10,
        max_queue: Optional[int] = 16,
        write_timeout: Optional[float] = 10,
        write_limit: Optional[int] = 2**20,
        initial_data: bytes = b"",
        logger: Optional[logging.Logger] = None,
        thread_stack_size: Optional[int] = None,
    ) -> None:
        self.transport = transport
        self.thread_stack_size = thread_stack_size
        self.socket = transport.socket
        self.protocol = protocol
        self.close_timeout = close_timeout
        self.write_timeout = write_timeout
        self.write_limit = write_limit
        self._initial_data = initial_data
        self.remote_address: Any = peer_address(transport.socket)
        """The peer's address: ``(host, port)`` over TCP, a path over a Unix socket."""
        self.local_address: Any = _sockname(transport.socket)
        """This side's address: ``(host, port)`` over TCP, a path over a Unix socket."""
        base_logger = logger if logger is not None else globals()["logger"]
        self.logger: logging.LoggerAdapter = _PeerLogger(  # type: ignore[type-arg]
            base_logger, {"websocket": self, "peer": format_address(self.remote_address)}
        )
        self._messages = MessageQueue(max_queue, reader_first=bool(initial_data))
        # Every byte this connection writes goes through its writer.
        self.writer = Writer(
            transport,
            protocol,
            write_timeout=write_timeout,
            write_limit=write_limit,
            logger=self.logger,
            on_fail=self._messages.stop_waiting,
        )
        self._read_error: Optional[OSError] = None
        self._pings: Dict[bytes, threading.Event] = {}  # guarded by the writer lock
        self._ping_times: Dict[bytes, float] = {}  # when each ping went out; the same lock
        self._latency: Optional[float] = None
        # Fragmented messages come out of the protocol piece by piece; recv()
        # joins them, recv_streaming() hands them on. One receiver at a time.
        protocol.fragments = True
        self._recv_lock = threading.Lock()
        self._parts: List[Data] = []  # pieces of a message a timed-out recv() began
        self._skip_rest = False  # an abandoned recv_streaming(): drop the rest of its message
        # Counters for stats(); each is written under one lock or by the one
        # thread holding the read turn, and read without locking.
        self._messages_received = 0
        self._bytes_received = 0
        self._closed = threading.Event()
        self._reader: Optional[threading.Thread] = None  # made when needed
        # The reader thread starts only once it is needed (see ReaderStarter).
        self._opened = False
        self._reader_started = False
        self._reader_start_lock = threading.Lock()
        self._reader_check_pending = False
        # The keepalive state, driven by a Keepalive thread shared by many connections.
        self._next_ping: Optional[float] = None
        self._pong_deadline: Optional[float] = None
        self._keepalive_payload: Optional[bytes] = None

    def start(self) -> None:
        """Begin receiving. Call it once, right after the handshake.

        Messages are read by the application thread that waits in
        :meth:`recv`. The connection's reader thread starts only when the
        socket has been left unread for a moment (a handler that never reads,
        or is busy elsewhere) or the connection ends; so an idle connection
        whose handler waits in ``recv()`` costs one thread, not two.
        """
        self._opened = True
        if self._initial_data:
            self._start_reader()  # the bytes behind the handshake are the reader's
        else:
            self._arm_reader_check(HOLD)

    def _handshake_done(self, trailing_data: bytes) -> None:
        """Keep the bytes that came right behind the handshake: the reader thread's first."""
        if trailing_data:
            self._initial_data = trailing_data
            self._messages.reader_first()

    def _read_http(self, parser: Any, deadline: Deadline) -> Any:
        """Read the peer's handshake until ``parser.feed()`` returns it; ``None`` at EOF.

        The opening handshake's read loop, for both sides.

        Raises:
            socket.timeout: the deadline passed.
            InvalidHandshake: what ``parser.feed()`` raises for a bad message.
            OSError: the connection failed.
        """
        while True:
            data = self.transport.recv(_HANDSHAKE_READ, deadline.remaining())
            if not data:
                return None
            message = parser.feed(data)
            if message is not None:
                return message

    def _start_reader(self) -> None:
        """Start the reader thread unless it runs (or ran) already."""
        with self._reader_start_lock:
            if self._reader_started:
                return
            self._reader_started = True
            self._reader = threading.Thread(
                target=self._read_loop, name=f"wsthread-reader-{self.remote_address}", daemon=True
            )
        start_thread(self._reader, self.thread_stack_size)

    def _arm_reader_check(self, delay: float) -> None:
        """Ask :class:`ReaderStarter` to look at this connection in ``delay`` seconds."""
        self._reader_check_pending = True
        shared(ReaderStarter).schedule(time.monotonic() + delay, self._reader_check)

    def _reader_check(self) -> None:
        """Start the reader thread if nobody has read for a while (called by ReaderStarter)."""
        self._reader_check_pending = False
        if self._reader_started:
            return
        delay = self._messages.reader_delay()
        if delay is None:
            return  # an application thread reads; it arms a check when it stops
        if delay <= 0:
            self._start_reader()
        else:
            self._arm_reader_check(delay)

    # -- public API ---------------------------------------------------------

    @property
    def close_code(self) -> Optional[int]:
        """The peer's close code once the connection is closed, else ``None``.

        1005 means the peer's close frame had no code; 1006 means no close
        frame arrived.
        """
        if not self._closed.is_set():
            return None
        return self.protocol.close_exception().code

    @property
    def close_reason(self) -> Optional[str]:
        """The peer's close reason once the connection is closed, else ``None``."""
        if not self._closed.is_set():
            return None
        return self.protocol.close_exception().reason

    @property
    def received_bytes(self) -> int:
        """Bytes of received messages waiting for :meth:`recv` (their size in memory)."""
        return self._messages.backlog_bytes

    @property
    def closed(self) -> bool:
        """Whether the connection is fully closed (reader finished, TCP closed)."""
        return self._closed.is_set()

    @property
    def latency(self) -> Optional[float]:
        """The round trip, in seconds, of the last ping that got its pong; ``None`` before.

        Keepalive pings (``ping_interval``) keep it up to date; :meth:`ping`
        updates it too.
        """
        return self._latency

    def stats(self) -> Dict[str, Any]:
        """What went through this connection; cheap, safe from any thread.

        A ``dict`` ready for ``json.dumps``::

            {"messages_received": 12, "bytes_received": 1410,
             "messages_sent": 12, "bytes_sent": 1374,
             "queued": 0, "latency": 0.00021}

        Bytes are counted on the wire (frame headers and control frames
        included, after compression); ``queued`` is how many messages (or
        pieces of a fragmented one) wait for :meth:`recv`; ``latency`` is
        :attr:`latency`. The counters are plain integers bumped where the
        connection already holds a lock or the read turn, so keeping them
        costs next to nothing.
        """
        writer = self.writer
        return {
            "messages_received": self._messages_received,
            "bytes_received": self._bytes_received,
            "messages_sent": writer.messages_sent,
            "bytes_sent": writer.bytes_sent,
            "queued": self._messages.backlog,
            "latency": self._latency,
        }

    def recv(self, timeout: Optional[float] = None, decode: Optional[bool] = None) -> Data:
        """Return the next message: ``str`` for text, ``bytes`` for binary.

        Args:
            timeout: seconds to wait; ``None`` waits for ever. A fragmented
                message that is not complete in time stays half read, and
                the next call goes on with it.
            decode: ``None`` keeps each message's own type; ``False``
                returns text messages as their UTF-8 bytes too (a relay
                that passes text on as it came); ``True`` decodes binary
                messages as UTF-8 too (``UnicodeDecodeError`` if they are
                not).

        Raises:
            TimeoutError: no message arrived in time (the connection is fine).
            ConnectionClosed: the connection is closed and every message
                received before the close has been returned.
        """
        deadline = _NO_DEADLINE if timeout is None else Deadline(timeout)
        if not self._recv_lock.acquire(True, -1 if timeout is None else timeout):
            raise TimeoutError(f"no message within {timeout} seconds")
        try:
            if self._skip_rest:
                self._skip_fragments(deadline, timeout)
            if self._parts:
                message = self._assemble(None, deadline, timeout)
            else:
                item = self._next_item(deadline, timeout)
                if type(item) is Fragment:
                    message = self._assemble(item, deadline, timeout)
                else:
                    message = item  # type: ignore[assignment]
        finally:
            self._recv_lock.release()
        if decode is None:
            return message
        if decode:
            return message if isinstance(message, str) else message.decode("utf-8")
        return message.encode("utf-8") if isinstance(message, str) else message

    def recv_streaming(self, decode: Optional[bool] = None) -> Iterator[Data]:
        """Yield the next message piece by piece, as its frames arrive.

        For messages too large to hold at once (an upload, a file): each
        frame's payload is yielded as soon as it is read, and a consumer
        that is slow to ask for the next piece makes the connection stop
        reading, so TCP pushes back on the sender. ``max_size`` still bounds
        the whole message, and text is checked as UTF-8 piece by piece (an
        invalid piece fails the connection with 1007, before it is
        yielded). A message sent in one frame comes as one piece.

        Iterate to the end, or close the iterator, before calling
        :meth:`recv` again: no other receiver gets a message meanwhile. If
        the iterator is dropped early, the rest of its message is skipped.

        Args:
            decode: as for :meth:`recv`, applied to each piece (binary
                pieces are decoded incrementally, so a character may span
                two pieces).

        Raises:
            ConnectionClosed: the connection closed before the message
                ended (or before it began).
        """
        self._recv_lock.acquire()
        finished = False
        try:
            deadline = _NO_DEADLINE
            if self._skip_rest:
                self._skip_fragments(deadline, None)
            convert = _Converter(decode)
            pending, self._parts = self._parts, []
            for piece in pending:  # what a timed-out recv() had begun
                yield convert(piece, False)
            item = self._next_item(deadline, None)
            while True:
                if type(item) is not Fragment:
                    assert not pending, "a whole message inside a fragmented one"
                    finished = True
                    yield convert(item, True)  # type: ignore[arg-type]
                    break
                fin = item.fin
                finished = fin
                yield convert(item.data, fin)
                if fin:
                    break
                item = self._next_item(deadline, None)
        finally:
            if not finished:
                self._skip_rest = True
            self._recv_lock.release()

    def _next_item(self, deadline: Deadline, timeout: Optional[float]) -> Item:
        """Take the next message or piece from the queue, reading the socket if it is free."""
        try:
            return self._messages.get(deadline.remaining(), self._read_directly)
        except QueueClosed:
            self._closed.wait()
            raise self.protocol.close_exception() from None
        except socket.timeout:  # not a TimeoutError before Python 3.10
            raise TimeoutError(f"no message within {timeout} seconds") from None
        finally:
            if not self._reader_started and not self._reader_check_pending:
                self._arm_reader_check(HOLD)

    def _assemble(
        self, item: Optional[Fragment], deadline: Deadline, timeout: Optional[float]
    ) -> Data:
        """Join a fragmented message; its pieces so far stay in ``_parts`` if time runs out."""
        parts = self._parts
        while True:
            if item is not None:
                parts.append(item.data)
                if item.fin:
                    break
            taken = self._next_item(deadline, timeout)
            assert type(taken) is Fragment, "a whole message inside a fragmented one"
            item = taken
        self._parts = []
        return "".join(parts) if isinstance(parts[0], str) else b"".join(parts)  # type: ignore[arg-type]

    def _skip_fragments(self, deadline: Deadline, timeout: Optional[float]) -> None:
        """Drop the rest of a message whose streaming reader gave up on it."""
        self._parts = []
        while True:
            item = self._next_item(deadline, timeout)
            if type(item) is not Fragment or item.fin:
                break
        self._skip_rest = False

    def __iter__(self) -> Iterator[Data]:
        """Yield messages until the connection closes normally.

        A normal closure (1000, 1001) ends the loop; an abnormal one raises
        :class:`ConnectionClosedError`.
        """
        while True:
            try:
                yield self.recv()
            except ConnectionClosedOK:
                return

    def send(self, message: Union[Data, Iterable[Data]], *, text: Optional[bool] = None) -> None:
        """Send a message: ``str`` as text, ``bytes``-like as binary.

        An iterable of ``str`` or of bytes-like pieces is sent as one
        fragmented message, one frame per piece; no other message can slip
        between its frames. Safe to call from any thread. Returns once the
        socket has taken the whole message; if the peer takes nothing for
        ``write_timeout`` seconds, the connection is failed.

        Args:
            message: what to send.
            text: ``None`` sends ``str`` as text and bytes as binary;
                ``True`` sends bytes as a text message as they are, without
                decoding them (they must be UTF-8: the peer fails the
                connection with 1007 otherwise); ``False`` sends ``str`` as a
                binary message (its UTF-8 bytes).

        Raises:
            ConnectionClosed: the connection is closed or closing (or was
                just failed by the write timeout).
            TypeError: ``message`` is of an unsupported type.
        """
        protocol = self.protocol
        writer = self.writer
        if isinstance(message, str):
            data = message.encode("utf-8")
            with writer:
                writer.write(
                    protocol.send_text(data) if text is not False else protocol.send_binary(data)
                )
                writer.messages_sent += 1
        elif isinstance(message, (bytes, bytearray, memoryview)):
            data = bytes(message)
            with writer:
                writer.write(protocol.send_binary(data) if not text else protocol.send_text(data))
                writer.messages_sent += 1
        elif isinstance(message, Iterable):
            self._send_fragments(message, text)
        else:
            raise TypeError(f"cannot send {type(message).__name__}: expected str or bytes")

    def _send_fragments(self, fragments: Iterable[Data], text: Optional[bool]) -> None:
        protocol = self.protocol
        writer = self.writer
        with writer:
            kind: Optional[type] = None
            for piece in fragments:
                if isinstance(piece, str):
                    data = piece.encode("utf-8")
                    piece_kind: type = str
                elif isinstance(piece, (bytes, bytearray, memoryview)):
                    data = bytes(piece)
                    piece_kind = bytes
                else:
                    raise TypeError(f"cannot send a fragment of type {type(piece).__name__}")
                if kind is None:
                    kind = piece_kind
                    as_text = kind is str if text is None else text
                    frame = (
                        protocol.send_text(data, fin=False)
                        if as_text
                        else protocol.send_binary(data, fin=False)
                    )
                elif piece_kind is not kind:
                    # The message is half sent: the only honest way out is to fail.
                    writer.write(protocol.send_close(CloseCode.INTERNAL_ERROR, "mixed fragments"))
                    raise TypeError("all fragments of a message must be str, or all bytes")
                else:
                    frame = protocol.send_continuation(data, fin=False)
                writer.write(frame)
            if kind is not None:
                writer.write(protocol.send_continuation(b"", fin=True))
                writer.messages_sent += 1

    def ping(self, data: Union[str, bytes, None] = None) -> threading.Event:
        """Send a ping; the returned event is set when the matching pong arrives.

        Without ``data``, a random 4-byte payload is used. A pong also
        acknowledges every ping sent before the one it answers. The event is
        set too when the connection closes: check :attr:`closed` after waiting.
        """
        if data is None:
            payload = os.urandom(4)
        elif isinstance(data, str):
            payload = data.encode("utf-8")
        else:
            payload = bytes(data)
        waiter = threading.Event()
        with self.writer:
            if payload in self._pings:
                raise ValueError("a ping with this payload is already waiting for its pong")
            frame = self.protocol.send_ping(payload)
            self._pings[payload] = waiter
            self._ping_times[payload] = time.monotonic()
            self.writer.write(frame)
        return waiter

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Perform the closing handshake and wait, at most ``close_timeout``, for it.

        Safe to call several times and from several threads: only the first
        call sends a close frame; every call returns once the connection is
        closed (or the timeout forced it closed).
        """
        self._messages.stop_waiting()
        with self.writer:
            self._send_close_frame(code, reason)
        self._wait_closed()

    def _send_close_frame(self, code: int, reason: str) -> None:
        """Send a close frame unless one went out already; the caller holds the lock."""
        if self.protocol.close_sent is None and not self.writer.closed:
            try:
                self.writer.write(self.protocol.send_close(code, reason))
            except ConnectionClosed:
                pass

    def _wait_closed(self) -> None:
        if threading.current_thread() is self._reader:
            return
        if not self._opened and not self._closed.is_set():
            # The connection never opened (the handshake failed): close here.
            self.writer.shutdown()
            self._closed.set()
            return
        self._start_reader()  # it reads the peer's close frame and ends the connection
        if not self._closed.wait(self.close_timeout):
            self.logger.debug("closing handshake timed out; closing the TCP connection")
            self.writer.shutdown()
            self._closed.wait()

    def fail(self, code: int, reason: str) -> None:
        """Close with ``code`` without waiting for the peer: send a close frame, drop TCP.

        Used when this side gives up on the connection (a keepalive timeout,
        a stalled peer). Never blocks: the close frame goes out only if the
        writer lock is free and the socket takes it at once.
        """
        self.writer.fail(code, reason)  # which calls self._messages.stop_waiting()

    # -- the reader thread ------------------------------------------------

    def _read_loop(self) -> None:
        """The reader thread: read whenever it is its turn until the stream ends, then end."""
        protocol = self.protocol
        inbox = self._messages
        transport = self.transport
        try:
            # The reader starts with the turn when bytes came behind the handshake.
            if self._initial_data and self._process(self._initial_data, block=True):
                inbox.reader_done()
            # An application thread that read the end of the stream leaves the
            # rest to this thread: reader_turn() then returns False.
            while not protocol.receiving_done and inbox.reader_turn():
                try:
                    data = transport.recv(_RECV_SIZE)
                except OSError as exc:
                    self._read_error = exc
                    break
                if not data:
                    protocol.receive_eof()
                    break
                if not self._process(data, block=True):
                    break
                inbox.reader_done()
        except Exception:  # a bug; never let it pass silently
            self.logger.exception("unexpected error in the reader thread")
        self._end_connection()

    def _end_connection(self) -> None:
        """End the connection: the one way, on whichever thread read the end of the stream.

        1. A close frame or a protocol error is answered, once the
           application has taken the messages that came before it (RFC 6455
           allows data frames until this side's close frame).
        2. If the protocol says the TCP connection should not be closed yet
           (``should_close_transport``: a client lets the server close it
           first), wait for the peer's EOF, at most ``close_timeout``.
        3. The transport is released and every waiter woken: ``recv()``,
           ``close()``, pings.
        """
        protocol = self.protocol
        try:
            if self._read_error is not None:
                if not self.writer.closed:
                    self.logger.debug("connection lost: %s", self._read_error)
            elif not protocol.eof:
                if not self._messages.empty:
                    self._messages.wait_drained(self.close_timeout)
                self._flush_replies()
            if protocol.failure is not None:
                self.logger.info(
                    "failing the connection with %d: %s", protocol.failure.code, protocol.failure
                )
            elif self._read_error is None and not protocol.should_close_transport:
                self._wait_for_eof()
        except Exception:  # a bug; never let it pass silently
            self.logger.exception("unexpected error while ending the connection")
        finally:
            self._release()

    def _release(self) -> None:
        """Release the transport and wake everyone waiting on the connection."""
        self.writer.shutdown()
        self._messages.close()
        # Not under the writer lock: a writer may be blocked on the socket
        # this call has just shut down. list() copies the dict in one step.
        for waiter in list(self._pings.values()):
            waiter.set()
        self._closed.set()

    def _read_directly(self, timeout: Optional[float]) -> bool:
        """Read and process once on an application thread waiting in :meth:`recv`.

        Returns ``False`` at the end of the stream (a close frame, an error,
        EOF): the connection is then ended here, or by the reader thread if
        messages are still queued (it is started if it is not running yet).

        Raises:
            socket.timeout: nothing arrived within ``timeout`` seconds.
        """
        going_on = self._read_once(timeout)
        if not going_on and not self._end_on_this_thread():
            self._start_reader()
        return going_on

    def _end_on_this_thread(self) -> bool:
        """End the connection on the calling application thread, if nothing needs a reader.

        When no message is left for the application to take, the end needs
        no waiting: answer the close, release everything, here, instead of
        starting a thread only to do that (thousands of clients leaving at
        once would start thousands of threads). Returns whether it did.
        """
        if self._messages.backlog:
            return False  # the reader thread lets the application take them first
        with self._reader_start_lock:
            if self._reader_started:
                return False
            self._reader_started = True  # no reader thread, ever, for this connection
        self._end_connection()
        return True

    def _read_once(self, timeout: Optional[float]) -> bool:
        protocol = self.protocol
        if protocol.receiving_done:
            return False
        try:
            data = self.transport.recv(_RECV_SIZE, timeout)
        except socket.timeout:
            raise
        except OSError as exc:
            self._read_error = exc
            return False
        if not data:
            protocol.receive_eof()
            return False
        return self._process(data, block=False)

    def _process(self, data: bytes, block: bool) -> bool:
        """Feed the protocol and dispatch its events; ``False`` once receiving ends."""
        protocol = self.protocol
        self._bytes_received += len(data)
        events = protocol.receive_data(data)
        ending = protocol.failure is not None or protocol.close_rcvd is not None
        if not ending and any(type(event) is Ping for event in events):
            self._flush_replies()
        for event in events:
            kind = type(event)
            if kind is Message:
                self._messages_received += 1
                if not self._messages.put(event.data, block):  # type: ignore[union-attr]
                    self.logger.debug("message dropped: the connection is closing")
            elif kind is Fragment:
                if event.fin:  # type: ignore[union-attr]
                    self._messages_received += 1
                if not self._messages.put(event, block):  # type: ignore[arg-type]
                    self.logger.debug("fragment dropped: the connection is closing")
            elif kind is Pong:
                self._acknowledge_pings(event.data)  # type: ignore[union-attr, arg-type]
            elif kind is CloseReceived:
                self.logger.debug("close frame received: %s", event)
        return not ending

    def _flush_replies(self) -> None:
        """Write the pongs and the close frame the protocol owes the peer."""
        writer = self.writer
        with writer:
            output = self.protocol.data_to_send()
            if output:
                try:
                    writer.write(output)
                except ConnectionClosed:
                    pass

    def _wait_for_eof(self) -> None:
        """Wait, at most ``close_timeout``, for the peer to close TCP (a client's last step)."""
        deadline = Deadline(self.close_timeout)
        try:
            while self.transport.recv(_RECV_SIZE, deadline.remaining()):
                pass
        except OSError:
            pass

    def _acknowledge_pings(self, payload: bytes) -> None:
        now = time.monotonic()
        with self.writer.lock:
            if payload not in self._pings:
                return
            if payload == self._keepalive_payload:
                self._pong_deadline = None
                self._keepalive_payload = None
            sent = self._ping_times.get(payload)
            if sent is not None:
                self._latency = now - sent
            # A pong acknowledges the ping it answers and every earlier one.
            acknowledged: List[bytes] = []
            for key, waiter in self._pings.items():
                acknowledged.append(key)
                waiter.set()
                if key == payload:
                    break
            for key in acknowledged:
                del self._pings[key]
                self._ping_times.pop(key, None)

    # -- keepalive -----------------------------------------------------------

    def keepalive_tick(self, now: float, interval: float, timeout: Optional[float]) -> None:
        """Send a keepalive ping when due; fail with 1011 if the last one went unanswered.

        Called by :class:`Keepalive`, never by the application; never blocks.
        """
        if self.writer.closed or self.protocol.state is not State.OPEN:
            return
        if self._pong_deadline is not None and now >= self._pong_deadline:
            self.logger.info("no pong within %s seconds: closing with 1011", timeout)
            self.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            return
        if self._next_ping is None:
            self._next_ping = now + interval
            return
        if now < self._next_ping or self._keepalive_payload is not None:
            return
        self._next_ping = now + interval
        # Never wait behind a long send: a busy writer will try again next time.
        writer = self.writer
        if not writer.lock.acquire(blocking=False):
            return
        try:
            payload = os.urandom(4)
            frame = self.protocol.send_ping(payload)
            self._pings[payload] = threading.Event()
            self._ping_times[payload] = time.monotonic()
            self._keepalive_payload = payload
            if timeout is not None:
                self._pong_deadline = now + timeout
            writer.write(frame, wait=False)
        except ConnectionClosed:
            pass
        finally:
            writer.lock.release()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.remote_address} {self.protocol.state.name}>"
