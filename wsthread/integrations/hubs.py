"""Broadcast hubs: fan ``server.broadcast`` out to other processes; RedisHub runs two threads.

A *hub* sits behind :meth:`WebSocketServer.broadcast`. Without one (the
default) a broadcast reaches the connections of this process only. With
``serve(..., hub=RedisHub("redis://host:6379/0"))`` every broadcast is also
published on a Redis pub/sub channel, and messages that other servers publish
there are delivered to this server's connections::

    server A ── broadcast(m) ─┬─ deliver(m) to A's connections
                              └─ PUBLISH channel ──> Redis ──> server B, C ...
                                                              deliver(m) to theirs

The hub protocol is duck-typed, three methods (see :class:`Hub`):

- ``attach(deliver)``: called once by the server; ``deliver(message)``
  sends ``message`` to that server's local connections.
- ``publish(message)``: called by ``server.broadcast(message)``; must lead
  to ``deliver(message)`` exactly once on every attached server, this one
  included.
- ``close()``: called by ``server.shutdown()``.

A hub may also carry *topics* (``server.publish(topic, message)``, see
:mod:`wsthread.server.topics`) with four more methods (see :class:`TopicHub`;
a server uses them when all four are there, otherwise its topics stay in
its own process):

- ``attach_topics(deliver)``: ``deliver(topic, message)`` sends to that
  server's subscribers of ``topic``.
- ``publish_topic(topic, message)``: called by ``server.publish``; must lead
  to ``deliver(topic, message)`` once on every attached server that watches
  ``topic``, this one included.
- ``watch(topic)`` and ``unwatch(topic)``: the topic got its first local
  subscriber, or lost its last. They must not block (the server calls them
  under its topics lock).

The Redis wire format, for broadcasts and topics alike:

- a broadcast is published on the hub's ``channel`` (``"wsthread"`` by
  default); a topic message on the topic's own channel,
  ``<channel>:topic:<topic>`` (the topic's name in UTF-8, at most 256 bytes);
- the payload is :func:`encode_payload`'s: one version byte ``0x01``, one
  type byte (``t``: the body is UTF-8 text, ``b``: binary), the publishing
  hub's 16-byte random origin id, then the message body as is. No pickle,
  no JSON around the body: binary messages round-trip byte for byte, and a
  program in any language can publish to wsthread's clients.
- a :class:`RedisHub` numbers what it publishes: its type byte is ``T``
  (text) or ``B`` (binary), and an 8-byte big-endian sequence number
  follows the origin id, counting 1, 2, 3... per channel and publishing
  hub. Receivers accept both forms; an unnumbered payload (``t``/``b``, as
  :class:`~wsthread.sidecar.HubPublisher` or another program sends) is
  delivered but its losses cannot be seen. Earlier wsthread versions, which
  know only ``t`` and ``b``, ignore numbered payloads (counted ``invalid``):
  upgrade every process on a channel together.
- each hub announces itself in the sorted set ``<channel>:hubs`` (its
  origin id in hex, scored with an expiry 5 s ahead, renewed every second
  by its publishing thread, removed at :meth:`RedisHub.close`), so that a
  publisher knows how many servers should receive a broadcast.

Guarantees of :class:`RedisHub`:

- Text stays text and binary stays binary: the payload on the channel names
  the type (see :func:`encode_payload`).
- Each message is delivered once per connection: the publishing server
  delivers its own message locally, at once, and ignores the copy that comes
  back from Redis (every hub has a random origin id in the payload).
- Order per publisher is kept: a hub publishes under a lock, in the order it
  delivers locally, and one subscriber thread delivers what arrives in the
  order Redis sends it. Messages of *different* publishers may interleave
  differently on different servers.
- ``publish()`` and ``publish_topic()`` never wait on Redis: they deliver
  locally, then append the message to a bounded queue (``max_queue``,
  10,000) that the hub's *publishing thread* sends to Redis in order. A
  message that finds the queue full is dropped for the other processes and
  counted (``overflow``, and ``dropped`` or ``topic_dropped``).
- Redis going away never stops local delivery. Messages the publishing
  thread takes while Redis is unreachable are **dropped** for the other
  processes (counted in :attr:`RedisHub.dropped`), not kept for later;
  messages other servers publish meanwhile are lost for this one (Redis
  pub/sub keeps nothing for absent subscribers). The outage is logged once,
  the hub reconnects with exponential backoff and full jitter, and
  :attr:`RedisHub.healthy` says whether cross-process delivery works now —
  a health check can expose it.
- Every message lost for another process is counted once, in
  :meth:`RedisHub.stats`: by its publisher in ``dropped`` (broadcasts) or
  ``topic_dropped`` when it never reached Redis (unreachable, or the queue
  full), or by the process that did not get it in ``missed`` or
  ``topic_missed``: a message Redis took (numbered) but that never arrived
  here — during this subscriber's outage, across a Redis restart, or a
  publish that timed out and was lost (``publish_errors`` at the
  publisher). A gap is seen when the next message of that publisher on
  that channel arrives. A message is in one count only: dropped (once, at
  its publisher, however many processes it missed) or missed (at each
  process that missed it after Redis took it). With two servers, the sum of
  ``lost`` (dropped plus missed) over both is exactly what the other
  process never received, once it is subscribed again. ``unreached`` is the
  publisher's view of the same losses: how far Redis's receiver counts for
  its broadcasts fell short of the announced hubs (not added to ``lost``,
  since the others count those as ``missed`` when they come back; it is the
  only count for a process that never does). Topic messages have no
  expected receiver count (only watchers subscribe).
- Topics: a process receives only the topics it has subscribers for. The
  hub's thread SUBSCRIBEs to a topic's channel when the topic gets its first
  local subscriber and UNSUBSCRIBEs when it loses its last (within about
  0.1 s; :meth:`RedisHub.wait_topics` waits for Redis to confirm). Only that
  thread touches the subscription's connection: other threads record their
  wish under a lock (:meth:`RedisHub.watch`), and it acts on it between two
  reads. Once, in order per publisher, and during outages as for
  broadcasts; a topic message published before this process's subscription
  is confirmed is not received here.
- Redis Cluster: with ``sharded=True`` the topic channels use Redis 7's
  sharded pub/sub (``SSUBSCRIBE``, ``SPUBLISH``, ``SUNSUBSCRIBE``), whose
  messages travel only within the shard that owns the channel's hash slot
  instead of across the whole cluster. Each topic is its own channel, so its
  slot (CRC16 of the channel name, or of a ``{tag}`` in it) decides its
  shard. The hub then speaks to the node of ``url`` only, which suits one
  Redis 7 server, or a cluster where that node owns every topic's slot (a
  ``{tag}`` in the hub's ``channel`` puts all its channels in one slot); see
  docs/howto/broadcast.md for spreading topics over every shard.

:class:`RedisHub` needs the ``redis`` client package (``pip install
'wsthread[redis]'``); it is imported when the first hub is created, so the
rest of wsthread keeps depending on the standard library only.
"""

