"""connect() through real proxies started on loopback: tinyproxy (HTTP CONNECT),
danted and microsocks (SOCKS5), plus the proxy environment variables."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator, List, Optional

import pytest

import wsthread
from conftest import ServerFactory, run, run_ok, wait_or_kill
from wsthread.client.proxy import ProxyError, parse_proxy, proxy_from_environment

PROXY_VARIABLES = ["http_proxy", "https_proxy", "all_proxy", "no_proxy"]


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port() -> int:
    """A loopback port where nothing listens (connections are refused)."""
    return free_port()


class Daemon:
    """A proxy server process in the foreground, on a free loopback port."""

    def __init__(self, command: List[str], port: int, log: Optional[Path] = None) -> None:
        self.port = port
        self.log = log
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 20
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{command[0]} exited: {self.process.stderr.read()}")  # type: ignore[union-attr]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{command[0]} did not listen on port {port}")
            time.sleep(0.05)  # polling a process we do not control

    def log_text(self) -> str:
        """What the proxy logged so far."""
        assert self.log is not None
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL; wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            wait_or_kill(self.process, 10)
        if self.process.stderr is not None:
            self.process.stderr.close()


def need(binary: str, package: str) -> str:
    """The path of a Debian proxy binary, or skip (CI installs it: see .ci/run)."""
    path = shutil.which(binary) or next(
        (p for p in (f"/usr/bin/{binary}", f"/usr/sbin/{binary}") if Path(p).exists()), None
    )
    if path is None:
        pytest.skip(f"{binary} is not installed (apt-get install {package})")
    return path


@contextlib.contextmanager
def tinyproxy(tmp_path: Path, auth: Optional[str] = None) -> Iterator[Daemon]:
    """Debian's tinyproxy on loopback; ``auth`` is ``"user password"`` for BasicAuth."""
    binary = need("tinyproxy", "tinyproxy")
    port = free_port()
    log = tmp_path / f"tinyproxy-{port}.log"
    config = tmp_path / f"tinyproxy-{port}.conf"
    lines = [
        f"Port {port}",
        "Listen 127.0.0.1",
        "Timeout 30",
        "MaxClients 50",
        "Allow 127.0.0.1",
        "LogLevel Info",
        f'LogFile "{log}"',
    ]
    # No ConnectPort line: CONNECT is allowed to every port (the test servers' are random).
    if auth is not None:
        lines.append(f"BasicAuth {auth}")
    config.write_text("\n".join(lines) + "\n")
    daemon = Daemon([binary, "-d", "-c", str(config)], port, log)
    try:
        yield daemon
    finally:
        daemon.stop()


@contextlib.contextmanager
def danted(tmp_path: Path) -> Iterator[Daemon]:
    """Debian's dante-server, SOCKS5 without authentication, on loopback."""
    binary = need("danted", "dante-server")
    port = free_port()
    log = tmp_path / f"danted-{port}.log"
    config = tmp_path / f"danted-{port}.conf"
    config.write_text(
        f"logoutput: {log}\n"
        f"internal: 127.0.0.1 port = {port}\n"
        "external: 127.0.0.1\n"
        "clientmethod: none\n"
        "socksmethod: none\n"
        "client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }\n"
        "socks pass { from: 0.0.0.0/0 to: 0.0.0.0/0 log: connect error }\n"
    )
    daemon = Daemon(
        [binary, "-f", str(config), "-N", "1", "-p", str(tmp_path / f"danted-{port}.pid")],
        port,
        log,
    )
    try:
        yield daemon
    finally:
        daemon.stop()


@contextlib.contextmanager
def microsocks(user: str, password: str) -> Iterator[Daemon]:
    """Debian's microsocks: SOCKS5 with username/password authentication, on loopback.

    danted's ``username`` method checks system accounts (``/etc/passwd`` and
    shadow), which a test should not create; microsocks takes a user name
    and password on its command line.
    """
    binary = need("microsocks", "microsocks")
    port = free_port()
    daemon = Daemon([binary, "-i", "127.0.0.1", "-p", str(port), "-u", user, "-P", password], port)
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy variable set, in either case, for the test to set its own."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def echo_once(uri: str, **options: Any) -> None:
    """Connect, echo one compressed message and close cleanly."""
    with wsthread.connect(uri, open_timeout=10, **options) as ws:
        message = "through the proxy " * 20
        ws.send(message)
        assert ws.recv(timeout=10) == message


class EchoServers:
    """A plain and a TLS echo server, each reached once through the proxy under test."""

    def __init__(
        self, make_server: ServerFactory, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
    ) -> None:
        self.plain = make_server()
        self.secure = make_server(ssl=server_ssl)
        self.client_ssl = client_ssl

    def echo_through(self, proxy: str, secure_proxy: Optional[str] = None) -> None:
        """ws:// to 127.0.0.1, then wss:// to localhost (TLS end to end inside the tunnel).

        The wss:// connection goes through ``secure_proxy`` when one is given.
        """
        echo_once(f"ws://127.0.0.1:{self.plain.port}/", proxy=proxy)
        echo_once(
            f"wss://localhost:{self.secure.port}/",
            proxy=secure_proxy or proxy,
            ssl=self.client_ssl,
        )


