"""send_json, recv_json, broadcast_json: against websockets' client and server, with orjson too."""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from typing import Any, Callable, Iterator, List

import orjson
import pytest
import websockets.sync.client
import websockets.sync.server

import wsthread
import wsthread.testing
import wsthread.wsgi
from conftest import ServerFactory, wait_until
from wsthread.exceptions import InvalidJSON
from wsthread.server import ServerConnection

DOCUMENT = {"id": 7, "text": "caf\u00e9 \u2615", "tags": ["a", "b"], "done": False, "n": None}


class Counting:
    """Wraps a JSON function and counts its calls: proof that the option is the one used."""

    def __init__(self, function: Callable[[Any], Any]) -> None:
        self.function = function
        self.calls = 0

    def __call__(self, value: Any) -> Any:
        self.calls += 1
        return self.function(value)


def json_echo(ws: ServerConnection) -> None:
    """Decode each message as JSON, wrap it, send it back as JSON."""
    while True:
        try:
            ws.send_json({"got": ws.recv_json()})
        except wsthread.ConnectionClosedOK:
            return


def test_round_trip_with_a_websockets_client(make_server: ServerFactory) -> None:
    """websockets' client sends JSON text; recv_json decodes it; send_json's answer parses."""
    server = make_server(json_echo)
    with websockets.sync.client.connect(f"ws://127.0.0.1:{server.port}/") as client:
        client.send(json.dumps(DOCUMENT))
        answer = client.recv(timeout=5)
        assert isinstance(answer, str)  # a text message
        assert json.loads(answer) == {"got": DOCUMENT}
        assert '"id":7,"text":"caf\u00e9 \u2615"' in answer  # compact, UTF-8 as is


def test_round_trip_with_a_websockets_server() -> None:
    """wsthread's client send_json/recv_json against websockets' server."""

    def handler(connection: Any) -> None:
        for message in connection:
            connection.send(json.dumps({"got": json.loads(message)}))

    with websockets.sync.server.serve(handler, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        try:
            port = server.socket.getsockname()[1]
            with wsthread.connect(f"ws://127.0.0.1:{port}/") as client:
                client.send_json(DOCUMENT)
                assert client.recv_json(timeout=5) == {"got": DOCUMENT}
        finally:
            server.shutdown()
            thread.join(5)


def test_orjson_plugged_in_is_used_on_both_sides_and_sends_text(
    make_server: ServerFactory,
) -> None:
    """orjson.dumps returns bytes: they go out as a text message; both options are used."""
    server_dumps, server_loads = Counting(orjson.dumps), Counting(orjson.loads)
    client_dumps, client_loads = Counting(orjson.dumps), Counting(orjson.loads)
    server = make_server(json_echo, json_dumps=server_dumps, json_loads=server_loads)
    url = f"ws://127.0.0.1:{server.port}/"
    with wsthread.connect(url, json_dumps=client_dumps, json_loads=client_loads) as client:
        for _ in range(3):
            client.send_json(DOCUMENT)
            assert client.recv_json(timeout=5) == {"got": DOCUMENT}
    assert [f.calls for f in (server_dumps, server_loads, client_dumps, client_loads)] == [3] * 4
    with websockets.sync.client.connect(url) as other:  # the peer sees text, not binary
        other.send(json.dumps([1, 2]))
        assert other.recv(timeout=5) == '{"got":[1,2]}'


def test_bad_json_raises_invalid_json_naming_the_peer_and_the_connection_goes_on(
    make_server: ServerFactory,
) -> None:
    """Not a bare JSONDecodeError: InvalidJSON (a ValueError) with the peer; the next one works."""
    errors: queue.Queue[BaseException] = queue.Queue()

    def handler(ws: ServerConnection) -> None:
        try:
            ws.recv_json(timeout=5)
        except InvalidJSON as exc:
            errors.put(exc)
        ws.send_json({"next": ws.recv_json(timeout=5)})

    server = make_server(handler)
    with websockets.sync.client.connect(f"ws://127.0.0.1:{server.port}/") as client:
        # Before the server's handler returns and closes: then the socket may be gone.
        host, port = client.socket.getsockname()[:2]
        client.send("{not json")
        client.send("[1]")
        assert json.loads(client.recv(timeout=5)) == {"next": [1]}
    error = errors.get(timeout=5)
    assert isinstance(error, ValueError) and isinstance(error.__cause__, json.JSONDecodeError)
    assert f"{host}:{port}" in str(error) and "{not json" in str(error)
    assert error.data == "{not json"  # type: ignore[attr-defined]


def test_bad_json_with_orjson_is_invalid_json_too() -> None:
    """orjson's own JSONDecodeError becomes InvalidJSON; a binary message is decoded as UTF-8."""

    def handler(ws: ServerConnection) -> None:
        ws.send(b"[1, 2")
        ws.send(b'{"binary": true}')
        ws.recv()

    with wsthread.testing.connect(handler, json_loads=orjson.loads) as client:
        with pytest.raises(InvalidJSON, match="invalid JSON from"):
            client.recv_json(timeout=5)
        assert client.recv_json(timeout=5) == {"binary": True}
        client.send("done")


def test_send_json_of_what_json_cannot_encode_sends_nothing(make_server: ServerFactory) -> None:
    """The encoder's TypeError, before any byte: the connection still works."""
    server = make_server(json_echo)
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as client:
        with pytest.raises(TypeError):
            client.send_json({"when": object()})
        client.send_json("still fine")
        assert client.recv_json(timeout=5) == {"got": "still fine"}


@pytest.mark.parametrize("dumps", [None, orjson.dumps], ids=["json", "orjson"])
def test_broadcast_json_reaches_every_client_as_text_encoded_once(
    make_server: ServerFactory, dumps: Any
) -> None:
    """One encoding per broadcast, whatever the number of clients; each gets a text message."""
    encoder = Counting(dumps or json.dumps)
    opened: List[ServerConnection] = []

    def handler(ws: ServerConnection) -> None:
        opened.append(ws)
        for _ in ws:
            pass

    server = make_server(handler, json_dumps=encoder)
    url = f"ws://127.0.0.1:{server.port}/"
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(websockets.sync.client.connect(url)) for _ in range(3)]
        assert wait_until(lambda: len(opened) == 3)
        assert server.broadcast_json(DOCUMENT) == 3
        for client in clients:
            message = client.recv(timeout=5)
            assert isinstance(message, str) and json.loads(message) == DOCUMENT
        assert encoder.calls == 1


def test_the_middleware_and_testing_connect_take_the_options() -> None:
    """middleware(json_dumps=...) reaches its connections; broadcast_json goes through it."""
    encoder = Counting(orjson.dumps)

    def feed(ws: ServerConnection) -> None:
        ws.send_json({"hello": ws.recv_json()})
        ws.recv()

    def app(environ: Any, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        return iter([b""])

    sockets = wsthread.wsgi.middleware(app, {"/ws": feed}, json_dumps=encoder)
    with wsthread.testing.connect(sockets, "/ws", json_loads=orjson.loads) as client:
        client.send_json("there")
        assert client.recv_json(timeout=5) == {"hello": "there"}
        assert sockets.broadcast_json([1]) == 1
        assert client.recv_json(timeout=5) == [1]
        client.send("done")
    assert encoder.calls == 2
