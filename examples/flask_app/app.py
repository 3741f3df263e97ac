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

Per-record updates go through *topics*: http://127.0.0.1:8000/orders/123 is
a page that watches order 123 (its WebSocket, ``/ws/orders?id=123``,
subscribes to the topic ``order:123``), and changing the order is an
ordinary view that calls ``sockets.server.publish("order:123", ...)``: only
the pages watching order 123 get it, in every worker when there is a hub::

    LIVE_REDIS=redis://127.0.0.1:6379/0 gunicorn -w 2 -c gunicorn.conf.py app:app
    curl -d status=shipped http://127.0.0.1:8000/orders/123
"""

from __future__ import annotations

import argparse
import html
import json
import os
import threading
import uuid
from typing import Any, Dict, List
from urllib.parse import parse_qs

from flask import Flask, jsonify, request

from wsthread.wsgi import middleware

app = Flask(__name__)

_recent: List[str] = []  # the last posts, shown to a page when it connects
_recent_lock = threading.Lock()
# The orders, by id. A real application keeps them in its database, which
# every worker shares; this dictionary is per process (the pushed update
# carries the whole record, so a watching page needs nothing more).
_orders: Dict[int, Dict[str, Any]] = {}
_orders_lock = threading.Lock()

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


ORDER_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>Order {id}</title>
<h1>Order {id}</h1>
<p>Status: <b id="status">{status}</b> <small id="live">connecting…</small></p>
<form id="form"><input id="new" placeholder="new status"> <button>Change</button></form>
<script>
const scheme = location.protocol === "https:" ? "wss" : "ws";
const ws = new WebSocket(`${{scheme}}://${{location.host}}/ws/orders?id={id}`);
ws.onopen = () => {{ document.getElementById("live").textContent = "live"; }};
ws.onclose = () => {{ document.getElementById("live").textContent = "disconnected"; }};
ws.onmessage = (event) => {{
  const order = JSON.parse(event.data);
  if (order.status !== undefined) document.getElementById("status").textContent = order.status;
}};
document.getElementById("form").onsubmit = async (event) => {{
  event.preventDefault();
  const status = document.getElementById("new");
  const body = new URLSearchParams({{status: status.value}});
  await fetch("/orders/{id}", {{method: "POST", body}});
  status.value = "";
}};
</script>
"""


def order_topic(order_id: int) -> str:
    """The topic of one order's updates: ``order:<id>``."""
    return f"order:{order_id}"


@app.get("/orders/<int:order_id>")
def order_page(order_id: int) -> str:
    """A page that shows one order and follows its changes live."""
    with _orders_lock:
        status = _orders.get(order_id, {}).get("status", "new")
    return ORDER_PAGE.format(id=order_id, status=html.escape(str(status)))


@app.post("/orders/<int:order_id>")
def change_order(order_id: int) -> Any:
    """An ordinary view: change an order, then push it to the pages watching that order only."""
    status = request.form.get("status", "").strip()[:100]
    if not status:
        return jsonify(error="empty"), 400
    with _orders_lock:
        order = _orders.setdefault(order_id, {"id": order_id})
        order["status"] = status
        update = dict(order)
    # To the watchers in every worker, when the middleware has a hub.
    sockets.server.publish(order_topic(order_id), json.dumps(update))
    return jsonify(order=update, worker=os.getpid())


def watch_order(ws: Any) -> None:
    """A page's WebSocket for one order (``/ws/orders?id=123``): its updates until it leaves.

    Subscribing is what makes it receive ``order:123``; the connection drops
    the subscription when it closes. With a hub, the first watcher of an
    order in this worker makes the hub subscribe to that topic on Redis:
    the page is told ``{"watching": 123, "worker": <pid>}`` once Redis
    confirmed it, so an update published after that reaches it whichever
    worker makes it.
    """
    ids = parse_qs(ws.request.query).get("id", [""])
    if not ids[0].isdigit():
        ws.close(1008, "watch one order: /ws/orders?id=123")
        return
    order_id = int(ids[0])
    ws.subscribe(order_topic(order_id))
    hub = ws.server.options.hub
    if hub is not None:
        hub.wait_topics(5)
    ws.send(json.dumps({"watching": order_id, "worker": os.getpid()}))
    for _ in ws:  # the page sends nothing; wait until it goes away
        pass


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
sockets = middleware(app.wsgi_app, {"/ws": live, "/ws/orders": watch_order}, hub=_hub())
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
