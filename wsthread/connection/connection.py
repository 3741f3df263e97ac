"""The public WebSocket connection: recv, send, ping, close; on application threads and its reader.

Threads around one :class:`Connection`::

    socket ──recv──> [whoever has the turn] ──Protocol.receive_data──> events
                │  pongs and the close reply: through the Writer
                └──messages──> MessageQueue ──recv()──> application
    any thread ──send()/ping()/close()──> Writer (lock, write, flush) ──> socket
    broadcast ──Writer.send_prepared()── idle? ──> Writer.write() ──> socket
                                  └─ busy: outbox ──Writer (when the lock is free)──> socket
                                                  └─ what did not fit: WritePump

Reading the socket and feeding the protocol is done by one thread at a
time, and by whoever waits for a message: an application thread blocked in
:meth:`Connection.recv` with nothing queued reads the socket itself, so a
message reaches it without a switch between threads. The connection's
reader thread is started (by :class:`~wsthread.connection.threads.ReaderStarter`) only
when the socket has been left unread for a moment, or when the stream
ended, and then it reads whenever no application thread does: pings are
answered and a close is noticed even while the application is busy
elsewhere. The turn is kept by :class:`~wsthread.connection.messages.MessageQueue`,
which is bounded: when the application falls behind, the reader thread
stops reading and TCP pushes back on the peer.

Every byte goes out through the connection's :class:`~wsthread.connection.writer.Writer`
(see :mod:`wsthread.connection.writer`): one lock covers building the frames *and*
handing them to the transport, so frames from two threads never
interleave, and one error policy applies to every write.
:meth:`Connection.send` (and ``ping``, ``close``) waits until the socket
has taken the frame, at most ``write_timeout`` seconds without progress;
``broadcast()`` never waits.

Reading, and the one way a connection ends, are the
:class:`~wsthread.connection.reader.Reader`'s: whichever thread reads the end of the
stream answers the peer, lets the sans-I/O core decide whether to wait for
the peer to close TCP (``Protocol.should_close_transport``), then calls
:meth:`Closing.release() <wsthread.connection.closing.Closing.release>`, which releases
the transport and wakes every waiter. :meth:`Connection.close` is the other
half of :class:`~wsthread.connection.closing.Closing`: send the close frame, wait for
that end. Pings and keepalive are the :class:`~wsthread.connection.pings.Pings`'.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    MutableMapping,
    Optional,
    Tuple,
    Union,
)

from ..exceptions import ConnectionClosed, ConnectionClosedOK, InvalidJSON
from ..options import ConnectionOptions, ReceiveBudgetOption, receive_budget_bytes
from ..runtime.deadline import Deadline
from ..sansio.frames import CloseCode
from ..sansio.protocol import Protocol
from .budget import ReceiveBudget
from .closing import Closing
from .fragments import check_message, send_fragments
from .messages import Data, Item, MessageQueue, QueueClosed, Receiver
from .pings import Pings
from .reader import Reader
from .threads import shared
from .transport import Transport
from .writer import Writer

__all__ = [
    "Connection",
    "Data",
    "JSONDumps",
    "JSONLoads",
    "dump_json",
    "format_address",
    "peer_address",
]

logger = logging.getLogger("wsthread")

# Messages of this many bytes or more are written as header and payload, not
# joined into one frame first (one sendmsg(), no copy of the payload).
_PARTS_SIZE = 64 * 1024


JSONDumps = Callable[[Any], Union[str, bytes]]
"""A JSON encoder, such as ``json.dumps`` or ``orjson.dumps`` (which returns UTF-8 bytes)."""

JSONLoads = Callable[[Data], Any]
"""A JSON decoder, such as ``json.loads`` or ``orjson.loads`` (``str`` or bytes in)."""


def _compact_dumps(obj: Any) -> str:
    """The default encoder: ``json.dumps``, no spaces after separators, non-ASCII as is (UTF-8)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def dump_json(obj: Any, dumps: Optional[JSONDumps]) -> bytes:
    """``obj`` as JSON, in UTF-8 bytes, encoded by ``dumps`` (``None``: the ``json`` module).

    Raises:
        TypeError: ``dumps`` returned neither ``str`` nor bytes; and
            whatever ``dumps`` raises (``TypeError`` for an object it
            cannot encode, ``ValueError`` for a circular reference).
    """
    text = (dumps or _compact_dumps)(obj)
    if isinstance(text, str):
        return text.encode("utf-8")
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text)
    raise TypeError(f"json_dumps returned {type(text).__name__}: expected str or bytes")


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


