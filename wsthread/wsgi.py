"""WebSockets in a WSGI app: the middleware; ``python -m wsthread.wsgi``.

Kept at this public path; the code is in :mod:`wsthread.integrations.wsgi`.
"""

import sys

from .integrations.wsgi import *  # noqa: F403
from .integrations.wsgi import __all__ as __all__

if __name__ == "__main__":
    from .cli.wsgi import main

    sys.exit(main())
