"""Publishing to a hub's WebSocket clients from a process that serves none; on the caller's thread.

Some WSGI servers never hand a request's socket over (uWSGI, mod_wsgi,
Passenger, Granian's WSGI mode, waitress), so
:func:`wsthread.wsgi.middleware` cannot serve WebSockets there. The
WebSockets then live in a *sidecar*: a wsthread server of its own, attached
to a :class:`~wsthread.hubs.RedisHub` (``python -m wsthread.sidecar``). The
application, under any WSGI server, publishes on the same Redis channel
with a :class:`HubPublisher`, and every client of every sidecar gets the
message::

    view ── HubPublisher.broadcast(m) ── PUBLISH <channel> ──> Redis
                                                                 │
    sidecar: RedisHub ── deliver(m) ── its WebSocket clients <───┘

The payload is :mod:`wsthread.hubs`' documented format (no pickle), with
an origin id of the publisher's own, so no sidecar mistakes it for an echo
of its own message. A publisher holds no thread and no subscription: one
Redis connection (from the ``redis`` package's pool, re-made after a fork),
used by the thread that publishes.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Dict, Optional

from ..connection.connection import Data, JSONDumps, dump_json
from ..connection.fragments import refuse_message
from ..server.topics import check_topic
from .hubs import ORIGIN_SIZE, TOPIC_INFIX, encode_payload

__all__ = ["HubPublisher"]

logger = logging.getLogger("wsthread")


def _load_redis() -> Any:
    """The ``redis`` package, with a helpful error when it is missing."""
    try:
        import redis
    except ImportError as exc:
        raise ImportError(
            "HubPublisher needs the redis client package: pip install 'wsthread[redis]'"
        ) from exc
    return redis


class HubPublisher:
    """Broadcast and publish to the clients of wsthread servers attached to a ``RedisHub``.

    Use the ``url`` and ``channel`` of the servers' hub. Safe from any
    thread. Redis being unreachable never raises: the message is counted
    in :attr:`dropped`, the first failure of an outage is logged at
    WARNING, and the method returns ``False``.

    Args:
        url: the Redis URL, as for :class:`~wsthread.hubs.RedisHub`.
        channel: the hub's channel (``"wsthread"`` by default).
        socket_timeout: seconds a publish may wait for Redis.
        sharded: publish topic messages with ``SPUBLISH``, for hubs made
            with ``sharded=True``.
        json_dumps: the encoder of the ``*_json`` methods; ``None``:
            ``json.dumps``, compact (``orjson.dumps`` works too).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        channel: str = "wsthread",
        *,
        socket_timeout: float = 2.0,
        sharded: bool = False,
        json_dumps: Optional[JSONDumps] = None,
    ) -> None:
        self._redis = _load_redis()
        self.url = url
        self.channel = channel
        self.socket_timeout = socket_timeout
        self.sharded = sharded
        self.json_dumps = json_dumps
        self.origin = os.urandom(ORIGIN_SIZE)
        self._lock = threading.Lock()
        self._client: Any = None
        self._client_pid = 0
        self._published = 0
        self._dropped = 0
        self._failing = False  # within an outage: logged once

    @property
    def published(self) -> int:
        """Messages handed to Redis so far."""
        return self._published

    @property
    def dropped(self) -> int:
        """Messages not published because Redis could not be reached."""
        return self._dropped

    def stats(self) -> Dict[str, int]:
        """``{"published": ..., "dropped": ...}``, e.g. for a health page."""
        return {"published": self._published, "dropped": self._dropped}

    def broadcast(self, message: Data) -> bool:
        """Send ``message`` to every client of the hub's servers; ``True`` once Redis took it.

        Raises:
            TypeError: ``message`` is neither ``str`` nor bytes-like.
        """
        return self._send(self.channel, message, "broadcast", topic=False)

    def broadcast_json(self, obj: Any) -> bool:
        """:meth:`broadcast` ``obj`` as JSON, in one text message."""
        return self.broadcast(dump_json(obj, self.json_dumps).decode("utf-8"))

    def publish(self, topic: str, message: Data) -> bool:
        """Send ``message`` to the clients subscribed to ``topic``; ``True`` once Redis took it.

        Raises:
            TypeError: ``topic`` is not a ``str``, or ``message`` neither
                ``str`` nor bytes-like.
            ValueError: ``topic`` is empty or over 256 bytes of UTF-8.
        """
        channel = f"{self.channel}{TOPIC_INFIX}{check_topic(topic)}"
        return self._send(channel, message, "publish", topic=True)

    def publish_json(self, topic: str, obj: Any) -> bool:
        """:meth:`publish` ``obj`` as JSON, in one text message."""
        return self.publish(topic, dump_json(obj, self.json_dumps).decode("utf-8"))

    def close(self) -> None:
        """Close the Redis connection; a later publish opens another."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing: nothing to report to the caller
                logger.debug("closing the Redis client failed", exc_info=True)

    def _send(self, channel: str, message: Data, action: str, *, topic: bool) -> bool:
        """PUBLISH (or SPUBLISH) the encoded ``message`` on ``channel``; count the outcome."""
        if not isinstance(message, (str, bytes, bytearray, memoryview)):
            raise refuse_message(message, action)
        payload = encode_payload(
            message if isinstance(message, str) else bytes(message), self.origin
        )
        with self._lock:
            try:
                client = self._connected()
                if topic and self.sharded:
                    client.spublish(channel, payload)
                else:
                    client.publish(channel, payload)
            except (self._redis.RedisError, OSError) as exc:
                self._dropped += 1
                if not self._failing:
                    self._failing = True
                    logger.warning(
                        "HubPublisher: Redis at %s unreachable (%s): messages are dropped "
                        "until it answers again",
                        self.url,
                        exc,
                    )
                return False
            self._published += 1
            if self._failing:
                self._failing = False
                logger.warning("HubPublisher: Redis at %s reachable again", self.url)
            return True

    def _connected(self) -> Any:
        """The Redis client of this process (a forked child makes its own); the lock is held."""
        if self._client is None or self._client_pid != os.getpid():
            self._client = self._redis.Redis.from_url(
                self.url,
                socket_timeout=self.socket_timeout,
                socket_connect_timeout=self.socket_timeout,
            )
            self._client_pid = os.getpid()
        return self._client

    def __repr__(self) -> str:
        return f"<HubPublisher {self.url} channel={self.channel!r}>"
