"""One client process of the fan-out benchmark: many picows connections that check what they get.

Started by ``benchmarks/fanout.py``, several at once, each in its own
process, as ``python benchmarks/fanout_client.py URL COUNT [--deflate]``;
everything runs on one event loop (uvloop when it is installed). It opens
COUNT connections, answers ``{"opened": N, "errors": [...]}`` on stdout,
then takes one JSON command a line on stdin and answers each with one JSON
line:

- ``{"cmd": "subscribe", "topics": T, "first": I}``: connection ``k`` sends
  ``subscribe ((I + k) % T)``;
- ``{"cmd": "expect", "count": N, "size": B, "stall": S, "latency": bool,
  "topics": bool}``: the first S
  connections stop reading (``pause_reading()`` on their transport, so TCP
  pushes back); answers ``{"ready": true}`` at once, then, when every other
  connection has N messages (or nothing came for ``idle`` seconds), the
  tally: messages received, missing, out of order, wrong size or topic, the
  first and last arrival (``monotonic_ns``), and each delivery's latency in
  microseconds when asked;
- ``{"cmd": "resume", "wait": SECONDS}``: the stalled connections read again;
  after SECONDS, how each of them ended: by close code, ``"no close frame"``
  or ``"open"``;
- ``{"cmd": "close"}``: close every connection and exit.

With ``--deflate`` each connection offers ``permessage-deflate;
client_max_window_bits`` (Chromium's offer) and inflates compressed frames
itself with ``zlib`` (picows has no permessage-deflate of its own).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import time
import zlib
from typing import Any, Dict, List, Optional

CHROMIUM_OFFER = "permessage-deflate; client_max_window_bits"
HEADER = "!IQH"  # as benchmarks/servers/fanout_control.py
TAIL = b"\x00\x00\xff\xff"


class Tally:
    """What the connections of this process received in one phase."""

    def __init__(self, expected: int, latency: bool, topics: bool) -> None:
        self.expected = expected
        self.latency = latency
        self.topics = topics  # each message must be of the connection's topic
        self.received = 0
        self.disorder = 0
        self.wrong = 0
        self.complete = 0  # connections that have all ``expected`` messages
        self.first_ns = 0
        self.last_ns = 0
        self.latencies_us: List[int] = []


def make_sink_class() -> Any:
    """The picows listener class (picows is imported here, when the client runs)."""
    from picows import WSListener, WSMsgType

    binary, close = WSMsgType.BINARY, WSMsgType.CLOSE
    unpack = struct.Struct(HEADER).unpack_from
    clock = time.monotonic_ns

    class Sink(WSListener):
        """One connection: checks order, size and topic of each message; keeps the close code."""

        def __init__(self) -> None:
            self.transport: Any = None
            self.tally: Optional[Tally] = None
            self.size = 0
            self.topic = -1
            self.next = 0
            self.inflate = zlib.decompressobj(-15)
            self.close_code: Optional[int] = None
            self.ended = False

        def on_ws_connected(self, transport: Any) -> None:
            self.transport = transport

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            kind = frame.msg_type
            if kind is binary:
                now = clock()
                payload = frame.get_payload_as_bytes()
                if frame.rsv1:
                    payload = self.inflate.decompress(payload + TAIL)
                tally = self.tally
                if tally is None:
                    return
                sequence, sent, topic = unpack(payload)
                if len(payload) != self.size or (tally.topics and topic != self.topic):
                    tally.wrong += 1
                if sequence != self.next:
                    tally.disorder += 1
                self.next = sequence + 1
                tally.received += 1
                if not tally.first_ns:
                    tally.first_ns = now
                tally.last_ns = now
                if tally.latency:
                    tally.latencies_us.append((now - sent) // 1000)
                if self.next == tally.expected:
                    tally.complete += 1
            elif kind is close:
                self.close_code = frame.get_close_code()
                transport.send_close(self.close_code)
                transport.disconnect()

        def on_ws_disconnected(self, transport: Any) -> None:
            self.ended = True

    return Sink


def say(**fields: Any) -> None:
    """One JSON line to the benchmark."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def open_all(url: str, count: int, deflate: bool) -> tuple[List[Any], List[str]]:
    """Open ``count`` connections, 50 handshakes at a time."""
    from picows import ws_connect

    sink = make_sink_class()
    headers = {"Sec-WebSocket-Extensions": CHROMIUM_OFFER} if deflate else None
    sinks: List[Any] = []
    errors: List[str] = []
    semaphore = asyncio.Semaphore(50)

    async def one() -> None:
        async with semaphore:
            try:
                _, listener = await ws_connect(
                    sink, url, extra_headers=headers, websocket_handshake_timeout=30
                )
            except Exception as exc:  # counted, not fatal
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            sinks.append(listener)

    await asyncio.gather(*(one() for _ in range(count)))
    return sinks, errors


