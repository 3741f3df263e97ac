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
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import threading
from pathlib import Path
from typing import Any, Dict, Optional
from urllib.parse import parse_qs

import wsthread
import wsthread.tls

PAGE = (Path(__file__).resolve().parent / "index.html").read_bytes()
MAX_TEXT = 2000  # characters kept of one chat message


class Room:
    """Who is in the room; every change is announced under one lock.

    Announcing under the lock keeps events in the order the room changed:
    two people joining at once never reach anyone as "join" events with
    the participant lists swapped. ``broadcast`` never blocks, so holding
    the lock around it costs nothing.
    """

    def __init__(self) -> None:
        self.names: Dict[wsthread.ServerConnection, str] = {}
        self.lock = threading.Lock()

    def join(self, ws: wsthread.ServerConnection, wanted: str) -> str:
        """Give ``ws`` a unique name, welcome it and tell everyone; return the name."""
        with self.lock:
            taken = set(self.names.values())
            name, n = wanted, 1
            while name in taken:
                n += 1
                name = f"{wanted}-{n}"
            self.names[ws] = name
            people = sorted(self.names.values())
            welcome = {"type": "welcome", "you": name, "people": people}
            ws.server.broadcast(json.dumps(welcome), connections=[ws])  # to ws alone
            announce(ws, {"type": "join", "name": name, "people": people})
        return name

    def leave(self, ws: wsthread.ServerConnection) -> None:
        """Forget ``ws`` and tell everyone who is left."""
        with self.lock:
            name = self.names.pop(ws)
            announce(ws, {"type": "leave", "name": name, "people": sorted(self.names.values())})

    def say(self, ws: wsthread.ServerConnection, text: str) -> None:
        """Pass one message on to everyone, its author included."""
        with self.lock:
            announce(ws, {"type": "message", "name": self.names[ws], "text": text[:MAX_TEXT]})

    def chat(self, ws: wsthread.ServerConnection) -> None:
        """The handler: one participant joins, talks, leaves."""
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


def main() -> None:
    """Serve the chat room until Ctrl-C."""
    parser = argparse.ArgumentParser(description="A WebSocket chat room with its own page.")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000, 0 = any)")
    parser.add_argument("--certfile", help="PEM certificate chain: serve https:// and wss://")
    parser.add_argument("--keyfile", help="PEM private key, if not in --certfile")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    context = None
    if args.certfile:
        context = wsthread.tls.server_context(args.certfile, args.keyfile)

    room = Room()
    with wsthread.serve(
        room.chat,
        "127.0.0.1",
        args.port,
        process_request=process_request,
        ssl=context,
        max_size=65536,
    ) as server:
        scheme = "https" if context else "http"
        host = "localhost" if context else "127.0.0.1"
        print(f"chat room on {scheme}://{host}:{server.port}/ (Ctrl-C to stop)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("shutting down", flush=True)


if __name__ == "__main__":
    main()
