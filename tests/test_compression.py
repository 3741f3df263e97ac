"""wsthread.Deflate over real sockets: what serve() and connect() negotiate and exchange."""

from __future__ import annotations

import json

import pytest

import wsthread
from conftest import ServerFactory, run_ok


def test_default_client_against_default_server(make_server: ServerFactory) -> None:
    """The default offer is Chromium's; the default server answers with 4 KiB windows."""
    server = make_server()
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        assert ws.request.headers.get("Sec-WebSocket-Extensions") == (
            "permessage-deflate; client_max_window_bits"
        )
        assert ws.response.headers.get("Sec-WebSocket-Extensions") == (
            "permessage-deflate; client_max_window_bits=12"
        )
        for i in range(200):
            message = json.dumps({"type": "message", "user": "alice", "text": "hi " * i})
            ws.send(message)
            assert ws.recv(timeout=10) == message


def test_client_offers_are_tried_in_order(make_server: ServerFactory) -> None:
    """Several offers go in one header; the server takes the first it can accept."""
    server = make_server(compression=wsthread.Deflate(client_no_context_takeover=True))
    offers = [
        wsthread.Deflate(server_no_context_takeover=True, server_max_window_bits=10, level=9),
        wsthread.Deflate(),
    ]
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/", compression=offers) as ws:
        assert (
            str(ws.request.headers.get("Sec-WebSocket-Extensions")).count("permessage-deflate") == 2
        )
        assert ws.response.headers.get("Sec-WebSocket-Extensions") == (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
            " server_max_window_bits=10; client_max_window_bits=12"
        )
        big = "x" * 100_000 + "y" * 100_000
        ws.send(big)
        assert ws.recv(timeout=10) == big


def test_compression_off_on_either_side(make_server: ServerFactory) -> None:
    """compression=None on the server: no extension answered; on the client: none offered."""
    server = make_server(compression=None)
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
    server = make_server()
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/", compression=None) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.request.headers
        assert "Sec-WebSocket-Extensions" not in ws.response.headers


def test_invalid_compression_values_are_refused() -> None:
    """A misspelt compression option fails at once, before any connection."""
    with pytest.raises(ValueError):
        wsthread.serve(lambda ws: None, "127.0.0.1", 0, compression="gzip")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        wsthread.connect("ws://127.0.0.1:9/", compression="gzip")  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_compression_benchmark_smoke() -> None:
    """benchmarks/compression.py still runs: every server negotiates as expected, the tables
    come out. No memory or speed figure is asserted here (they belong in its table)."""
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = root / "benchmarks" / "compression.py"
    result = run_ok([sys.executable, script, "--idle", "40", "--more", "3"], cwd=root, timeout=220)
    output = result.stdout + result.stderr
    assert "| default: 12-bit windows, memLevel 5, released |" in result.stdout
    for row in ("wsthread default | 40/40", "wsthread off | 0/40", "websockets | 40/40"):
        assert f"| {row} |" in result.stdout, output[-4000:]
