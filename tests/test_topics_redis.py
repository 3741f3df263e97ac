"""Topics across processes through RedisHub and a real redis-server.

Hubs alone (fake servers), two servers in this process, then server
processes: 2 processes with 10,000 subscriptions, 4 processes each watching
its own 250 of 1,000 topics, and gunicorn with 2 workers publishing from a
WSGI view. Every server binds 127.0.0.1 on a free port and is stopped by
the test; so is redis-server (the ``redis_server`` fixture).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set, Tuple, Union

import pytest

import wsthread
from conftest import RedisServer, ServerFactory, reap, wait_until
from wsthread.hubs import RedisHub
from wsthread.server import ServerConnection

Message = Union[str, bytes]


class TopicInbox:
    """A fake server for a hub: records ``(topic, message)`` pairs and broadcasts, in order."""

    def __init__(self) -> None:
        self.topics: List[Tuple[str, Message]] = []
        self.broadcasts: List[Message] = []
        self._condition = threading.Condition()

    def deliver(self, message: Message) -> None:
        with self._condition:
            self.broadcasts.append(message)
            self._condition.notify_all()

    def deliver_topic(self, topic: str, message: Message) -> None:
        with self._condition:
            self.topics.append((topic, message))
            self._condition.notify_all()

    def wait_for(self, count: int, timeout: float = 10) -> List[Tuple[str, Message]]:
        """Wait until ``count`` topic messages arrived; return them all."""
        with self._condition:
            arrived = self._condition.wait_for(lambda: len(self.topics) >= count, timeout)
            assert arrived, f"{len(self.topics)} of {count} arrived: {self.topics[-5:]}"
            return list(self.topics)


@contextlib.contextmanager
def attached_hubs(
    url: str, count: int, channel: str = "topics-test", **options: Any
) -> Iterator[List[Tuple[Any, TopicInbox]]]:
    """``count`` hubs on one Redis, each attached to its own TopicInbox; closed afterwards."""
    made = []
    try:
        for _ in range(count):
            hub = RedisHub(url, channel=channel, min_delay=0.05, max_delay=0.5, **options)
            inbox = TopicInbox()
            hub.attach_topics(inbox.deliver_topic)
            hub.attach(inbox.deliver)
            made.append((hub, inbox))
        for hub, _ in made:
            assert hub.wait_healthy(10)
        yield made
    finally:
        for hub, _ in made:
            hub.close()


def redis_channels(url: str, pattern: str, sharded: bool = False) -> Set[str]:
    """The channels matching ``pattern`` that some client of this Redis subscribes to."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        names = client.pubsub_shardchannels(pattern) if sharded else client.pubsub_channels(pattern)
        return {name.decode() for name in names}
    finally:
        client.close()


@pytest.mark.parametrize("sharded", [False, True], ids=["pubsub", "sharded-pubsub"])
def test_hub_topics_reach_only_the_processes_that_watch_them(
    redis_server: RedisServer, sharded: bool
) -> None:
    """A watched topic's messages reach that hub once, types kept, in order; an unwatched
    topic's never arrive; the channel is subscribed and unsubscribed on Redis itself."""
    with attached_hubs(redis_server.url, 3, sharded=sharded) as hubs:
        (a, inbox_a), (b, inbox_b), (c, inbox_c) = hubs
        b.watch("order 123")
        b.watch("ünïcode ☃")
        c.watch("other")
        assert b.wait_topics(10) and c.wait_topics(10)
        channels = redis_channels(redis_server.url, "topics-test:topic:*", sharded)
        assert channels == {
            "topics-test:topic:order 123",
            "topics-test:topic:ünïcode ☃",
            "topics-test:topic:other",
        }
        sent: List[Tuple[str, Message]] = []
        for i in range(40):
            topic = "order 123" if i % 2 else "ünïcode ☃"
            message: Message = f"{i} ✓" if i % 4 < 2 else bytes([i, 0, 255]) + b"\x80"
            a.publish_topic(topic, message)
            sent.append((topic, message))
        assert inbox_b.wait_for(40) == sent  # once each, in order, str stays str
        assert all(type(m) is type(s) for (_, m), (_, s) in zip(inbox_b.topics, sent))
        assert inbox_a.topics == sent  # the publisher's own subscribers, at once
        b.unwatch("order 123")
        assert b.wait_topics(10)
        assert "topics-test:topic:order 123" not in redis_channels(
            redis_server.url, "topics-test:topic:*", sharded
        )
        a.publish_topic("order 123", "after unwatch")
        a.publish_topic("ünïcode ☃", "still watched")
        assert inbox_b.wait_for(41)[-1] == ("ünïcode ☃", "still watched")
        a.publish_topic("other", b"for c")
        assert inbox_c.wait_for(1) == [("other", b"for c")]
        assert inbox_b.topics.count(("order 123", "after unwatch")) == 0
        assert b.stats()["topic_received"] == 41
        assert c.stats()["topic_received"] == 1
        assert a.flush(10)
        assert a.stats()["topic_published"] == 43 and a.stats()["topic_received"] == 0
        assert b.stats()["topics_subscribed"] == 1


