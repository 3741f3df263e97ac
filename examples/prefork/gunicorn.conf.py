"""gunicorn settings for app.py: each worker starts its own WebSocket server.

``post_worker_init`` runs in the worker, after the fork and after the app was
loaded (in the master with ``--preload``, in the worker without it), so the
server is made by the process that will serve it.
"""

from typing import Any

bind = "127.0.0.1:8000"
worker_class = "gthread"
threads = 8


def post_worker_init(worker: Any) -> None:
    """Start this worker's WebSocket server before it takes requests."""
    import app  # the module gunicorn loaded: app:app

    app.events()