from __future__ import annotations

import collections
import importlib
import logging
import os
import random
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Protocol, Set, Tuple, Union

from ..runtime.deadline import Deadline

__all__ = [
    "Hub",
    "TopicHub",
    "Deliver",
    "DeliverTopic",
    "Message",
    "LocalHub",
    "RedisHub",
    "encode_payload",
    "decode_payload",
    "decode_sequenced",
]

logger = logging.getLogger("wsthread")

Message = Union[str, bytes]
Deliver = Callable[[Message], object]
DeliverTopic = Callable[[str, Message], object]

#: First byte of every payload: the version of the format.
PAYLOAD_VERSION = b"\x01"
#: Second byte: the message type.
TEXT, BINARY = b"t", b"b"
#: Second byte of a *sequenced* payload: as ``t``/``b``, with a sequence number after the origin.
SEQUENCED_TEXT, SEQUENCED_BINARY = b"T", b"B"
#: Length of the random origin id that follows.
ORIGIN_SIZE = 16
#: Length of the sequence number (unsigned, big-endian) of a sequenced payload.
SEQUENCE_SIZE = 8
_HEADER_SIZE = 2 + ORIGIN_SIZE
#: Messages a hub keeps for its publishing thread; more are dropped (and counted).
DEFAULT_MAX_QUEUE = 10_000
#: Channels whose sequence numbers a publisher remembers (the least recently used go).
_MAX_SEQUENCES = 65_536
#: Seconds between two announcements of a hub in ``<channel>:hubs``; an entry expires after 5.
_ANNOUNCE_INTERVAL = 1.0
_ANNOUNCE_TTL = 5.0
#: Between a hub's channel and a topic's name, in the topic's channel.
TOPIC_INFIX = ":topic:"
#: Topic channels per SUBSCRIBE (or UNSUBSCRIBE) command.
_CHANNELS_PER_COMMAND = 256


class Hub(Protocol):
    """What a server needs from a hub (structural: any object with these methods)."""

    def attach(self, deliver: Deliver) -> None:
        """Remember ``deliver``, the function that sends to this server's connections."""

    def publish(self, message: Message) -> None:
        """Have ``deliver(message)`` called once on every attached server, this one included."""

    def close(self) -> None:
        """Release the hub's resources; called by ``server.shutdown()``."""


class TopicHub(Hub, Protocol):
    """A hub that also carries topics (``server.publish``); a server uses one if it has these."""

    def attach_topics(self, deliver: DeliverTopic) -> None:
        """Remember ``deliver(topic, message)``, which sends to this server's subscribers."""

    def publish_topic(self, topic: str, message: Message) -> None:
        """Have ``deliver(topic, message)`` called once on every attached server that watches it."""

    def watch(self, topic: str) -> None:
        """``topic`` has its first subscriber in this process: receive it from now on."""

    def unwatch(self, topic: str) -> None:
        """``topic`` lost its last subscriber in this process: stop receiving it."""