def test_hub_topics_come_back_after_an_outage(redis_server: RedisServer) -> None:
    """Redis killed and restarted: the watched topics are subscribed again by themselves."""
    with attached_hubs(redis_server.url, 2) as hubs:
        (a, _), (b, inbox_b) = hubs
        b.watch("t")
        assert b.wait_topics(10)
        redis_server.stop()
        assert wait_until(lambda: not b.healthy and not a.healthy, 15)
        a.publish_topic("t", "lost")  # dropped for the others, counted
        assert a.flush(10) and a.stats()["topic_dropped"] == 1
        redis_server.start()
        assert a.wait_healthy(15) and b.wait_topics(15)
        a.publish_topic("t", "after")
        assert inbox_b.wait_for(1) == [("t", "after")]
        b.close()
        answers: List[bool] = []
        waiter = threading.Thread(target=lambda: answers.append(b.wait_topics(None)))
        waiter.start()
        waiter.join(30)
        assert answers == [False]  # closed: no wait for ever


def idle_handler(ws: ServerConnection) -> None:
    """Keep the connection open until the client closes it."""
    for _ in ws:
        pass


def test_two_servers_share_topics_through_redis(
    redis_server: RedisServer, make_server: ServerFactory
) -> None:
    """Two servers with their own RedisHub: publish on either reaches both's subscribers; a
    closed connection's topic is unsubscribed on Redis when it was the last one there."""
    hubs = [RedisHub(redis_server.url, channel="two") for _ in range(2)]
    servers = [make_server(idle_handler, hub=hub) for hub in hubs]
    clients = [wsthread.connect(f"ws://127.0.0.1:{server.port}/") for server in servers]
    try:
        for server in servers:
            assert wait_until(lambda s=server: len(s.connections) == 1, 10)  # type: ignore[misc]
            assert server.hub.wait_healthy(10)
            server.connections[0].subscribe("room")
        for hub in hubs:
            assert hub.wait_topics(10)
        servers[0].publish("room", "hello")
        servers[1].publish("room", b"\x00bin")
        for client in clients:
            assert sorted([client.recv(timeout=10) for _ in range(2)], key=repr) == [
                "hello",
                b"\x00bin",
            ]
        clients[1].close()
        assert wait_until(lambda: hubs[1].stats()["topics_subscribed"] == 0, 10)
        assert hubs[1].wait_topics(10)
        assert redis_channels(redis_server.url, "two:topic:*") == {"two:topic:room"}
        servers[1].publish("room", "from the empty one")
        assert clients[0].recv(timeout=10) == "from the empty one"
        stats = servers[0].stats()
        assert stats["hub"]["topic_received"] == 2 and stats["topics"]["subscriptions"] == 1
    finally:
        for client in clients:
            client.close()


