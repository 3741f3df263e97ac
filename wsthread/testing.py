"""A test client for handlers and WSGI apps, in-process.

Kept at this public path; the code is in :mod:`wsthread.integrations.testing`.
"""

from .integrations.testing import *  # noqa: F403
from .integrations.testing import __all__ as __all__