class LocalHub:
    """A hub for several servers in one process: a broadcast on any reaches all.

    The smallest complete implementation of the hub protocol, and a handy
    one for tests: unlike most hubs, one :class:`LocalHub` may be attached to
    several servers. :meth:`publish` delivers in the caller's thread, in the
    order servers were attached.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._delivers: List[Deliver] = []
        self._topic_delivers: List[DeliverTopic] = []

    def attach(self, deliver: Deliver) -> None:
        """Add a server's ``deliver`` function."""
        with self._lock:
            self._delivers.append(deliver)

    def attach_topics(self, deliver: DeliverTopic) -> None:
        """Add a server's ``deliver(topic, message)`` function."""
        with self._lock:
            self._topic_delivers.append(deliver)

    def publish_topic(self, topic: str, message: Message) -> None:
        """Deliver ``message`` to ``topic``'s subscribers on every attached server."""
        with self._lock:
            delivers = list(self._topic_delivers)
        for deliver in delivers:
            deliver(topic, message)

    def watch(self, topic: str) -> None:
        """Nothing to do: every attached server is asked, and one without subscribers skips it."""

    def unwatch(self, topic: str) -> None:
        """Nothing to do (see :meth:`watch`)."""

    def publish(self, message: Message) -> None:
        """Deliver ``message`` to every attached server."""
        with self._lock:
            delivers = list(self._delivers)
        for deliver in delivers:
            deliver(message)

    def close(self) -> None:
        """Forget every server (all of them: the first shutdown ends the hub)."""
        with self._lock:
            self._delivers.clear()
            self._topic_delivers.clear()


def encode_payload(message: Message, origin: bytes, sequence: Optional[int] = None) -> bytes:
    """Encode a message for the Redis channel.

    The format is ``b"\\x01"`` (version), ``b"t"`` (text, UTF-8 body) or
    ``b"b"`` (binary body), the 16-byte origin id of the publishing hub, then
    the body itself. With a ``sequence`` number the type byte is ``b"T"`` or
    ``b"B"`` and the 8-byte big-endian number follows the origin (a
    :class:`RedisHub` numbers its messages per channel, 1, 2, 3..., so that
    its subscribers can count the ones they missed).
    """
    if len(origin) != ORIGIN_SIZE:
        raise ValueError(f"origin must be {ORIGIN_SIZE} bytes")
    if isinstance(message, str):
        kind, body = TEXT, message.encode("utf-8")
    elif isinstance(message, (bytes, bytearray, memoryview)):
        kind, body = BINARY, bytes(message)
    else:
        raise TypeError(f"a message is str or bytes, not {type(message).__name__}")
    if sequence is None:
        return PAYLOAD_VERSION + kind + origin + body
    kind = SEQUENCED_TEXT if kind == TEXT else SEQUENCED_BINARY
    return PAYLOAD_VERSION + kind + origin + sequence.to_bytes(SEQUENCE_SIZE, "big") + body


def decode_payload(payload: bytes) -> Tuple[bytes, Message]:
    """Decode a payload made by :func:`encode_payload`; return ``(origin, message)``.

    Raises:
        ValueError: the payload is not in that format (or the text is not UTF-8).
    """
    origin, _, message = decode_sequenced(payload)
    return origin, message


def decode_sequenced(payload: bytes) -> Tuple[bytes, Optional[int], Message]:
    """Decode a payload made by :func:`encode_payload`; return ``(origin, sequence, message)``.

    ``sequence`` is ``None`` for a payload without one.

    Raises:
        ValueError: the payload is not in that format (or the text is not UTF-8).
    """
    if len(payload) < _HEADER_SIZE or payload[:1] != PAYLOAD_VERSION:
        raise ValueError("not a wsthread hub payload")
    kind = payload[1:2]
    origin = payload[2:_HEADER_SIZE]
    sequence: Optional[int] = None
    start = _HEADER_SIZE
    if kind in (SEQUENCED_TEXT, SEQUENCED_BINARY):
        start += SEQUENCE_SIZE
        if len(payload) < start:
            raise ValueError("not a wsthread hub payload")
        sequence = int.from_bytes(payload[_HEADER_SIZE:start], "big")
        kind = TEXT if kind == SEQUENCED_TEXT else BINARY
    body = payload[start:]
    if kind == TEXT:
        return origin, sequence, body.decode("utf-8")
    if kind == BINARY:
        return origin, sequence, body
    raise ValueError(f"unknown message type {kind!r}")


def _load_redis() -> Any:
    """Import the ``redis`` package, with a helpful error when it is missing."""
    try:
        return importlib.import_module("redis")
    except ImportError as exc:
        raise ImportError(
            "RedisHub needs the redis client package: pip install 'wsthread[redis]'"
        ) from exc


