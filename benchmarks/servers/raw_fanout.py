"""The fan-out floor: the least a thread-per-connection Python server does to broadcast.

Run as ``python benchmarks/servers/raw_fanout.py [--port N]``; it prints
``listening on ws://127.0.0.1:PORT/`` and takes the commands of
``fanout_control`` on stdin, on its main thread. One thread per connection
does the handshake and then reads frames (a ``subscribe N`` text message,
or the close, which it answers). A broadcast builds its frame once, and the
main thread then makes one blocking ``sendall`` per client: no queue, no
write lock, no buffer of its own: a client that stops reading stops it, until
the kernel gives up on that client's ``sendall`` after ``SEND_TIMEOUT``
seconds (``SO_SNDTIMEO``) and the floor drops it (no close frame).

With a client that offers permessage-deflate, the handshake answers
``permessage-deflate; server_no_context_takeover`` and a broadcast is
compressed once (zlib level 1, 4 KiB window, as wsthread's default) for all
such clients. Not a server to use: it trusts its peers completely.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import socket
import struct
import threading
import zlib
from typing import Dict, List, Optional, Tuple

from fanout_control import Subscriptions, serve_commands

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SEND_TIMEOUT = 5  # seconds a sendall may block on one client before it is dropped


class Floor:
    """The open connections, and the broadcast over them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.plain: List[socket.socket] = []
        self.deflated: List[socket.socket] = []
        self.topics = Subscriptions()

    def count(self) -> Dict[str, int]:
        """Connections open now, and subscriptions."""
        with self.lock:
            connected = len(self.plain) + len(self.deflated)
        return {"connections": connected, "subscribed": self.topics.count}

    def send(self, message: bytes, targets: List[Tuple[socket.socket, bool]]) -> None:
        """Frame ``message`` once (once more, compressed, if a target wants that), send to each."""
        frames: Dict[bool, bytes] = {}
        for sock, deflated in targets:
            frame = frames.get(deflated)
            if frame is None:
                frame = frames[deflated] = build_frame(message, deflated)
            try:
                sock.sendall(frame)
            except OSError:  # gone, or took nothing for SEND_TIMEOUT: the reader ends it
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def broadcast(self, message: bytes) -> None:
        """Send ``message`` to every open connection."""
        with self.lock:
            targets = [(sock, False) for sock in self.plain]
            targets += [(sock, True) for sock in self.deflated]
        self.send(message, targets)

    def publish(self, topic: int, message: bytes) -> None:
        """Send ``message`` to the subscribers of ``topic``."""
        self.send(message, self.topics.members(topic))

    def serve(self, sock: socket.socket) -> None:
        """Handshake, register, read until the close; on its own thread."""
        with sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", SEND_TIMEOUT, 0)
            )
            deflated = handshake(sock)
            if deflated is None:
                return
            group = self.deflated if deflated else self.plain
            with self.lock:
                group.append(sock)
            try:
                self.read(sock, deflated)
            finally:
                with self.lock:
                    group.remove(sock)
                self.topics.discard((sock, deflated))

    def read(self, sock: socket.socket, deflated: bool) -> None:
        """Read frames until a close or EOF; subscribe on ``subscribe N``."""
        rfile = sock.makefile("rb", buffering=65536)
        read = rfile.read
        while True:
            header = read(2)
            if len(header) < 2:
                return
            length = header[1] & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", read(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", read(8))
            mask = read(4) if header[1] & 0x80 else b"\0\0\0\0"
            payload = bytes(byte ^ mask[index % 4] for index, byte in enumerate(read(length)))
            opcode = header[0] & 0x0F
            if opcode == 0x8:
                with contextlib.suppress(OSError):
                    sock.sendall(bytes((0x88, len(payload))) + payload)
                return
            if opcode == 0x1 and payload.startswith(b"subscribe "):
                self.topics.add(int(payload.split()[1]), (sock, deflated))


def handshake(sock: socket.socket) -> Optional[bool]:
    """Answer the upgrade; True if permessage-deflate was agreed, None if the peer left."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            return None
        head += chunk
    key = b""
    deflate = False
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"sec-websocket-key":
            key = value.strip()
        elif name == b"sec-websocket-extensions" and b"permessage-deflate" in value:
            deflate = True
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    extension = (
        b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n"
        if deflate
        else b""
    )
    sock.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n" + extension + b"\r\n"
    )
    return deflate


def build_frame(message: bytes, deflated: bool) -> bytes:
    """One unmasked binary frame; compressed on its own (RSV1) if ``deflated``."""
    first = 0x82
    if deflated:
        compressor = zlib.compressobj(1, zlib.DEFLATED, -12)
        message = compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH)
        message = message[:-4]  # the 00 00 ff ff that RFC 7692 leaves out
        first |= 0x40
    length = len(message)
    if length < 126:
        return bytes((first, length)) + message
    if length < 65536:
        return struct.pack("!BBH", first, 126, length) + message
    return struct.pack("!BBQ", first, 127, length) + message


def main() -> None:
    """Accept on a thread, take commands on this one, until ``quit``."""
    parser = argparse.ArgumentParser(description="The raw threaded fan-out floor.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--deflate", action="store_true", help="ignored: always accepted")
    parser.add_argument("--write-limit", type=int, help="ignored: the floor has no limit")
    args = parser.parse_args()
    floor = Floor()
    listener = socket.create_server(("127.0.0.1", args.port), backlog=1024)

    def accept() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=floor.serve, args=(sock,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    print(f"listening on ws://127.0.0.1:{listener.getsockname()[1]}/", flush=True)
    try:
        serve_commands(floor.broadcast, floor.count, floor.publish)
    finally:
        listener.close()


if __name__ == "__main__":
    main()
