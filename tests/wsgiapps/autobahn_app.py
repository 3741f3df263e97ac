"""The Autobahn subject behind gunicorn: every upgrade echoed by wsthread.wsgi.middleware.

``gunicorn -k gthread autobahn_app:app``: the same echo and limits as
``python -m wsthread.echo --max-size 67108864``, but each connection handed
over by gunicorn to the middleware.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable

from wsthread.wsgi import middleware


def page(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Every plain HTTP request: a short page."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]


def echo(ws: Any) -> None:
    """Send every message back."""
    for message in ws:
        ws.send(message)


# No keepalive pings: kosoku ends a case when a ping arrives in the middle of it.
app = middleware(page, echo, max_size=2**26, ping_interval=None)
