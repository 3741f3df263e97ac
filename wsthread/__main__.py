"""``python -m wsthread URI``: the interactive client of :mod:`wsthread.cli.client`."""

import sys

from .cli.client import main

if __name__ == "__main__":
    sys.exit(main())
