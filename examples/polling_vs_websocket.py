"""Polling versus WebSocket push, measured on loopback.

    python examples/polling_vs_websocket.py [--events 20] [--every 0.1]

A server has a stream of events (a price, a chat line, a sensor reading)
and a client wants each one as soon as it happens. This script delivers the
*same* stream three ways and measures each:

1. **HTTP short polling**: the client asks "anything new?" at a fixed
   interval (run twice: ``--fast-poll`` and ``--slow-poll`` seconds). Every
   answer, even "no", costs a full request and response with their headers,
   and an event waits for the next poll (on average half the interval).
2. **HTTP long polling**: the client asks, and the server holds the request
   open until there *is* something, then answers; the client asks again at
   once. Latency drops to about one round trip, but every event still costs
   a request and a response with their headers.
3. **WebSocket push**: one HTTP handshake, then the server sends each event
   as a small frame (2 bytes of framing for short messages) whenever it
   happens. No requests, no headers, no waiting.

Every byte between client and server goes through a counting relay (the
``Meter``), so "bytes on the wire" is exactly what TCP carried, HTTP headers
and the WebSocket handshake included (not the TCP/IP packet headers). The
HTTP clients send the kind of headers a browser sends (a trimmed set; real
browsers send more, cookies especially), and the WebSocket handshake
carries the same ones. Compression is off on both sides.

Everything runs in this process, on 127.0.0.1, and finishes in a few
seconds: ``--events`` events, one every ``--every`` seconds, per method.
One run on an idle two-core machine printed::

    method             requests  bytes up  bytes down  bytes/event  latency med  latency max
    short poll 50 ms         40     11659        7701          968      13.2 ms      49.7 ms
    short poll 250 ms         9      2623        2447          254     106.9 ms     210.5 ms
    long polling             20      5850        4301          508       0.6 ms       0.8 ms
    WebSocket push            1       362        1054           71       0.4 ms       2.4 ms

Each event is about 45 bytes of JSON. WebSocket's 71 bytes per event are
mostly its handshake spread over 20 events: after it, an event costs its
JSON plus a 2-byte frame header. Latencies depend on the machine's load.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import signal
import socket
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

import wsthread

# What a browser sends with every request (trimmed). Polling pays for this
# on every request; WebSocket pays once, in the handshake.
BROWSER_HEADERS = [
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"),
    ("Accept", "application/json"),
    ("Accept-Language", "en-GB,en;q=0.9"),
    ("Cookie", "session=3f6c2a9b8e1d4c7a9b2e5f8a1c4d7e0b"),
]

# ---------------------------------------------------------------------------
# The event stream, the same for all three methods
# ---------------------------------------------------------------------------


class EventLog:
    """The server's events, numbered from 1; readers may wait for new ones."""

    def __init__(self) -> None:
        self.events: List[Dict[str, Any]] = []
        self.produced_at: Dict[int, float] = {}  # seq -> time.monotonic() when it happened
        self.changed = threading.Condition()

    def add(self, event: Dict[str, Any]) -> None:
        """Record a new event and wake everyone waiting for one."""
        with self.changed:
            self.produced_at[event["seq"]] = time.monotonic()
            self.events.append(event)
            self.changed.notify_all()

    def after(self, seq: int, wait: float = 0) -> List[Dict[str, Any]]:
        """The events after number ``seq``, waiting up to ``wait`` seconds for one."""
        with self.changed:
            self.changed.wait_for(lambda: len(self.events) > seq, timeout=wait)
            return self.events[seq:]


def produce(
    log: EventLog, count: int, every: float, stop: threading.Event, push: Callable[[str], Any]
) -> None:
    """Make ``count`` events, one every ``every`` seconds; ``push`` is for WebSocket."""
    start = time.monotonic()
    for seq in range(1, count + 1):
        if stop.wait(max(0.0, start + seq * every - time.monotonic())):
            return
        event = {"seq": seq, "price": round(100 + seq * 0.25, 2), "symbol": "WST"}
        log.add(event)
        push(json.dumps(event))


# ---------------------------------------------------------------------------
# The meter: a TCP relay that counts every byte in each direction
# ---------------------------------------------------------------------------


