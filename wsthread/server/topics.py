"""Topics: which open connections watch which topic, and publishing to them; run by any thread.

:class:`Topics` is the topic side of a :class:`~wsthread.server.WebSocketServer`,
behind ``connection.subscribe(topic)``, ``connection.unsubscribe(topic)``,
``connection.topics`` and ``server.publish(topic, message)``. It keeps two
maps under one lock: each topic's subscribers, and each connection's
topics. A publish takes a snapshot of the topic's subscribers under the lock
and hands the message to the server's broadcast path with them (framed once,
queued on each writer, never waiting for a client)::

    publish(topic, m) ── hub with topics? ── no ── deliver(topic, m): snapshot
                                  │                  of the subscribers ── broadcast
                                  └── yes ── hub.publish_topic(topic, m) ── the hub
                                             calls deliver(topic, m) here, and in
                                             every process with subscribers

With a hub that carries topics (:class:`wsthread.hubs.RedisHub`,
:class:`wsthread.hubs.LocalHub`), the hub is told when a topic gets its
first local subscriber (``hub.watch(topic)``) and loses its last
(``hub.unwatch(topic)``), so a process receives only the topics it has
subscribers for. Both calls are made under the lock, so the hub sees them in
the order they happened; they only record the wish and never block.

A connection leaves all its topics when it ends (:meth:`Topics.forget`, run
when the server forgets it); a connection that is not open (still in its
handshake, or already ended) cannot subscribe.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, FrozenSet, Generic, List, Optional, Set, TypeVar

from ..connection.connection import Connection, Data

__all__ = ["Topics", "check_topic", "MAX_TOPIC_BYTES", "hub_carries_topics"]

#: The longest topic name, in bytes of UTF-8.
MAX_TOPIC_BYTES = 256

#: The kind of connection subscribed (the server's ``ServerConnection``).
C = TypeVar("C", bound=Connection)


def check_topic(topic: object) -> str:
    """Return ``topic`` if it is a valid topic name.

    Raises:
        TypeError: ``topic`` is not a ``str``.
        ValueError: it is empty, longer than :data:`MAX_TOPIC_BYTES` bytes
            of UTF-8, or not encodable as UTF-8 (a lone surrogate).
    """
    if not isinstance(topic, str):
        raise TypeError(f"a topic is a str, not {type(topic).__name__}")
    try:
        size = len(topic.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("a topic must be valid Unicode text (no lone surrogates)") from None
    if size == 0:
        raise ValueError("a topic name cannot be empty")
    if size > MAX_TOPIC_BYTES:
        raise ValueError(f"a topic name is at most {MAX_TOPIC_BYTES} bytes of UTF-8, not {size}")
    return topic


def hub_carries_topics(hub: Any) -> bool:
    """Whether ``hub`` implements the topic part of the hub protocol (see :mod:`wsthread.hubs`)."""
    return all(
        callable(getattr(hub, name, None))
        for name in ("attach_topics", "publish_topic", "watch", "unwatch")
    )


class Topics(Generic[C]):
    """Each topic's subscribers and each connection's topics, under one lock.

    Args:
        deliver: sends a message to a list of connections and returns how
            many took it (the server's ``broadcast(message, connections)``).
        is_open: whether a connection is open (registered with the server).
        max_subscriptions: topics one connection may watch at once;
            ``None``: no limit.
        hub: the server's hub; used for topics if it carries them
            (:func:`hub_carries_topics`), else topics stay in this process.
    """

    def __init__(
        self,
        deliver: Callable[[Data, List[C]], int],
        is_open: Callable[[C], bool],
        max_subscriptions: Optional[int] = 1024,
        hub: Any = None,
    ) -> None:
        if max_subscriptions is not None and max_subscriptions < 1:
            raise ValueError("max_subscriptions must be at least 1, or None")
        self._deliver = deliver
        self._is_open = is_open
        self.max_subscriptions = max_subscriptions
        self.hub = hub if hub_carries_topics(hub) else None
        self._lock = threading.Lock()
        self._subscribers: Dict[str, Dict[C, None]] = {}  # an ordered set per topic
        self._topics: Dict[C, Set[str]] = {}
        self._published = 0

    def attach(self) -> None:
        """Attach to the hub, which from then on calls :meth:`deliver` for its topics."""
        if self.hub is not None:
            self.hub.attach_topics(self.deliver)

    # -- subscriptions -----------------------------------------------------------

    def subscribe(self, connection: C, topic: str) -> bool:
        """Add ``connection`` to ``topic``'s subscribers.

        Returns:
            ``True`` if it was not subscribed and now is; ``False`` if it
            already was, or is not open (it then watches nothing).

        Raises:
            TypeError, ValueError: ``topic`` is not a valid name (:func:`check_topic`).
            ValueError: the connection already watches ``max_subscriptions`` topics.
        """
        check_topic(topic)
        with self._lock:
            if not self._is_open(connection):
                return False
            mine = self._topics.get(connection)
            if mine is not None and topic in mine:
                return False
            limit = self.max_subscriptions
            if limit is not None and mine is not None and len(mine) >= limit:
                raise ValueError(
                    f"a connection may watch at most {limit} topics (max_subscriptions)"
                )
            if mine is None:
                mine = self._topics[connection] = set()
            mine.add(topic)
            watchers = self._subscribers.get(topic)
            if watchers is None:
                watchers = self._subscribers[topic] = {}
                if self.hub is not None:
                    self.hub.watch(topic)  # records the wish; never blocks
            watchers[connection] = None
        return True

    def unsubscribe(self, connection: C, topic: str) -> bool:
        """Remove ``connection`` from ``topic``'s subscribers; ``True`` if it was one.

        Raises:
            TypeError, ValueError: ``topic`` is not a valid name.
        """
        check_topic(topic)
        with self._lock:
            mine = self._topics.get(connection)
            if mine is None or topic not in mine:
                return False
            mine.discard(topic)
            if not mine:
                del self._topics[connection]
            self._leave(connection, topic)
        return True

    def forget(self, connection: C) -> None:
        """The connection ended: it leaves every topic it watched."""
        with self._lock:
            for topic in self._topics.pop(connection, ()):
                self._leave(connection, topic)

    def _leave(self, connection: C, topic: str) -> None:
        """Under the lock: ``connection`` leaves ``topic``'s subscribers."""
        watchers = self._subscribers[topic]
        del watchers[connection]
        if not watchers:
            del self._subscribers[topic]
            if self.hub is not None:
                self.hub.unwatch(topic)

    def topics_of(self, connection: C) -> FrozenSet[str]:
        """The topics ``connection`` watches (a snapshot)."""
        with self._lock:
            return frozenset(self._topics.get(connection, ()))

    def subscribers(self, topic: str) -> List[C]:
        """The connections watching ``topic`` (a snapshot)."""
        with self._lock:
            return list(self._subscribers.get(topic, ()))

    # -- publishing --------------------------------------------------------------

    def publish(self, topic: str, message: Data) -> int:
        """Send ``message`` to ``topic``'s subscribers, in every process through the hub.

        Returns:
            How many subscribers of this process it was queued for (0 when
            it went through the hub, which delivers here before returning).

        Raises:
            TypeError, ValueError: ``topic`` is not a valid name.
            TypeError: ``message`` is neither ``str`` nor bytes-like.
        """
        check_topic(topic)
        if not isinstance(message, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"cannot publish {type(message).__name__}: expected str or bytes")
        with self._lock:
            self._published += 1
        if self.hub is not None:
            self.hub.publish_topic(topic, message if isinstance(message, str) else bytes(message))
            return 0
        return self.deliver(topic, message)

    def deliver(self, topic: str, message: Data) -> int:
        """Queue ``message`` on this process's subscribers of ``topic``; how many took it.

        The hub calls this, on the publisher's thread for this process's own
        publishes and on its own thread for the others'.
        """
        targets = self.subscribers(topic)
        if not targets:
            return 0
        return self._deliver(message, targets)

    def stats(self) -> Dict[str, int]:
        """Topics with subscribers here, subscriptions, and publishes made here."""
        with self._lock:
            return {
                "topics": len(self._subscribers),
                "subscriptions": sum(len(mine) for mine in self._topics.values()),
                "published": self._published,
            }
