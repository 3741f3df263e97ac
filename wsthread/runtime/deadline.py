"""A small helper that spreads one timeout over several blocking steps."""

from __future__ import annotations

import time
from typing import Optional

__all__ = ["Deadline"]


class Deadline:
    """A point in time after which an operation has run out of time.

    Args:
        timeout: seconds from now, or ``None`` for no deadline.
    """

    def __init__(self, timeout: Optional[float]) -> None:
        self.expires = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> Optional[float]:
        """Seconds left (never negative), or ``None`` for no deadline."""
        if self.expires is None:
            return None
        return max(0.0, self.expires - time.monotonic())
