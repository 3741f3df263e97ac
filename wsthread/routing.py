"""Routing WebSocket upgrades by path.

Kept at this public path; the code is in :mod:`wsthread.server.routing`.
"""

from .server.routing import *  # noqa: F403
from .server.routing import __all__ as __all__
