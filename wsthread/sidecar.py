"""``python -m wsthread.sidecar``: a WebSocket server beside a WSGI app, and the app's publisher.

Kept at this public path; the code is in :mod:`wsthread.cli.sidecar` and
:mod:`wsthread.integrations.publisher`.
"""

import sys

from .cli.sidecar import *  # noqa: F403
from .cli.sidecar import __all__ as __all__

if __name__ == "__main__":
    from .cli.sidecar import main

    sys.exit(main())
