"""Topics in one process, over real sockets: subscribe, unsubscribe, publish, limits, threads."""

from __future__ import annotations

import json
import threading
from typing import Any, Dict, List, Set, Tuple

import pytest

import wsthread
from conftest import ServerFactory, wait_until
from wsthread.hubs import LocalHub
from wsthread.server import ServerConnection

Message = Any


def idle_handler(ws: ServerConnection) -> None:
    """Keep the connection open until the client closes it; ignore what it sends."""
    for _ in ws:
        pass


def open_pairs(
    server: wsthread.WebSocketServer, count: int
) -> List[Tuple[wsthread.ClientConnection, ServerConnection]]:
    """``count`` clients, each with the server's side of its connection."""
    clients = [wsthread.connect(f"ws://127.0.0.1:{server.port}/") for _ in range(count)]
    assert wait_until(lambda: len(server.connections) >= count, 10)
    by_port = {each.remote_address[1]: each for each in server.connections}
    return [(client, by_port[client.local_address[1]]) for client in clients]


def drain(client: wsthread.ClientConnection, marker: str) -> List[Message]:
    """Every message ``client`` gets before ``marker`` (which it must get)."""
    got: List[Message] = []
    while True:
        message = client.recv(timeout=20)
        if message == marker:
            return got
        got.append(message)


def test_publish_reaches_only_the_subscribers_once_in_order(make_server: ServerFactory) -> None:
    """Text and binary publishes reach exactly the topic's subscribers, once each, in order."""
    server = make_server(idle_handler)
    pairs = open_pairs(server, 6)
    try:
        for index, (_, ws) in enumerate(pairs):
            assert ws.subscribe("even" if index % 2 == 0 else "odd") is True
            assert ws.subscribe("all") is True
            assert ws.subscribe("all") is False  # already
        sent: Dict[str, List[Message]] = {"even": [], "odd": [], "all": []}
        for i in range(30):
            topic = ("even", "odd", "all")[i % 3]
            message: Message = f"{topic} {i} ☃" if i % 2 else f"{topic} {i}".encode() + b"\xff"
            queued = server.publish(topic, message)
            assert queued == (6 if topic == "all" else 3)
            sent[topic].append(message)
        assert server.publish("nobody", "lost") == 0
        for index, (client, ws) in enumerate(pairs):
            ws.send("end")
            mine = "even" if index % 2 == 0 else "odd"
            got = drain(client, "end")
            assert [m for m in got if m in sent["all"]] == sent["all"]
            assert [m for m in got if m not in sent["all"]] == sent[mine]
            assert ws.topics == frozenset({mine, "all"})
        stats = server.stats()["topics"]
        assert stats == {"topics": 3, "subscriptions": 12, "published": 31}
    finally:
        for client, _ in pairs:
            client.close()


def test_unsubscribe_stops_delivery_and_json(make_server: ServerFactory) -> None:
    """After unsubscribe() nothing more arrives; publish_json() sends compact JSON text."""
    server = make_server(idle_handler)
    [(client, ws)] = open_pairs(server, 1)
    try:
        ws.subscribe("order 123")
        server.publish_json("order 123", {"status": "paid", "items": [1, 2]})
        assert client.recv(timeout=10) == '{"status":"paid","items":[1,2]}'
        assert ws.unsubscribe("order 123") is True
        assert ws.unsubscribe("order 123") is False
        assert server.publish("order 123", "after") == 0
        ws.send("end")
        assert client.recv(timeout=10) == "end"
        assert ws.topics == frozenset()
        assert server.stats()["topics"]["topics"] == 0
    finally:
        client.close()


def test_publish_json_uses_the_servers_encoder(make_server: ServerFactory) -> None:
    """publish_json() encodes with the json_dumps option, once; what it cannot encode: nothing."""
    calls: List[Any] = []

    def dumps(obj: Any) -> bytes:
        calls.append(obj)
        return json.dumps(obj, sort_keys=True).encode()

    server = make_server(idle_handler, json_dumps=dumps)
    pairs = open_pairs(server, 2)
    try:
        for _, ws in pairs:
            ws.subscribe("t")
        assert server.publish_json("t", {"b": 1, "a": [2]}) == 2
        for client, _ in pairs:
            assert client.recv(timeout=10) == '{"a": [2], "b": 1}'  # text, as encoded
        assert len(calls) == 1
        with pytest.raises(TypeError):
            server.publish_json("t", {"not json": object()})
        assert server.stats()["topics"]["published"] == 1
    finally:
        for client, _ in pairs:
            client.close()


