"""A chat with rooms, on topics: each room is a topic, each member subscribes to the rooms it joins.

    python examples/rooms.py                                  # ws://127.0.0.1:8769/
    python -m wsthread "ws://127.0.0.1:8769/?name=alice"      # then type:
        /join lobby            join a room (subscribe to its topic)
        /leave lobby           leave it
        /say lobby hello       say something in one of your rooms
        hello                  say it in every room you are in
        /rooms                 the rooms you are in

Several processes share the rooms through Redis::

    python examples/rooms.py --port 8769 --redis redis://127.0.0.1:6379/0
    python examples/rooms.py --port 8770 --redis redis://127.0.0.1:6379/0

Every event the server sends is one JSON object::

    {"type": "welcome", "you": "alice"}
    {"type": "joined",  "room": "lobby", "name": "alice"}        (to the room)
    {"type": "message", "room": "lobby", "name": "alice", "text": "hello"}
    {"type": "left",    "room": "lobby", "name": "alice"}        (to the room)
    {"type": "rooms",   "rooms": ["lobby"]}
    {"type": "error",   "text": "..."}

Nothing here keeps a list of who is where: ``ws.subscribe(room)`` and
``server.publish(room, ...)`` do, and a member who disconnects leaves every
room by itself (its ``left`` events are sent by the handler on its way out).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import urllib.parse
from typing import Any, Dict, Optional

import wsthread

MAX_ROOMS = 16  # rooms one member may be in: the server's max_subscriptions
_guests = itertools.count(1)


def event(ws: wsthread.ServerConnection, **fields: Any) -> None:
    """Send one event to this member."""
    ws.send(json.dumps(fields, separators=(",", ":")))


def to_room(ws: wsthread.ServerConnection, room: str, **fields: Any) -> None:
    """Send one event to everyone in ``room``, in every process sharing the hub."""
    ws.server.publish_json(room, {**fields, "room": room})


def join(ws: wsthread.ServerConnection, name: str, room: str) -> None:
    """Subscribe to ``room``'s topic and tell the room."""
    try:
        joined = ws.subscribe(room)
    except (TypeError, ValueError) as exc:  # a name too long, or too many rooms
        event(ws, type="error", text=str(exc))
        return
    if joined:
        wait_topics = getattr(ws.server.options.hub, "wait_topics", None)
        if wait_topics is not None:  # with Redis: hear the room's other processes from now on
            wait_topics(2)
        to_room(ws, room, type="joined", name=name)


def leave(ws: wsthread.ServerConnection, name: str, room: str) -> None:
    """Unsubscribe from ``room``'s topic and tell the room (the leaver hears it no more)."""
    try:
        if ws.unsubscribe(room):
            to_room(ws, room, type="left", name=name)
    except ValueError as exc:
        event(ws, type="error", text=str(exc))


def command(ws: wsthread.ServerConnection, name: str, line: str) -> None:
    """Carry out one line a member sent."""
    verb, _, rest = line.partition(" ")
    if verb == "/join" and rest:
        join(ws, name, rest)
    elif verb == "/leave" and rest:
        leave(ws, name, rest)
    elif verb == "/rooms":
        event(ws, type="rooms", rooms=sorted(ws.topics))
    elif verb == "/say" and " " in rest:
        room, text = rest.split(" ", 1)
        if room in ws.topics:
            to_room(ws, room, type="message", name=name, text=text)
        else:
            event(ws, type="error", text=f"you are not in {room}: /join {room} first")
    elif line.startswith("/"):
        event(ws, type="error", text=f"unknown command: {verb}")
    elif not ws.topics:
        event(ws, type="error", text="you are in no room: /join one first")
    else:
        for room in sorted(ws.topics):
            to_room(ws, room, type="message", name=name, text=line)


def member(ws: wsthread.ServerConnection) -> None:
    """The handler: one member, from their first line to their leaving."""
    assert ws.request is not None
    wanted = urllib.parse.parse_qs(ws.request.query).get("name", [""])[0].strip()
    name = wanted[:32] or f"guest-{next(_guests)}"
    event(ws, type="welcome", you=name)
    try:
        for line in ws:
            if isinstance(line, str):
                command(ws, name, line.strip())
    finally:
        # The connection leaves its topics by itself once it has ended; saying
        # goodbye to each room is the application's part.
        for room in sorted(ws.topics):
            to_room(ws, room, type="left", name=name)


def main() -> None:
    """Serve the rooms until Ctrl-C."""
    parser = argparse.ArgumentParser(description="A chat with rooms, on topics.")
    parser.add_argument("--port", type=int, default=8769, help="port (default 8769, 0 = any)")
    parser.add_argument("--redis", help="a Redis URL, to share the rooms between processes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    options: Dict[str, Any] = {"max_subscriptions": MAX_ROOMS}
    hub: Optional[Any] = None
    if args.redis:
        from wsthread.hubs import RedisHub

        hub = options["hub"] = RedisHub(args.redis, channel="rooms")
    with wsthread.serve(member, "127.0.0.1", args.port, **options) as server:
        if hub is not None:
            hub.wait_healthy(10)
        print(f"rooms on ws://127.0.0.1:{server.port}/ (Ctrl-C to stop)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("shutting down", flush=True)


if __name__ == "__main__":
    main()
