"""Two Flask apps with a WebSocket echo at /ws, for benchmarks/wsgi.py under gunicorn gthread.

``wsgi_apps:middleware_app``: wsthread.wsgi.middleware; ``wsgi_apps:flask_sock_app``:
Flask-Sock (simple-websocket). Compression and pings are off in both.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from wsthread.wsgi import middleware


def _flask() -> Flask:
    flask_app = Flask(__name__)

    @flask_app.get("/")
    def index() -> str:
        return "ok"

    return flask_app


def echo(ws: Any) -> None:
    """wsthread's echo."""
    for message in ws:
        ws.send(message)


middleware_app = middleware(_flask(), {"/ws": echo}, compression=None, ping_interval=None)

flask_sock_app = _flask()
flask_sock_app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": None}
try:
    from flask_sock import Sock

    sock = Sock(flask_sock_app)

    @sock.route("/ws")
    def flask_sock_echo(ws: Any) -> None:
        """Flask-Sock's echo."""
        while True:
            ws.send(ws.receive())

except ImportError:  # pragma: no cover - pip install flask-sock
    pass


# For Autobahn (kosoku connects to "/"): the echo at the root, no page.
middleware_root_app = middleware(
    Flask(__name__), echo, compression=None, ping_interval=None, max_size=2**26
)
flask_sock_root_app = Flask(__name__)
flask_sock_root_app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": None}
try:
    from flask_sock import Sock

    @Sock(flask_sock_root_app).route("/")
    def flask_sock_root_echo(ws: Any) -> None:
        """Flask-Sock's echo at the root."""
        while True:
            ws.send(ws.receive())

except ImportError:  # pragma: no cover - pip install flask-sock
    pass