class Meter:
    """Listen on a free port, relay each connection to ``target``, count the bytes."""

    def __init__(self, target: Tuple[str, int]) -> None:
        self.target = target
        self.up = 0  # client -> server
        self.down = 0  # server -> client
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: List[socket.socket] = []
        # Daemon threads, like every helper thread here: an interrupted run never hangs.
        self.threads = [threading.Thread(target=self._accept, name="meter", daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed: we are done
                return
            server = socket.create_connection(self.target)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.sockets += [client, server]
            for source, sink, direction in ((client, server, "up"), (server, client, "down")):
                thread = threading.Thread(
                    target=self._pump, args=(source, sink, direction), daemon=True
                )
                thread.start()
                with self.lock:
                    self.threads.append(thread)

    def _pump(self, source: socket.socket, sink: socket.socket, direction: str) -> None:
        while True:
            try:
                data = source.recv(65536)
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(data)
            except OSError:
                return
            with self.lock:
                setattr(self, direction, getattr(self, direction) + len(data))

    def close(self) -> None:
        """Stop relaying and wait for the relay's threads."""
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            sockets, threads = list(self.sockets), list(self.threads)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for thread in threads:
            thread.join()


# ---------------------------------------------------------------------------
# The servers: one HTTP server for both kinds of polling, one WebSocket server
# ---------------------------------------------------------------------------


class EventsHandler(http.server.BaseHTTPRequestHandler):
    """``GET /events?after=N&wait=S``: the events after N as JSON, waiting up to S s."""

    protocol_version = "HTTP/1.1"  # keep-alive: the polling clients reuse one connection
    disable_nagle_algorithm = True  # else headers and body wait ~40 ms for a delayed ACK
    log: EventLog  # set on a subclass per run

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        """Answer one poll."""
        query = parse_qs(urlsplit(self.path).query)
        after = int(query.get("after", ["0"])[0])
        wait = min(float(query.get("wait", ["0"])[0]), 30.0)
        body = json.dumps(self.log.after(after, wait)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: no line per request."""


def start_http_server(log: EventLog) -> http.server.ThreadingHTTPServer:
    """An HTTP server for ``log`` on a free port, serving from a background thread."""
    handler = type("Handler", (EventsHandler,), {"log": log})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server


def idle(ws: wsthread.ServerConnection) -> None:
    """The WebSocket handler: the client only listens; wait until it leaves."""
    for _ in ws:
        pass


# ---------------------------------------------------------------------------
# The three clients
# ---------------------------------------------------------------------------


# ---------------------------------------------------------------------------
# Ctrl-C that is never lost
# ---------------------------------------------------------------------------
# Python raises KeyboardInterrupt at whatever line the main thread is running
# when the signal arrives. If that line is inside a finalizer (a weakref
# callback run during an import, for one), Python reports the exception as
# "ignored" and drops it, and the run would go on for minutes. So the handler
# also sets a flag, and the clients check it between requests.

_interrupted = False


def _on_ctrl_c(signum: int, frame: Any) -> None:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def _drop_lost_interrupt(unraisable: Any) -> None:
    """Keep quiet about a KeyboardInterrupt dropped in a finalizer: the flag carries it."""
    if not issubclass(unraisable.exc_type, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)


def check_interrupted() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed, even if Python lost the first one."""
    if _interrupted:
        raise KeyboardInterrupt


@dataclass
class Result:
    """What one method cost."""

    method: str
    requests: int = 0
    latencies: List[float] = field(default_factory=list)  # seconds, one per event
    up: int = 0
    down: int = 0


def poll(
    port: int,
    log: EventLog,
    count: int,
    result: Result,
    wait: float,
    pause: float,
    started: Callable[[], None],
    deadline: float,
) -> None:
    """Ask for new events until all ``count`` arrived: short polling if ``wait`` is 0."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=wait + 10)
    seen = 0
    try:
        while seen < count and time.monotonic() < deadline:
            check_interrupted()
            connection.request(
                "GET", f"/events?after={seen}&wait={wait}", headers=dict(BROWSER_HEADERS)
            )
            if result.requests == 0:
                started()  # the first request is on its way: let the events begin
            events = json.loads(connection.getresponse().read())
            now = time.monotonic()
            result.requests += 1
            for event in events:
                result.latencies.append(now - log.produced_at[event["seq"]])
            seen += len(events)
            if pause and seen < count:
                time.sleep(pause)  # short polling: wait, then ask again
    finally:
        connection.close()


def listen(
    port: int,
    log: EventLog,
    count: int,
    result: Result,
    started: Callable[[], None],
    deadline: float,
) -> None:
    """Open one WebSocket and take what the server pushes."""
    with wsthread.connect(
        f"ws://127.0.0.1:{port}/", additional_headers=BROWSER_HEADERS, compression=None
    ) as ws:
        result.requests = 1  # the handshake is the only request
        started()
        for _ in range(count):
            check_interrupted()
            event = json.loads(ws.recv(timeout=max(0.0, deadline - time.monotonic())))
            result.latencies.append(time.monotonic() - log.produced_at[event["seq"]])


# ---------------------------------------------------------------------------
# Running and reporting
# ---------------------------------------------------------------------------


def run(method: str, count: int, every: float, pause: float = 0.0) -> Result:
    """Deliver ``count`` events by ``method``; return what it cost.

    ``method`` is "short polling" (asking every ``pause`` seconds), "long
    polling" or "WebSocket push".

    The client runs on this thread (so Ctrl-C lands in it), the events come
    from a producer thread that starts once the client is listening.
    """
    log = EventLog()
    name = f"short poll {pause * 1000:.0f} ms" if method == "short polling" else method
    result = Result(name)
    stop = threading.Event()
    deadline = time.monotonic() + count * every + 10  # bounded, whatever happens
    ws_server: Optional[wsthread.WebSocketServer] = None
    http_server: Optional[http.server.ThreadingHTTPServer] = None
    if method == "WebSocket push":
        ws_server = wsthread.serve(idle, "127.0.0.1", 0, compression=None).start()
        push: Callable[[str], Any] = ws_server.broadcast
        port = ws_server.port
    else:
        http_server = start_http_server(log)
        push, port = (lambda message: None), http_server.server_address[1]
    meter = Meter(("127.0.0.1", port))
    producer = threading.Thread(
        target=produce, args=(log, count, every, stop, push), name="producer", daemon=True
    )
    try:
        if method == "WebSocket push":
            listen(meter.port, log, count, result, producer.start, deadline)
        elif method == "long polling":
            poll(meter.port, log, count, result, 30.0, 0.0, producer.start, deadline)
        else:
            poll(meter.port, log, count, result, 0.0, pause, producer.start, deadline)
    finally:
        stop.set()
        if producer.ident is not None:
            producer.join()
        meter.close()
        if ws_server is not None:
            ws_server.shutdown()
        if http_server is not None:
            http_server.shutdown()
            http_server.server_close()
    result.up, result.down = meter.up, meter.down
    return result


def report(results: List[Result], count: int, every: float) -> None:
    """Print the comparison table."""
    print(
        f"\n{count} events, one every {every * 1000:.0f} ms, delivered 4 ways. Bytes are"
        " TCP payload both ways, headers included.\n"
    )
    head = (
        "method",
        "requests",
        "bytes up",
        "bytes down",
        "bytes/event",
        "latency med",
        "latency max",
    )
    rows = []
    for r in results:
        got = len(r.latencies)
        rows.append(
            (
                r.method if got == count else f"{r.method} ({got}/{count} events!)",
                str(r.requests),
                str(r.up),
                str(r.down),
                f"{(r.up + r.down) / max(got, 1):.0f}",
                f"{statistics.median(r.latencies) * 1000:.1f} ms" if got else "-",
                f"{max(r.latencies) * 1000:.1f} ms" if got else "-",
            )
        )
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        print("  ".join(cells))
    print(
        "\nShort polling trades bytes for latency: poll often and most answers are empty,"
        "\npoll rarely and events wait (and get batched). Long polling answers at once but"
        "\nstill costs a request and a response with headers per event. WebSocket pays for"
        "\none handshake, then a few bytes of framing per event, and the server speaks first."
    )


def main() -> int:
    """Run the three methods one after the other and print the table."""
    parser = argparse.ArgumentParser(description="Compare polling and WebSocket push.")
    parser.add_argument("--events", type=int, default=20, help="events per method (default 20)")
    parser.add_argument("--every", type=float, default=0.1, help="seconds between events")
    parser.add_argument("--fast-poll", type=float, default=0.05, help="fast polling interval, s")
    parser.add_argument("--slow-poll", type=float, default=0.25, help="slow polling interval, s")
    args = parser.parse_args()
    methods = [
        ("short polling", args.fast_poll),
        ("short polling", args.slow_poll),
        ("long polling", 0.0),
        ("WebSocket push", 0.0),
    ]
    results = []
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when ignored
        signal.signal(signal.SIGINT, _on_ctrl_c)
        sys.unraisablehook = _drop_lost_interrupt
    try:
        print(
            "comparing short polling, long polling and WebSocket push on 127.0.0.1 "
            "(Ctrl-C to stop)",
            flush=True,
        )
        for method, pause in methods:
            check_interrupted()
            results.append(run(method, args.events, args.every, pause))
            print(f"  {results[-1].method}: done", flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        return 0
    report(results, args.events, args.every)
    return 0


if __name__ == "__main__":
    sys.exit(main())