class _PeerLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Put the peer's address at the start of every line a connection logs."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> Tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        return f"[{extra.get('peer')}] {msg}", kwargs


def _peer_logger(connection: Any, logger: Optional[logging.Logger]) -> Any:
    """Where a connection logs: ``logger`` (or ``wsthread``), each line starting with its peer."""
    peer = format_address(connection.remote_address)
    base = logger if logger is not None else logging.getLogger("wsthread")
    return _PeerLogger(base, {"websocket": connection, "peer": peer})


def _shared_budget(option: ReceiveBudgetOption) -> Optional[ReceiveBudget]:
    """The process-wide receive budget for the value of ``receive_budget``, if any."""
    limit = receive_budget_bytes(option)
    return None if limit is None else shared(ReceiveBudget, limit)


class _Liveness:
    """The keepalive's view of a peer: alive while it sends, or while we do not read it.

    A peer that sent bytes within ``ping_timeout``, or whose data we have
    not been reading (back-pressure: its pong may wait behind messages the
    application has not taken), is never closed for a late pong: its
    pong deadline is postponed. Runs on the keepalive thread.
    """

    def __init__(self, reader: Reader, messages: MessageQueue, pings: Pings) -> None:
        self._reader = reader
        self._messages = messages
        self._pings = pings
        self._received_at_tick = 0
        self._active_at = float("-inf")

    def tick(self, now: float, interval: float, timeout: Optional[float]) -> None:
        """Note whether the peer was active, then run the ping schedule (:meth:`Pings.tick`)."""
        received = self._reader.bytes_received
        if received != self._received_at_tick or self._messages.paused:
            self._received_at_tick = received
            self._active_at = now
        if timeout is not None and now - self._active_at < timeout:
            self._pings.postpone_deadline(now, timeout)
        self._pings.tick(now, interval, timeout)


