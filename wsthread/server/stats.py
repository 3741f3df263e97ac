"""Server counters, rate-limited logging of repeated events, Prometheus text; any thread.

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
        "closes": {"1000": 3300, "1001": 80, "1006": 7},       # by the peer's close code
        "sent_closes": {"1000": 3380, "1013": 2},              # by the code this side sent
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
A server with topics adds ``"topics"``, and one whose hub has ``stats()``
adds ``"hub"`` (for :class:`~wsthread.hubs.RedisHub`: ``healthy``,
``published``, ``dropped``, ``missed``, ``lost``, ``invalid``, ``outages``...).

:func:`render_prometheus` writes the same figures in the Prometheus text
exposition format (version 0.0.4), for a ``/metrics`` endpoint, with no
client library::

    # HELP wsthread_connections_open WebSocket connections open now.
    # TYPE wsthread_connections_open gauge
    wsthread_connections_open 12
    # HELP wsthread_messages_total Messages, by direction (every connection, ever).
    # TYPE wsthread_messages_total counter
    wsthread_messages_total{direction="received"} 51200
    ...
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

__all__ = [
    "LogLimiter",
    "ServerCounters",
    "TRAFFIC_KEYS",
    "backpressure",
    "render_prometheus",
    "PROMETHEUS_CONTENT_TYPE",
]

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
        self._sent_closes: Dict[str, int] = {}
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

    def closed(self, code: Optional[int], sent_code: Optional[int] = None) -> None:
        """An opened connection ended, with the peer's close ``code`` (1006: none).

        ``sent_code`` is the code this side closed with, if any: its close
        frame's, or the code it gave up with when that frame could not be sent
        (the socket full): 1013 for a client dropped for falling behind
        ``write_limit``.
        """
        with self._lock:
            self._closed += 1
            # int() first: str() of an IntEnum is its name before Python 3.11.
            self._bump(self._closes, str(int(code) if code is not None else 1006))
            if sent_code is not None:
                self._bump(self._sent_closes, str(int(sent_code)))

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
                "sent_closes": dict(self._sent_closes),
                "rejections": dict(self._rejections),
                "http_responses": dict(self._http_responses),
                "failures": dict(self._failures),
                "accept_errors": dict(self._accept_errors),
                "traffic": dict(self._traffic),
            }


# -- Prometheus ---------------------------------------------------------------

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The ``Content-Type`` of :func:`render_prometheus`'s text."""

# Tables of the stats dict rendered as one labelled counter each:
# stats key -> (metric name, label name, help text).
_LABELLED_COUNTERS = (
    ("closes", "closes_total", "code", "Opened connections ended, by the peer's close code."),
    ("sent_closes", "closes_sent_total", "code", "Close frames this server sent, by code."),
    ("rejections", "handshake_rejections_total", "status", "Handshakes refused, by status."),
    ("http_responses", "http_responses_total", "status", "Plain HTTP answers, by status."),
    ("failures", "handshake_failures_total", "kind", "Connections lost before opening."),
    ("accept_errors", "accept_errors_total", "errno", "accept() calls that failed, by errno."),
)

# Hub counters that are levels, not counts (the others are counters).
_HUB_GAUGES = {"healthy", "topics_subscribed", "hubs", "queued"}


class _Exposition:
    """The lines of one exposition: a ``# HELP``/``# TYPE`` pair per family, then samples."""

    def __init__(self, prefix: str, labels: Mapping[str, str]) -> None:
        self.prefix = prefix
        self.labels = dict(labels)
        self.lines: List[str] = []

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[Tuple[Mapping[str, str], Any]],
    ) -> None:
        """One metric family and its samples; a sample whose value is ``None`` is left out."""
        present = [(labels, value) for labels, value in samples if value is not None]
        if not present:
            return
        full = f"{self.prefix}_{name}"
        self.lines.append(f"# HELP {full} {help_text}")
        self.lines.append(f"# TYPE {full} {kind}")
        for labels, value in present:
            self.lines.append(f"{full}{self._labels(labels)} {_number(value)}")

    def _labels(self, labels: Mapping[str, str]) -> str:
        merged = {**self.labels, **labels}
        if not merged:
            return ""
        inner = ",".join(f'{key}="{_escape(str(value))}"' for key, value in merged.items())
        return "{" + inner + "}"


def _escape(value: str) -> str:
    """A label value as the text format wants it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: Any) -> str:
    """A sample value: integers as they are, booleans as 0 or 1, floats in repr form."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _plain(value: Any) -> bool:
    """Whether ``value`` is a number a sample can carry."""
    return isinstance(value, (int, float))


