"""A chat room: one page, one WebSocket endpoint, one port.

    python examples/chat/server.py              # then open http://127.0.0.1:8000/
    python examples/chat/server.py --certfile certs/localhost.pem   # https and wss

The server answers plain HTTP requests itself through ``process_request``
(the page, ``index.html`` beside this file) and upgrades requests for
``/ws`` to WebSocket. Every message a participant sends is broadcast to
every participant, and so are joins and leaves, as small JSON objects::

    {"type": "welcome", "you": "alice", "people": ["alice", "bob"]}   (to you)
    {"type": "join",    "name": "alice", "people": [...]}             (to all)
    {"type": "message", "name": "alice", "text": "hello"}             (to all)
    {"type": "leave",   "name": "alice", "people": [...]}             (to all)

Several processes, one room (``pip install 'wsthread[redis]'`` and a Redis)::

    python examples/chat/server.py --port 8000 --redis redis://127.0.0.1:6379/0
    python examples/chat/server.py --port 8001 --redis redis://127.0.0.1:6379/0
    python examples/chat/server.py --workers 4 --redis redis://127.0.0.1:6379/0

With ``--redis``, broadcasts go through a :class:`wsthread.hubs.RedisHub`,
so people connected to different processes (different ports, or the
``--workers`` sharing one port) see each other's messages, joins and
leaves; the names in the room are kept in a Redis hash (``chat:people``)
so that they are unique across processes. If Redis goes away, each process
goes on as a room of its own until it is back.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import socket
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Type
from urllib.parse import parse_qs

import wsthread
import wsthread.tls
from wsthread.hubs import RedisHub
from wsthread.workers import run_workers

PAGE = (Path(__file__).resolve().parent / "index.html").read_bytes()
MAX_TEXT = 2000  # characters kept of one chat message


class Roster:
    """The names in the room: this process's, or everybody's in a Redis hash with ``--redis``."""

    KEY = "chat:people"

    def __init__(self, redis_url: Optional[str] = None) -> None:
        self.local: Dict[str, None] = {}
        self.redis: Any = None
        self.errors: Tuple[Type[BaseException], ...] = ()
        if redis_url:
            import redis

            self.redis = redis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
            self.errors = (redis.RedisError, OSError)
        self.owner = f"{socket.gethostname()}:{os.getpid()}"

    def take(self, wanted: str) -> str:
        """Reserve a free name like ``wanted`` (``wanted-2``, ...) and return it."""
        name, n = wanted, 1
        while not self._claim(name):
            n += 1
            name = f"{wanted}-{n}"
        self.local[name] = None
        return name

    def _claim(self, name: str) -> bool:
        if name in self.local:
            return False
        if self.redis is None:
            return True
        try:
            return bool(self.redis.hsetnx(self.KEY, name, self.owner))
        except self.errors:
            return True  # Redis away: unique in this process only

    def release(self, name: str) -> None:
        """Give ``name`` back."""
        self.local.pop(name, None)
        if self.redis is not None:
            try:
                self.redis.hdel(self.KEY, name)
            except self.errors:
                pass

    def everyone(self) -> List[str]:
        """Everybody in the room, sorted."""
        if self.redis is not None:
            try:
                return sorted(name.decode() for name in self.redis.hkeys(self.KEY))
            except self.errors:
                pass
        return sorted(self.local)


class Room:
    """Who is in the room; every change is announced under one lock.

    Announcing under the lock keeps events in the order the room changed:
    two people joining at once never reach anyone as "join" events with
    the participant lists swapped. ``broadcast`` never blocks, so holding
    the lock around it costs nothing.
    """

    def __init__(self, roster: Optional[Roster] = None) -> None:
        self.names: Dict[wsthread.ServerConnection, str] = {}
        self.roster = roster if roster is not None else Roster()
        self.lock = threading.Lock()

    def join(self, ws: wsthread.ServerConnection, wanted: str) -> str:
        """Give ``ws`` a unique name, welcome it and tell everyone; return the name."""
        with self.lock:
            name = self.roster.take(wanted)
            self.names[ws] = name
            people = self.roster.everyone()
            welcome = {"type": "welcome", "you": name, "people": people}
            ws.server.broadcast(json.dumps(welcome), connections=[ws])  # to ws alone
            announce(ws, {"type": "join", "name": name, "people": people})
        return name

    def leave(self, ws: wsthread.ServerConnection) -> None:
        """Forget ``ws`` and tell everyone who is left."""
        with self.lock:
            name = self.names.pop(ws)
            self.roster.release(name)
            announce(ws, {"type": "leave", "name": name, "people": self.roster.everyone()})

    def say(self, ws: wsthread.ServerConnection, text: str) -> None:
        """Pass one message on to everyone, its author included."""
        with self.lock:
            announce(ws, {"type": "message", "name": self.names[ws], "text": text[:MAX_TEXT]})

    def chat(self, ws: wsthread.ServerConnection) -> None:
        """The handler: one participant joins, talks, leaves."""
        assert ws.request is not None  # set by the handshake, before the handler runs
        self.join(ws, clean_name(ws.request.query))
        try:
            for message in ws:
                if isinstance(message, str) and message.strip():
                    self.say(ws, message)
        finally:
            self.leave(ws)


def announce(ws: wsthread.ServerConnection, event: Dict[str, Any]) -> None:
    """Send ``event`` to every open connection of ``ws``'s server.

    ``broadcast`` queues the message for each connection and returns: a
    participant whose network stalls is closed by the server once too much
    waits for it, and never holds up the others.
    """
    ws.server.broadcast(json.dumps(event))


def clean_name(query: str) -> str:
    """The ``name`` from the query string, reduced to a short safe word."""
    raw = parse_qs(query).get("name", [""])[0]
    name = re.sub(r"[^\w .-]", "", raw).strip()[:20]
    return name or "guest"


def process_request(
    connection: wsthread.ServerConnection, request: wsthread.Request
) -> Optional[wsthread.Response]:
    """Plain HTTP on the WebSocket port: the page at ``/``; ``/ws`` goes on to upgrade."""
    if request.path == "/ws":
        return None
    if request.path in ("/", "/index.html"):
        return wsthread.http_response(200, PAGE, content_type="text/html; charset=utf-8")
    return wsthread.http_response(404, b"not found: try /\n")


# The room of this process. A module-level handler (rather than a Room's
# method) can be handed to --workers processes, which each set up their own.
ROOM = Room()


def chat(ws: wsthread.ServerConnection) -> None:
    """The handler: this process's room."""
    ROOM.chat(ws)


