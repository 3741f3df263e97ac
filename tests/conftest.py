"""Shared fixtures: a wsthread server on a free loopback port, stopped by the test."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
from typing import Any, Callable, Iterator, List, Tuple

import pytest

import wsthread
from wsthread.server import ServerConnection, WebSocketServer


def echo_handler(ws: ServerConnection) -> None:
    """Send every message back."""
    for message in ws:
        ws.send(message)


ServerFactory = Callable[..., WebSocketServer]


@pytest.fixture
def make_server() -> Iterator[ServerFactory]:
    """Start servers on 127.0.0.1:0 in the background; shut them all down afterwards."""
    servers: List[WebSocketServer] = []

    def factory(
        handler: Callable[[ServerConnection], None] = echo_handler, **options: Any
    ) -> WebSocketServer:
        options.setdefault("close_timeout", 2)
        server = wsthread.serve(handler, "127.0.0.1", 0, **options)
        servers.append(server)
        server.start()
        return server

    yield factory
    for server in servers:
        server.shutdown()


@pytest.fixture
def thread_baseline() -> Iterator[Callable[[], int]]:
    """Give the thread count before the test, to compare with afterwards."""
    baseline = threading.active_count()
    yield lambda: baseline


def raw_handshake(port: int, request: bytes, timeout: float = 5) -> bytes:
    """Send raw bytes to the server and return everything it answers before closing."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


UPGRADE_REQUEST = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


def raw_websocket(port: int, extra_headers: bytes = b"") -> tuple[socket.socket, bytes]:
    """Open a WebSocket by hand over a raw socket; return it and the response head.

    For tests that must send frames no well-behaved client would send.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(UPGRADE_REQUEST + extra_headers + b"\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        byte = sock.recv(1)
        assert byte, f"connection closed during the handshake: {head!r}"
        head += byte
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock, head


@contextlib.contextmanager
def echo_process(*args: str) -> Iterator[Tuple[subprocess.Popen, str]]:  # type: ignore[type-arg]
    """Run ``python -m wsthread.echo --port 0 ARGS``; yield it and the URL it prints.

    The process is killed on the way out if the test did not stop it.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "wsthread.echo", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("wsthread echo server on ws"), f"did not start: {line!r}"
        yield process, line.split()[4]
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
