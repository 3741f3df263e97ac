"""``python -m wsthread.echo``: a WebSocket echo server.

Kept at this public path; the code is in :mod:`wsthread.cli.echo`.
"""

import sys

from .cli.echo import *  # noqa: F403
from .cli.echo import __all__ as __all__

if __name__ == "__main__":
    from .cli.echo import main

    sys.exit(main())
