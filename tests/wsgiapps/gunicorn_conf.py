"""gunicorn settings for tests/test_wsgi.py."""

from typing import Any

from wsthread.wsgi import post_worker_init as close_websockets_on_stop


def post_worker_init(worker: Any) -> None:
    """Close WebSockets with 1001 on stop; with a hub, subscribe before taking requests."""
    close_websockets_on_stop(worker)
    import flaskapp

    if flaskapp.hub is not None:
        flaskapp.hub.wait_healthy(10)
