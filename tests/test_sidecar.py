"""The sidecar recipe: a WSGI app under wsgiref or uWSGI publishes, the sidecar's clients get it.

``python -m wsthread.sidecar`` holds the WebSockets and is attached to a
real redis-server; ``examples/sidecar/app.py`` publishes through
``HubPublisher`` from under the standard library's wsgiref (in this
process) and under uWSGI with two worker processes (from the package
index). Everything binds 127.0.0.1 on free ports and is stopped by the test.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import wsgiref.simple_server
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import pytest

import wsthread
from conftest import RedisServer, reap, wait_until
from wsthread.hubs import RedisHub
from wsthread.sidecar import HubPublisher

pytest.importorskip("redis")

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "sidecar" / "app.py"


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http(url: str, data: Optional[bytes] = None) -> Tuple[int, bytes]:
    """GET (or POST ``data``): the status and the body, 4xx and 5xx included."""
    try:
        with urllib.request.urlopen(url, data=data, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@contextlib.contextmanager
def sidecar(redis: RedisServer, channel: str) -> Iterator[int]:
    """``python -m wsthread.sidecar`` on a free port; its port once its hub is healthy."""
    process = subprocess.Popen(
        [sys.executable, "-m", "wsthread.sidecar", "--port", "0", "--redis", redis.url]
        + ["--channel", channel, "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("wsthread sidecar on ws://127.0.0.1:"), line
        port = int(line.split("ws://127.0.0.1:")[1].split("/")[0])
        assert wait_until(lambda: http(f"http://127.0.0.1:{port}/health")[0] == 200, 20)
        yield port
        process.send_signal(signal.SIGTERM)
        out, errors = process.communicate(timeout=30)
        assert process.returncode == 0, errors
        assert "Traceback" not in errors, errors
    finally:
        reap(process)


def test_publisher_reaches_a_hubs_clients_topics_and_types(redis_server: RedisServer) -> None:
    """Broadcasts reach everyone, topics only subscribers; text stays text, binary binary."""
    hub = RedisHub(redis_server.url, channel="pub-test")

    def handler(ws: wsthread.ServerConnection) -> None:
        if ws.request is not None and ws.request.query == "topic=news":
            ws.subscribe("news")
        for _ in ws:
            pass

    publisher = HubPublisher(redis_server.url, channel="pub-test")
    with wsthread.serve(handler, "127.0.0.1", 0, hub=hub, close_timeout=2) as server:
        server.start()
        assert hub.wait_healthy(10)
        url = f"ws://127.0.0.1:{server.port}/"
        with wsthread.connect(url) as plain, wsthread.connect(url + "?topic=news") as reader:
            assert wait_until(lambda: len(server.connections) == 2)
            # The handler subscribes on its own thread, after the connection is counted.
            assert wait_until(lambda: any("news" in c.topics for c in server.connections))
            assert hub.wait_topics(10)
            assert publisher.broadcast("to all")
            assert publisher.broadcast(b"\x00\xffbinary")
            assert publisher.publish_json("news", {"headline": "caf\u00e9"})
            assert plain.recv(timeout=5) == "to all" and reader.recv(timeout=5) == "to all"
            assert plain.recv(timeout=5) == b"\x00\xffbinary"
            assert reader.recv(timeout=5) == b"\x00\xffbinary"
            assert reader.recv_json(timeout=5) == {"headline": "caf\u00e9"}
            with pytest.raises(TimeoutError):
                plain.recv(timeout=0.5)  # not subscribed: no news
        server.shutdown()
    assert publisher.stats() == {"published": 3, "dropped": 0}
    with pytest.raises(TypeError, match="broadcast_json"):
        publisher.broadcast({"a": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        publisher.publish("", "no topic")
    publisher.close()


def test_publisher_counts_drops_while_redis_is_down(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis gone: False, counted, one WARNING per outage; back: True again."""
    publisher = HubPublisher(redis_server.url, channel="down", socket_timeout=1)
    assert publisher.broadcast("up")
    redis_server.stop()
    caplog.set_level(logging.WARNING, logger="wsthread")
    assert [publisher.broadcast(f"lost {i}") for i in range(3)] == [False] * 3
    assert publisher.dropped == 3
    assert sum("unreachable" in record.getMessage() for record in caplog.records) == 1
    redis_server.start()
    assert wait_until(lambda: publisher.broadcast("back"), 10)
    assert "reachable again" in caplog.text
    publisher.close()


@contextlib.contextmanager
def wsgiref_app(redis: RedisServer, channel: str) -> Iterator[int]:
    """examples/sidecar/app.py's application under wsgiref, in a thread; its port."""
    os.environ["WS_REDIS"], os.environ["WS_CHANNEL"] = redis.url, channel
    try:
        namespace: Dict[str, Any] = {"__name__": "sidecar_app"}
        exec(compile(APP.read_text(encoding="utf-8"), str(APP), "exec"), namespace)
    finally:
        del os.environ["WS_REDIS"], os.environ["WS_CHANNEL"]
    httpd = wsgiref.simple_server.make_server("127.0.0.1", 0, namespace["application"])
    thread = threading.Thread(target=httpd.serve_forever, name="wsgiref")
    thread.start()
    try:
        yield httpd.server_port
    finally:
        httpd.shutdown()
        thread.join(10)
        httpd.server_close()
        namespace["publisher"].close()


