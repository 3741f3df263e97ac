"""A Flask app that pushes over WebSocket, safe under reloaders and pre-fork servers.

    cd examples/prefork
    flask --app app run --debug                      # the reloader: works
    gunicorn -w 1 --threads 8 -c gunicorn.conf.py app:app
    WS_REDIS=redis://127.0.0.1:6379/0 gunicorn -w 4 -c gunicorn.conf.py app:app
    WS_REDIS=redis://127.0.0.1:6379/0 gunicorn -w 4 --preload -c gunicorn.conf.py app:app

The rule that makes all of these work: create the WebSocket server in the
process that serves, never at import time. ``flask run --debug`` imports
the app in a watcher process that never serves and then again in the
serving child; gunicorn imports it in its master (with ``--preload``) and
forks the workers from there. A server made at import would be bound by the
wrong process. So :func:`events` makes it on first use, in this process,
and gunicorn's ``post_worker_init`` hook (``gunicorn.conf.py``) calls it as
each worker starts.

With several workers, each one has its own server on the same port
(``reuse_port=True``: the kernel spreads the connections) and a Redis hub
carries every broadcast to all of them. Without ``WS_REDIS``, run one
worker with threads.

Try it: open http://127.0.0.1:8000/ (gunicorn) or :5000 (flask) in a few
tabs, and::

    curl -d 'item=coffee' http://127.0.0.1:8000/orders   # every tab shows it
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Dict, Optional

import flask

import wsthread

WS_HOST = os.environ.get("WS_HOST", "127.0.0.1")
WS_PORT = int(os.environ.get("WS_PORT", "8767"))
REDIS_URL = os.environ.get("WS_REDIS")  # set it when several processes serve

app = flask.Flask(__name__)

_events: Optional[wsthread.WebSocketServer] = None
_events_lock = threading.Lock()


def screen(ws: wsthread.ServerConnection) -> None:
    """A browser tab: say which process serves it, then listen until it leaves."""
    ws.send(json.dumps({"hello": os.getpid()}))
    for _ in ws:
        pass


def events() -> wsthread.WebSocketServer:
    """This process's WebSocket server, made and started on first use (never at import)."""
    global _events
    with _events_lock:
        if _events is None:
            options: Dict[str, Any] = {}
            if REDIS_URL:
                from wsthread.hubs import RedisHub

                options.update(reuse_port=True, hub=RedisHub(REDIS_URL))
            server = wsthread.serve(screen, WS_HOST, WS_PORT, **options)
            if REDIS_URL:
                # Take no page before this worker hears the others' broadcasts.
                server.options.hub.wait_healthy(10)
            _events = server.start()
        return _events


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Orders</title></head>
<body>
<h1>Orders</h1>
<form method="post" action="/orders"><input name="item"> <button>Order</button></form>
<ol id="orders"></ol>
<script>
  const socket = new WebSocket(`ws://${location.hostname}:%(ws_port)d/`);
  socket.onmessage = (message) => {
    const data = JSON.parse(message.data);
    if (data.item === undefined) return;          // the hello
    const item = document.createElement("li");
    item.textContent = data.item;
    document.getElementById("orders").appendChild(item);
  };
</script>
</body></html>
"""


@app.get("/")
def page() -> str:
    """The page; its script connects to this process's WebSocket server."""
    return PAGE % {"ws_port": events().port}


@app.post("/orders")
def order() -> Any:
    """Record an order (here: announce it) to every open page, in every process."""
    item = flask.request.form.get("item", "").strip()
    if not item:
        return "an item, please\n", 400
    events().broadcast(json.dumps({"item": item, "by": os.getpid()}))
    return flask.redirect("/", code=303)
