"""A Flask application with WebSocket routes, served by every server tests/test_wsgi.py tries.

Run by gunicorn, Werkzeug, waitress and ``python -m wsthread.wsgi`` from
this directory (``flaskapp:app``). ``WSGI_TEST_REDIS=redis://...`` gives the
middleware a RedisHub, for several worker processes.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from flask import Flask, jsonify, request

from wsthread.wsgi import middleware

flask_app = Flask(__name__)


@flask_app.get("/")
def index() -> str:
    """A plain page."""
    return "hello from flask"


@flask_app.post("/broadcast")
def broadcast() -> Any:
    """Send the request body to every /feed WebSocket (through the hub when there is one)."""
    sent = app.broadcast(request.get_data(as_text=True))
    return jsonify(sent=sent)


@flask_app.get("/stats")
def stats() -> Any:
    """What the tests check for leaks: threads and open WebSockets of this process."""
    return jsonify(
        pid=os.getpid(),
        threads=sorted(thread.name for thread in threading.enumerate()),
        connections=len(app.connections),
    )


@flask_app.post("/upload")
def upload() -> Any:
    """The size of the request body."""
    return jsonify(size=len(request.get_data()))


def echo(ws: Any) -> None:
    """Send every message back."""
    for message in ws:
        ws.send(message)


def feed(ws: Any) -> None:
    """Say hello, then wait: broadcasts from /broadcast arrive meanwhile."""
    ws.send("subscribed")
    for _ in ws:
        pass


def where(ws: Any) -> None:
    """Tell the client the path and query it asked for."""
    ws.send(f"{ws.request.path}?{ws.request.query}")


hub = None
if os.environ.get("WSGI_TEST_REDIS"):
    from wsthread.hubs import RedisHub

    hub = RedisHub(os.environ["WSGI_TEST_REDIS"], channel="wsgi-test")

app = middleware(
    flask_app,
    {"/ws": echo, "/feed": feed, "/where": where},
    origins=["http://good.example", None],
    hub=hub,
)
