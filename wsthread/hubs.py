"""Broadcast hubs that carry ``server.broadcast`` to other processes.

Kept at this public path; the code is in :mod:`wsthread.integrations.hubs`.
"""

from .integrations.hubs import *  # noqa: F403
from .integrations.hubs import __all__ as __all__
