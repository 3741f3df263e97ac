"""TLS contexts with sensible defaults, for ``wss://`` servers and clients.

Kept at this public path; the code is in :mod:`wsthread.connection.tls`.
"""

from .connection.tls import *  # noqa: F403
from .connection.tls import __all__ as __all__