def test_a_closed_connection_leaves_its_topics(make_server: ServerFactory) -> None:
    """A connection that ends (the client leaves) watches nothing, and cannot subscribe again."""
    server = make_server(idle_handler)
    [(leaving, gone), (staying, ws)] = open_pairs(server, 2)
    try:
        for topic in ("a", "b", "c"):
            gone.subscribe(topic)
        ws.subscribe("a")
        leaving.close()
        assert wait_until(lambda: gone.topics == frozenset(), 10)
        assert server.stats()["topics"] == {"topics": 1, "subscriptions": 1, "published": 0}
        assert gone.subscribe("d") is False  # ended: not subscribed
        assert gone.topics == frozenset()
        assert server.publish("a", "still here") == 1
        assert staying.recv(timeout=10) == "still here"
    finally:
        staying.close()


def test_subscribe_from_the_handler_and_shutdown(make_server: ServerFactory) -> None:
    """A handler subscribes to what its client asks for; shutdown leaves no subscription."""

    def rooms(ws: ServerConnection) -> None:
        for message in ws:
            assert isinstance(message, str)
            ws.subscribe(message)
            ws.send(f"joined {message}")

    server = make_server(rooms)
    clients = [wsthread.connect(f"ws://127.0.0.1:{server.port}/") for _ in range(3)]
    for index, client in enumerate(clients):
        client.send(f"room {index % 2}")
        assert client.recv(timeout=10) == f"joined room {index % 2}"
    assert server.publish("room 0", "hello room 0") == 2
    assert [clients[i].recv(timeout=10) for i in (0, 2)] == ["hello room 0"] * 2
    server.shutdown()
    assert server.stats()["topics"]["subscriptions"] == 0
    for client in clients:
        client.close()


def test_topic_names_and_messages_are_checked(make_server: ServerFactory) -> None:
    """Names: str only (TypeError), 1 to 256 bytes of UTF-8 (ValueError); messages: str or bytes."""
    server = make_server(idle_handler)
    [(client, ws)] = open_pairs(server, 1)
    try:
        longest = "é" * 128  # 256 bytes of UTF-8
        assert ws.subscribe(longest) is True
        for bad in ("é" * 128 + "x", "x" * 257, "", "\ud800"):
            for call in (ws.subscribe, ws.unsubscribe, lambda t: server.publish(t, "m")):
                with pytest.raises(ValueError):
                    call(bad)
        for wrong in (b"bytes", None, 42, ["list"]):
            for call in (ws.subscribe, ws.unsubscribe, lambda t: server.publish(t, "m")):
                with pytest.raises(TypeError):
                    call(wrong)
        with pytest.raises(TypeError):
            server.publish(longest, {"a": 1})  # type: ignore[arg-type]
        assert ws.topics == frozenset({longest})
        assert server.stats()["topics"]["published"] == 0
    finally:
        client.close()


def test_max_subscriptions_bounds_one_connection(make_server: ServerFactory) -> None:
    """A connection watches at most max_subscriptions topics; leaving one frees a place."""
    server = make_server(idle_handler, max_subscriptions=3)
    [(client, ws), (other_client, other)] = open_pairs(server, 2)
    try:
        for topic in ("a", "b", "c"):
            assert ws.subscribe(topic)
        with pytest.raises(ValueError, match="max_subscriptions"):
            ws.subscribe("d")
        assert ws.subscribe("a") is False  # already watched: not over the limit
        assert other.subscribe("d")  # the limit is per connection
        ws.unsubscribe("b")
        assert ws.subscribe("d")
        assert ws.topics == frozenset({"a", "c", "d"})
    finally:
        client.close()
        other_client.close()
    with pytest.raises(ValueError):
        wsthread.serve(idle_handler, "127.0.0.1", 0, max_subscriptions=0)


