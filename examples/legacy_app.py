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
"""

from __future__ import annotations

import argparse
import http.server
import json
import logging
import threading
from typing import Any, Dict, List
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
<ol id="orders"></ol>
<script>
  const socket = new WebSocket(`ws://${location.hostname}:%(ws_port)d/`);
  socket.onopen = () => { document.getElementById("status").textContent = "connected"; };
  socket.onclose = () => { document.getElementById("status").textContent = "disconnected"; };
  socket.onmessage = (message) => {
    const order = JSON.parse(message.data);
    const item = document.createElement("li");
    item.textContent = `#${order.id} ${order.item}`;
    document.getElementById("orders").appendChild(item);
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


def screen(ws: wsthread.ServerConnection) -> None:
    """A WebSocket client is a screen: it only listens. Read until it leaves."""
    for _ in ws:
        pass


class OrderDesk(http.server.ThreadingHTTPServer):
    """The legacy app's server, plus the two things the new feature needs."""

    daemon_threads = True

    def __init__(self, address: Any, events: wsthread.WebSocketServer) -> None:
        super().__init__(address, OrderHandler)
        self.events = events  # the wsthread server that reaches the screens
        self.orders: List[Dict[str, Any]] = []
        self.lock = threading.Lock()


class OrderHandler(http.server.BaseHTTPRequestHandler):
    """The legacy request handler: synchronous, one thread per request."""

    server: OrderDesk

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        """``/``: the page; ``/orders``: every order as JSON."""
        if self.path == "/":
            page = PAGE % {"ws_port": self.server.events.port}
            self.reply(200, page.encode("utf-8"), "text/html; charset=utf-8")
        elif self.path == "/orders":
            with self.server.lock:
                body = json.dumps(self.server.orders).encode("utf-8")
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
        item = form.get("item", ["?"])[0][:100]
        with self.server.lock:
            order = {"id": len(self.server.orders) + 1, "item": item}
            self.server.orders.append(order)
            # The one new line: from this request's thread, to every screen.
            # Under the lock, so screens see the orders in the order of their ids.
            self.server.events.broadcast(json.dumps(order))
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

    events = wsthread.serve(screen, "127.0.0.1", args.ws_port).start()  # background thread
    try:
        app = OrderDesk(("127.0.0.1", args.port), events)
    except OSError:
        events.shutdown()
        raise
    with app:
        host, port = app.server_address[:2]
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