def test_concurrent_watch_and_unwatch_end_in_the_right_subscriptions(
    redis_server: RedisServer, make_server: ServerFactory
) -> None:
    """8 threads subscribe and unsubscribe 8 connections to 40 topics at once, 50 rounds each,
    while the hub's thread applies the changes: Redis ends subscribed to exactly the topics
    left with subscribers, and a publish to each reaches exactly its subscribers."""
    hub = RedisHub(redis_server.url, channel="churn", min_delay=0.05, max_delay=0.5)
    server = make_server(idle_handler, hub=hub)
    clients = [wsthread.connect(f"ws://127.0.0.1:{server.port}/") for _ in range(8)]
    try:
        assert wait_until(lambda: len(server.connections) == 8, 10) and hub.wait_healthy(10)
        connections = server.connections
        start = threading.Barrier(8)
        errors: List[BaseException] = []

        def churn(k: int) -> None:
            try:
                start.wait(10)
                rng = random.Random(k)
                for _ in range(50):
                    ws = connections[rng.randrange(8)]
                    topic = f"c{rng.randrange(40)}"
                    ws.subscribe(topic) if rng.random() < 0.55 else ws.unsubscribe(topic)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=churn, args=(k,)) for k in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors, errors
        watched = {topic for ws in connections for topic in ws.topics}
        assert watched  # some stayed watched (and the others' channels must be gone)
        assert hub.wait_topics(10)
        assert redis_channels(redis_server.url, "churn:topic:*") == {
            f"churn:topic:{topic}" for topic in watched
        }
        assert hub.stats()["topics_subscribed"] == len(watched)
        for ws in connections:
            ws.subscribe("end")
        assert hub.wait_topics(10)
        other = RedisHub(redis_server.url, channel="churn")
        other.attach_topics(lambda topic, message: None)
        other.attach(lambda message: None)
        try:
            assert other.wait_healthy(10)
            for n in range(40):
                other.publish_topic(f"c{n}", f"c{n}")
            other.publish_topic("end", "end")  # one publisher: after all the others
            by_port = {ws.remote_address[1]: ws for ws in connections}
            for client in clients:
                mine = by_port[client.local_address[1]].topics
                got = [client.recv(timeout=10) for _ in range(len(mine))]  # "end" is in mine
                assert sorted(got[:-1]) == sorted(mine - {"end"})  # type: ignore[type-var]
                assert got[-1] == "end"  # and nothing else came: no topic it does not watch
            assert hub.stats()["topic_received"] == len(watched) + 1
        finally:
            other.close()
    finally:
        for client in clients:
            client.close()


# -- server processes --------------------------------------------------------------

SERVER_PROGRAM = r"""
import json, signal, sys
import wsthread
from wsthread.hubs import RedisHub

hub = RedisHub(sys.argv[1], channel=sys.argv[2], min_delay=0.05, max_delay=0.5)

def handler(ws):
    for message in ws:
        command, _, rest = message.partition(" ")
        if command == "sub":
            for topic in rest.split(","):
                ws.subscribe(topic)
            ws.send(f"subscribed {len(ws.topics)} {hub.wait_topics(60)}")
        elif command == "pub":
            spec = json.loads(rest)
            for topic, body, binary in spec["items"]:
                ws.server.publish(topic, body.encode() if binary else body)
            ws.send(f"published {len(spec['items'])}")

def health(connection, request):
    if request.path != "/stats":
        return None
    body = json.dumps(connection.server.stats()).encode()
    return wsthread.http_response(200, body, content_type="application/json")

def on_sigterm(signum, frame):
    raise KeyboardInterrupt

signal.signal(signal.SIGTERM, on_sigterm)
with wsthread.serve(handler, "127.0.0.1", 0, hub=hub, process_request=health,
                    compression=None, close_timeout=2, max_connections=2000) as server:
    hub.wait_healthy(20)
    print(server.port, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
"""


@contextlib.contextmanager
def server_processes(url: str, count: int, channel: str) -> Iterator[List[int]]:
    """``count`` server processes on one Redis channel; their ports. Stopped afterwards."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", SERVER_PROGRAM, url, channel], stdout=subprocess.PIPE, text=True
        )
        for _ in range(count)
    ]
    try:
        ports = []
        for process in processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.strip().isdigit(), f"a server process did not start: {line!r}"
            ports.append(int(line))
        yield ports
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                process.wait(timeout=30)
            finally:
                reap(process)


def server_stats(port: int) -> Dict[str, Any]:
    """A server process's ``stats()``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as response:
        return dict(json.loads(response.read()))