def setup(redis_url: Optional[str]) -> None:
    """Logging, and this process's room (shared through Redis with ``redis_url``)."""
    global ROOM
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(process)d] %(message)s")
    ROOM = Room(Roster(redis_url))


def main() -> None:
    """Serve the chat room until Ctrl-C."""
    parser = argparse.ArgumentParser(description="A WebSocket chat room with its own page.")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000, 0 = any)")
    parser.add_argument("--certfile", help="PEM certificate chain: serve https:// and wss://")
    parser.add_argument("--keyfile", help="PEM private key, if not in --certfile")
    parser.add_argument(
        "--redis", metavar="URL", help="share the room with other processes through this Redis"
    )
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N", help="serve from N processes (needs --redis)"
    )
    args = parser.parse_args()
    if args.workers > 1 and not args.redis:
        parser.error("--workers needs --redis: without it every worker is a room of its own")
    setup(args.redis)

    context = None
    if args.certfile:
        context = wsthread.tls.server_context(args.certfile, args.keyfile)
    scheme = "https" if context else "http"
    host = "localhost" if context else "127.0.0.1"
    hub_factory = functools.partial(RedisHub, args.redis, channel="chat") if args.redis else None

    if args.workers > 1:

        def ready(port: int, pids: List[int]) -> None:
            print(
                f"chat room on {scheme}://{host}:{port}/ (Ctrl-C to stop), {len(pids)} workers",
                flush=True,
            )

        ssl_factory = (
            functools.partial(wsthread.tls.server_context, args.certfile, args.keyfile)
            if context
            else None
        )
        raise SystemExit(
            run_workers(
                chat,
                "127.0.0.1",
                args.port,
                workers=args.workers,
                hub_factory=hub_factory,
                ssl_factory=ssl_factory,
                initializer=functools.partial(setup, args.redis),
                on_ready=ready,
                process_request=process_request,
                max_size=65536,
            )
        )

    with wsthread.serve(
        chat,
        "127.0.0.1",
        args.port,
        process_request=process_request,
        ssl=context,
        max_size=65536,
        hub=hub_factory() if hub_factory else None,
    ) as server:
        if isinstance(server.options.hub, RedisHub) and not server.options.hub.wait_healthy(5):
            logging.warning("Redis is not reachable yet: a room of our own until it is")
        print(f"chat room on {scheme}://{host}:{server.port}/ (Ctrl-C to stop)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("shutting down", flush=True)


if __name__ == "__main__":
    main()
