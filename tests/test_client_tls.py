"""The client, TLS on both sides, and the interactive CLI, against real peers."""

from __future__ import annotations

import contextlib
import socket
import ssl
import sys
import threading
import time
from typing import Iterator, List, Optional, Tuple

import pytest
import trustme
from websockets.sync.server import serve as ws_serve

import wsthread
from conftest import ServerFactory, read_head, run_ok, websockets_tls_connect
from wsthread.exceptions import InvalidResponse, InvalidStatus, InvalidURI


@contextlib.contextmanager
def websockets_echo(ssl_context: Optional[ssl.SSLContext] = None) -> Iterator[int]:
    """Run a `websockets` sync echo server on a free port."""

    def echo(ws: object) -> None:
        for message in ws:  # type: ignore[attr-defined]
            ws.send(message)  # type: ignore[attr-defined]

    with ws_serve(echo, "127.0.0.1", 0, ssl=ssl_context, compression=None) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.socket.getsockname()[1]
        finally:
            server.shutdown()
            thread.join(5)


def test_wsthread_client_to_websockets_server() -> None:
    """wsthread's client talks to a `websockets` server: text, binary, fragments, ping."""
    with websockets_echo() as port, wsthread.connect(f"ws://127.0.0.1:{port}/") as ws:
        ws.send("héllo")
        assert ws.recv(timeout=5) == "héllo"
        ws.send(b"\x00" * 100_000)
        assert ws.recv(timeout=5) == b"\x00" * 100_000
        ws.send(["a", "b", "c"])
        assert ws.recv(timeout=5) == "abc"
        assert ws.ping(b"p").wait(5)
    assert ws.close_code == 1000


