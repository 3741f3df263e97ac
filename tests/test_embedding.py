"""The embedding toolkit over real sockets: broadcast, write timeouts, HTTP hooks, limits."""

from __future__ import annotations

import io
import logging
import socket
import ssl
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import pytest
import trustme
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.exceptions import InvalidStatus as WsInvalidStatus
from websockets.sync.client import ClientConnection, connect

import wsthread
from conftest import (
    ServerFactory,
    assert_going_away,
    python_process,
    raw_handshake,
    raw_websocket,
    stalled_client,
    wait_until,
    websockets_tls_connect,
)
from wsthread.server import ServerConnection


def uri(server: wsthread.WebSocketServer) -> str:
    return f"ws://127.0.0.1:{server.port}/"


def open_client(url: str, **options: Any) -> ClientConnection:
    """A `websockets` client opened outside a with block (the test closes it)."""
    client = connect(url, **options)
    client.__enter__()
    return client


def idle_handler(ws: ServerConnection) -> None:
    """Keep the connection open until the client closes it; ignore what it sends."""
    for _ in ws:
        pass


# -- broadcast ------------------------------------------------------------------


def test_broadcast_reaches_every_client_in_order(make_server: ServerFactory) -> None:
    """Text and binary broadcasts reach every client, each in the order they were made."""
    server = make_server(idle_handler, compression=None)
    clients = [open_client(uri(server)) for _ in range(5)]
    try:
        assert wait_until(lambda: len(server.connections) == 5)
        for index in range(50):
            count = server.broadcast(f"message {index}" if index % 2 else bytes([index]) * 100)
            assert count == 5
        for client in clients:
            received = [client.recv(timeout=5) for _ in range(50)]
            expected = [f"message {i}" if i % 2 else bytes([i]) * 100 for i in range(50)]
            assert received == expected
    finally:
        for client in clients:
            client.close()


