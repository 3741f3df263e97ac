"""Routing WebSocket upgrades by path: pure functions and data, sans-I/O; on a connection thread.

A server (or :func:`wsthread.wsgi.middleware`) takes either one handler,
which gets every path, or a mapping of exact paths to handlers::

    {"/chat": chat, "/feed": feed}

A request for a path that is not in the mapping is answered 404 before
any upgrade. The handler reads the path it was chosen for, and the query
string, from ``ws.request.path`` and ``ws.request.query``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Union

from .handshake import Request, header_has_token

__all__ = ["Routes", "is_upgrade"]

AnyHandler = Callable[[Any], None]


class Routes:
    """The handlers of a server, by path.

    Args:
        handler: one callable for every path, or a mapping from exact paths
            (``"/ws"``, no query string) to callables.

    Raises:
        TypeError: a route's handler is not callable, or ``handler`` is
            neither a callable nor a mapping.
        ValueError: a path does not start with ``/`` or holds a ``?``.
    """

    def __init__(self, handler: Union[AnyHandler, Mapping[str, AnyHandler]]) -> None:
        self.default: Optional[AnyHandler] = None
        self.paths: Dict[str, AnyHandler] = {}
        if isinstance(handler, Mapping):
            for path, route_handler in handler.items():
                if not isinstance(path, str) or not path.startswith("/") or "?" in path:
                    raise ValueError(f"route {path!r}: a path starts with '/' and has no query")
                if not callable(route_handler):
                    raise TypeError(f"route {path!r}: the handler is not callable")
                self.paths[path] = route_handler
        elif callable(handler):
            self.default = handler
        else:
            raise TypeError("handler must be a callable or a mapping of paths to callables")

    def match(self, path: str) -> Optional[AnyHandler]:
        """The handler for ``path`` (without its query), or ``None`` for a 404."""
        if self.default is not None:
            return self.default
        return self.paths.get(path)

    def __repr__(self) -> str:
        if self.default is not None:
            return f"Routes({self.default!r})"
        return f"Routes({sorted(self.paths)!r})"


def is_upgrade(request: Request) -> bool:
    """Whether ``request`` asks for a WebSocket (``Upgrade: websocket``), valid or not."""
    return header_has_token(request.headers, "Upgrade", "websocket")
