"""A Flask app with a live feed over WebSocket, on the same port as its pages.

    cd examples/flask_app
    python app.py --port 8000                                     # wsthread alone
    python -m wsthread.wsgi app:app --port 8000                   # the same, by the CLI
    gunicorn -k gthread --threads 50 -c gunicorn.conf.py app:app  # production
    flask --app app run --port 8000                               # development

Open http://127.0.0.1:8000/ in a few tabs and post something: every tab
shows it at once. Posting is an ordinary Flask view (``POST /post``); it
calls ``sockets.broadcast()``, which reaches every open WebSocket of
this process. The page's WebSocket goes to ``/ws`` on the page's own host and
port: ``wsthread.wsgi.middleware`` takes those requests over, and Flask
serves every other one. With several gunicorn workers, give the middleware
a ``RedisHub`` (``LIVE_REDIS=redis://...``) so that a post reaches the tabs
of every worker.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import threading
import uuid
from typing import Any, List

from flask import Flask, jsonify, request

from wsthread.wsgi import middleware

app = Flask(__name__)

_recent: List[str] = []  # the last posts, shown to a page when it connects
_recent_lock = threading.Lock()

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>Live feed</title>
<h1>Live feed</h1>
<p id="status">connecting…</p>
<form id="form"><input id="text" autocomplete="off" placeholder="say something">
<button id="post">Post</button></form>
<ul id="feed"></ul>
<script>
const feed = document.getElementById("feed");
const status = document.getElementById("status");
const scheme = location.protocol === "https:" ? "wss" : "ws";
const ws = new WebSocket(`${scheme}://${location.host}/ws`);   // same host, same port
ws.onopen = () => { status.textContent = "connected"; };
ws.onclose = (event) => { status.textContent = `disconnected (code ${event.code})`; };
const seen = new Set();   // a post can arrive twice: in the backlog and as it is broadcast
ws.onmessage = (event) => {
  const post = JSON.parse(event.data);
  if (seen.has(post.id)) return;
  seen.add(post.id);
  const item = document.createElement("li");
  item.textContent = post.text;
  feed.prepend(item);
};
document.getElementById("form").onsubmit = async (event) => {
  event.preventDefault();
  const text = document.getElementById("text");
  await fetch("/post", {method: "POST", body: new URLSearchParams({text: text.value})});
  text.value = "";
};
</script>
"""


@app.get("/")
def index() -> str:
    """The page."""
    return PAGE


@app.post("/post")
def post() -> Any:
    """An ordinary view: keep the post and push it to every open page."""
    text = request.form.get("text", "").strip()[:500]
    if not text:
        return jsonify(error="empty"), 400
    message = json.dumps({"id": uuid.uuid4().hex, "text": text})
    with _recent_lock:
        _recent.append(message)
        del _recent[:-20]
    return jsonify(sent=sockets.broadcast(message))


def live(ws: Any) -> None:
    """A page's WebSocket: the recent posts, then whatever is posted (by broadcast).

    The connection receives broadcasts from the moment it opened, before
    this runs: a post made in between comes twice, in the backlog and by
    broadcast, and the page keeps the first (posts carry an id).
    """
    with _recent_lock:
        recent = list(_recent)
    for message in recent:
        ws.send(message)
    for _ in ws:  # the page sends nothing; wait until it goes away
        pass


def _hub() -> Any:
    url = os.environ.get("LIVE_REDIS")
    if not url:
        return None
    from wsthread.hubs import RedisHub

    return RedisHub(url, channel="live-feed")


# Wrap the Flask app's own WSGI callable: `app` stays a Flask app, which
# `flask run` insists on, and gunicorn and wsthread serve it as well.
sockets = middleware(app.wsgi_app, {"/ws": live}, hub=_hub())
app.wsgi_app = sockets  # type: ignore[method-assign]


def main() -> None:
    """``python app.py [--host H] [--port P]``: the app and its WebSocket on one port."""
    import wsthread

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    with wsthread.serve({}, args.host, args.port, wsgi=app) as server:
        print(f"live feed on http://{html.escape(args.host)}:{server.port}/", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            sockets.shutdown()  # the open pages get 1001 (going away)


if __name__ == "__main__":
    main()