def test_broadcast_from_many_threads_and_to_chosen_connections(
    make_server: ServerFactory,
) -> None:
    """Broadcasts from 4 threads at once all arrive whole; `connections=` limits the targets."""
    server = make_server(idle_handler)  # with permessage-deflate on every client
    clients = [open_client(uri(server)) for _ in range(3)]
    try:
        assert wait_until(lambda: len(server.connections) == 3)

        def sender(name: str) -> None:
            for index in range(100):
                server.broadcast(f"{name}:{index}:" + "x" * 500)

        threads = [threading.Thread(target=sender, args=(f"t{n}",)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        for client in clients:
            seen: Dict[str, List[int]] = {}
            for _ in range(400):
                message = client.recv(timeout=5)
                assert isinstance(message, str)
                name, index, padding = message.split(":")
                assert padding == "x" * 500
                seen.setdefault(name, []).append(int(index))
            # Every message once, and each thread's messages in its order.
            assert seen == {f"t{n}": list(range(100)) for n in range(4)}
        first = server.connections[0]
        assert server.broadcast("only one", connections=[first]) == 1
        received = []
        for client in clients:
            try:
                received.append(client.recv(timeout=0.5))
            except TimeoutError:
                pass
        assert received == ["only one"]
    finally:
        for client in clients:
            client.close()


def test_broadcast_rejects_other_types(make_server: ServerFactory) -> None:
    """Only str and bytes-like can be broadcast."""
    server = make_server(idle_handler)
    with pytest.raises(TypeError):
        server.broadcast(42)  # type: ignore[arg-type]


def test_stalled_client_is_closed_and_never_holds_up_the_others(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """One client that stops reading is closed with 1013; 20 others get every message."""
    server = make_server(idle_handler, compression=None, write_limit=256 * 1024, write_timeout=5)
    healthy = [open_client(uri(server)) for _ in range(20)]
    stalled = stalled_client(server.port)
    try:
        assert wait_until(lambda: len(server.connections) == 21)
        received: Dict[int, List[bytes]] = {i: [] for i in range(len(healthy))}

        def read_all(index: int) -> None:
            for _ in range(400):
                message = healthy[index].recv(timeout=20)
                assert isinstance(message, bytes)
                received[index].append(message)

        readers = [threading.Thread(target=read_all, args=(i,)) for i in range(len(healthy))]
        for reader in readers:
            reader.start()
        caplog.set_level(logging.WARNING, logger="wsthread")
        started = time.monotonic()
        for index in range(400):  # 400 x 8 KiB = 3.2 MiB, far past what the stalled one holds
            server.broadcast(index.to_bytes(4, "big") + bytes(8188))
        broadcasting = time.monotonic() - started
        for reader in readers:
            reader.join(30)
        for index in range(len(healthy)):
            numbers = [int.from_bytes(m[:4], "big") for m in received[index]]
            assert numbers == list(range(400)), f"client {index} lost or reordered messages"
        # Broadcasting never waited for the stalled client (it would have waited
        # write_timeout = 5 s at least): it was closed once its backlog passed the limit.
        assert broadcasting < 5
        assert wait_until(lambda: len(server.connections) == 20)
        assert any(
            "too slow" in r.getMessage() and "1013" in r.getMessage() for r in caplog.records
        )
    finally:
        stalled.close()
        for client in healthy:
            client.close()


def test_stalled_client_with_small_backlog_is_closed_after_write_timeout(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Under write_limit but taking nothing for write_timeout seconds: closed (1011 logged)."""
    server = make_server(idle_handler, compression=None, write_limit=None, write_timeout=1)
    stalled = stalled_client(server.port)
    try:
        assert wait_until(lambda: len(server.connections) == 1)
        caplog.set_level(logging.WARNING, logger="wsthread")
        for _ in range(200):
            server.broadcast(bytes(16384))
        assert wait_until(lambda: len(server.connections) == 0, timeout=10)
        assert any("1011" in r.getMessage() for r in caplog.records)
    finally:
        stalled.close()


def test_send_to_a_client_that_never_reads_times_out(make_server: ServerFactory) -> None:
    """A handler's send() to a peer that takes nothing fails after write_timeout, not never."""
    outcome: Dict[str, object] = {}

    def pusher(ws: ServerConnection) -> None:
        started = time.monotonic()
        try:
            while True:
                ws.send(bytes(65536))
        except wsthread.ConnectionClosed as exc:
            outcome["error"] = exc
            outcome["after"] = time.monotonic() - started

    server = make_server(pusher, compression=None, write_timeout=1)
    stalled = stalled_client(server.port)
    try:
        assert wait_until(lambda: "error" in outcome, timeout=15)
        assert isinstance(outcome["error"], wsthread.ConnectionClosedError)
        assert wait_until(lambda: not server.connections)
    finally:
        stalled.close()


def test_broadcast_over_tls(make_server: ServerFactory) -> None:
    """Broadcast works over wss:// (TLS runs on memory buffers under the same write path)."""
    ca = trustme.CA()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    server = make_server(idle_handler, ssl=server_context)
    clients = [
        websockets_tls_connect(f"wss://localhost:{server.port}/", ssl=client_context)
        for _ in range(3)
    ]
    for client in clients:
        client.__enter__()  # opened outside a with block; closed below
    try:
        assert wait_until(lambda: len(server.connections) == 3)
        for index in range(20):
            server.broadcast(f"{index}" * 1000)
        for client in clients:
            assert [client.recv(timeout=5) for _ in range(20)] == [f"{i}" * 1000 for i in range(20)]
    finally:
        for client in clients:
            client.close()


# -- HTTP on the same port --------------------------------------------------------


def health_and_auth(
    connection: ServerConnection, request: wsthread.Request
) -> Optional[wsthread.Response]:
    """Answer /health, refuse a missing token, let the rest upgrade."""
    if request.path == "/health":
        return wsthread.http_response(200, b"OK\n")
    if "token=secret" not in request.query:
        return wsthread.http_response(401, b"missing or wrong token\n")
    return None


def test_process_request_serves_http_and_rejects_before_upgrade(
    make_server: ServerFactory,
) -> None:
    """process_request answers a health check, refuses with 401, or lets the upgrade go on."""
    server = make_server(process_request=health_and_auth)
    health = raw_handshake(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert health.startswith(b"HTTP/1.1 200 OK\r\n")
    assert health.endswith(b"\r\n\r\nOK\n")
    with pytest.raises(WsInvalidStatus) as info:
        connect(uri(server) + "chat")
    assert info.value.response.status_code == 401
    with connect(uri(server) + "chat?token=secret") as ws:
        ws.send("in")
        assert ws.recv(timeout=5) == "in"


def test_process_request_that_raises_gives_500_and_a_log_line(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing hook is the application's bug: 500, logged with its traceback."""

    def broken(connection: ServerConnection, request: wsthread.Request) -> None:
        raise RuntimeError("hook bug")

    server = make_server(process_request=broken)
    answer = raw_handshake(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 500 ")
    assert wait_until(
        lambda: any(r.exc_info and "hook bug" in str(r.exc_info[1]) for r in caplog.records)
    )


def test_plain_http_without_hook_gets_a_polite_426(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A browser or curl hitting the WebSocket port gets 426 and a sentence, no traceback."""
    server = make_server()
    answer = raw_handshake(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 426 ")
    assert b"Upgrade: websocket" in head
    assert b"WebSocket" in body
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- handshake hooks ----------------------------------------------------------------


def test_select_subprotocol_and_extra_headers(make_server: ServerFactory) -> None:
    """The hook picks among the offered subprotocols; extra headers reach the 101."""
    seen: List[List[str]] = []

    def pick(connection: ServerConnection, offered: List[str]) -> Optional[str]:
        seen.append(offered)
        return offered[-1] if offered else None

    def headers(connection: ServerConnection, request: wsthread.Request) -> Dict[str, str]:
        return {"X-Path": request.path}

    server = make_server(select_subprotocol=pick, extra_headers=headers)
    with connect(uri(server) + "room", subprotocols=["chat.v1", "chat.v2"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat.v2"
        assert ws.response.headers["X-Path"] == "/room"
    assert seen == [["chat.v1", "chat.v2"]]
    static = make_server(extra_headers=[("X-Server", "wsthread")])
    with connect(uri(static)) as ws:
        assert ws.response.headers["X-Server"] == "wsthread"


def test_request_details_and_forwarded_client(make_server: ServerFactory) -> None:
    """The handler sees path, query, cookies; X-Forwarded-For only from a trusted proxy."""
    seen: List[Dict[str, object]] = []

    def record(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen.append(
            {
                "path": ws.request.path,
                "query": ws.request.query,
                "cookies": ws.request.cookies,
                "client": ws.client_host,
            }
        )

    forwarded = b"X-Forwarded-For: 203.0.113.7, 127.0.0.1\r\nCookie: session=abc\r\n"
    trusting = make_server(record, trusted_proxies=["127.0.0.1"])
    sock, _ = raw_websocket(trusting.port, forwarded)
    sock.close()
    assert wait_until(lambda: len(seen) == 1)
    distrusting = make_server(record)
    sock, _ = raw_websocket(distrusting.port, forwarded)
    sock.close()
    assert wait_until(lambda: len(seen) == 2)
    assert seen[0] == {
        "path": "/",
        "query": "",
        "cookies": {"session": "abc"},
        "client": "203.0.113.7",
    }
    assert seen[1]["client"] == "127.0.0.1"


# -- limits --------------------------------------------------------------------------


def test_max_connections_answers_503_then_recovers(make_server: ServerFactory) -> None:
    """Past max_connections the handshake gets 503 with a reason; a slot freed is reused."""
    server = make_server(idle_handler, max_connections=2)
    first, second = open_client(uri(server)), open_client(uri(server))
    try:
        with pytest.raises(WsInvalidStatus) as info:
            connect(uri(server))
        assert info.value.response.status_code == 503
        assert b"full" in info.value.response.body
        first.close()
        assert wait_until(lambda: len(server.connections) == 1)
        with connect(uri(server)) as third:
            third.send("hello")
    finally:
        first.close()
        second.close()


# -- running and stopping --------------------------------------------------------------


def test_shutdown_from_the_serving_thread_does_not_deadlock(
    thread_baseline: Callable[[], int],
) -> None:
    """shutdown() called on the thread running serve_forever (as a signal handler is) returns."""
    server = wsthread.serve(idle_handler, "127.0.0.1", 0, close_timeout=2)
    client_closed: Dict[str, int] = {}
    ready = threading.Event()

    def stop_from_loop() -> None:
        if ready.is_set():
            server.shutdown()

    server.service_actions = stop_from_loop  # type: ignore[method-assign]
    loop = threading.Thread(target=server.serve_forever)
    loop.start()
    with connect(uri(server)) as ws:
        assert wait_until(lambda: len(server.connections) == 1)
        ready.set()
        with pytest.raises(WsConnectionClosed) as info:
            ws.recv(timeout=10)
        assert info.value.rcvd is not None
        client_closed["code"] = info.value.rcvd.code
    loop.join(10)
    assert not loop.is_alive()
    assert client_closed == {"code": 1001}
    server.shutdown()  # idempotent, from another thread too


def test_started_server_is_shut_down_at_exit() -> None:
    """A script that start()s a server and simply ends still closes its clients with 1001."""
    script = (
        "import sys, time, wsthread\n"
        "server = wsthread.serve(lambda ws: [m for m in ws], '127.0.0.1', 0).start()\n"
        "print(server.port, flush=True)\n"
        "sys.stdin.readline()\n"
    )
    with python_process("-c", script) as process:
        assert process.stdout is not None and process.stdin is not None
        port = int(process.stdout.readline())
        with connect(f"ws://127.0.0.1:{port}/") as ws:
            process.stdin.write("\n")
            process.stdin.flush()
            assert_going_away([ws], timeout=10)
        assert process.wait(timeout=10) == 0


def test_log_lines_name_the_peer(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Connection open and close are logged at INFO, with the peer's address on the line."""
    caplog.set_level(logging.INFO, logger="wsthread")
    server = make_server()
    with connect(uri(server) + "where") as ws:
        ws.send("x")
        ws.recv(timeout=5)
        port = ws.socket.getsockname()[1]
    assert wait_until(lambda: any("connection closed" in r.getMessage() for r in caplog.records))
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    opened = [line for line in lines if "connection open" in line]
    closed = [line for line in lines if "connection closed" in line]
    assert opened and f"127.0.0.1:{port}" in opened[0] and "/where" in opened[0]
    assert closed and f"127.0.0.1:{port}" in closed[0]


def test_reuse_port_lets_two_servers_share_a_port(make_server: ServerFactory) -> None:
    """With reuse_port, a second server binds the same port and the kernel spreads clients."""
    if not hasattr(socket, "SO_REUSEPORT"):
        pytest.skip("no SO_REUSEPORT on this platform")
    served: List[object] = []

    def record(ws: ServerConnection) -> None:
        served.append(ws.server)

    first = make_server(record, reuse_port=True)
    second = make_server(record, port=first.port, reuse_port=True)
    assert second.port == first.port
    for _ in range(40):
        with connect(uri(first)):
            pass
    assert wait_until(lambda: len(served) == 40)
    assert {id(server) for server in served} == {id(first), id(second)}


def test_trace_option_of_serve_and_connect_shows_both_sides() -> None:
    """serve(trace=...) and connect(trace=...) write the handshake and every frame."""
    from wsthread.trace import Tracer

    server_log, client_log = io.StringIO(), io.StringIO()
    server = wsthread.serve(
        lambda ws: [ws.send(m) for m in ws], "127.0.0.1", 0, trace=Tracer(server_log)
    ).start()
    try:
        with wsthread.connect(uri(server), trace=Tracer(client_log)) as ws:
            ws.send("traced")
            assert ws.recv(timeout=5) == "traced"
    finally:
        server.shutdown()
    for log in (server_log.getvalue(), client_log.getvalue()):
        assert "GET / HTTP/1.1" in log
        assert "HTTP/1.1 101 Switching Protocols" in log
        assert "client -> server  TEXT FIN=1" in log and "'traced'" in log
        assert "server -> client  TEXT FIN=1 RSV=000 MASK=0" in log
        assert "code 1000 NORMAL_CLOSURE" in log


def test_shutdown_does_not_wait_for_clients_still_silent_in_the_handshake() -> None:
    """A socket that never sends its request (a browser preconnect) does not delay shutdown."""
    server = wsthread.serve(idle_handler, "127.0.0.1", 0, open_timeout=30, close_timeout=2)
    server.start()
    silent = socket.create_connection(("127.0.0.1", server.port))

    def connection_threads() -> List[threading.Thread]:
        name = f"wsthread-conn-{silent.getsockname()}"
        return [thread for thread in threading.enumerate() if thread.name == name]

    try:
        assert wait_until(lambda: len(connection_threads()) == 1)
        (thread,) = connection_threads()
        started = time.monotonic()
        server.shutdown()
        # open_timeout is 30 s: returning well before it means the thread was woken.
        assert time.monotonic() - started < 10
        assert not thread.is_alive()
    finally:
        silent.close()


def test_handlers_may_recurse_deeply_on_a_smaller_stack(make_server: ServerFactory) -> None:
    """thread_stack_size=1 MiB still runs deep C recursion (json of depth 900)."""
    import json

    def deep(ws: ServerConnection) -> None:
        for message in ws:
            depth = int(message)
            value: object = []
            for _ in range(depth):
                value = [value]
            ws.send(str(len(json.dumps(value))))

    server = make_server(deep, thread_stack_size=1024 * 1024)
    with connect(uri(server)) as ws:
        ws.send("900")
        assert ws.recv(timeout=10) == str(2 * 901)


# -- who reads the socket ------------------------------------------------------------


def test_handler_waiting_in_recv_reads_the_socket_itself(make_server: ServerFactory) -> None:
    """In ping-pong, the handler's own thread reads its messages (no thread switch)."""
    readers: List[str] = []

    def handler(ws: ServerConnection) -> None:
        original = ws.transport.recv

        def recording_recv(size: int, timeout: Optional[float] = None) -> bytes:
            data = original(size, timeout)
            readers.append(threading.current_thread().name)
            return data

        ws.transport.recv = recording_recv  # type: ignore[method-assign]
        for message in ws:
            ws.send(message)

    server = make_server(handler, compression=None)
    with connect(uri(server), compression=None) as ws:
        for index in range(50):
            ws.send(str(index))
            assert ws.recv(timeout=5) == str(index)
    assert wait_until(lambda: not server.connections)
    assert any(name.startswith("wsthread-conn") for name in readers), readers


def test_busy_handler_still_answers_pings_and_closes(make_server: ServerFactory) -> None:
    """After the handler stops reading, the reader thread answers pings and the close."""
    busy = threading.Event()
    release = threading.Event()

    def handler(ws: ServerConnection) -> None:
        ws.recv()
        busy.set()
        release.wait(10)  # busy elsewhere, not reading

    server = make_server(handler)
    try:
        with connect(uri(server)) as ws:
            ws.send("start")
            assert busy.wait(5)
            assert ws.ping().wait(2), "no pong while the handler was busy"
    finally:
        release.set()


def test_two_threads_receiving_share_the_messages_exactly_once(
    make_server: ServerFactory,
) -> None:
    """recv() from two application threads: every message goes to exactly one of them."""
    got: List[str] = []
    lock = threading.Lock()

    def handler(ws: ServerConnection) -> None:
        def take() -> None:
            try:
                while True:
                    message = ws.recv(timeout=5)
                    assert isinstance(message, str)
                    with lock:
                        got.append(message)
            except (wsthread.ConnectionClosed, TimeoutError):
                pass

        workers = [threading.Thread(target=take) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(15)

    server = make_server(handler)
    with connect(uri(server)) as ws:
        for index in range(500):
            ws.send(str(index))
    assert wait_until(lambda: not server.connections, timeout=15)
    assert sorted(got, key=int) == [str(i) for i in range(500)]


def test_idle_connection_costs_one_thread(make_server: ServerFactory) -> None:
    """A handler waiting in recv() reads for itself: no reader thread is started for it."""
    server = make_server(idle_handler, ping_interval=None)
    with connect(uri(server), ping_interval=None) as ws:
        assert wait_until(lambda: len(server.connections) == 1)
        time.sleep(0.5)  # ten times the hand-over delay: nothing may start meanwhile
        (connection,) = server.connections
        assert connection.reader.thread is None
        ws.send("still served")
        ws.ping().wait(2)
        assert connection.reader.thread is None


def test_push_only_handler_gets_a_reader_for_pings_and_close(make_server: ServerFactory) -> None:
    """A handler that never calls recv(): the reader thread starts and answers for it."""
    stop = threading.Event()

    def pusher(ws: ServerConnection) -> None:
        while not stop.is_set():
            try:
                ws.send("tick")
            except wsthread.ConnectionClosed:
                return
            stop.wait(0.05)

    server = make_server(pusher)
    try:
        with connect(uri(server)) as ws:
            assert ws.recv(timeout=5) == "tick"
            assert ws.ping().wait(2), "no pong from a push-only handler's connection"
        assert wait_until(lambda: not server.connections)
    finally:
        stop.set()


def test_a_hub_that_fails_to_attach_leaves_no_port_bound() -> None:
    """serve(hub=...) raising in attach() closes the listening socket it opened."""

    class BrokenHub:
        def attach(self, deliver: Callable[[object], None]) -> None:
            raise RuntimeError("no hub today")

    with pytest.raises(RuntimeError):
        wsthread.serve(idle_handler, "127.0.0.1", 0, hub=BrokenHub())
    # Bind-and-fail again on a port we know: it must be free once more.
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(RuntimeError) as failure:
        wsthread.serve(idle_handler, "127.0.0.1", port, hub=BrokenHub())
    # The traceback keeps the half-made server alive: its socket must be closed anyway.
    assert failure.traceback
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))
