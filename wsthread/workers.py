"""Several worker processes serving one port: :func:`run_workers`.

Kept at this public path; the code is in :mod:`wsthread.integrations.workers`.
"""

from .integrations.workers import *  # noqa: F403
from .integrations.workers import __all__ as __all__
