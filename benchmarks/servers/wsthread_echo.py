"""wsthread's echo server with no connection limit, for the idle-connection workload.

``python -m wsthread.echo`` keeps ``serve()``'s default ``max_connections``
(1024) and, so far, has no option to change it; the idle workload opens up
to 10,000 connections, so ``run.py`` uses this script instead when the CLI
has no ``--max-connections``. It is the same server and the same handler
(``wsthread.echo.echo``) as ``python -m wsthread.echo --no-compression
--quiet``, with ``max_connections=None``.

Run as ``python benchmarks/servers/wsthread_echo.py [PORT]``; it prints
``listening on ws://127.0.0.1:PORT/`` and runs until SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType
from typing import Optional

import wsthread
from wsthread.echo import echo


def main() -> None:
    """Serve until SIGTERM."""
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    logging.basicConfig(level=logging.WARNING)

    def on_sigterm(signum: int, frame: Optional[FrameType]) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    with wsthread.serve(
        echo, "127.0.0.1", port, compression=None, max_connections=None
    ) as server:
        print(f"listening on ws://127.0.0.1:{server.port}/", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
