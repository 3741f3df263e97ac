"""The server over real sockets, driven by independent clients (websockets, websocket-client)."""

from __future__ import annotations

import contextlib
import gc
import select
import socket
import threading
import time
import weakref
from typing import Any, List

import pytest
import websocket  # websocket-client
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.sync.client import connect

import wsthread
from conftest import (
    ServerFactory,
    assert_going_away,
    raw_handshake,
    raw_websocket,
    wait_until,
)
from wsthread.server import ServerConnection, WebSocketServer


def uri(server: object) -> str:
    return f"ws://127.0.0.1:{server.port}/"  # type: ignore[attr-defined]


def test_echo_text_and_binary_with_websockets_client(make_server: ServerFactory) -> None:
    """Text comes back as str and binary as bytes, unchanged (websockets client)."""
    server = make_server()
    with connect(uri(server), compression=None) as ws:
        ws.send("héllo wörld")
        assert ws.recv() == "héllo wörld"
        ws.send(b"\x00\x01\xff")
        assert ws.recv() == b"\x00\x01\xff"
        big = bytes(range(256)) * 4000
        ws.send(big)
        assert ws.recv() == big


def test_echo_with_websocket_client(make_server: ServerFactory) -> None:
    """websocket-client can talk to the server: text, binary, ping, close."""
    server = make_server()
    ws = websocket.create_connection(uri(server), timeout=5)
    try:
        ws.send("hi")
        assert ws.recv() == "hi"
        ws.send_binary(b"\x01\x02")
        assert ws.recv() == b"\x01\x02"
        ws.ping(b"abc")
        opcode, frame = ws.recv_data_frame(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_PONG
        assert frame.data == b"abc"
    finally:
        ws.close()


def test_fragmented_message_from_client_is_assembled(make_server: ServerFactory) -> None:
    """A message sent in fragments arrives as one message."""
    server = make_server()
    with connect(uri(server), compression=None) as ws:
        ws.send(["frag", "ment", "ed"])
        assert ws.recv() == "fragmented"


def test_server_sends_fragmented_message(make_server: ServerFactory) -> None:
    """send(iterable) produces one fragmented message the client assembles."""

    def handler(ws: ServerConnection) -> None:
        ws.send([b"ab", b"cd", b"ef"])
        ws.send(iter(["x", "y"]))
        ws.recv()

    server = make_server(handler)
    with connect(uri(server), compression=None) as ws:
        assert ws.recv() == b"abcdef"
        assert ws.recv() == "xy"


def test_request_is_available_to_handler(make_server: ServerFactory) -> None:
    """The handler sees the path, query and headers of the upgrade request."""
    seen: List[object] = []

    def handler(ws: ServerConnection) -> None:
        seen.append((ws.request.path, ws.request.query, ws.request.headers.get("X-Test")))
        ws.send("ok")

    server = make_server(handler)
    with connect(uri(server) + "chat?room=1", additional_headers={"X-Test": "yes"}) as ws:
        assert ws.recv() == "ok"
    assert seen == [("/chat", "room=1", "yes")]


def test_handler_return_closes_1000(make_server: ServerFactory) -> None:
    """A handler that returns closes the connection normally with 1000."""
    server = make_server(lambda ws: None)
    with connect(uri(server)) as ws, pytest.raises(WsConnectionClosed) as info:
        ws.recv(timeout=5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1000


def test_handler_exception_closes_1011_and_is_logged(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler that raises is logged with its traceback and closes with 1011."""

    def handler(ws: ServerConnection) -> None:
        raise RuntimeError("boom")

    server = make_server(handler)
    with connect(uri(server)) as ws, pytest.raises(WsConnectionClosed) as info:
        ws.recv(timeout=5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1011
    assert wait_until(lambda: any("boom" in (r.exc_text or "") for r in caplog.records))


def test_concurrent_sends_from_8_threads_do_not_interleave(make_server: ServerFactory) -> None:
    """8 threads x 1,000 sends on one connection: every message arrives intact."""
    threads_count, per_thread = 8, 1000

    def handler(ws: ServerConnection) -> None:
        def worker(n: int) -> None:
            for i in range(per_thread):
                ws.send(f"{n}:{i}:" + "x" * (i % 300))

        workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads_count)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        ws.recv()  # wait for the client's goodbye

    server = make_server(handler, max_queue=None)
    received = {n: [] for n in range(threads_count)}  # type: ignore[var-annotated]
    with connect(uri(server), compression=None, max_queue=None) as ws:
        for _ in range(threads_count * per_thread):
            message = ws.recv(timeout=10)
            assert isinstance(message, str)
            n, i, pad = message.split(":")
            assert pad == "x" * (int(i) % 300)
            received[int(n)].append(int(i))
        ws.send("done")
    for n in range(threads_count):
        assert received[n] == list(range(per_thread)), "messages of one thread out of order"


def test_shutdown_closes_clients_with_1001_and_leaves_no_thread(
    make_server: ServerFactory,
) -> None:
    """shutdown() with open connections: clients see 1001; no thread is left behind."""
    baseline = threading.active_count()
    server = make_server()
    stack = contextlib.ExitStack()
    clients = [stack.enter_context(connect(uri(server))) for _ in range(5)]
    for ws in clients:
        ws.send("x")
        assert ws.recv() == "x"
    started = time.monotonic()
    server.shutdown()
    assert time.monotonic() - started < 5
    assert_going_away(clients, timeout=5)
    stack.close()
    assert wait_until(lambda: threading.active_count() <= baseline), (
        f"{threading.active_count()} threads, baseline {baseline}: "
        f"{[t.name for t in threading.enumerate()]}"
    )


def shutdown_once_in_hook(server_box: List[WebSocketServer]) -> Any:
    """A process_response hook that shuts the server down from another thread, and waits.

    It returns (and the 101 goes out) only once the shutdown has woken this
    connection's socket, as it does a handshake under way: the 101 then
    reaches a server that is shutting down, whatever the timing.
    """

    def hook(ws: ServerConnection, request: Any, response: Any) -> None:
        threading.Thread(target=server_box[0].shutdown, daemon=True).start()
        readable, _, _ = select.select([ws.socket], [], [], 10)
        assert readable, "shutdown did not wake the handshake"

    return hook


def test_a_101_sent_as_shutdown_begins_is_followed_by_1001(make_server: ServerFactory) -> None:
    """A handshake past its checks when shutdown runs: the client gets 101, then 1001 (not 1006)."""
    box: List[WebSocketServer] = []
    server = make_server(process_response=shutdown_once_in_hook(box))
    box.append(server)
    with wsthread.connect(uri(server), ping_interval=None) as ws:
        assert_going_away([ws])
    assert ws.close_code == 1001


def test_shutdown_is_idempotent(make_server: ServerFactory) -> None:
    """Calling shutdown() twice is harmless."""
    server = make_server()
    server.shutdown()
    server.shutdown()


def test_client_that_vanishes_does_not_leave_threads(make_server: ServerFactory) -> None:
    """A client that drops TCP without a close frame: the connection's threads end."""
    server = make_server()
    ws = connect(uri(server)).__enter__()
    ws.send("x")
    assert ws.recv() == "x"
    assert wait_until(lambda: len(server.connections) == 1)
    ws.socket.shutdown(socket.SHUT_RDWR)
    ws.socket.close()
    assert wait_until(lambda: len(server.connections) == 0)
    connection_threads = [t for t in threading.enumerate() if t.name.startswith("wsthread-")]
    assert wait_until(
        lambda: (
            not [
                t
                for t in threading.enumerate()
                if t.name.startswith(("wsthread-conn", "wsthread-reader"))
            ]
        )
    ), connection_threads


def test_message_too_big_closes_1009(make_server: ServerFactory) -> None:
    """A message over max_size fails the connection with 1009."""
    server = make_server(max_size=1000)
    with connect(uri(server), compression=None) as ws:
        ws.send("a" * 1000)
        assert ws.recv() == "a" * 1000
        ws.send("a" * 1001)
        with pytest.raises(WsConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    assert info.value.rcvd.reason == "message of 1001 bytes exceeds max_size=1000"


def test_invalid_utf8_closes_1007(make_server: ServerFactory) -> None:
    """Invalid UTF-8 in a text frame fails the connection with 1007."""
    server = make_server()
    sock, _ = raw_websocket(server.port)
    with sock:
        # A masked text frame (mask 00000000) holding the invalid byte 0xff.
        sock.sendall(b"\x81\x81\x00\x00\x00\x00\xff")
        frame = sock.recv(1024)
        assert frame[0] == 0x88
        assert int.from_bytes(frame[2:4], "big") == 1007
        assert sock.recv(1024) == b""  # then the server closes TCP


def test_ping_from_server_gets_pong(make_server: ServerFactory) -> None:
    """ws.ping() returns an event set when the client's pong arrives."""
    results: List[bool] = []

    def handler(ws: ServerConnection) -> None:
        results.append(ws.ping(b"hello").wait(5))
        ws.send("done")
        ws.recv()

    server = make_server(handler)
    with connect(uri(server)) as ws:
        assert ws.recv(timeout=5) == "done"
        ws.send("bye")
    assert results == [True]


def test_keepalive_closes_unresponsive_peer_with_1011(make_server: ServerFactory) -> None:
    """A peer that never answers pings is closed with 1011 after ping_timeout."""
    closed = threading.Event()
    codes: List[object] = []

    def handler(ws: ServerConnection) -> None:
        try:
            for _ in ws:
                pass
        except wsthread.ConnectionClosedError:
            pass
        codes.append(ws.protocol.close_sent)
        closed.set()

    server = make_server(handler, ping_interval=0.2, ping_timeout=0.3)
    sock, _ = raw_websocket(server.port)
    with sock:
        # Read but never answer: the server pings, then gives up.
        assert closed.wait(5)
    assert codes and codes[0] is not None and codes[0][0] == 1011


def test_client_closed_by_the_server_is_freed_without_close(make_server: ServerFactory) -> None:
    """A client connection the server closed, never close()d by the application, is freed.

    The shared keepalive used to hold it (and so its thread) until close().
    """

    def handler(ws: ServerConnection) -> None:
        ws.close(1000, "done")

    def connect_until_closed(server: WebSocketServer) -> weakref.ref[object]:
        ws = wsthread.connect(uri(server), ping_interval=0.05, ping_timeout=5)
        with pytest.raises(wsthread.ConnectionClosedOK):
            ws.recv(timeout=5)
        assert wait_until(lambda: ws.closed, timeout=5)
        return weakref.ref(ws)  # the only reference left is the library's own, if any

    gone = connect_until_closed(make_server(handler))

    def freed() -> bool:
        gc.collect()
        return gone() is None

    assert wait_until(freed, timeout=5)


def test_recv_timeout_does_not_harm_connection(make_server: ServerFactory) -> None:
    """recv(timeout) raises TimeoutError and the connection keeps working."""
    outcomes: List[str] = []

    def handler(ws: ServerConnection) -> None:
        try:
            ws.recv(timeout=0.1)
        except TimeoutError:
            outcomes.append("timeout")
        ws.send("after")
        ws.send(ws.recv())

    server = make_server(handler)
    with connect(uri(server)) as ws:
        assert ws.recv(timeout=5) == "after"
        ws.send("echo")
        assert ws.recv(timeout=5) == "echo"
    assert outcomes == ["timeout"]


def test_send_after_close_raises(make_server: ServerFactory) -> None:
    """send() after the connection closed raises ConnectionClosed; close() twice is fine."""
    outcomes: List[str] = []

    def handler(ws: ServerConnection) -> None:
        ws.close()
        ws.close()
        try:
            ws.send("late")
        except wsthread.ConnectionClosed:
            outcomes.append("closed")
        try:
            ws.recv()
        except wsthread.ConnectionClosed:
            outcomes.append("recv closed")

    server = make_server(handler)
    with connect(uri(server)) as ws, pytest.raises(WsConnectionClosed):
        ws.recv(timeout=5)
    assert wait_until(lambda: len(outcomes) == 2)
    assert outcomes == ["closed", "recv closed"]


# -- bad handshakes over raw sockets -------------------------------------------

GOOD = (
    b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"GET / HTTP/1.1\r\n" + GOOD + b"Sec-WebSocket-Version: 13\r\n\r\n", b"101"),
        (b"POST / HTTP/1.1\r\n" + GOOD + b"Sec-WebSocket-Version: 13\r\n\r\n", b"405"),
        (b"GET / HTTP/1.1\r\n" + GOOD + b"Sec-WebSocket-Version: 8\r\n\r\n", b"426"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"426"),
        (b"GET / HTTP/1.0\r\n" + GOOD + b"Sec-WebSocket-Version: 13\r\n\r\n", b"400"),
        (
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            b"400",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n",
            b"400",
        ),
        (b"garbage\r\n\r\n", b"400"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"400"),
        (b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n", b"414"),
        (b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"b" * 10000 + b"\r\n", b"431"),
    ],
    ids=[
        "ok",
        "post",
        "version",
        "plain-http",
        "http10",
        "no-host",
        "bad-key",
        "garbage",
        "tls",
        "long-line",
        "long-header",
    ],
)
def test_bad_handshake_gets_exact_status(
    make_server: ServerFactory, request_bytes: bytes, status: bytes
) -> None:
    """Each malformed handshake is answered with its exact HTTP status, never a traceback."""
    server = make_server(open_timeout=2)
    answer = raw_handshake(server.port, request_bytes) if status != b"101" else None
    if answer is None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(request_bytes)
            answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
    if status == b"426" and b"Version" in request_bytes:
        assert b"Sec-WebSocket-Version: 13" in answer
    if status != b"101":
        assert b"Traceback" not in answer
        assert b"Content-Length" in answer


def test_rejected_origin_gets_403(make_server: ServerFactory) -> None:
    """A request from an origin not in ``origins`` is refused with 403."""
    server = make_server(origins=["https://good.example"])
    answer = raw_handshake(
        server.port,
        b"GET / HTTP/1.1\r\n"
        + GOOD
        + b"Sec-WebSocket-Version: 13\r\nOrigin: https://evil.example\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 403")
    with connect(uri(server), origin="https://good.example") as ws:  # type: ignore[arg-type]
        ws.send("ok")
        assert ws.recv(timeout=5) == "ok"


def test_silent_client_dropped_after_open_timeout(make_server: ServerFactory) -> None:
    """A client that sends nothing is disconnected after open_timeout; others are served."""
    server = make_server(open_timeout=0.5)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as idle:
        with connect(uri(server)) as ws:
            ws.send("still served")
            assert ws.recv(timeout=5) == "still served"
        started = time.monotonic()
        assert idle.recv(1024) == b""
        assert time.monotonic() - started < 3


def test_subprotocol_negotiation(make_server: ServerFactory) -> None:
    """The server picks its first supported subprotocol among those offered."""
    chosen: List[object] = []

    def handler(ws: ServerConnection) -> None:
        chosen.append(ws.subprotocol)
        ws.send("x")

    server = make_server(handler, subprotocols=["chat.v2", "chat.v1"])
    with connect(uri(server), subprotocols=["chat.v1", "chat.v2"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat.v2"
        ws.recv(timeout=5)
    assert chosen == ["chat.v2"]


def test_many_simultaneous_connects(make_server: ServerFactory) -> None:
    """100 clients connecting at once are all served (the listen backlog is not 5)."""
    server = make_server()
    errors: List[BaseException] = []

    def client(n: int) -> None:
        try:
            with connect(uri(server), open_timeout=10) as ws:
                ws.send(str(n))
                assert ws.recv(timeout=10) == str(n)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


def test_close_is_answered_promptly_when_handler_never_reads(make_server: ServerFactory) -> None:
    """A handler busy elsewhere with unread messages does not delay the close reply long."""
    release = threading.Event()

    def handler(ws: ServerConnection) -> None:
        release.wait(10)  # never reads

    server = make_server(handler, close_timeout=10)
    try:
        with connect(uri(server), compression=None) as ws:
            ws.send("unread")
            started = time.monotonic()
        assert time.monotonic() - started < 3
    finally:
        release.set()


def test_messages_before_close_are_answered(make_server: ServerFactory) -> None:
    """Messages that arrive with the close frame are still echoed before the close reply."""
    server = make_server()
    sock, _ = raw_websocket(server.port)
    with sock:
        # Two masked text frames ("a", "b", mask 0) and a close frame, in one write.
        sock.sendall(
            b"\x81\x81\x00\x00\x00\x00a\x81\x81\x00\x00\x00\x00b\x88\x82\x00\x00\x00\x00\x03\xe8"
        )
        received = b""
        while True:
            chunk = sock.recv(1024)
            if not chunk:
                break
            received += chunk
    assert received == b"\x81\x01a\x81\x01b\x88\x02\x03\xe8"


def test_compression_negotiated_with_websockets_client(make_server: ServerFactory) -> None:
    """The websockets client's deflate offer is accepted and messages round-trip."""
    server = make_server()
    with connect(uri(server), compression="deflate") as ws:
        assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
        text = "compressible " * 10_000
        for _ in range(3):  # context takeover across messages
            ws.send(text)
            assert ws.recv(timeout=5) == text
        ws.send(b"\x00" * 100_000)
        assert ws.recv(timeout=5) == b"\x00" * 100_000


def test_compression_off_when_disabled(make_server: ServerFactory) -> None:
    """compression=None refuses the offer: no extension in the answer."""
    server = make_server(compression=None)
    with connect(uri(server), compression="deflate") as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        ws.send("plain")
        assert ws.recv(timeout=5) == "plain"


def test_deflate_bomb_over_a_real_socket_closes_1009(make_server: ServerFactory) -> None:
    """A compressed message that inflates past max_size closes the connection with 1009."""
    import zlib

    server = make_server(max_size=2**20)
    sock, head = raw_websocket(server.port, b"Sec-WebSocket-Extensions: permessage-deflate\r\n")
    with sock:
        assert b"permessage-deflate" in head
        compressor = zlib.compressobj(wbits=-15)
        bomb = b"".join(compressor.compress(b"\0" * 2**20) for _ in range(64))
        bomb += compressor.flush(zlib.Z_SYNC_FLUSH)
        bomb = bomb[:-4]  # 64 MiB of zeros in about 64 KiB
        frame = b"\xc2\xff" + len(bomb).to_bytes(8, "big") + b"\x00\x00\x00\x00" + bomb
        sock.sendall(frame)
        answer = sock.recv(1024)
    assert answer[0] == 0x88 and int.from_bytes(answer[2:4], "big") == 1009
