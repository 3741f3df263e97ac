"""Routing WebSocket upgrades by path.

Kept at this public path; the code is in :mod:`wsthread.sansio.routing`.
"""

from .sansio.routing import *  # noqa: F403
from .sansio.routing import __all__ as __all__
