"""The client half of the echo pair: send messages, print what comes back.

    python examples/echo_client.py                      # lines typed on stdin
    python examples/echo_client.py hello world          # these two, then exit
    python examples/echo_client.py --port 9000 hello    # another local port
    python examples/echo_client.py --url wss://example.test/ hi

Ctrl-C (or Ctrl-D on stdin) closes the connection with 1000 and exits.
"""

from __future__ import annotations

import argparse
import sys

import wsthread


def main() -> int:
    """Connect, echo the messages, return the exit status."""
    parser = argparse.ArgumentParser(description="Send messages to a WebSocket echo server.")
    parser.add_argument("messages", nargs="*", help="messages to send (default: read stdin)")
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765)")
    parser.add_argument("--url", help="full URL instead of ws://127.0.0.1:PORT/")
    args = parser.parse_args()
    url = args.url or f"ws://127.0.0.1:{args.port}/"

    try:
        ws = wsthread.connect(url)
    except (OSError, wsthread.WebSocketError) as exc:
        print(f"cannot connect to {url}: {exc}", file=sys.stderr)
        return 1
    print(f"connected to {url}", flush=True)
    # One line in, one reply out; blocking calls are all it takes.
    lines = args.messages if args.messages else (line.rstrip("\n") for line in sys.stdin)
    try:
        with ws:
            for line in lines:
                ws.send(line)
                reply = ws.recv(timeout=10)
                if isinstance(reply, bytes):  # a binary message: show it as text anyway
                    reply = reply.decode("utf-8", "replace")
                print(f"< {reply}", flush=True)
    except KeyboardInterrupt:
        pass  # the with block has closed the connection with 1000 already
    except (TimeoutError, wsthread.ConnectionClosed) as exc:
        print(f"connection lost: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