def test_wsthread_client_to_websockets_server_over_wss(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    """wsthread's client over wss to a `websockets` server, trusting a trustme CA."""
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(websockets_echo(server_ssl))
        ws = stack.enter_context(wsthread.connect(f"wss://localhost:{port}/", ssl=client_ssl))
        ws.send("secure")
        assert ws.recv(timeout=5) == "secure"


def test_websockets_client_to_wsthread_server_over_wss(
    make_server: ServerFactory, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    """A `websockets` client over wss to the wsthread server."""
    server = make_server(ssl=server_ssl)
    with websockets_tls_connect(f"wss://localhost:{server.port}/", ssl=client_ssl) as ws:
        ws.send("over tls")
        assert ws.recv(timeout=5) == "over tls"
        ws.send(b"\x01" * 70_000)
        assert ws.recv(timeout=5) == b"\x01" * 70_000


def test_wsthread_client_and_server_over_wss(
    make_server: ServerFactory, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    """wsthread on both ends over wss, with the host name checked."""
    server = make_server(ssl=server_ssl)
    with wsthread.connect(f"wss://localhost:{server.port}/", ssl=client_ssl) as ws:
        ws.send("both")
        assert ws.recv(timeout=5) == "both"


def test_untrusted_certificate_is_refused(
    make_server: ServerFactory, server_ssl: ssl.SSLContext
) -> None:
    """With the default context, a certificate from an unknown CA fails the connection."""
    server = make_server(ssl=server_ssl)
    with pytest.raises(ssl.SSLCertVerificationError):
        wsthread.connect(f"wss://localhost:{server.port}/", open_timeout=5)


def test_stalled_tls_clients_do_not_delay_others(
    make_server: ServerFactory, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    """50 sockets that send nothing or garbage: a wss client still connects within 1 s."""
    server = make_server(ssl=server_ssl, open_timeout=10)
    stalled: List[socket.socket] = []
    try:
        for n in range(50):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            if n % 2:
                sock.sendall(b"GET / HTTP/1.1\r\n\r\n")  # plain text on a TLS port
            stalled.append(sock)
        started = time.monotonic()
        with wsthread.connect(f"wss://localhost:{server.port}/", ssl=client_ssl) as ws:
            ws.send("through")
            assert ws.recv(timeout=5) == "through"
        assert time.monotonic() - started < 1.0
    finally:
        for sock in stalled:
            sock.close()


def test_plain_http_on_tls_port_gets_no_plaintext_answer(
    make_server: ServerFactory, server_ssl: ssl.SSLContext
) -> None:
    """A plain-text handshake on a TLS port is dropped, never answered in plain text."""
    server = make_server(ssl=server_ssl)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        try:
            answer = sock.recv(4096)
        except ConnectionResetError:
            answer = b""
    assert b"HTTP/1.1 101" not in answer


def test_client_raises_invalid_status_with_the_status(make_server: ServerFactory) -> None:
    """A rejected handshake raises InvalidStatus carrying the HTTP status."""
    server = make_server(origins=["https://only.example"])
    with pytest.raises(InvalidStatus) as info:
        wsthread.connect(f"ws://127.0.0.1:{server.port}/", origin="https://other.example")
    assert info.value.status == 403


def serve_once(answer: bytes) -> Tuple[int, threading.Thread]:
    """A raw TCP server that reads a request and sends ``answer`` once."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def run() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                if b"\r\n\r\n" not in read_head(conn):  # the client hung up first
                    return
                if answer:
                    conn.sendall(answer)
                time.sleep(0.5)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return port, thread


def test_client_rejects_wrong_accept_key() -> None:
    """A 101 answer with a wrong Sec-WebSocket-Accept raises InvalidResponse."""
    port, thread = serve_once(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzwzxjYK4gN8=\r\n\r\n"
    )
    with pytest.raises(InvalidResponse):
        wsthread.connect(f"ws://127.0.0.1:{port}/")
    thread.join(5)


def test_client_open_timeout() -> None:
    """A server that never answers the handshake makes connect() raise TimeoutError."""
    port, thread = serve_once(b"")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        wsthread.connect(f"ws://127.0.0.1:{port}/", open_timeout=0.3)
    assert time.monotonic() - started < 3
    thread.join(5)


@pytest.mark.parametrize("uri", ["http://x/", "ws://", "wss://host/#frag", "ws://host:badport/"])
def test_invalid_uri(uri: str) -> None:
    """URIs that are not ws:// or wss:// raise InvalidURI (a ValueError)."""
    with pytest.raises(InvalidURI):
        wsthread.connect(uri)
    assert issubclass(InvalidURI, ValueError)


def test_client_recv_timeout_and_closed_errors(make_server: ServerFactory) -> None:
    """recv(timeout) raises TimeoutError harmlessly; send after close raises ConnectionClosed."""
    server = make_server()
    ws = wsthread.connect(f"ws://127.0.0.1:{server.port}/")
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.05)
    ws.send("still fine")
    assert ws.recv(timeout=5) == "still fine"
    ws.close()
    with pytest.raises(wsthread.ConnectionClosedOK):
        ws.send("late")
    with pytest.raises(wsthread.ConnectionClosedOK):
        ws.recv()


def test_cli_with_a_pipe(make_server: ServerFactory) -> None:
    """`echo ... | python -m wsthread URI` prints the echoes and the close code."""
    server = make_server()
    result = run_ok(
        [sys.executable, "-m", "wsthread", f"ws://127.0.0.1:{server.port}/"],
        input="hello\nworld\n",
        timeout=30,
    )
    assert result.stdout.splitlines() == ["< hello", "< world"]
    assert "Connection closed: code 1000" in result.stderr


def test_cli_over_wss_with_cafile(
    make_server: ServerFactory, server_ssl: ssl.SSLContext, ca: trustme.CA, tmp_path: object
) -> None:
    """The CLI connects over wss when given the CA file."""
    import pathlib

    cafile = pathlib.Path(str(tmp_path)) / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    server = make_server(ssl=server_ssl)
    result = run_ok(
        [sys.executable, "-m", "wsthread", "--cafile", cafile, f"wss://localhost:{server.port}/"],
        input="secure\n",
        timeout=30,
    )
    assert result.stdout.splitlines() == ["< secure"]


def test_reconnect_after_drop_and_stop_on_clean_close(make_server: ServerFactory) -> None:
    """reconnect() yields a new connection after an abnormal close, and stops after 1000."""
    attempts: List[int] = []

    def handler(ws: wsthread.ServerConnection) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first connection fails")  # closes with 1011
        ws.send("second")

    server = make_server(handler)
    received: List[object] = []
    codes: List[object] = []
    for ws in wsthread.reconnect(f"ws://127.0.0.1:{server.port}/", min_delay=0.01):
        try:
            for message in ws:
                received.append(message)
        except wsthread.ConnectionClosedError:
            pass
        codes.append(ws.close_code)
    assert codes == [1011, 1000]
    assert received == ["second"]


def test_reconnect_retries_until_server_is_up() -> None:
    """reconnect() retries refused connections with backoff until the server listens."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    started = threading.Event()
    holder: List[wsthread.WebSocketServer] = []

    def start_later() -> None:
        time.sleep(0.3)
        server = wsthread.serve(lambda ws: ws.send("up"), "127.0.0.1", port)
        holder.append(server)
        server.start()
        started.set()

    threading.Thread(target=start_later, daemon=True).start()
    try:
        for ws in wsthread.reconnect(f"ws://127.0.0.1:{port}/", min_delay=0.05, max_delay=0.2):
            assert ws.recv(timeout=5) == "up"
            break
        assert started.is_set()
    finally:
        started.wait(5)
        for server in holder:
            server.shutdown()


def test_reconnect_raises_on_4xx(make_server: ServerFactory) -> None:
    """A 4xx answer is not retried: reconnect() raises InvalidStatus."""
    server = make_server(origins=["https://only.example"])
    with pytest.raises(InvalidStatus):
        for _ in wsthread.reconnect(f"ws://127.0.0.1:{server.port}/", origin="https://x"):
            pass


def test_wsthread_client_compression_with_websockets_server() -> None:
    """wsthread's client offers deflate; a websockets server with compression accepts it."""

    def echo(ws: object) -> None:
        for message in ws:  # type: ignore[attr-defined]
            ws.send(message)  # type: ignore[attr-defined]

    with ws_serve(echo, "127.0.0.1", 0, compression="deflate") as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            port = server.socket.getsockname()[1]
            with wsthread.connect(f"ws://127.0.0.1:{port}/") as ws:
                assert "permessage-deflate" in (
                    ws.response.headers.get("Sec-WebSocket-Extensions") or ""
                )
                text = "squeeze me " * 5000
                for _ in range(3):
                    ws.send(text)
                    assert ws.recv(timeout=5) == text
        finally:
            server.shutdown()
            thread.join(5)
