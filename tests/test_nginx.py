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
import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator, Union

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import wsthread
from conftest import ServerFactory, echo_handler, run, run_ok, wait_or_kill, websockets_tls_connect
from wsthread.server import ServerConnection

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
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


def test_the_sample_config_in_examples_works(make_server: ServerFactory, tmp_path: Path) -> None:
    """examples/nginx.conf (test ports, its certificate path) proxies wss:// to wsthread."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    # Where the file's header installs the development pair (conf dir/wsthread/).
    (tmp_path / "wsthread").mkdir()
    leaf.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "wsthread" / "localhost.pem"))
    server = make_server(where_from, trusted_proxies=["127.0.0.1"])
    tls_port, http_port = free_port(), free_port()
    site = (Path(__file__).resolve().parent.parent / "examples" / "nginx.conf").read_text()
    for old, new in [
        ("127.0.0.1:8765", f"127.0.0.1:{server.port}"),
        ("listen 443 ssl;", f"listen 127.0.0.1:{tls_port} ssl;"),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen [::]:443 ssl;", ""),
        ("listen [::]:80;", ""),
    ]:
        assert old in site, old
        site = site.replace(old, new)
    (tmp_path / "site.conf").write_text(site)
    config = (
        f"daemon off; pid {tmp_path}/nginx.pid; error_log stderr warn;\n"
        "events { worker_connections 64; }\n"
        f"http {{ access_log off; client_body_temp_path {tmp_path}/body; "
        f"proxy_temp_path {tmp_path}/proxy; include {tmp_path}/site.conf; }}\n"
    )
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with (
        run_nginx(tmp_path, config, tls_port),
        websockets_tls_connect(
            f"wss://localhost:{tls_port}/who?x=1",
            sock=from_client_host(tls_port),
            ssl=context,
            server_hostname="localhost",
            open_timeout=5,
        ) as ws,
    ):
        assert json.loads(ws.recv(timeout=5)) == [CLIENT_HOST, "127.0.0.1", "/who?x=1"]


def test_example_config_passes_nginx_t(tmp_path: Path) -> None:
    """examples/nginx.conf, installed as its header says, passes ``nginx -t``."""
    root = Path(__file__).resolve().parent.parent
    # A configuration directory laid out like Debian's /etc/nginx.
    (tmp_path / "conf.d").mkdir()
    shutil.copy(root / "examples" / "nginx.conf", tmp_path / "conf.d" / "wsthread.conf")
    (tmp_path / "wsthread").mkdir()
    shutil.copy(root / "certs" / "localhost.pem", tmp_path / "wsthread" / "localhost.pem")
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\n"
        "error_log stderr warn;\n"
        "events { worker_connections 64; }\n"
        f"http {{ access_log off; include {tmp_path}/conf.d/*.conf; }}\n",
        encoding="utf-8",
    )
    check = [NGINX, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")]
    result = run_ok(check, timeout=60)
    assert "test is successful" in result.stderr
    # Without the certificate, as the issue found it, the check fails.
    (tmp_path / "wsthread" / "localhost.pem").unlink()
    result = run(check, timeout=60)
    assert result.returncode != 0 and "localhost.pem" in result.stderr