class RecordingHub(LocalHub):
    """A LocalHub that records the watch/unwatch calls it gets, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: List[Tuple[str, str]] = []
        self._calls_lock = threading.Lock()

    def watch(self, topic: str) -> None:
        with self._calls_lock:
            self.calls.append(("watch", topic))

    def unwatch(self, topic: str) -> None:
        with self._calls_lock:
            self.calls.append(("unwatch", topic))


def test_concurrent_subscribe_unsubscribe_publish_close(make_server: ServerFactory) -> None:
    """16 threads at once: publishers, togglers and closers; every count is exact.

    - 4 publisher threads send 150 messages each to topic "stable" (its 10
      subscribers never change): each of them gets all 600, once, in order
      per publisher;
    - 6 toggler threads, each owning one connection, loop 100 times:
      subscribe, publish to their own topic, unsubscribe (and the same
      connection's "stable" subscription is untouched): each gets its 100
      exactly;
    - 4 threads subscribe the same connection to one topic at once: exactly
      one ``True``;
    - 2 threads close 4 other subscribed connections while the publishers run;
    - the hub saw watch and unwatch alternate for every topic, ending
      watched exactly for the topics that still have subscribers.
    """
    hub = RecordingHub()
    server = make_server(idle_handler, hub=hub)
    pairs = open_pairs(server, 20)
    stable, togglers, closing = pairs[:10], pairs[10:16], pairs[16:]
    for _, ws in stable + closing:
        ws.subscribe("stable")
    publishers, rounds = 4, 150
    errors: List[BaseException] = []
    first_wins: List[bool] = []
    start = threading.Barrier(16)

    def guarded(work: Any) -> Any:
        def run(*args: Any) -> None:
            try:
                start.wait(10)
                work(*args)
            except BaseException as exc:  # reported by the test below
                errors.append(exc)

        return run

    def publish(k: int) -> None:
        for i in range(rounds):
            server.publish("stable", f"{k}/{i}")

    def toggle(k: int) -> None:
        ws = togglers[k][1]
        for i in range(100):
            assert ws.subscribe(f"own {k}")
            server.publish(f"own {k}", f"own {k}/{i}")
            assert ws.unsubscribe(f"own {k}")

    def race(_: int) -> None:
        first_wins.append(stable[0][1].subscribe("raced"))

    def close(k: int) -> None:
        for client, _ in closing[k::2]:
            client.close()

    threads = [threading.Thread(target=guarded(publish), args=(k,)) for k in range(publishers)]
    threads += [threading.Thread(target=guarded(toggle), args=(k,)) for k in range(6)]
    threads += [threading.Thread(target=guarded(race), args=(k,)) for k in range(4)]
    threads += [threading.Thread(target=guarded(close), args=(k,)) for k in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        assert sorted(first_wins) == [False, False, False, True]
        for client, ws in stable:
            ws.send("end")
            got = drain(client, "end")
            assert len(got) == publishers * rounds
            for k in range(publishers):
                assert [m for m in got if m.startswith(f"{k}/")] == [
                    f"{k}/{i}" for i in range(rounds)
                ]
        for k, (client, ws) in enumerate(togglers):
            ws.send("end")
            assert drain(client, "end") == [f"own {k}/{i}" for i in range(100)]
        assert wait_until(lambda: all(ws.topics == frozenset() for _, ws in closing), 10)
        stats = server.stats()["topics"]
        assert stats == {
            "topics": 2,  # "stable" and "raced"
            "subscriptions": 11,
            "published": publishers * rounds + 6 * 100,
        }
        watched: Set[str] = set()
        for call, topic in hub.calls:
            if call == "watch":
                assert topic not in watched, hub.calls
                watched.add(topic)
            else:
                assert topic in watched, hub.calls
                watched.discard(topic)
        assert watched == {"stable", "raced"}
        assert sum(1 for call, topic in hub.calls if topic == "own 0") == 200
    finally:
        for client, _ in pairs:
            client.close()


def test_two_servers_on_a_local_hub_share_topics(make_server: ServerFactory) -> None:
    """Two servers on one LocalHub: a publish on either reaches the subscribers of both."""
    hub = LocalHub()
    one = make_server(idle_handler, hub=hub)
    two = make_server(idle_handler, hub=hub)
    [(client_one, ws_one)] = open_pairs(one, 1)
    [(client_two, ws_two)] = open_pairs(two, 1)
    try:
        ws_one.subscribe("news")
        ws_two.subscribe("news")
        assert one.publish("news", b"\x00binary") == 0  # through the hub
        two.publish_json("news", {"n": 1})
        for client in (client_one, client_two):
            assert client.recv(timeout=10) == b"\x00binary"
            assert json.loads(client.recv(timeout=10)) == {"n": 1}
    finally:
        client_one.close()
        client_two.close()