def render_prometheus(
    source: Any, *, prefix: str = "wsthread", labels: Optional[Mapping[str, str]] = None
) -> str:
    """``server.stats()`` in the Prometheus text exposition format (0.0.4).

    Serve the text at ``/metrics`` with :data:`PROMETHEUS_CONTENT_TYPE`,
    from ``process_request`` or a WSGI view (``examples/metrics.py``); no
    client library is needed. Every figure of ``stats()`` becomes a metric
    named ``<prefix>_...``: connections (open, opening, opened, closed),
    closes by the peer's code and by the code sent (1013: clients dropped
    for falling behind ``write_limit``, also as ``<prefix>_dropped_total``),
    handshake rejections and failures, accept errors, messages and bytes
    by direction, what is buffered and queued now, back-pressure, ping
    latency, topics, and the hub's own counters (``<prefix>_hub_...``:
    for :class:`~wsthread.hubs.RedisHub`, ``dropped`` are publishes that
    never reached Redis, ``missed`` messages of other processes that never
    arrived here, ``invalid`` messages refused, ``outages`` lost connections
    to Redis, ``healthy`` 1 or 0, ``hubs`` and ``queued`` gauges).

    Args:
        source: a :class:`~wsthread.WebSocketServer` (or anything with a
            ``stats()`` method, such as a middleware's ``server``), or a
            ``stats()`` dict already taken.
        prefix: the start of every metric name.
        labels: labels added to every sample, such as
            ``{"worker": str(os.getpid())}`` when several processes serve.

    Returns:
        The exposition, one metric family after another, ending with a newline.
    """
    stats: Mapping[str, Any] = source if isinstance(source, Mapping) else source.stats()
    out = _Exposition(prefix, labels or {})
    connections = stats.get("connections", {})
    out.family(
        "connections_open",
        "gauge",
        "WebSocket connections open now.",
        [({}, connections.get("open"))],
    )
    out.family(
        "connections_opening",
        "gauge",
        "Connections in their opening handshake now.",
        [({}, connections.get("opening"))],
    )
    out.family(
        "connections_opened_total",
        "counter",
        "WebSocket connections opened.",
        [({}, connections.get("opened"))],
    )
    out.family(
        "connections_closed_total",
        "counter",
        "Opened connections that ended.",
        [({}, connections.get("closed"))],
    )
    for key, name, label, help_text in _LABELLED_COUNTERS:
        table = stats.get(key, {})
        out.family(
            name,
            "counter",
            help_text,
            [({label: code}, count) for code, count in sorted(table.items())],
        )
    sent = stats.get("sent_closes")
    if sent is not None:
        out.family(
            "dropped_total",
            "counter",
            "Clients this server closed with 1013 for falling behind write_limit.",
            [({}, sent.get("1013", 0))],
        )
    traffic = stats.get("traffic", {})
    out.family(
        "messages_total",
        "counter",
        "Messages, by direction (every connection, ever).",
        [({"direction": d}, traffic.get(f"messages_{d}")) for d in ("received", "sent")],
    )
    out.family(
        "bytes_total",
        "counter",
        "Bytes on the wire, by direction (headers included).",
        [({"direction": d}, traffic.get(f"bytes_{d}")) for d in ("received", "sent")],
    )
    buffered = stats.get("buffered", {})
    out.family(
        "buffered_bytes",
        "gauge",
        "Bytes buffered now: received not read, or unsent.",
        [({"direction": d}, buffered.get(d)) for d in ("received", "to_send")],
    )
    out.family(
        "queued_messages",
        "gauge",
        "Received messages waiting for handlers now.",
        [({}, stats.get("queued"))],
    )
    pressure = stats.get("backpressure", {})
    out.family(
        "backpressure_bytes",
        "gauge",
        "Bytes waiting for peers now, broadcasts included.",
        [({}, pressure.get("buffered_amount"))],
    )
    out.family(
        "slow_connections",
        "gauge",
        "Connections over half of write_limit now.",
        [({}, pressure.get("over_half_write_limit"))],
    )
    latency = stats.get("latency", {})
    out.family(
        "ping_latency_seconds",
        "gauge",
        "Last ping round trip of open connections.",
        [({"stat": stat}, latency.get(stat)) for stat in ("max", "mean")],
    )
    topics = stats.get("topics", {})
    out.family(
        "topics", "gauge", "Topics with subscribers in this process.", [({}, topics.get("topics"))]
    )
    out.family(
        "topic_subscriptions",
        "gauge",
        "Subscriptions to topics in this process.",
        [({}, topics.get("subscriptions"))],
    )
    out.family(
        "topic_publishes_total",
        "counter",
        "publish() calls made in this process.",
        [({}, topics.get("published"))],
    )
    hub = stats.get("hub", {})
    for key in sorted(hub):
        value = hub[key]
        if not _plain(value):
            continue
        if key in _HUB_GAUGES:
            out.family(f"hub_{key}", "gauge", f"The hub's {key} (now).", [({}, value)])
        else:
            out.family(f"hub_{key}_total", "counter", f"The hub's {key} count.", [({}, value)])
    return "\n".join(out.lines) + "\n"
