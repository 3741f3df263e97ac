"""A picows echo server on uvloop: the benchmark's ceiling (Cython, one event loop).

Run as ``python benchmarks/servers/picows_echo.py [PORT]``; it prints
``listening on ws://127.0.0.1:PORT/`` once it accepts connections and runs
until SIGTERM. Each data frame is echoed from the frame callback; fragmented
messages are not reassembled (the benchmark sends none). Not a server to
use: it checks nothing beyond what picows itself checks.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server


class Echo(WSListener):  # type: ignore[misc]
    """Echo text and binary frames; answer a close frame and disconnect."""

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            transport.send(kind, frame.get_payload_as_memoryview())
        elif kind is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


async def main() -> None:
    """Serve until SIGTERM."""
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)

    def listener(request: WSUpgradeRequest) -> Echo:
        return Echo()

    server = await ws_create_server(listener, "127.0.0.1", port, max_frame_size=2**21, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on ws://127.0.0.1:{bound}/", flush=True)
    await stop
    server.close()


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
