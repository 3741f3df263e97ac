"""An existing synchronous web app that learns to push: http.server + wsthread.

    python examples/legacy_app.py        # app on http://127.0.0.1:8080/, events on ws://...:8767/

Picture an order desk written years ago on the standard library's
``http.server``: one thread per request, blocking code, no event loop
anywhere. The screens that show the orders used to reload every few
seconds. Now they keep a WebSocket open, and the *ordinary request
handler* that records an order pushes it to every screen with
``events.broadcast(...)``, straight from its own thread. Nothing else in
the app changes: wsthread runs beside it in a background thread
(``start()``), and ``broadcast`` never blocks the request on a slow screen.

Try it::

    curl -d 'item=coffee' http://127.0.0.1:8080/orders   # every open page sees it

A page shows the orders that exist when it loads (rendered by the server,
so it works without JavaScript too, after the form's redirect), then
subscribes for the new ones. Between the two, an order may be recorded; so
the page subscribes with ``?after=N``, the last order it shows, and the
WebSocket handler first sends every order after ``N``. Nothing falls in the
gap: the connection is registered with the server (and so reached by every
later broadcast) before the handler takes its snapshot. An order recorded
in between may arrive twice (in the snapshot and by broadcast), or out of
order, so the page files each one by its id and ignores one it already has.
"""

from __future__ import annotations

import argparse
import html
import http.server
import json
import logging
import threading
from typing import Any, Dict, List, Optional
from urllib.parse import parse_qs

import wsthread

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Order desk</title></head>
<body>
<h1>Order desk</h1>
<form method="post" action="/orders">
  <input id="item" name="item" placeholder="what?"> <button id="order">Order</button>
</form>
<p>Live (pushed over WebSocket, no reload): <span id="status">connecting</span></p>
<ol id="orders" data-last="%(last)d">%(items)s</ol>
<script>
  const list = document.getElementById("orders");
  // The orders on the page came with it; ask only for those after the last one.
  const socket = new WebSocket(
    `ws://${location.hostname}:%(ws_port)d/?after=${list.dataset.last}`);
  socket.onopen = () => { document.getElementById("status").textContent = "connected"; };
  socket.onclose = () => { document.getElementById("status").textContent = "disconnected"; };
  socket.onmessage = (message) => {
    const order = JSON.parse(message.data);
    if (document.getElementById(`order-${order.id}`)) return;  // already shown
    const item = document.createElement("li");
    item.id = `order-${order.id}`;
    item.value = order.id;
    item.textContent = `#${order.id} ${order.item}`;
    // File it by id: one recorded during the page's subscription may come late.
    const later = [...list.children].find((li) => li.value > order.id);
    list.insertBefore(item, later || null);
  };
  // Post without leaving the page: the order comes back over the WebSocket,
  // like everyone else's. (Without JavaScript the form still works.)
  document.querySelector("form").onsubmit = (event) => {
    event.preventDefault();
    fetch("/orders", {method: "POST", body: new URLSearchParams(new FormData(event.target))});
    document.getElementById("item").value = "";
  };
</script>
</body></html>
"""

ITEM = '<li id="order-%(id)d" value="%(id)d">#%(id)d %(item)s</li>'


class Orders:
    """The orders, their lock, and the WebSocket side: snapshot first, then live."""

    def __init__(self) -> None:
        self.orders: List[Dict[str, Any]] = []
        self.lock = threading.Lock()
        self.events: Optional[wsthread.WebSocketServer] = None

    def record(self, item: str) -> Dict[str, Any]:
        """Store an order and push it to every screen."""
        assert self.events is not None
        with self.lock:
            order = {"id": len(self.orders) + 1, "item": item}
            self.orders.append(order)
            # The one new line: from this request's thread, to every screen.
            # Under the lock, so screens see the orders in the order of their ids.
            self.events.broadcast(json.dumps(order))
        return order

    def snapshot(self, after: int = 0) -> List[Dict[str, Any]]:
        """The orders whose id is over ``after``."""
        with self.lock:
            return self.orders[after:]

    def screen(self, ws: wsthread.ServerConnection) -> None:
        """A page's WebSocket: send what it missed since ``?after=N``, then only listen.

        The connection is already registered with the server here, so every
        order recorded from now on is broadcast to it too: taking the
        snapshot now leaves no gap (an order may come twice; the page
        ignores the second copy).
        """
        assert ws.request is not None
        after = parse_qs(ws.request.query).get("after", ["0"])[0]
        for order in self.snapshot(int(after) if after.isdigit() else 0):
            ws.send(json.dumps(order))
        for _ in ws:  # a screen only listens; read until it leaves
            pass


class OrderDesk(http.server.ThreadingHTTPServer):
    """The legacy app's server, plus the two things the new feature needs."""

    daemon_threads = True

    def __init__(self, address: Any, orders: Orders) -> None:
        super().__init__(address, OrderHandler)
        self.orders = orders  # the orders, and the wsthread server that reaches the screens


class OrderHandler(http.server.BaseHTTPRequestHandler):
    """The legacy request handler: synchronous, one thread per request."""

    server: OrderDesk

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        """``/``: the page; ``/orders``: every order as JSON."""
        orders = self.server.orders
        if self.path == "/":
            shown = orders.snapshot()
            assert orders.events is not None
            page = PAGE % {
                "ws_port": orders.events.port,
                "last": shown[-1]["id"] if shown else 0,
                "items": "".join(
                    ITEM % {"id": order["id"], "item": html.escape(order["item"])}
                    for order in shown
                ),
            }
            self.reply(200, page.encode("utf-8"), "text/html; charset=utf-8")
        elif self.path == "/orders":
            body = json.dumps(orders.snapshot()).encode("utf-8")
            self.reply(200, body, "application/json")
        else:
            self.reply(404, b"not found\n", "text/plain")

    def do_POST(self) -> None:  # noqa: N802
        """``/orders``: record an order, then push it to every screen."""
        if self.path != "/orders":
            self.reply(404, b"not found\n", "text/plain")
            return
        length = min(int(self.headers.get("Content-Length") or 0), 10_000)
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        order = self.server.orders.record(form.get("item", ["?"])[0][:100])
        if "text/html" in self.headers.get("Accept", ""):  # a browser's form: back to the page
            self.send_response(303)
            self.send_header("Location", "/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.reply(201, json.dumps(order).encode("utf-8"), "application/json")

    def reply(self, status: int, body: bytes, content_type: str) -> None:
        """Send a complete response."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Log requests through logging rather than straight to stderr."""
        logging.info("%s %s", self.address_string(), format % args)


def main() -> None:
    """Run the app and the event server until Ctrl-C."""
    parser = argparse.ArgumentParser(description="http.server app pushing over WebSocket.")
    parser.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080, 0 = any)")
    parser.add_argument("--ws-port", type=int, default=8767, help="WebSocket port (0 = any)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    host = "127.0.0.1"
    orders = Orders()
    events = wsthread.serve(orders.screen, host, args.ws_port).start()  # background
    orders.events = events
    try:
        app = OrderDesk((host, args.port), orders)
    except OSError:
        events.shutdown()
        raise
    with app:
        port = app.server_address[1]
        print(
            f"order desk on http://{host}:{port}/ with events on ws://{host}:{events.port}/"
            " (Ctrl-C to stop)",
            flush=True,
        )
        try:
            app.serve_forever()  # the legacy app keeps the main thread, as it always did
        except KeyboardInterrupt:
            print("shutting down", flush=True)
        finally:
            events.shutdown()


if __name__ == "__main__":
    main()