@pytest.fixture
def echo_servers(
    make_server: ServerFactory, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> EchoServers:
    """The plain and the TLS echo server for a proxy test."""
    return EchoServers(make_server, server_ssl, client_ssl)


# -- HTTP CONNECT (tinyproxy) ------------------------------------------------------


def test_http_connect_ws_and_wss(echo_servers: EchoServers, tmp_path: Path) -> None:
    """ws:// and wss:// (TLS end to end inside the tunnel) through tinyproxy, no auth."""
    with tinyproxy(tmp_path) as proxy:
        echo_servers.echo_through(f"http://127.0.0.1:{proxy.port}")
        log = proxy.log_text()
    plain, secure = echo_servers.plain, echo_servers.secure
    assert f"127.0.0.1:{plain.port}" in log and f"localhost:{secure.port}" in log, log


def test_http_connect_with_basic_auth(echo_servers: EchoServers, tmp_path: Path) -> None:
    """tinyproxy's BasicAuth: the right credentials open ws:// and wss://; wrong ones fail."""
    with tinyproxy(tmp_path, auth="alice s3cret") as proxy:
        echo_servers.echo_through(f"http://alice:s3cr%65t@127.0.0.1:{proxy.port}")
        for bad in (f"http://alice:wrong@127.0.0.1:{proxy.port}", f"http://127.0.0.1:{proxy.port}"):
            with pytest.raises(ProxyError) as caught:
                wsthread.connect(f"ws://127.0.0.1:{echo_servers.plain.port}/", proxy=bad)
            # The proxy's own status is carried: tinyproxy 1.11 answers a CONNECT
            # without credentials with 407, and one with wrong credentials with 401.
            assert caught.value.proxy_status in (401, 407)
            assert caught.value.status == caught.value.proxy_status
            assert f"refused: {caught.value.proxy_status} " in str(caught.value)
            assert "wrong" not in str(caught.value)


def test_http_connect_to_an_unreachable_server(tmp_path: Path) -> None:
    """tinyproxy cannot reach the server: ProxyError with tinyproxy's status."""
    with tinyproxy(tmp_path) as proxy, pytest.raises(ProxyError) as caught:
        wsthread.connect(f"ws://127.0.0.1:{closed_port()}/", proxy=f"http://127.0.0.1:{proxy.port}")
    assert caught.value.proxy_status is not None and caught.value.proxy_status >= 500
    assert "refused" in str(caught.value)


# -- SOCKS5 (danted, microsocks) ----------------------------------------------------


def test_socks5_and_socks5h_through_dante(echo_servers: EchoServers, tmp_path: Path) -> None:
    """danted without auth: ws:// by address (socks5) and wss:// by name (socks5h)."""
    with danted(tmp_path) as proxy:
        echo_servers.echo_through(
            f"socks5://127.0.0.1:{proxy.port}", f"socks5h://127.0.0.1:{proxy.port}"
        )
        secure = echo_servers.secure
        assert wait_for(lambda: f".{secure.port}" in proxy.log_text()), proxy.log_text()


def test_socks5h_resolves_names_on_the_proxy(
    make_server: ServerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With socks5h the client looks nothing up; with socks5 it resolves the name itself."""
    server = make_server()
    real = socket.getaddrinfo
    looked_up: List[str] = []

    def spy(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "localhost":
            looked_up.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", spy)
    with danted(tmp_path) as proxy:
        echo_once(f"ws://localhost:{server.port}/", proxy=f"socks5h://127.0.0.1:{proxy.port}")
        assert looked_up == []
        echo_once(f"ws://localhost:{server.port}/", proxy=f"socks5://127.0.0.1:{proxy.port}")
        assert looked_up == ["localhost"]


def test_socks5_unreachable_server(tmp_path: Path) -> None:
    """danted cannot reach the server: ProxyError with the SOCKS5 reply code."""
    with danted(tmp_path) as proxy, pytest.raises(ProxyError) as caught:
        wsthread.connect(
            f"ws://127.0.0.1:{closed_port()}/", proxy=f"socks5://127.0.0.1:{proxy.port}"
        )
    assert caught.value.socks_reply in (1, 4, 5)
    assert caught.value.status == 502
    assert "SOCKS5 reply" in str(caught.value)


def test_socks5_username_password(make_server: ServerFactory) -> None:
    """microsocks with a user: the right password connects, a wrong one or none: 407."""
    server = make_server()
    uri = f"ws://127.0.0.1:{server.port}/"
    with microsocks("bob", "hunter2") as proxy:
        echo_once(uri, proxy=f"socks5://bob:hunter2@127.0.0.1:{proxy.port}")
        with pytest.raises(ProxyError, match="refused the user name and password") as caught:
            wsthread.connect(uri, proxy=f"socks5://bob:nope@127.0.0.1:{proxy.port}")
        assert caught.value.status == 407
        with pytest.raises(ProxyError, match="authentication methods") as caught:
            wsthread.connect(uri, proxy=f"socks5h://127.0.0.1:{proxy.port}")
        assert caught.value.status == 407


# -- proxies that fail --------------------------------------------------------------


@contextlib.contextmanager
def hanging_up_proxy(reply: bytes) -> Iterator[int]:
    """A listener that reads the client's first bytes, sends ``reply`` and hangs up."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with conn:
                    conn.recv(1024)
                    conn.sendall(reply)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield port
    finally:
        listener.close()
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        thread.join(timeout=10)


@pytest.mark.parametrize(
    "scheme, reply",
    [("http", b""), ("http", b"HTTP/1.1 200 Conn"), ("socks5", b""), ("socks5", b"\x05\x00")],
)
def test_proxy_closing_mid_handshake(scheme: str, reply: bytes) -> None:
    """A proxy that hangs up before (or in the middle of) its answer: a clear ProxyError."""
    with (
        hanging_up_proxy(reply) as port,
        pytest.raises(ProxyError, match="closed the connection") as caught,
    ):
        wsthread.connect("ws://127.0.0.1:9/", proxy=f"{scheme}://127.0.0.1:{port}")
    assert caught.value.status == 502


def test_proxy_not_listening() -> None:
    """Nothing listens where the proxy should be: ProxyError naming the proxy."""
    port = closed_port()
    with pytest.raises(ProxyError, match=f"127.0.0.1:{port}: cannot connect to the proxy"):
        wsthread.connect("ws://127.0.0.1:9/", proxy=f"http://u:secret@127.0.0.1:{port}")


# -- the environment ----------------------------------------------------------------


def test_environment_variables_choose_the_proxy(no_proxy_env: pytest.MonkeyPatch) -> None:
    """wss:// uses HTTPS_PROXY, ws:// HTTP_PROXY, both fall back to ALL_PROXY; NO_PROXY wins."""
    env = no_proxy_env
    assert proxy_from_environment("example.com", secure=False) is None
    env.setenv("ALL_PROXY", "socks5h://all:1080")
    assert proxy_from_environment("example.com", secure=True) == "socks5h://all:1080"
    env.setenv("HTTP_PROXY", "http://plain:3128")
    env.setenv("HTTPS_PROXY", "http://secure:3128")
    assert proxy_from_environment("example.com", secure=False) == "http://plain:3128"
    assert proxy_from_environment("example.com", secure=True) == "http://secure:3128"
    env.setenv("NO_PROXY", "localhost,.internal.example,10.0.0.1")
    for host in ("localhost", "db.internal.example", "10.0.0.1"):
        assert proxy_from_environment(host, secure=True) is None
    assert proxy_from_environment("example.com", secure=True) == "http://secure:3128"


def test_no_proxy_is_honoured_by_connect(
    make_server: ServerFactory, no_proxy_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """HTTP_PROXY is used by default; NO_PROXY and proxy=None bypass it."""
    server = make_server()
    uri = f"ws://127.0.0.1:{server.port}/"
    no_proxy_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(ProxyError, match="cannot connect to the proxy"):
        wsthread.connect(uri)
    echo_once(uri, proxy=None)
    no_proxy_env.setenv("NO_PROXY", "127.0.0.1")
    echo_once(uri)
    no_proxy_env.delenv("NO_PROXY")
    with tinyproxy(tmp_path) as proxy:
        no_proxy_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        echo_once(uri)
        assert f"127.0.0.1:{server.port}" in proxy.log_text()


def test_parse_proxy() -> None:
    """Schemes, default ports, percent-encoded credentials; the password never shows."""
    proxy = parse_proxy("http://us%40er:p%3Ass@proxy.example")
    assert (proxy.scheme, proxy.host, proxy.port) == ("http", "proxy.example", 8080)
    assert (proxy.username, proxy.password) == ("us@er", "p:ss")
    assert "p:ss" not in str(proxy)
    assert parse_proxy("proxy.example:3128").scheme == "http"
    assert parse_proxy("socks5h://[::1]").port == 1080
    for bad in ("https://proxy.example", "ftp://x", "http://"):
        with pytest.raises(ValueError):
            parse_proxy(bad)


def wait_for(predicate: Any, timeout: float = 10) -> bool:
    """Poll ``predicate`` (a proxy's log catching up) until true or ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_command_line_proxy_option(make_server: ServerFactory, tmp_path: Path) -> None:
    """python -m wsthread --proxy URL goes through tinyproxy; a dead proxy: exit 1, one line."""
    import sys

    server = make_server()
    uri = f"ws://127.0.0.1:{server.port}/"
    with tinyproxy(tmp_path) as proxy:
        done = run_ok(
            [sys.executable, "-m", "wsthread", "--proxy", f"http://127.0.0.1:{proxy.port}", uri],
            input="hello\n",
            timeout=60,
        )
        assert "< hello" in done.stdout
        assert f"127.0.0.1:{server.port}" in proxy.log_text()
    dead = f"http://127.0.0.1:{closed_port()}"
    done = run([sys.executable, "-m", "wsthread", "--proxy", dead, uri], input="", timeout=60)
    assert done.returncode == 1
    assert "cannot connect to the proxy" in done.stderr and "Traceback" not in done.stderr