def topic_confirmed(port: int) -> bool:
    """Whether the sidecar on ``port`` has one topic channel confirmed by Redis (its /metrics)."""
    return b"wsthread_hub_topics_subscribed 1\n" in http(f"http://127.0.0.1:{port}/metrics")[1]


def test_a_view_under_wsgiref_reaches_the_sidecars_clients(redis_server: RedisServer) -> None:
    """POST /notes under wsgiref: the sidecar's clients get it; ?topic= only its subscribers."""
    with sidecar(redis_server, "ref") as ws_port, wsgiref_app(redis_server, "ref") as app_port:
        url = f"ws://127.0.0.1:{ws_port}/"
        with wsthread.connect(url) as everyone, wsthread.connect(url + "?topic=desk") as desk:
            assert wait_until(lambda: topic_confirmed(ws_port))  # Redis confirmed it
            status, body = http(f"http://127.0.0.1:{app_port}/notes", b"hello")
            assert status == 200 and json.loads(body)["published"] is True
            assert everyone.recv_json(timeout=10)["note"] == "hello"
            assert desk.recv_json(timeout=10)["note"] == "hello"
            status, _ = http(f"http://127.0.0.1:{app_port}/notes?topic=desk", b"for the desk")
            assert status == 200
            assert desk.recv_json(timeout=10)["note"] == "for the desk"
            with pytest.raises(TimeoutError):
                everyone.recv(timeout=0.5)
        status, body = http(f"http://127.0.0.1:{ws_port}/health")
        assert status == 200 and json.loads(body)["healthy"] is True


UWSGI = shutil.which("uwsgi") or str(Path(sys.executable).with_name("uwsgi"))


@pytest.mark.slow  # several interpreters: the sidecar, uWSGI's master and two workers
@pytest.mark.skipif(not Path(UWSGI).exists(), reason="uWSGI is not installed (pip install uwsgi)")
def test_a_view_under_uwsgi_reaches_the_sidecars_clients(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """uWSGI, two processes, no socket to hand over: each worker's publishes reach the clients."""
    app_port = free_port()
    command = [
        UWSGI,
        "--http-socket",
        f"127.0.0.1:{app_port}",
        "--wsgi-file",
        str(APP),
        "--master",
        "--processes",
        "2",
        "--die-on-term",
        "--home",
        sys.prefix,
        "--env",
        f"WS_REDIS={redis_server.url}",
        "--env",
        "WS_CHANNEL=uw",
    ]
    log = open(tmp_path / "uwsgi.log", "w+", encoding="utf-8")  # noqa: SIM115 - closed below
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        with contextlib.ExitStack() as stack:
            ws_port = stack.enter_context(sidecar(redis_server, "uw"))
            client = stack.enter_context(wsthread.connect(f"ws://127.0.0.1:{ws_port}/"))
            started = wait_until(lambda: _answers(app_port), 60)
            assert started, (tmp_path / "uwsgi.log").read_text()
            pids = set()
            for number in range(20):  # until both uWSGI workers have published
                status, body = http(f"http://127.0.0.1:{app_port}/notes", f"n{number}".encode())
                assert status == 200, body
                event = client.recv_json(timeout=10)
                assert event["note"] == f"n{number}"
                pids.add(event["pid"])
                if len(pids) == 2:
                    break
            assert len(pids) == 2, "one uWSGI worker served every request"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()
    assert "Traceback" not in (tmp_path / "uwsgi.log").read_text()


def _answers(port: int) -> bool:
    """Whether the app on ``port`` answers GET / with 200."""
    try:
        return http(f"http://127.0.0.1:{port}/")[0] == 200
    except OSError:
        return False


NGINX_CONF = ROOT / "examples" / "sidecar" / "nginx.conf"


@pytest.mark.slow  # nginx, the sidecar and an app: several processes
def test_one_origin_through_nginx(redis_server: RedisServer, tmp_path: Path) -> None:
    """examples/sidecar/nginx.conf (its ports made free ones): /ws is the sidecar, / the app."""
    test_nginx = pytest.importorskip("test_nginx")
    if not Path(test_nginx.NGINX).exists():
        pytest.skip("nginx is not installed")
    with sidecar(redis_server, "edge") as ws_port, wsgiref_app(redis_server, "edge") as app_port:
        port = free_port()
        config = NGINX_CONF.read_text(encoding="utf-8")
        for documented, real in (("8080", port), ("8000", app_port), ("8770", ws_port)):
            assert f"127.0.0.1:{documented};" in config  # a listen or proxy_pass line
            config = config.replace(f"127.0.0.1:{documented}", f"127.0.0.1:{real}")
        url = f"ws://127.0.0.1:{port}/ws?topic=desk"
        (tmp_path / "nginx").mkdir()
        with (
            test_nginx.run_nginx(tmp_path / "nginx", config, port),
            wsthread.connect(url) as client,
        ):
            assert wait_until(lambda: topic_confirmed(ws_port))  # Redis confirmed it
            status, _ = http(f"http://127.0.0.1:{port}/notes?topic=desk", b"via nginx")
            assert status == 200
            assert client.recv_json(timeout=10)["note"] == "via nginx"
            status, body = http(f"http://127.0.0.1:{port}/")
            assert status == 200 and body.startswith(b"POST a note")
