"""Annotated traces of what goes over the wire.

Kept at this public path; the code is in :mod:`wsthread.connection.trace`.
"""

from .connection.trace import *  # noqa: F403
from .connection.trace import __all__ as __all__
