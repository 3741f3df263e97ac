"""A WSGI app that pushes to WebSocket clients it does not hold: they are the sidecar's.

    redis-server &
    python -m wsthread.sidecar --redis redis://127.0.0.1:6379/0 --port 8770 &
    uwsgi --http-socket 127.0.0.1:8000 --wsgi-file examples/sidecar/app.py --processes 2
    # or, with the standard library only:
    python examples/sidecar/app.py --port 8000

    python -m wsthread ws://127.0.0.1:8770/                   # a client of the sidecar
    curl -d 'the kettle is on' http://127.0.0.1:8000/notes   # the client prints it

uWSGI (like mod_wsgi, Passenger, Granian's WSGI mode and waitress) never
hands a request's socket over, so the WebSockets cannot live in the
application's processes. They live in ``python -m wsthread.sidecar``, a
wsthread server attached to a Redis hub; the application publishes on the
same Redis channel with :class:`wsthread.sidecar.HubPublisher`, from any
process and any WSGI server. ``POST /notes?topic=NAME`` reaches only the
clients that connected with ``?topic=NAME``. ``WS_REDIS`` and
``WS_CHANNEL`` name the hub (defaults: ``redis://127.0.0.1:6379/0``,
``wsthread``).
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.parse
import wsgiref.simple_server
from typing import Any, Callable, Dict, Iterable, List, Tuple

from wsthread.sidecar import HubPublisher

publisher = HubPublisher(
    os.environ.get("WS_REDIS", "redis://127.0.0.1:6379/0"),
    channel=os.environ.get("WS_CHANNEL", "wsthread"),
)

StartResponse = Callable[[str, List[Tuple[str, str]]], Any]


def application(environ: Dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """``POST /notes`` publishes the body to the sidecar's clients; ``GET /`` says hello."""
    path = environ.get("PATH_INFO", "/")
    if path == "/notes" and environ["REQUEST_METHOD"] == "POST":
        size = int(environ.get("CONTENT_LENGTH") or 0)
        note = environ["wsgi.input"].read(size).decode("utf-8", "replace")
        topics = urllib.parse.parse_qs(environ.get("QUERY_STRING", "")).get("topic", [])
        event = {"note": note, "pid": os.getpid()}
        if topics:
            sent = all(publisher.publish_json(topic, event) for topic in topics)
        else:
            sent = publisher.broadcast_json(event)
        status = "200 OK" if sent else "503 Service Unavailable"
        body = json.dumps({"published": sent, "pid": os.getpid()}).encode()
        start_response(status, [("Content-Type", "application/json")])
        return [body]
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [f"POST a note to /notes (process {os.getpid()})\n".encode()]


def main() -> None:
    """Serve the app with the standard library's wsgiref until Ctrl-C."""
    parser = argparse.ArgumentParser(description="The sidecar recipe's WSGI app, on wsgiref.")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000, 0 = any)")
    args = parser.parse_args()
    with wsgiref.simple_server.make_server("127.0.0.1", args.port, application) as httpd:
        print(f"app on http://127.0.0.1:{httpd.server_port}/ (Ctrl-C to stop)", flush=True)
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            print("shutting down", flush=True)


if __name__ == "__main__":
    main()
