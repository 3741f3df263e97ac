"""``python -m wsthread.echo`` as a user runs it: start, echo, Ctrl-C, exit 0."""

from __future__ import annotations

import pathlib
import signal
import socket

import pytest
import trustme
from websockets.sync.client import connect

from conftest import (
    assert_clean_exit,
    assert_going_away,
    echo_process,
    raw_websocket,
    run,
    websockets_tls_connect,
    write_certfile,
)


def test_echo_cli_serves_and_exits_cleanly_on_ctrl_c() -> None:
    """The CLI prints its URL, echoes text and binary, and exits 0 on SIGINT."""
    with echo_process() as (process, url):
        assert url.startswith("ws://127.0.0.1:")
        with connect(url) as ws:
            ws.send("hello")
            assert ws.recv(timeout=5) == "hello"
            ws.send(b"\x00\xff")
            assert ws.recv(timeout=5) == b"\x00\xff"
            process.send_signal(signal.SIGINT)
            assert_going_away([ws], timeout=10)
        assert_clean_exit(process, timeout=15)


def test_echo_cli_tls_with_given_certificate(tmp_path: pathlib.Path) -> None:
    """`--tls --certfile` serves wss:// with that certificate."""
    certfile = tmp_path / "server.pem"
    client_context = write_certfile(trustme.CA(), certfile)
    with echo_process("--tls", "--certfile", str(certfile)) as (process, url):
        assert url.startswith("wss://localhost:")
        with websockets_tls_connect(url, ssl=client_context) as ws:
            ws.send("over tls")
            assert ws.recv(timeout=5) == "over tls"
        process.send_signal(signal.SIGINT)
        assert_clean_exit(process, timeout=15)


def test_echo_cli_no_compression() -> None:
    """`--no-compression` refuses permessage-deflate."""
    with echo_process("--no-compression") as (_, url), connect(url) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        ws.send("plain")
        assert ws.recv(timeout=5) == "plain"


def test_echo_cli_max_connections() -> None:
    """`--max-connections 1` answers a second client with 503."""
    from websockets.exceptions import InvalidStatus

    with echo_process("--max-connections", "1") as (_, url), connect(url) as ws:
        ws.send("first")
        assert ws.recv(timeout=5) == "first"
        with pytest.raises(InvalidStatus) as info:
            connect(url)
        assert info.value.response.status_code == 503


@pytest.mark.parametrize("interval", ["0.2", "none"])
def test_echo_cli_ping_interval(interval: str) -> None:
    """`--ping-interval 0.2` pings a silent client within a second; `none` never pings."""
    with echo_process("--ping-interval", interval) as (_, url):
        sock, _ = raw_websocket(int(url.rstrip("/").rsplit(":", 1)[1]))
        with sock:
            sock.settimeout(1.5)
            try:
                first = sock.recv(2)
            except socket.timeout:
                first = b""
        if interval == "none":
            assert first == b"", "a ping arrived with --ping-interval none"
        else:
            assert first[:1] == b"\x89", f"expected a ping frame, got {first!r}"


def test_echo_cli_port_in_use_is_one_line_not_a_traceback() -> None:
    """A second echo server on the same port says so in one line and exits 1."""
    import sys

    with echo_process() as (_, url):
        port = url.rsplit(":", 1)[1].rstrip("/")
        result = run([sys.executable, "-m", "wsthread.echo", "--port", port], timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"python -m wsthread.echo: cannot listen on 127.0.0.1:{port}: Address already in use"
        " (another server listens there: stop it, or choose another --port)"
    )
