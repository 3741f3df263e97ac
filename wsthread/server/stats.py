"""Server counters and rate-limited logging of repeated events; called from any thread.

An attacker controls how often a server rejects a handshake, fails a TLS
handshake or times one out. Logging each of those on its own line hands the
attacker the log's volume, so :class:`LogLimiter` writes the first event of
a kind in full and folds the rest of a window into one summary line::

    WARNING [127.0.0.1:50412] rejected handshake: 503 the server is full ...
    WARNING rejected handshake: 503 ... and 975 more in the last 10 s

Nothing is lost from the numbers: :class:`ServerCounters` counts every
event, and :meth:`WebSocketServer.stats() <wsthread.WebSocketServer.stats>`
reports them together with what is buffered right now.

The shape of ``server.stats()`` (a plain ``dict``, ready for ``json.dumps``)::

    {
        "connections": {"open": 12, "opening": 1, "opened": 3400, "closed": 3387},
        "closes": {"1000": 3300, "1001": 80, "1006": 7},       # by close code
        "rejections": {"503": 1000, "400": 3},                 # handshakes refused, by status
        "http_responses": {"200": 12},                         # process_request answers
        "failures": {"tls": 2, "handshake_timeout": 5, "handshake_error": 1},
        "accept_errors": {"EMFILE": 151},                      # accept() failures, by errno
        "buffered": {"received": 5242880, "to_send": 0},       # bytes, right now
        "traffic": {"messages_received": 51200, "bytes_received": 3276800,
                    "messages_sent": 51188, "bytes_sent": 2867000},  # every connection, ever
        "queued": 3,                                           # pieces waiting, right now
        "backpressure": {"buffered_amount": 0,                 # bytes waiting for peers, now
                         "over_half_write_limit": 0},          # peers above write_limit / 2
        "latency": {"max": 0.0021, "mean": 0.0004},            # open connections' last pings
    }

Keys are strings so that the ``dict`` survives a JSON round trip unchanged.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

__all__ = ["LogLimiter", "ServerCounters", "TRAFFIC_KEYS", "backpressure"]

TRAFFIC_KEYS = ("messages_received", "bytes_received", "messages_sent", "bytes_sent")
"""The keys of ``connection.stats()`` that ``server.stats()["traffic"]`` adds up."""


def backpressure(connections: Iterable[Any]) -> Dict[str, int]:
    """``stats()["backpressure"]``: bytes waiting for the peers, and how many are slow.

    ``buffered_amount`` adds up each connection's
    :attr:`~wsthread.Connection.buffered_amount`; ``over_half_write_limit``
    counts the connections whose own amount is above half of their
    ``write_limit`` (the ones a broadcast may soon close with 1013; never
    those without a limit).
    """
    total = 0
    slow = 0
    for connection in connections:
        amount = connection.buffered_amount
        total += amount
        limit = connection.writer.write_limit
        if limit is not None and amount > limit // 2:
            slow += 1
    return {"buffered_amount": total, "over_half_write_limit": slow}


LoggerLike = Union[logging.Logger, "logging.LoggerAdapter[Any]"]


class _Window:
    """One kind of event within the current window: when it began, how many were folded."""

    __slots__ = ("start", "folded", "level")

    def __init__(self, start: float, level: int) -> None:
        self.start = start
        self.folded = 0
        self.level = level


class LogLimiter:
    """Log the first event of each kind per ``interval`` in full, and the rest as one line.

    Each kind (a short key such as ``"rejected handshake: 503"``) has its
    own window. The first event of a window is logged as given; the
    following ones in the same window are only counted. When the window
    ends, the count is written in a summary line, at the level of the first
    event and starting with the key::

        rejected handshake: 503 ... and 975 more in the last 10 s

    The summary is written by :meth:`flush`, which the server calls from its
    accept loop about twice a second, or by the next event of the same kind,
    whichever comes first. So a burst costs at most two lines per kind and
    window, however large it is.

    Args:
        logger: where the summary lines go (the first event of a window goes
            to the logger passed to :meth:`log`, which may be a connection's
            adapter that names the peer).
        interval: the window, in seconds.
        clock: the time source (tests pass a fake one).
    """

    def __init__(
        self,
        logger: LoggerLike,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: Dict[str, _Window] = {}

    def log(
        self, key: str, level: int, message: str, *args: Any, logger: Optional[LoggerLike] = None
    ) -> bool:
        """Log ``message % args`` unless an event of kind ``key`` was logged within the window.

        Returns whether the line was written (``False``: it was folded into
        the next summary).
        """
        target = logger if logger is not None else self.logger
        if not target.isEnabledFor(level):
            return False
        now = self._clock()
        summary: Optional[Tuple[str, int, int, float]] = None
        with self._lock:
            window = self._windows.get(key)
            if window is not None and now - window.start < self.interval:
                window.folded += 1
                return False
            if window is not None and window.folded:
                summary = (key, window.level, window.folded, now - window.start)
            self._windows[key] = _Window(now, level)
        if summary is not None:
            self._write_summary(*summary)
        target.log(level, message, *args)
        return True

    def flush(self, everything: bool = False) -> None:
        """Write the summaries of the windows that have ended (or of all); forget them."""
        now = self._clock()
        summaries: List[Tuple[str, int, int, float]] = []
        with self._lock:
            for key, window in list(self._windows.items()):
                if everything or now - window.start >= self.interval:
                    del self._windows[key]
                    if window.folded:
                        summaries.append((key, window.level, window.folded, now - window.start))
        for summary in summaries:
            self._write_summary(*summary)

    def _write_summary(self, key: str, level: int, folded: int, seconds: float) -> None:
        self.logger.log(level, "%s ... and %d more in the last %.0f s", key, folded, seconds)


class ServerCounters:
    """Thread-safe counters of what a server did; see the module docstring for the shape.

    Every method may be called from any thread. The ``buffered`` and
    ``open``/``opening`` figures are not counters: the server adds them at
    the moment :meth:`snapshot` is taken.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._opened = 0
        self._closed = 0
        self._closes: Dict[str, int] = {}
        self._rejections: Dict[str, int] = {}
        self._http_responses: Dict[str, int] = {}
        self._failures: Dict[str, int] = {}
        self._accept_errors: Dict[str, int] = {}
        # Traffic of the connections that have ended (open ones are added by the server).
        self._traffic = dict.fromkeys(TRAFFIC_KEYS, 0)

    @staticmethod
    def _bump(table: Dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1

    def opened(self) -> None:
        """A connection completed its opening handshake."""
        with self._lock:
            self._opened += 1

    def closed(self, code: Optional[int]) -> None:
        """An opened connection ended, with the peer's close ``code`` (1006: none)."""
        with self._lock:
            self._closed += 1
            self._bump(self._closes, str(code if code is not None else 1006))

    def add_traffic(self, connection_stats: Dict[str, Any]) -> None:
        """Fold the final ``connection.stats()`` of a connection that ended into the totals."""
        with self._lock:
            for key in TRAFFIC_KEYS:
                self._traffic[key] += connection_stats[key]

    def rejected(self, status: int) -> None:
        """A WebSocket handshake was refused with HTTP ``status``."""
        with self._lock:
            self._bump(self._rejections, str(int(status)))

    def http_response(self, status: int) -> None:
        """``process_request`` answered with plain HTTP ``status`` instead of upgrading."""
        with self._lock:
            self._bump(self._http_responses, str(int(status)))

    def failed(self, kind: str) -> None:
        """A connection failed before opening: ``"tls"``, ``"handshake_timeout"``, ..."""
        with self._lock:
            self._bump(self._failures, kind)

    def accept_error(self, name: str) -> None:
        """``accept()`` failed with the errno called ``name`` (``"EMFILE"``, ...)."""
        with self._lock:
            self._bump(self._accept_errors, name)

    def snapshot(self) -> Dict[str, Any]:
        """The counters so far, as fresh ``dict`` objects (see the module docstring)."""
        with self._lock:
            return {
                "connections": {"opened": self._opened, "closed": self._closed},
                "closes": dict(self._closes),
                "rejections": dict(self._rejections),
                "http_responses": dict(self._http_responses),
                "failures": dict(self._failures),
                "accept_errors": dict(self._accept_errors),
                "traffic": dict(self._traffic),
            }
