"""Server push: every connected client gets the time every second, without asking.

    python examples/clock.py                 # ws://127.0.0.1:8766/
    python -m wsthread ws://127.0.0.1:8766/  # watch the ticks arrive

Plain HTTP cannot do this: a server answers requests and never speaks
first, so a page that wants the time must keep asking (see
``polling_vs_websocket.py``). Over WebSocket the server simply sends. Here
a timer thread of our own calls ``server.broadcast()``, which is safe from
any thread and never waits for a slow client.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import threading

import wsthread


def listen_only(ws: wsthread.ServerConnection) -> None:
    """The handler: clients have nothing to say; read (and drop) until they leave."""
    for _ in ws:
        pass


def tick(server: wsthread.WebSocketServer, interval: float, stop: threading.Event) -> None:
    """Broadcast the current UTC time every ``interval`` seconds until ``stop`` is set."""
    while not stop.wait(interval):
        now = datetime.datetime.now(datetime.timezone.utc)
        server.broadcast(now.isoformat(timespec="seconds"))


def main() -> None:
    """Serve the clock until Ctrl-C."""
    parser = argparse.ArgumentParser(description="Push the time to every client.")
    parser.add_argument("--port", type=int, default=8766, help="port (default 8766, 0 = any)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between ticks")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    stop = threading.Event()
    with wsthread.serve(listen_only, "127.0.0.1", args.port) as server:
        timer = threading.Thread(target=tick, args=(server, args.interval, stop), name="clock")
        timer.start()
        print(f"clock on ws://127.0.0.1:{server.port}/ (Ctrl-C to stop)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("shutting down", flush=True)
        finally:
            stop.set()
            timer.join()


if __name__ == "__main__":
    main()