class Connection:
    """The part of a WebSocket connection shared by servers and clients.

    Use it from any number of threads: :meth:`send`, :meth:`ping` and
    :meth:`close` are thread-safe; :meth:`recv` and iteration hand each
    message to exactly one caller.

    Args:
        transport: the byte transport (plain or TLS), after the opening handshake.
        protocol: the sans-I/O protocol for this side.
        options: the connection's limits, timeouts, logger and JSON codecs
            (a :class:`~wsthread.options.ConnectionOptions`, or a server's or
            client's options, which are ones): ``close_timeout`` bounds
            :meth:`close`, ``max_queue`` and ``receive_budget`` when the
            reader stops reading, ``write_timeout`` and ``write_limit`` the
            writer, ``thread_stack_size`` the reader thread,
            ``json_dumps``/``json_loads`` :meth:`send_json` and
            :meth:`recv_json` (``orjson.dumps`` may return UTF-8 ``bytes``:
            it is sent as text).
        initial_data: bytes that arrived right behind the handshake.
        changes: options to change from ``options``, by name (checked).
    """

    def __init__(
        self,
        transport: Transport,
        protocol: Protocol,
        options: Optional[ConnectionOptions] = None,
        *,
        initial_data: bytes = b"",
        **changes: Any,
    ) -> None:
        options = options if options is not None else ConnectionOptions()
        if changes:
            options = options.replace(**changes)
        self.options = options
        """This connection's options (:class:`~wsthread.options.ConnectionOptions`)."""
        json_dumps, json_loads = options.json_dumps, options.json_loads
        close_timeout, write_timeout = options.close_timeout, options.write_timeout
        write_limit, thread_stack_size = options.write_limit, options.thread_stack_size
        self.transport = transport
        self.json_dumps = json_dumps
        """The encoder of :meth:`send_json` (``None``: ``json.dumps``)."""
        self.json_loads = json_loads
        """The decoder of :meth:`recv_json` (``None``: ``json.loads``)."""
        self.thread_stack_size = thread_stack_size
        self.socket = transport.socket
        self.protocol = protocol
        self.close_timeout = close_timeout
        self.write_timeout = write_timeout
        self.write_limit = write_limit
        self.remote_address: Any = peer_address(transport.socket)
        """The peer's address: ``(host, port)`` over TCP, a path over a Unix socket."""
        self.local_address: Any = _sockname(transport.socket)
        """This side's address: ``(host, port)`` over TCP, a path over a Unix socket."""
        self.logger: logging.LoggerAdapter = _peer_logger(self, options.logger)  # type: ignore[type-arg]
        # Fragmented messages come out of the protocol piece by piece; the
        # receiver joins them for recv(), or hands them on to recv_streaming().
        protocol.fragments = True
        self._messages = MessageQueue(
            options.max_queue, budget=_shared_budget(options.receive_budget)
        )
        self._receiver = Receiver(self._take)
        self._receiving_thread = 0  # the thread that last took a message (see send())
        self.writer = Writer(
            transport,
            protocol,
            write_timeout=write_timeout,
            write_limit=write_limit,
            logger=self.logger,
            on_fail=self._messages.stop_waiting,
        )
        """Every byte this connection writes goes through it (:mod:`wsthread.connection.writer`)."""
        self._pings = Pings(
            self.writer, protocol, self.logger, self.fail, awaiting=self._messages.expect_pong
        )
        self._closing = Closing(
            protocol, self.writer, self._messages, self._pings, close_timeout, self.logger
        )
        self.reader = Reader(
            transport,
            protocol,
            self._messages,
            self.writer,
            close_timeout=close_timeout,
            logger=self.logger,
            on_pong=self._pings.acknowledge,
            on_end=self._closing.release,
            name=f"wsthread-reader-{self.remote_address}",
            stack_size=thread_stack_size,
        )
        """Reads the socket and ends the connection (see :mod:`wsthread.connection.reader`)."""
        self.reader.handshake_done(initial_data)
        self._liveness = _Liveness(self.reader, self._messages, self._pings)

    def start(self) -> None:
        """Begin receiving. Call it once, right after the handshake.

        Messages are read by the application thread that waits in
        :meth:`recv`. The connection's reader thread starts only when the
        socket has been left unread for a moment (a handler that never reads,
        or is busy elsewhere) or the connection ends; so an idle connection
        whose handler waits in ``recv()`` costs one thread, not two.
        """
        self.reader.begin()

    # -- public API ---------------------------------------------------------

    @property
    def close_code(self) -> Optional[int]:
        """The peer's close code once the connection is closed, else ``None``.

        1005 means the peer's close frame had no code; 1006 means no close
        frame arrived.
        """
        return self.protocol.close_exception().code if self._closing.ended else None

    @property
    def close_reason(self) -> Optional[str]:
        """The peer's close reason once the connection is closed, else ``None``."""
        return self.protocol.close_exception().reason if self._closing.ended else None

    @property
    def received_bytes(self) -> int:
        """Bytes of received messages waiting for :meth:`recv` (their size in memory)."""
        return self._messages.backlog_bytes

    @property
    def closed(self) -> bool:
        """Whether the connection is fully closed (reader finished, TCP closed)."""
        return self._closing.ended

    @property
    def latency(self) -> Optional[float]:
        """The round trip, in seconds, of the last ping that got its pong; ``None`` before.

        Keepalive pings (``ping_interval``) keep it up to date; :meth:`ping`
        updates it too.
        """
        return self._pings.latency

    @property
    def buffered_amount(self) -> int:
        """Bytes written or broadcast to this peer and not yet taken by its socket.

        As the browser's ``WebSocket.bufferedAmount``: broadcasts queued for
        this connection (their payload bytes), small frames held for one
        system call, and bytes the transport could not hand to the socket
        yet (after compression, encrypted with TLS). 0 when the peer keeps
        up; it grows while a peer stops reading, until ``write_limit``
        closes it with 1013. Safe to read from any thread, without a lock:
        a snapshot.
        """
        return self.writer.buffered_amount

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
            "messages_received": self.reader.messages_received,
            "bytes_received": self.reader.bytes_received,
            "messages_sent": writer.messages_sent,
            "bytes_sent": writer.bytes_sent,
            "queued": self._messages.backlog,
            "latency": self._pings.latency,
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
        return self._receiver.recv(timeout, decode)

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
        :meth:`recv` again: no other receiver gets a message meanwhile (the
        thread that last advanced the iterator gets ``RuntimeError``: it
        would wait for ever). A dropped iterator skips the rest of its
        message; after the last piece, an iterator holds nothing.

        Args:
            decode: as for :meth:`recv`, applied to each piece (binary
                pieces are decoded incrementally, so a character may span
                two pieces).

        Raises:
            ConnectionClosed: the connection closed before the message
                ended (or before it began).
            RuntimeError: this thread has an unfinished ``recv_streaming()``
                iterator (:meth:`recv` raises it too).
        """
        return self._receiver.stream(decode)

    def _take(self, deadline: Deadline, timeout: Optional[float]) -> Item:
        """Take the next message or piece from the queue, reading the socket if it is free."""
        writer = self.writer
        if writer.gathered and self._messages.empty:
            # About to wait for data: gathered replies go out first.
            try:
                with writer:
                    writer.flush()
            except ConnectionClosed:
                pass  # the connection ends; the queue says so below
        try:
            remaining = None if timeout is None else deadline.remaining()
            item = self._messages.get(remaining, self.reader.read_directly)
            self._receiving_thread = threading.get_ident()  # see send()
            return item
        except QueueClosed:
            raise self._closing.exception() from None
        except socket.timeout:  # not a TimeoutError before Python 3.10
            raise TimeoutError(f"no message within {timeout} seconds") from None
        finally:
            self.reader.after_take()

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
        between its frames, because the writer lock is held while the
        iterable is consumed: a generator must not send or ping on this
        connection, and one that waits holds up its other writers.

        What cannot be sent raises ``TypeError`` before any byte leaves,
        and the connection stays usable: a ``dict`` (use
        :meth:`send_json`), a set, a number, ``None``, any other object
        that is not an iterable of fragments, and a list or tuple whose
        pieces are not all ``str`` or all bytes-like. A generator can only
        be checked piece by piece: one that raises, or gives a piece of
        another type, after its first piece went out leaves the message
        half sent, which nothing can finish, so the connection is closed
        with 1011 (logged at WARNING) and the exception propagates.

        Safe to call from any thread. Returns once the
        socket has taken the whole message; if the peer takes nothing for
        ``write_timeout`` seconds, the connection is failed. A small reply
        sent by the receiving thread while more received messages wait may
        instead be gathered for one write with the next replies: it leaves
        at the latest when this thread's next ``recv()`` would wait, with
        any other write, or 1 ms later (see "Gathering replies" in the
        docs).

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
            TypeError: ``message`` cannot be sent (see above); nothing was
                sent, unless a generator failed part-way (then the
                connection is closed with 1011, and the message says so).
        """
        if isinstance(message, str):
            data = message.encode("utf-8")
            is_text = text is not False
        elif isinstance(message, (bytes, bytearray, memoryview)):
            data = bytes(message)
            is_text = bool(text)
        else:
            check_message(message)  # a TypeError before any byte leaves
            send_fragments(self.writer, message, text)
            return
        writer = self.writer
        if len(data) >= _PARTS_SIZE:
            # A large message: header and payload are written without joining them.
            with writer:
                writer.write_parts(*self.protocol.send_message_parts(data, is_text))
                writer.messages_sent += 1
            return
        # The gathering rule: a reply sent by the thread that receives, while
        # more received messages wait to be taken, may wait for the next
        # write, the next recv() that has to wait, or GATHER_DELAY.
        gather = not self._messages.empty and self._receiving_thread == threading.get_ident()
        with writer:
            writer.write(self.protocol.send_message(data, is_text), gather=gather)
            writer.messages_sent += 1

    def send_json(self, obj: Any) -> None:
        """Send ``obj`` encoded as JSON, as one text message.

        The encoder is the connection's ``json_dumps`` option (the
        standard library's ``json.dumps``, compact, by default); one that
        returns bytes, such as ``orjson.dumps``, is sent as text as it is.
        Otherwise as :meth:`send`.

        Raises:
            TypeError: ``obj`` cannot be encoded (raised by the encoder;
                nothing is sent).
            ValueError: ``obj`` holds a circular reference or a value the
                encoder refuses, such as ``nan`` for some encoders.
            ConnectionClosed: as for :meth:`send`.
        """
        self.send(dump_json(obj, self.json_dumps), text=True)

    def recv_json(self, timeout: Optional[float] = None) -> Any:
        """Receive the next message and return it decoded from JSON.

        Text and binary messages are both decoded (``json.loads`` reads
        UTF-8 bytes too), by the connection's ``json_loads`` option
        (``json.loads`` by default). A message that is not JSON is consumed
        and raises :class:`~wsthread.exceptions.InvalidJSON`; the connection
        stays open, and the next call gets the next message.

        Args:
            timeout: as for :meth:`recv`.

        Raises:
            InvalidJSON: the message is not valid JSON (a ``ValueError``,
                naming this connection's peer; the decoder's exception is
                its ``__cause__``).
            TimeoutError: no message arrived in time.
            ConnectionClosed: as for :meth:`recv`.
        """
        data = self.recv(timeout)
        try:
            return (self.json_loads or json.loads)(data)
        except ValueError as exc:  # JSONDecodeError, orjson's, UnicodeDecodeError
            raise InvalidJSON(format_address(self.remote_address), data, exc) from exc

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
        waiter = self._pings.send(payload)
        self.reader.read_soon()  # the pong is read as it arrives, not after HOLD
        return waiter

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Perform the closing handshake and wait, at most ``close_timeout``, for it.

        Safe to call several times and from several threads: only the first
        call sends a close frame; every call returns once the connection is
        closed (or the timeout forced it closed).
        """
        self._closing.close(code, reason, self.reader)

    def _close_begin(self, code: int, reason: str) -> bool:
        """:meth:`close` without the wait (then :meth:`_close_wait`); never blocks.

        For a thread that closes many connections at once (a server's
        shutdown), without a thread for each. ``False``, with nothing sent,
        when a send holds the writer: try again, or :meth:`close` it on a
        thread that may wait.
        """
        return self._closing.begin(code, reason, self.reader)

    def _close_wait(self, timeout: Optional[float]) -> bool:
        """After :meth:`_close_begin`: wait at most ``timeout`` for the end; whether it came.

        If it did not, the TCP connection is dropped (the end then follows soon).
        """
        return self._closing.wait(timeout)

    def fail(self, code: int, reason: str) -> None:
        """Close with ``code`` without waiting for the peer: send a close frame, drop TCP.

        Used when this side gives up on the connection (a keepalive timeout,
        a stalled peer). Never blocks: the close frame goes out only if the
        writer lock is free and the socket takes it at once.
        """
        self.writer.fail(code, reason)  # which calls self._messages.stop_waiting()

    def keepalive_tick(self, now: float, interval: float, timeout: Optional[float]) -> bool:
        """Ping when due; fail with 1011 if the last ping went unanswered; never blocks.

        ``False`` once the connection has ended: the
        :class:`~wsthread.connection.threads.Keepalive` forgets it.
        """
        if not self._closing.ended:
            self._liveness.tick(now, interval, timeout)
            if self._messages.pong_awaited:
                self.reader.read_soon()  # the pong is read as it arrives
        return not self._closing.ended

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.remote_address} {self.protocol.state.name}>"
