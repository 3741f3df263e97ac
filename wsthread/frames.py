"""``python -m wsthread.frames HEX``: decode raw WebSocket frames, for learning.

Kept at this public path; the code is in :mod:`wsthread.cli.frames`.
"""

import sys

from .cli.frames import *  # noqa: F403
from .cli.frames import __all__ as __all__

if __name__ == "__main__":
    from .cli.frames import main

    sys.exit(main())