class RedisHub:
    """Broadcast across processes and machines through Redis pub/sub.

    Pass one to each server: ``serve(handler, host, port, hub=RedisHub(url))``.
    Every server using the same Redis and ``channel`` receives every
    broadcast. See the module documentation for the guarantees; in short:
    local delivery never waits for Redis (a publishing thread sends a
    bounded queue), cross-process messages sent during an outage are dropped
    and counted, not kept, and every message lost for another process is in
    one counter of :meth:`stats`: ``dropped``/``topic_dropped`` at its
    publisher or ``missed``/``topic_missed`` where it did not arrive.

    Args:
        url: the Redis URL, e.g. ``redis://127.0.0.1:6379/0`` (``rediss://``
            for TLS, a password as ``redis://:secret@host:6379/0``).
        channel: the pub/sub channel; servers that should see each other's
            broadcasts use the same one.
        socket_timeout: seconds a Redis command (a publish) may take before
            the hub counts Redis as gone; also bounds connecting.
        min_delay: first reconnection delay in seconds; doubled after each
            failure up to ``max_delay``, each wait drawn at random below it.
        max_delay: largest reconnection delay in seconds.
        ping_interval: seconds of silence on the subscription after which the
            hub sends a ping; no answer within ``socket_timeout`` more counts
            as an outage (this finds a Redis that vanished without closing
            the connection).
        sharded: publish and subscribe topics with Redis 7's sharded pub/sub
            (``SPUBLISH``, ``SSUBSCRIBE``) instead of ``PUBLISH`` and
            ``SUBSCRIBE``; broadcasts keep the classic commands.
        max_queue: messages (broadcasts and topic messages) waiting for the
            hub's publishing thread; one more is dropped and counted in
            ``overflow`` (and in ``dropped`` or ``topic_dropped``).
        logger: where to log (default ``logging.getLogger("wsthread")``).

    Attributes:
        url, channel: as given.
        origin: this hub's random 16-byte id, carried in every payload.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        channel: str = "wsthread",
        *,
        socket_timeout: float = 2.0,
        min_delay: float = 0.1,
        max_delay: float = 5.0,
        ping_interval: float = 5.0,
        sharded: bool = False,
        max_queue: int = DEFAULT_MAX_QUEUE,
        logger: Optional[logging.Logger] = None,
    ) -> None:
        self._redis = _load_redis()
        self.url = url
        self.channel = channel
        self.sharded = sharded
        self.origin = os.urandom(ORIGIN_SIZE)
        self.socket_timeout = socket_timeout
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.ping_interval = ping_interval
        self.logger = logger if logger is not None else globals()["logger"]
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.max_queue = max_queue
        self._deliver: Optional[Deliver] = None
        # Held while delivering locally and queueing, so that the order on
        # Redis is the order of local delivery; guards _client and the
        # counters of publishing.
        self._publish_lock = threading.Lock()
        # The queue between publish()/publish_topic() (any thread) and the
        # publishing thread: (channel, topic or None, message).
        self._queue: Deque[Tuple[str, Optional[str], Message]] = collections.deque()
        self._queue_changed = threading.Condition(threading.Lock())
        self._in_flight = False
        self._closing = False
        self._publisher: Optional[threading.Thread] = None
        self._sequences: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._overflow = 0
        self._publish_errors = 0
        self._unreached = 0
        self._hubs = 0
        self._subscribed = False  # our own subscription to the broadcast channel is up
        # The subscriber thread's view: the last sequence number seen per
        # channel and publisher, and the messages missing between two.
        self._last_seen: Dict[str, Dict[bytes, int]] = {}
        self._missed = 0
        self._topic_missed = 0
        self._client: Any = None
        self._state_lock = threading.Lock()
        self._healthy = False
        self._healthy_event = threading.Event()
        self._broken = False
        self._outage_started: Optional[float] = None
        self._dropped_at_outage = 0
        self._published = 0
        self._dropped = 0
        self._received = 0
        self._invalid = 0
        self._outages = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        # Topics: what this process wants (watch/unwatch, any thread) and what
        # the subscriber thread asked Redis for and Redis confirmed. Only the
        # subscriber thread talks to the subscription's connection.
        self._topic_deliver: Optional[DeliverTopic] = None
        self._topics_changed = threading.Condition(threading.Lock())
        self._wanted: Set[str] = set()
        self._requested: Set[str] = set()
        self._confirmed: Set[str] = set()
        self._topics_dirty = False
        self._topic_published = 0
        self._topic_dropped = 0
        self._topic_received = 0
        self._topic_echoes = 0

    # The read-only counters below are alike on purpose: one documented
    # property each, for health checks (see stats()).
    # -- information --------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """True while Redis is reachable: cross-process broadcast works now."""
        return self._healthy

    @property
    def published(self) -> int:
        """Messages published to Redis so far."""
        return self._published

    @property
    def dropped(self) -> int:
        """Broadcasts delivered locally but never handed to Redis (unreachable, or queue full)."""
        return self._dropped

    @property
    def missed(self) -> int:
        """Broadcasts of other processes that never reached this one (gaps in their numbers)."""
        return self._missed

    @property
    def received(self) -> int:
        """Messages from other processes delivered to this server's connections."""
        return self._received

    @property
    def outages(self) -> int:
        """How many times Redis became unreachable (including being so at start)."""
        return self._outages

    @property
    def topic_received(self) -> int:
        """Topic messages from other processes that Redis sent this one (for its subscribers)."""
        return self._topic_received

    def stats(self) -> Dict[str, object]:
        """A snapshot of the counters and the health flag, e.g. for a health page.

        Every message lost for another process is in exactly one of
        ``dropped``, ``topic_dropped`` (of the process that published it) and
        ``missed``, ``topic_missed`` (of the process that did not get it); their
        sum over this process is ``lost``. See the module documentation.

        - ``published``, ``topic_published``: handed to Redis, confirmed;
        - ``dropped``, ``topic_dropped``: never handed to Redis (Redis
          unreachable, or the queue full: those also in ``overflow``);
        - ``publish_errors``: handed to Redis but not confirmed (a timeout, a
          broken connection); a subscriber that never gets one counts it in
          ``missed`` or ``topic_missed``;
        - ``missed``, ``topic_missed``: messages of other processes this one
          did not receive (gaps in their sequence numbers, seen when the next
          one arrives: a subscription outage, a Redis restart);
        - ``unreached``: the shortfall of Redis's receiver counts for this
          process's broadcasts against the hubs announced on the channel
          (``hubs``): the same losses the other processes count as ``missed``
          when they come back, and the only count for one that never does;
        - ``received``, ``topic_received``: messages of other processes
          delivered here; ``topic_echoes``: this process's own, back from
          Redis, skipped; ``invalid``: payloads not from a hub;
        - ``queued`` (now), ``topics_subscribed`` (topic channels Redis
          confirmed now), ``outages``, ``healthy``.
        """
        with self._topics_changed:
            subscribed = len(self._confirmed)
        with self._queue_changed:
            queued = len(self._queue)
        with self._publish_lock:
            counts: Dict[str, object] = {
                "healthy": self._healthy,
                "published": self._published,
                "dropped": self._dropped,
                "overflow": self._overflow,
                "publish_errors": self._publish_errors,
                "unreached": self._unreached,
                "hubs": self._hubs,
                "queued": queued,
                "received": self._received,
                "missed": self._missed,
                "invalid": self._invalid,
                "outages": self._outages,
                "topic_published": self._topic_published,
                "topic_dropped": self._topic_dropped,
                "topic_received": self._topic_received,
                "topic_missed": self._topic_missed,
                "topic_echoes": self._topic_echoes,
                "topics_subscribed": subscribed,
            }
            counts["lost"] = self._dropped + self._topic_dropped + self._missed + self._topic_missed
        return counts

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until the publishing thread has handled every queued message; return whether so.

        Handled: published, or dropped and counted. For tests and orderly
        shutdowns; ``publish()`` itself never waits.
        """
        with self._queue_changed:
            return self._queue_changed.wait_for(
                lambda: not self._queue and not self._in_flight, timeout
            )

    def topic_channel(self, topic: str) -> str:
        """The Redis channel of ``topic``: ``<channel>:topic:<topic>``."""
        return f"{self.channel}{TOPIC_INFIX}{topic}"

    def wait_topics(self, timeout: Optional[float] = None) -> bool:
        """Wait until Redis confirmed a subscription for every watched topic, and none more.

        A topic's first subscriber in this process makes the subscriber
        thread subscribe to its channel within about 0.1 s; what other
        processes publish on it before Redis confirms is not received here.
        Returns whether the two sets are equal (and the hub healthy); at
        once ``False`` once the hub is closed.
        """
        with self._topics_changed:
            self._topics_changed.wait_for(
                lambda: self._stop.is_set() or (self._confirmed == self._wanted and self._healthy),
                timeout,
            )
            return self._confirmed == self._wanted and self._healthy and not self._stop.is_set()

    def wait_healthy(self, timeout: Optional[float] = None) -> bool:
        """Wait until the hub is connected and subscribed; return :attr:`healthy`."""
        self._healthy_event.wait(timeout)
        return self._healthy

    def __repr__(self) -> str:
        state = "healthy" if self._healthy else "unhealthy"
        return f"<RedisHub {self.url} channel={self.channel!r} {state}>"

    # -- the topic part of the hub protocol ---------------------------------

    def attach_topics(self, deliver: DeliverTopic) -> None:
        """Remember ``deliver(topic, message)``, which sends to the server's subscribers."""
        with self._state_lock:
            if self._topic_deliver is not None:
                raise RuntimeError("this RedisHub already carries a server's topics")
            self._topic_deliver = deliver

    def watch(self, topic: str) -> None:
        """Receive ``topic`` from now on: its channel is subscribed to shortly, on the hub's thread.

        Never blocks (the server calls it under its topics lock).
        """
        with self._topics_changed:
            self._wanted.add(topic)
            self._topics_dirty = True

    def unwatch(self, topic: str) -> None:
        """Stop receiving ``topic``: its channel is unsubscribed from shortly. Never blocks."""
        with self._topics_changed:
            self._wanted.discard(topic)
            self._topics_dirty = True

    def publish_topic(self, topic: str, message: Message) -> None:
        """Deliver to this process's subscribers of ``topic``, then queue it for its channel.

        As :meth:`publish`: never waits on Redis and never raises because of
        it (what does not reach Redis is counted in ``topic_dropped``), and
        the order on Redis is the order of local delivery.
        """
        deliver = self._topic_deliver
        if deliver is None:
            raise RuntimeError("attach the hub to a server before publishing to a topic")
        message = _checked(message)
        with self._publish_lock:
            deliver(topic, message)
            self._enqueue(self.topic_channel(topic), topic, message)

    # -- the hub protocol ---------------------------------------------------

    def attach(self, deliver: Deliver) -> None:
        """Start the subscriber thread; ``deliver`` sends to the local connections.

        Returns at once: the hub connects in the background (see
        :meth:`wait_healthy`). A hub serves one server only.
        """
        with self._state_lock:
            if self._deliver is not None:
                raise RuntimeError("this RedisHub is already attached to a server")
            if self._stop.is_set():
                raise RuntimeError("this RedisHub is closed")
            self._deliver = deliver
            self._thread = threading.Thread(
                target=self._run, name=f"wsthread-redis-hub-{self.channel}", daemon=True
            )
            self._publisher = threading.Thread(
                target=self._publish_loop,
                name=f"wsthread-redis-hub-publish-{self.channel}",
                daemon=True,
            )
        self._thread.start()
        self._publisher.start()

    def publish(self, message: Message) -> None:
        """Deliver ``message`` to the local connections, then queue it for Redis.

        Never waits on Redis and never raises because of it: the hub's
        publishing thread sends the queue's messages in order; one that finds
        Redis unreachable, or the queue full (``max_queue``), is counted in
        :attr:`dropped` for the other processes.
        """
        deliver = self._deliver
        if deliver is None:
            raise RuntimeError("attach() the hub to a server before publishing")
        message = _checked(message)
        with self._publish_lock:
            deliver(message)
            self._enqueue(self.channel, None, message)

    def close(self) -> None:
        """Publish what is queued (if Redis answers), stop the threads, close the connections.

        Idempotent.
        """
        with self._queue_changed:
            self._closing = True
            self._queue_changed.notify_all()
        publisher = self._publisher
        if publisher is not None and publisher is not threading.current_thread():
            publisher.join(self.socket_timeout * 2 + 1)
            if publisher.is_alive():
                self.logger.warning("%r: the publishing thread did not stop", self)
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.socket_timeout + self.ping_interval + 1)
            if thread.is_alive():
                self.logger.warning("%r: the subscriber thread did not stop", self)
        with self._publish_lock:
            client, self._client = self._client, None
        self._set_healthy(False)  # closed: also releases anyone in wait_healthy()
        self._close_client(client)

    # -- internals ----------------------------------------------------------

    def _enqueue(self, channel: str, topic: Optional[str], message: Message) -> None:
        """Under the publish lock: queue a message for the publishing thread, or count it."""
        with self._queue_changed:
            if len(self._queue) < self.max_queue and not self._closing:
                self._queue.append((channel, topic, message))
                self._queue_changed.notify_all()
                return
        self._overflow += 1
        if topic is None:
            self._dropped += 1
        else:
            self._topic_dropped += 1

    def _publish_loop(self) -> None:
        """The publishing thread: send the queue to Redis, in order; count what does not go."""
        next_announce = 0.0
        while True:
            with self._queue_changed:
                self._in_flight = False
                self._queue_changed.notify_all()  # flush()
                while not self._queue and not self._closing:
                    wait = next_announce - time.monotonic() if self._healthy else None
                    if wait is not None and wait <= 0:
                        break
                    self._queue_changed.wait(wait if wait is not None else 0.5)
                if not self._queue and self._closing:
                    break
                item = self._queue.popleft() if self._queue else None
                self._in_flight = item is not None
            if self._healthy and time.monotonic() >= next_announce:
                self._announce()
                next_announce = time.monotonic() + _ANNOUNCE_INTERVAL
            if item is not None:
                self._publish_one(*item)
        self._withdraw()

    def _publish_one(self, channel: str, topic: Optional[str], message: Message) -> None:
        """On the publishing thread: one message to Redis, or counted as dropped."""
        client = self._client
        if client is None or not self._healthy:
            with self._publish_lock:
                if topic is None:
                    self._dropped += 1
                else:
                    self._topic_dropped += 1
            return
        # A number per channel, taken by every message handed to Redis: a
        # subscriber counts the numbers it never got as missed.
        sequence = self._sequences.pop(channel, 0) + 1
        self._sequences[channel] = sequence
        if len(self._sequences) > _MAX_SEQUENCES:
            self._sequences.popitem(last=False)
        payload = encode_payload(message, self.origin, sequence)
        try:
            if topic is None:
                receivers = client.publish(channel, payload)
            elif self.sharded:
                receivers = client.spublish(channel, payload)
            else:
                receivers = client.publish(channel, payload)
        except Exception as exc:
            # RedisError or OSError mostly; but redis-py also raises AttributeError
            # when the subscriber thread closes the shared connection under this
            # call. Any of them must not end the publishing thread (flush() and
            # every later message would wait for ever): count it, reconnect.
            with self._publish_lock:
                self._publish_errors += 1
            self._mark_broken(f"publishing failed: {exc!r}")
            return
        with self._publish_lock:
            if topic is not None:
                self._topic_published += 1
                return
            self._published += 1
            if self._hubs:
                # Every announced hub subscribes to the channel; Redis counts
                # our own subscription too when it is up.
                others = max(0, int(receivers) - (1 if self._subscribed else 0))
                self._unreached += max(0, self._hubs - 1 - others)

    def _hubs_key(self) -> str:
        return f"{self.channel}:hubs"

    def _announce(self) -> None:
        """On the publishing thread: say this hub is attached; learn how many are."""
        client = self._client
        if client is None:
            return
        now = time.time()
        try:
            pipe = client.pipeline(transaction=False)
            pipe.zadd(self._hubs_key(), {self.origin.hex(): now + _ANNOUNCE_TTL})
            pipe.zremrangebyscore(self._hubs_key(), "-inf", now)
            pipe.zcard(self._hubs_key())
            pipe.pexpire(self._hubs_key(), int(_ANNOUNCE_TTL * 2000))
            replies = pipe.execute()
        except Exception as exc:  # as in _publish_one
            self._mark_broken(f"announcing failed: {exc!r}")
            return
        with self._publish_lock:
            self._hubs = int(replies[2])

    def _withdraw(self) -> None:
        """On the publishing thread, at close: take this hub out of the announced ones."""
        client = self._client
        if client is None or not self._healthy:
            return
        try:
            client.zrem(self._hubs_key(), self.origin.hex())
        except Exception:  # as in _publish_one
            self.logger.debug("%r: could not withdraw the announcement", self, exc_info=True)

    def _seen(self, channel: str, origin: bytes, sequence: Optional[int]) -> int:
        """On the subscriber thread: note a message's number; how many before it were missed."""
        if sequence is None:
            return 0
        last = self._last_seen.setdefault(channel, {})
        previous = last.get(origin)
        last[origin] = sequence
        if previous is None or sequence <= previous:
            return 0  # the first from that publisher here, or it started again
        return sequence - previous - 1

    def _new_client(self) -> Any:
        redis = self._redis
        # No retries inside redis-py: an error must reach us at once, so that
        # publishing during an outage costs nothing and we own the backoff.
        retry = importlib.import_module("redis.retry").Retry(
            importlib.import_module("redis.backoff").NoBackoff(), 0
        )
        return redis.Redis.from_url(
            self.url,
            socket_timeout=self.socket_timeout,
            socket_connect_timeout=self.socket_timeout,
            socket_keepalive=True,
            retry=retry,
        )

    def _close_client(self, client: Any) -> None:
        if client is None:
            return
        try:
            client.close()
        except Exception:  # closing a broken client may fail in any way
            self.logger.debug("%r: error closing a Redis client", self, exc_info=True)

    def _set_healthy(self, healthy: bool) -> None:
        self._healthy = healthy
        if healthy or self._stop.is_set():
            self._healthy_event.set()
        else:
            self._healthy_event.clear()
        with self._topics_changed:
            self._topics_changed.notify_all()  # wait_topics() looks at health too

    def _mark_broken(self, reason: str) -> None:
        """Record an outage: log it the first time only, then stay quiet."""
        with self._state_lock:
            self._broken = True
            was_healthy_or_starting = self._healthy or self._outage_started is None
            self._set_healthy(False)
            if not was_healthy_or_starting:
                return
            self._outages += 1
            self._outage_started = time.monotonic()
            self._dropped_at_outage = self._dropped + self._publish_errors
        self.logger.warning(
            "Redis hub %s unreachable (%s); local broadcast goes on, messages for "
            "other processes are dropped until it is back",
            self.url,
            reason,
        )

    def _run(self) -> None:
        """The subscriber thread: connect, subscribe, deliver, reconnect on failure."""
        delay = self.min_delay
        while not self._stop.is_set():
            client = pubsub = None
            try:
                client = self._new_client()
                pubsub = client.pubsub()
                self._subscribe(pubsub)
                with self._publish_lock:
                    old, self._client = self._client, client
                    self._broken = False
                self._close_client(old)
                self._recovered()
                delay = self.min_delay
                self._listen(pubsub)
            except (self._redis.RedisError, OSError) as exc:
                if not self._stop.is_set():
                    self._mark_broken(str(exc) or type(exc).__name__)
            except _Broken as exc:
                self._mark_broken(str(exc))
            finally:
                self._subscribed = False
                if pubsub is not None:
                    self._close_client(pubsub)
                with self._publish_lock:
                    if self._client is client:
                        self._client = None
                self._close_client(client)
                with self._topics_changed:  # a new subscription starts from nothing
                    self._requested.clear()
                    self._confirmed.clear()
                    self._topics_dirty = True
                    self._topics_changed.notify_all()
            if self._stop.is_set():
                break
            self.logger.debug("%r: reconnecting in at most %.2fs", self, delay)
            self._stop.wait(random.uniform(0, delay))
            delay = min(self.max_delay, delay * 2)

    def _subscribe(self, pubsub: Any) -> None:
        """Subscribe to the broadcast channel and wait for Redis to confirm it.

        The watched topics' channels are subscribed to next, by
        :meth:`_sync_topics` (their confirmations arrive in :meth:`_listen`).
        """
        pubsub.subscribe(self.channel)
        deadline = Deadline(self.socket_timeout)
        while True:
            remaining = deadline.remaining()
            if remaining == 0:
                raise _Broken("no answer to SUBSCRIBE")
            reply = pubsub.get_message(timeout=remaining)
            if reply is not None and reply.get("type") == "subscribe":
                self._subscribed = True
                return

    def _sync_topics(self, pubsub: Any) -> None:
        """On the subscriber thread: (un)subscribe the topic channels whose wish changed."""
        with self._topics_changed:
            if not self._topics_dirty:
                return
            self._topics_dirty = False
            joining = sorted(self._wanted - self._requested)
            leaving = sorted(self._requested - self._wanted)
            self._requested = set(self._wanted)
        for topic in leaving:  # numbers seen before leaving say nothing about later ones
            self._last_seen.pop(self.topic_channel(topic), None)
        join = pubsub.ssubscribe if self.sharded else pubsub.subscribe
        leave = pubsub.sunsubscribe if self.sharded else pubsub.unsubscribe
        for command, topics in ((leave, leaving), (join, joining)):
            for start in range(0, len(topics), _CHANNELS_PER_COMMAND):
                chunk = topics[start : start + _CHANNELS_PER_COMMAND]
                command(*(self.topic_channel(topic) for topic in chunk))

    def _topic_of(self, channel: Any) -> Optional[str]:
        """The topic whose channel is ``channel``; ``None``: the broadcast channel (or foreign)."""
        try:
            name = channel.decode("utf-8") if isinstance(channel, bytes) else str(channel)
        except UnicodeDecodeError:
            return None
        prefix = self.channel + TOPIC_INFIX
        return name[len(prefix) :] if name.startswith(prefix) else None

    def _confirm(self, kind: str, channel: Any) -> None:
        """Record Redis's answer to a topic (un)subscription; wake :meth:`wait_topics`."""
        topic = self._topic_of(channel)
        if topic is None:
            return
        with self._topics_changed:
            if kind in ("subscribe", "ssubscribe"):
                self._confirmed.add(topic)
            else:
                self._confirmed.discard(topic)
            self._topics_changed.notify_all()

    def _recovered(self) -> None:
        with self._state_lock:
            started = self._outage_started
            lost = self._dropped + self._publish_errors - self._dropped_at_outage
            self._set_healthy(True)
            self._outage_started = 0.0  # not None: the next failure is an outage
        if started:
            self.logger.warning(
                "Redis hub %s reachable again after %.1fs; %d message(s) were not sent "
                "to other processes meanwhile",
                self.url,
                time.monotonic() - started,
                lost,
            )
        else:
            self.logger.info("Redis hub connected to %s, channel %r", self.url, self.channel)

    def _listen(self, pubsub: Any) -> None:
        """Deliver messages until the hub is closed or the connection breaks."""
        last_seen = time.monotonic()
        ping_sent: Optional[float] = None
        poll = min(0.1, self.ping_interval)  # how soon close() is noticed
        while not self._stop.is_set():
            if self._broken:
                raise _Broken("a publish failed")
            self._sync_topics(pubsub)
            reply = pubsub.get_message(timeout=poll)
            now = time.monotonic()
            if reply is not None:
                last_seen = now
                ping_sent = None
                kind = reply.get("type")
                if kind in ("message", "smessage"):
                    topic = self._topic_of(reply.get("channel"))
                    if topic is None:
                        self._handle(reply.get("data"))
                    else:
                        self._handle_topic(topic, reply.get("data"))
                elif kind in ("subscribe", "ssubscribe", "unsubscribe", "sunsubscribe"):
                    self._confirm(kind, reply.get("channel"))
                continue
            if ping_sent is None and now - last_seen >= self.ping_interval:
                pubsub.ping()
                ping_sent = now
            elif ping_sent is not None and now - ping_sent > self.socket_timeout:
                raise _Broken(f"no answer to a ping in {self.socket_timeout}s")

    def _handle(self, payload: Any) -> None:
        try:
            origin, sequence, message = decode_sequenced(bytes(payload))
        except (TypeError, ValueError) as exc:
            self._invalid += 1
            if self._invalid == 1:
                self.logger.warning(
                    "%r: ignoring a message that is not from a wsthread hub (%s)", self, exc
                )
            return
        if origin == self.origin:
            return  # ours: already delivered locally
        missed = self._seen(self.channel, origin, sequence)
        if missed:
            with self._publish_lock:
                self._missed += missed
        deliver = self._deliver
        if deliver is None:
            return
        self._received += 1
        try:
            deliver(message)
        except Exception:
            self.logger.exception("%r: delivering a message failed", self)

    def _handle_topic(self, topic: str, payload: Any) -> None:
        try:
            origin, sequence, message = decode_sequenced(bytes(payload))
        except (TypeError, ValueError) as exc:
            self._invalid += 1
            if self._invalid == 1:
                self.logger.warning(
                    "%r: ignoring a message that is not from a wsthread hub (%s)", self, exc
                )
            return
        if origin == self.origin:
            self._topic_echoes += 1
            return  # ours: already delivered locally
        missed = self._seen(self.topic_channel(topic), origin, sequence)
        if missed:
            with self._publish_lock:
                self._topic_missed += missed
        deliver = self._topic_deliver
        if deliver is None:
            return
        self._topic_received += 1
        try:
            deliver(topic, message)
        except Exception:
            self.logger.exception("%r: delivering a topic message failed", self)


def _checked(message: Message) -> Message:
    """``message`` as ``str`` or ``bytes`` (a bytearray or memoryview copied), or ``TypeError``."""
    if isinstance(message, (str, bytes)):
        return message
    if isinstance(message, (bytearray, memoryview)):
        return bytes(message)
    raise TypeError(f"a message is str or bytes, not {type(message).__name__}")


class _Broken(Exception):
    """Internal: the subscription must be re-established."""
