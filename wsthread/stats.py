"""Server counters and rate-limited logging of repeated events.

Kept at this public path; the code is in :mod:`wsthread.server.stats`.
"""

from .server.stats import *  # noqa: F403
from .server.stats import __all__ as __all__