async def subscriber(port: int, topics: List[str], ready: asyncio.Queue[str]) -> Any:
    """Open a client, subscribe to ``topics``; return the connection once confirmed."""
    from websockets.asyncio.client import connect

    ws = await connect(f"ws://127.0.0.1:{port}/", compression=None, max_queue=None)
    await ws.send("sub " + ",".join(topics))
    reply = await asyncio.wait_for(ws.recv(), 60)
    assert reply == f"subscribed {len(topics)} True", reply
    await ready.put(reply)
    return ws


async def collect(ws: Any, count: int) -> List[Message]:
    """The next ``count`` messages of ``ws``."""
    return [await asyncio.wait_for(ws.recv(), 60) for _ in range(count)]


def body_of(topic: int, publisher: int, index: int) -> Tuple[str, str, bool]:
    """Publisher ``publisher``'s message ``index``, on ``topic``: (topic, body, binary)."""
    return (f"topic {topic}", f"{topic}|{publisher}|{index}|{'é' * (index % 3)}", index % 2 == 1)


def as_received(item: Tuple[str, str, bool]) -> Message:
    _, body, binary = item
    return body.encode() if binary else body


@pytest.mark.slow
def test_two_processes_ten_thousand_subscriptions(redis_server: RedisServer) -> None:
    """2 server processes, 400 client connections (200 on each) watching 25 of 100 topics each:
    10,000 subscriptions. 4 publishers (2 per process) make 1,000 publishes over the 100 topics;
    then each connection has exactly its topics' messages, once each, in order per publisher
    (100,000 deliveries in all)."""
    connections_per_process, topics_per_connection, topic_count = 200, 25, 100
    publishers, per_publisher = 4, 250
    with server_processes(redis_server.url, 2, "fanout") as ports:
        plan: List[Tuple[int, List[int]]] = []  # (port, topics) per connection
        for index in range(2 * connections_per_process):
            chosen = random.Random(index).sample(range(topic_count), topics_per_connection)
            plan.append((ports[index % 2], chosen))
        assert sum(len(topics) for _, topics in plan) == 10_000
        items = {
            p: [body_of((p * per_publisher + i) % topic_count, p, i) for i in range(per_publisher)]
            for p in range(publishers)
        }
        assert sum(len(each) for each in items.values()) == 1_000

        async def run() -> List[List[Message]]:
            from websockets.asyncio.client import connect

            ready: asyncio.Queue[str] = asyncio.Queue()
            clients = []
            for start in range(0, len(plan), 50):  # open them 50 at a time
                clients += await asyncio.gather(
                    *(
                        subscriber(port, [f"topic {t}" for t in topics], ready)
                        for port, topics in plan[start : start + 50]
                    )
                )
            expected_counts = [
                sum(1 for each in items.values() for item in each if int(item[0][6:]) in topics)
                for _, topics in plan
            ]
            pubs = [
                await connect(f"ws://127.0.0.1:{ports[p % 2]}/", compression=None)
                for p in range(publishers)
            ]
            receiving = [
                asyncio.ensure_future(collect(ws, n)) for ws, n in zip(clients, expected_counts)
            ]
            for p, ws in enumerate(pubs):  # all four publish at once
                await ws.send("pub " + json.dumps({"items": items[p]}))
            for ws in pubs:
                assert await asyncio.wait_for(ws.recv(), 120) == f"published {per_publisher}"
            got = list(await asyncio.gather(*receiving))
            # Nothing more is on its way: one more publish per topic, by one publisher,
            # after all the others, must be the next message each connection gets.
            final = [(f"topic {t}", f"final {t}", False) for t in range(topic_count)]
            await pubs[0].send("pub " + json.dumps({"items": final}))
            for ws, (_, topics) in zip(clients, plan):
                finals = await collect(ws, len(topics))
                assert sorted(finals) == sorted(f"final {t}" for t in topics)  # type: ignore[type-var]
            for ws in clients + pubs:
                await ws.close()
            return got

        started = time.monotonic()
        got = asyncio.run(run())
        elapsed = time.monotonic() - started
        for (_, topics), messages in zip(plan, got):
            for p in range(publishers):
                mine = [as_received(item) for item in items[p] if int(item[0][6:]) in topics]
                theirs = [
                    m
                    for m in messages
                    if (m if isinstance(m, str) else m.decode()).split("|")[1] == str(p)
                ]
                assert theirs == mine  # all of them, once each, in order, types kept
        assert sum(len(messages) for messages in got) == sum(
            len([i for each in items.values() for i in each if int(i[0][6:]) in topics])
            for _, topics in plan
        )
        for port in ports:  # the clients left: so did their subscriptions
            assert wait_until(lambda p=port: server_stats(p)["topics"]["subscriptions"] == 0, 30)  # type: ignore[misc]
        stats = [server_stats(port)["hub"] for port in ports]
        # Process 0 ran publishers 0 and 2 and the finals, process 1 publishers 1 and 3;
        # each received the other's (it had subscribers for all 100 topics).
        assert stats[0]["topic_published"] == 2 * per_publisher + topic_count
        assert stats[1]["topic_published"] == 2 * per_publisher
        assert stats[1]["topic_received"] == 2 * per_publisher + topic_count
        assert stats[0]["topic_received"] == 2 * per_publisher
        assert stats[0]["topic_dropped"] == stats[1]["topic_dropped"] == 0
        print(f"\n400 connections, 10,000 subscriptions, 1,100 publishes: {elapsed:.1f}s")


