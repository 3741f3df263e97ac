"""Django Channels' echo for benchmarks/wsgi.py: ``daphne channels_echo:application``.

A synchronous ``WebsocketConsumer`` (what a Django project without async
code writes) at ``/ws``, in-memory channel layer, no database; plain HTTP
gets a short answer from a tiny ASGI app.
"""

from __future__ import annotations

from typing import Any

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    INSTALLED_APPS=["channels"],
    CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
)
django.setup()

from channels.generic.websocket import WebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402


class Echo(WebsocketConsumer):  # type: ignore[misc]
    """Send every message back."""

    def receive(self, text_data: Any = None, bytes_data: Any = None) -> None:
        self.send(text_data=text_data, bytes_data=bytes_data)


async def http(scope: Any, receive: Any, send: Any) -> None:
    """Every plain HTTP request: 200 ok."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


application = ProtocolTypeRouter(
    {"http": http, "websocket": URLRouter([path("ws", Echo.as_asgi())])}
)
