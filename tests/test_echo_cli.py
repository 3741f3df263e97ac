"""``python -m wsthread.echo`` as a user runs it: start, echo, Ctrl-C, exit 0."""

from __future__ import annotations

import signal
import subprocess
import sys

from websockets.sync.client import connect


def test_echo_cli_serves_and_exits_cleanly_on_ctrl_c() -> None:
    """The CLI prints its URL, echoes text and binary, and exits 0 on SIGINT."""
    process = subprocess.Popen(
        [sys.executable, "-m", "wsthread.echo", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("wsthread echo server on ws://127.0.0.1:"), line
        url = line.split()[4]
        with connect(url) as ws:
            ws.send("hello")
            assert ws.recv(timeout=5) == "hello"
            ws.send(b"\x00\xff")
            assert ws.recv(timeout=5) == b"\x00\xff"
            process.send_signal(signal.SIGINT)
            # The open connection is closed by the server with 1001.
            try:
                ws.recv(timeout=10)
            except Exception as exc:  # websockets raises ConnectionClosedOK
                assert getattr(exc, "rcvd", None) is not None
                assert exc.rcvd.code == 1001  # type: ignore[attr-defined]
        assert process.wait(timeout=15) == 0
        _, err = process.communicate(timeout=5)
        assert "Traceback" not in err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_echo_cli_tls_with_given_certificate(tmp_path: object) -> None:
    """`--tls --certfile` serves wss:// with that certificate and no plaintext."""
    import pathlib
    import ssl

    import trustme

    folder = pathlib.Path(str(tmp_path))
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(folder / "server.pem"))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wsthread.echo",
            "--port",
            "0",
            "--tls",
            "--certfile",
            str(folder / "server.pem"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("wsthread echo server on wss://localhost:"), line
        url = line.split()[4]
        with connect(url, ssl=client_context) as ws:
            ws.send("over tls")
            assert ws.recv(timeout=5) == "over tls"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