@pytest.mark.slow
def test_four_processes_each_receive_only_their_own_topics(redis_server: RedisServer) -> None:
    """4 server processes, 1,000 topics, each watched in one process only (250 each): for
    2,000 publishes (2 per topic, from a fifth hub), each process receives from Redis exactly
    the 500 of its own topics, counted in its stats()."""
    with server_processes(redis_server.url, 4, "sharded-by-process") as ports:
        clients = []
        try:
            for k, port in enumerate(ports):
                ws = wsthread.connect(f"ws://127.0.0.1:{port}/", compression=None, max_queue=None)
                clients.append(ws)
                mine = [f"t{n}" for n in range(1000) if n % 4 == k]
                ws.send("sub " + ",".join(mine))
                assert ws.recv(timeout=60) == "subscribed 250 True"
            assert len(redis_channels(redis_server.url, "sharded-by-process:topic:*")) == 1000
            with attached_hubs(redis_server.url, 1, "sharded-by-process") as [(publisher, _)]:
                for round_ in range(2):
                    for n in range(1000):
                        publisher.publish_topic(f"t{n}", f"t{n} round {round_}")
                assert publisher.flush(30)
                assert publisher.stats()["topic_published"] == 2000
            for k, ws in enumerate(clients):
                got = [ws.recv(timeout=30) for _ in range(500)]
                expected = [f"t{n} round {r}" for r in range(2) for n in range(1000) if n % 4 == k]
                assert got == expected
            for port in ports:
                hub = server_stats(port)["hub"]
                assert hub["topic_received"] == 500, hub  # not 2,000
                assert hub["topics_subscribed"] == 250
        finally:
            for ws in clients:
                ws.close()


# -- gunicorn, 2 workers, a WSGI view publishing ---------------------------------------