async def expect(sinks: List[Any], command: Dict[str, Any], idle: float) -> Dict[str, Any]:
    """Run one phase: stall some, count what the others receive."""
    tally = Tally(int(command["count"]), bool(command.get("latency")), bool(command.get("topics")))
    stalled = sinks[: int(command.get("stall", 0))]
    active = sinks[len(stalled) :]
    for sink in sinks:
        sink.tally, sink.next, sink.size = tally, 0, int(command["size"])
    for sink in stalled:
        sink.tally = None
        sink.transport.underlying_transport.pause_reading()
    say(ready=True)
    last, quiet_since = -1, time.monotonic()
    while tally.complete < len(active):
        await asyncio.sleep(0.01)
        if tally.received != last:
            last, quiet_since = tally.received, time.monotonic()
        elif time.monotonic() - quiet_since > idle:
            break
    for sink in sinks:
        sink.tally = None
    return {
        "received": tally.received,
        "missing": tally.expected * len(active) - sum(min(s.next, tally.expected) for s in active),
        "disorder": tally.disorder,
        "wrong": tally.wrong,
        "first_ns": tally.first_ns,
        "last_ns": tally.last_ns,
        "latencies_us": tally.latencies_us,
        "ended": sum(sink.ended for sink in active),
    }


async def resume(sinks: List[Any], stall: int, wait: float) -> Dict[str, int]:
    """Let the stalled connections read again; after ``wait`` s, how each ended."""
    stalled = sinks[:stall]
    for sink in stalled:
        if not sink.ended:
            sink.transport.underlying_transport.resume_reading()
    await asyncio.sleep(wait)
    endings: Dict[str, int] = {}
    for sink in stalled:
        if sink.close_code is not None:
            key = str(int(sink.close_code))
        else:
            key = "no close frame" if sink.ended else "open"
        endings[key] = endings.get(key, 0) + 1
    return endings


async def run(args: argparse.Namespace) -> None:
    """Open, then obey the commands on stdin."""
    sinks, errors = await open_all(args.url, args.count, args.deflate)
    say(opened=len(sinks), errors=errors[:5], failed=len(errors))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        command = json.loads(line)
        if command["cmd"] == "subscribe":
            topics, first = int(command["topics"]), int(command["first"])
            for index, sink in enumerate(sinks):
                sink.topic = (first + index) % topics
                sink.transport.send(_text(), f"subscribe {sink.topic}".encode())
            say(subscribed=len(sinks))
        elif command["cmd"] == "expect":
            say(**await expect(sinks, command, args.idle))
        elif command["cmd"] == "resume":
            say(endings=await resume(sinks, int(command["stall"]), float(command["wait"])))
        elif command["cmd"] == "close":
            break
    for sink in sinks:
        if not sink.ended:
            sink.transport.send_close()
            sink.transport.disconnect()
    await asyncio.sleep(0.2)


def _text() -> Any:
    from picows import WSMsgType

    return WSMsgType.TEXT


def main() -> None:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="One client process of the fan-out benchmark (started by benchmarks/run.py)."
    )
    parser.add_argument("url")
    parser.add_argument("count", type=int)
    parser.add_argument("--deflate", action="store_true", help="offer Chromium's deflate")
    parser.add_argument(
        "--idle", type=float, default=10.0, help="seconds without a message that end a phase"
    )
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(args))
    else:
        uvloop.run(run(args))


if __name__ == "__main__":
    main()
