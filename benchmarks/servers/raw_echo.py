"""The floor: the least a thread-per-connection Python WebSocket echo can do.

One thread per connection, nothing else: read the HTTP request, answer 101,
then loop on "read a frame header, read the payload, unmask it, write the
frame back unmasked". No validation, no UTF-8 check, no fragmentation, no
queue, no locks. Masking uses wsthread's ``apply_mask`` (the C version when
it was built), so the floor and wsthread unmask at the same speed.

Run as ``python benchmarks/servers/raw_echo.py [PORT]``; it prints
``listening on ws://127.0.0.1:PORT/`` and runs until SIGTERM or Ctrl-C.
Not a server to use: it trusts its peer completely.
"""

from __future__ import annotations

import base64
import hashlib
import signal
import socket
import struct
import sys
import threading
from types import FrameType
from typing import Optional

from wsthread.sansio.frames import apply_mask

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def serve_connection(sock: socket.socket) -> None:
    """Handshake, then echo frames until a close frame or EOF."""
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = b""
        while b"\r\n\r\n" not in head:  # the client sends nothing more before the 101
            chunk = sock.recv(4096)
            if not chunk:
                return
            head += chunk
        key = b""
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        # A buffered reader (in C) reads ahead, so a header, key and payload
        # that arrived together cost one recv(), not three.
        rfile = sock.makefile("rb", buffering=256 * 1024)
        read = rfile.read
        while True:
            header = read(2)
            if len(header) < 2:
                return
            first, second = header[0], header[1]
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", read(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", read(8))
            mask = read(4) if second & 0x80 else b""
            payload = read(length) if length else b""
            if mask:
                payload = apply_mask(payload, mask)
            if length < 126:
                out = bytes((first, length))
            elif length < 65536:
                out = struct.pack("!BBH", first, 126, length)
            else:
                out = struct.pack("!BBQ", first, 127, length)
            sock.sendall(out + payload)
            if first & 0x0F == 0x8:  # close: echoed back, done
                return


def main() -> None:
    """Accept connections until SIGTERM, one thread each."""
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0

    def on_sigterm(signum: int, frame: Optional[FrameType]) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    listener = socket.create_server(("127.0.0.1", port), backlog=1024)
    print(f"listening on ws://127.0.0.1:{listener.getsockname()[1]}/", flush=True)
    try:
        while True:
            sock, _ = listener.accept()
            threading.Thread(target=serve_connection, args=(sock,), daemon=True).start()
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()


if __name__ == "__main__":
    main()
