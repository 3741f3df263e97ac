"""wsthread behind a real reverse proxy: Debian's nginx, started on loopback by the test.

nginx gets a throw-away prefix directory and a configuration written for
the test (see ``examples/nginx.conf`` for the documented deployment
version): it forwards the WebSocket upgrade (``Upgrade`` and ``Connection``
headers, HTTP/1.1 upstream) and appends the client's address to
``X-Forwarded-For``. The tests check that a WebSocket works end to end
through it, that the handler sees the real client address only when the
server trusts the proxy, and that server pings keep an idle connection open
past nginx's ``proxy_read_timeout``.

The client side uses the ``websockets`` library, an implementation
independent of wsthread, and binds to 127.0.0.2 so that the client's
address differs from the proxy's (127.0.0.1).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pwd
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple, Union

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import wsthread
from conftest import ServerFactory, echo_handler, wait_or_kill, websockets_tls_connect
from wsthread.server import ServerConnection

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
ROOT = Path(__file__).resolve().parent.parent
CLIENT_HOST = "127.0.0.2"  # all of 127.0.0.0/8 is loopback on Linux

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed"),
]

CONFIG = """
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout {read_timeout}s;
            proxy_send_timeout {read_timeout}s;
        }}
    }}
}}
"""


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def nginx(tmp_path: Path, upstream: Union[int, str], read_timeout: float = 60) -> Iterator[int]:
    """Run nginx in the foreground proxying to ``upstream``; yield its port.

    ``upstream`` is a port on 127.0.0.1, or the path of a Unix socket.
    """
    port = free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{upstream}" if isinstance(upstream, int) else f"unix:{upstream}"
    config = CONFIG.format(prefix=tmp_path, port=port, upstream=address, read_timeout=read_timeout)
    with run_nginx(tmp_path, config, port):
        yield port


@contextlib.contextmanager
def run_nginx(tmp_path: Path, config: str, port: int) -> Iterator[None]:
    """Run nginx with ``config`` until the block ends; it must listen on ``port``."""
    conf = tmp_path / "nginx.conf"
    conf.write_text(config)
    stderr = (tmp_path / "stderr").open("w+")
    process = subprocess.Popen(
        [NGINX, "-p", str(tmp_path), "-c", str(conf), "-e", "stderr"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # wait until it listens (or died)
            assert process.poll() is None, (tmp_path / "stderr").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not start listening"
                time.sleep(0.05)
        yield
    finally:
        process.terminate()  # SIGTERM: fast shutdown
        wait_or_kill(process, 10)
        stderr.close()


def from_client_host(port: int) -> socket.socket:
    """A TCP connection to ``port`` from 127.0.0.2."""
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(CLIENT_HOST, 0))


def test_echo_through_nginx(make_server: ServerFactory, tmp_path: Path) -> None:
    """Text, binary and a 256 KiB message make the round trip through nginx."""
    server = make_server(echo_handler)
    with (
        nginx(tmp_path, server.port) as port,
        connect(f"ws://127.0.0.1:{port}/echo?via=nginx", open_timeout=5, close_timeout=5) as ws,
    ):
        for message in ("hello", b"\x00\xff binary", "é" * 131072):
            ws.send(message)
            assert ws.recv(timeout=5) == message


def test_echo_through_nginx_to_a_unix_socket(tmp_path: Path) -> None:
    """nginx proxies to a server on a Unix socket; trusting "unix" believes its X-Forwarded-For."""
    # nginx's workers run as another user (nobody, when started as root): the
    # directory and the socket must let them in, as in a real deployment.
    sockets = Path(tempfile.mkdtemp(prefix="wsthread-nginx-"))
    sockets.chmod(0o755)
    path = sockets / "app.sock"
    with wsthread.unix_serve(where_from, path, trusted_proxies=["unix"]).start() as server:
        assert server.unix_path == str(path)
        path.chmod(0o666)
        with nginx(tmp_path / "nginx", str(path)) as port:
            assert ask(port) == [CLIENT_HOST, "", "/who?x=1"]
    assert not path.exists()  # the socket file is removed on shutdown
    with wsthread.unix_serve(echo_handler, path).start():
        path.chmod(0o666)
        with (
            nginx(tmp_path / "nginx2", str(path)) as port,
            connect(f"ws://127.0.0.1:{port}/", open_timeout=5, close_timeout=5) as ws,
        ):
            for message in ("hello", b"\x00\xff binary", "é" * 131072):
                ws.send(message)
                assert ws.recv(timeout=5) == message
    sockets.rmdir()


def where_from(ws: ServerConnection) -> None:
    """Say who the client is: client_host, TCP peer, and the path the proxy passed on."""
    assert ws.request is not None
    peer = ws.remote_address[0] if isinstance(ws.remote_address, tuple) else ws.remote_address
    ws.send(json.dumps([ws.client_host, peer, ws.request.target]))
    for _ in ws:
        pass


def ask(port: int, headers: object = None) -> list:  # type: ignore[type-arg]
    """Connect from 127.0.0.2 to ``port`` and return what ``where_from`` says."""
    with connect(
        f"ws://127.0.0.1:{port}/who?x=1",
        sock=from_client_host(port),
        additional_headers=headers,  # type: ignore[arg-type]
        open_timeout=5,
    ) as ws:
        return json.loads(ws.recv(timeout=5))  # type: ignore[no-any-return]


def test_forwarded_for_is_believed_from_a_trusted_proxy_only(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """client_host is the X-Forwarded-For client behind a trusted proxy, the peer otherwise."""
    trusting = make_server(where_from, trusted_proxies=["127.0.0.1"])
    distrusting = make_server(where_from)
    with nginx(tmp_path / "a", trusting.port) as port:
        assert ask(port) == [CLIENT_HOST, "127.0.0.1", "/who?x=1"]
        # A forged header from the client: nginx appends the real address,
        # and the server takes the nearest untrusted one: the real client.
        assert ask(port, {"X-Forwarded-For": "203.0.113.9"}) == [
            CLIENT_HOST,
            "127.0.0.1",
            "/who?x=1",
        ]
    with nginx(tmp_path / "b", distrusting.port) as port:
        assert ask(port) == ["127.0.0.1", "127.0.0.1", "/who?x=1"]
    # Straight to the trusting server from an untrusted address: the header is ignored.
    assert ask(trusting.port, {"X-Forwarded-For": "203.0.113.9"}) == [
        CLIENT_HOST,
        CLIENT_HOST,
        "/who?x=1",
    ]


@pytest.mark.parametrize("ping_interval", [0.3, None])
def test_pings_keep_an_idle_connection_past_proxy_read_timeout(
    make_server: ServerFactory, tmp_path: Path, ping_interval: float
) -> None:
    """nginx drops a tunnel silent for proxy_read_timeout (1 s) unless the server pings."""
    server = make_server(echo_handler, ping_interval=ping_interval, ping_timeout=5)
    with (
        nginx(tmp_path, server.port, read_timeout=1) as port,
        connect(
            f"ws://127.0.0.1:{port}/", ping_interval=None, open_timeout=5, close_timeout=2
        ) as ws,
    ):
        # Idle for 2.5 proxy timeouts: the client sends nothing, and expects nothing.
        idle_until = time.monotonic() + 2.5
        if ping_interval is None:
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=5)  # nginx gives up on the silent tunnel after ~1 s
            assert time.monotonic() < idle_until + 2.5
        else:
            with pytest.raises(TimeoutError):
                ws.recv(timeout=2.5)
            ws.send("still there")
            assert ws.recv(timeout=5) == "still there"


def example_layout(root: Path) -> Tuple[Path, Dict[str, int]]:
    """Copy examples/nginx.conf and certs/localhost.pem, unmodified, under ``root``.

    Returns the copied configuration and the ports it names (upstream, tls,
    http). The copy keeps the repository's layout (the certificate is
    ``../certs/`` from the file) and is readable by everyone, so that an
    unprivileged user can read it wherever the repository lives.
    """
    repository = Path(__file__).resolve().parent.parent
    for relative in ("examples/nginx.conf", "certs/localhost.pem"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(repository / relative, root / relative)
        assert (root / relative).read_bytes() == (repository / relative).read_bytes()
    config = root / "examples" / "nginx.conf"
    text = config.read_text(encoding="utf-8")
    assert not re.search(r"^\s*user\s", text, re.M), "the sample must not need a `user` directive"
    ports = {}
    for name, pattern in [
        ("upstream", r"^\s*server 127\.0\.0\.1:(\d+);"),
        ("tls", r"^\s*listen 127\.0\.0\.1:(\d+) ssl;"),
        ("http", r"^\s*listen 127\.0\.0\.1:(\d+);"),
    ]:
        match = re.search(pattern, text, re.M)
        assert match, f"examples/nginx.conf names no {name} address on 127.0.0.1"
        ports[name] = int(match.group(1))
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return config, ports


def unprivileged() -> Tuple[Dict[str, Any], int]:
    """Popen options that run a command as ``nobody`` when the suite runs as root; its uid."""
    if os.geteuid() != 0:
        return {}, os.geteuid()
    nobody = pwd.getpwnam("nobody")
    return {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}, nobody.pw_uid


def where_from_then_echo(ws: ServerConnection) -> None:
    """Say who the client is (as ``where_from``), then send every message back."""
    assert ws.request is not None
    peer = ws.remote_address[0] if isinstance(ws.remote_address, tuple) else ws.remote_address
    ws.send(json.dumps([ws.client_host, peer, ws.request.target]))
    echo_handler(ws)


def test_example_config_runs_as_is_as_an_unprivileged_user() -> None:
    """examples/nginx.conf, unmodified, started as its header says by a user without
    privileges, proxies wss:// to a wsthread echo on the port it names."""
    as_user, uid = unprivileged()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        root.chmod(0o755)
        config, ports = example_layout(root / "repository")
        for port in ports.values():
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    pytest.skip(f"port {port}, named in examples/nginx.conf, is in use")
        prefix = root / "prefix"  # `mkdir -p` of the header, by that user
        prefix.mkdir()
        os.chown(prefix, uid, -1)
        server = wsthread.serve(
            where_from_then_echo, "127.0.0.1", ports["upstream"], trusted_proxies=["127.0.0.1"]
        )
        process = subprocess.Popen(
            [NGINX, "-p", str(prefix), "-c", str(config), "-e", "stderr"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            **as_user,
        )
        try:
            server.start()
            deadline = time.monotonic() + 10
            while True:  # wait until it listens (or died)
                assert process.poll() is None, process.communicate()[1]
                try:
                    socket.create_connection(("127.0.0.1", ports["tls"]), timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "nginx did not start listening"
                    time.sleep(0.05)
            context = ssl.create_default_context(cafile=str(ROOT / "certs" / "ca.pem"))
            with websockets_tls_connect(
                f"wss://localhost:{ports['tls']}/who?x=1",
                sock=from_client_host(ports["tls"]),
                ssl=context,
                server_hostname="localhost",
                open_timeout=5,
            ) as ws:
                assert json.loads(ws.recv(timeout=5)) == [CLIENT_HOST, "127.0.0.1", "/who?x=1"]
                for message in ["Hello through nginx", b"\x00\x01" * 1000]:
                    ws.send(message)
                    assert ws.recv(timeout=5) == message
            # Plain http:// on the other address only redirects to wss's port.
            plain = http.client.HTTPConnection("127.0.0.1", ports["http"], timeout=5)
            plain.request("GET", "/page?x=1")
            response = plain.getresponse()
            assert response.status == 301
            assert response.getheader("Location") == f"https://127.0.0.1:{ports['tls']}/page?x=1"
            plain.close()
            # What nginx wrote is under the prefix, owned by the user who started it.
            assert (prefix / "nginx.pid").read_text().strip() == str(process.pid)
            assert (prefix / "nginx.pid").stat().st_uid == uid
            assert (prefix / "error.log").exists() and (prefix / "proxy").is_dir()
        finally:
            process.terminate()  # SIGTERM: fast shutdown
            wait_or_kill(process, 10)
            server.shutdown()
            server.server_close()
        errors = process.communicate()[1]
        assert "[emerg]" not in errors and "[alert]" not in errors, errors


def test_example_config_passes_nginx_t() -> None:
    """examples/nginx.conf passes ``nginx -t`` as an unprivileged user; without its
    certificate, the check fails and names it."""
    as_user, uid = unprivileged()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        root.chmod(0o755)
        config, _ = example_layout(root / "repository")
        prefix = root / "prefix"
        prefix.mkdir()
        os.chown(prefix, uid, -1)
        check = [NGINX, "-t", "-p", str(prefix), "-c", str(config), "-e", "stderr"]
        result = subprocess.run(
            check, capture_output=True, text=True, timeout=60, check=False, **as_user
        )
        assert result.returncode == 0 and "test is successful" in result.stderr, result.stderr
        (root / "repository" / "certs" / "localhost.pem").unlink()
        result = subprocess.run(
            check, capture_output=True, text=True, timeout=60, check=False, **as_user
        )
        assert result.returncode != 0 and "localhost.pem" in result.stderr