WSGI_APP = r"""
import os
import flask
from wsthread.hubs import RedisHub
from wsthread.wsgi import middleware

flask_app = flask.Flask(__name__)

def watcher(ws):
    ws.send(f"in {os.getpid()}")
    for topic in ws:
        ws.subscribe(topic)
        ws.send(f"watching {topic}: {ws.server.hub.wait_topics(30)}")

@flask_app.post("/publish/<topic>")
def publish(topic):
    app.server.publish(topic, flask.request.get_data(as_text=True))
    return f"published by {os.getpid()}\n"

app = middleware(flask_app, {"/ws": watcher}, hub=RedisHub(os.environ["WS_REDIS"],
                 channel="gunicorn-topics"), close_timeout=2)
"""


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="gunicorn needs fork()")
def test_gunicorn_two_workers_publish_from_a_view(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """gunicorn -w 2 (gthread) with wsthread.wsgi.middleware and a RedisHub: a POST that
    publishes, whichever worker takes it, reaches the topic's watchers in both workers, and
    only them."""
    pytest.importorskip("flask")
    pytest.importorskip("gunicorn")
    (tmp_path / "topicsapp.py").write_text(WSGI_APP, encoding="utf-8")
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "-w", "2", "-k", "gthread", "--threads", "8"]
    command += ["-b", f"127.0.0.1:{port}", "topicsapp:app"]
    log = open(tmp_path / "gunicorn.log", "w+", encoding="utf-8")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env={**os.environ, "WS_REDIS": redis_server.url},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    watchers: List[Tuple[Any, str, str]] = []  # (connection, topic, pid)
    try:
        deadline = time.monotonic() + 90
        pids: Dict[str, Set[str]] = {"order 1": set(), "order 2": set()}
        # The kernel picks the worker: keep connecting until each worker has a watcher of
        # each topic (a connection to a worker that has both is closed again).
        while any(len(each) < 2 for each in pids.values()):
            assert time.monotonic() < deadline, (pids, (tmp_path / "gunicorn.log").read_text())
            assert process.poll() is None, (tmp_path / "gunicorn.log").read_text()
            try:
                ws = wsthread.connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10)
            except OSError:
                time.sleep(0.2)  # gunicorn still starting
                continue
            pid = ws.recv(timeout=30).split()[-1]
            missing = [topic for topic, seen in pids.items() if pid not in seen]
            if not missing:
                ws.close()
                continue
            ws.send(missing[0])
            assert ws.recv(timeout=30) == f"watching {missing[0]}: True"
            watchers.append((ws, missing[0], pid))
            pids[missing[0]].add(pid)
        publishers = set()

        def post(topic: str, body: str) -> None:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/publish/{topic.replace(' ', '%20')}",
                data=body.encode(),
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                publishers.add(response.read().decode().split()[-1])

        for i in range(10):
            post(f"order {1 + i % 2}", f"order {1 + i % 2} update {i}")
        for topic in pids:  # published after all the others: the last each watcher gets
            post(topic, f"{topic} end")
        for ws, topic, _ in watchers:
            n = int(topic[-1])
            got = [ws.recv(timeout=30) for _ in range(6)]
            # Publishers differ (two workers): compare as sets, exactly once each.
            assert sorted(got[:5]) == sorted(
                f"{topic} update {i}" for i in range(10) if i % 2 == n - 1
            )
            assert got[5] == f"{topic} end"  # and nothing of the other topic
        print(
            f"\n{len(watchers)} watchers in workers {sorted(pids['order 1'])}, "
            f"publishes taken by {sorted(publishers)}"
        )
    finally:
        for ws, _, _ in watchers:
            ws.close()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(timeout=30)
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()
    assert "Traceback" not in (tmp_path / "gunicorn.log").read_text()


@pytest.mark.slow
def test_rooms_example_across_two_processes(redis_server: RedisServer) -> None:
    """examples/rooms.py twice with --redis: members in either process share a room."""
    from test_examples import example

    with (
        example("rooms.py", "--redis", redis_server.url) as one,
        example("rooms.py", "--redis", redis_server.url) as two,
    ):
        alice = wsthread.connect(one.urls[0] + "?name=alice")
        bob = wsthread.connect(two.urls[0] + "?name=bob")
        try:
            for ws in (alice, bob):
                assert json.loads(ws.recv(timeout=20))["type"] == "welcome"
            alice.send("/join lobby")
            assert json.loads(alice.recv(timeout=20))["name"] == "alice"
            bob.send("/join lobby")
            joined = {"type": "joined", "room": "lobby", "name": "bob"}
            assert json.loads(alice.recv(timeout=20)) == json.loads(bob.recv(timeout=20)) == joined
            alice.send("hello from one")
            said = {"type": "message", "room": "lobby", "name": "alice", "text": "hello from one"}
            assert json.loads(bob.recv(timeout=20)) == json.loads(alice.recv(timeout=20)) == said
            bob.close()
            left = {"type": "left", "room": "lobby", "name": "bob"}
            assert json.loads(alice.recv(timeout=20)) == left
        finally:
            alice.close()
            bob.close()
        one.interrupt()
        two.interrupt()
