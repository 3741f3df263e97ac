"""Options as one value: declared once (wsthread/options.py), checked at the call, passed down."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import logging
from pathlib import Path
from typing import Any, Callable, Dict, Set

import pytest

import wsthread
import wsthread.testing
import wsthread.wsgi
from wsthread.options import ClientOptions, ConnectionOptions, ServerOptions

ROOT = Path(__file__).resolve().parent.parent


def load_tool() -> Any:
    spec = importlib.util.spec_from_file_location("options_tool", ROOT / "tools" / "options.py")
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_generated_parameters_are_up_to_date() -> None:
    """The public functions' option parameters are what tools/options.py writes from the fields."""
    tool = load_tool()
    classes = tool.fields()
    stale = [
        str(path.relative_to(ROOT))
        for path in tool.TARGETS + tool.TABLES
        if tool.rewrite(path.read_text(encoding="utf-8"), classes)
        != path.read_text(encoding="utf-8")
    ]
    assert not stale, f"run python tools/options.py --write: {stale}"


PUBLIC = [
    (wsthread.serve, ServerOptions, set()),
    (wsthread.unix_serve, ServerOptions, set()),
    (wsthread.connect, ClientOptions, {"write_limit", "thread_stack_size"}),
    (wsthread.unix_connect, ClientOptions, {"write_limit", "thread_stack_size"}),
    (
        wsthread.testing.connect,
        ClientOptions,
        {"write_limit", "thread_stack_size", "ping_interval", "ping_timeout", "ssl"}
        | {"server_hostname", "user_agent_header"},
    ),
    (wsthread.wsgi.middleware, ServerOptions, {"ssl", "reuse_port", "wsgi", "max_body_size"}),
]


@pytest.mark.parametrize(("function", "options", "left_out"), PUBLIC)
def test_public_keywords_are_the_fields(
    function: Callable[..., Any], options: type, left_out: Set[str]
) -> None:
    """Each public function takes every field (but those it leaves out) with the field's default."""
    parameters = inspect.signature(function).parameters
    fields = {each.name: each.default for each in dataclasses.fields(options)}
    for name, default in fields.items():
        if name in left_out:
            assert name not in parameters, f"{function.__name__} takes {name}"
            continue
        assert name in parameters, f"{function.__name__} lacks the option {name}"
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert parameters[name].default == default, name


def test_every_field_has_a_meaning() -> None:
    """Each option's field says in one line what it means."""
    for options in (ConnectionOptions, ServerOptions, ClientOptions):
        for each in dataclasses.fields(options):
            doc = each.metadata.get("doc", "")
            assert doc and "\n" not in doc, f"{options.__name__}.{each.name}"


BAD: Dict[str, Any] = {
    "max_size": -1,
    "max_queue": "16",
    "open_timeout": "10",
    "ping_interval": -5,
    "close_timeout": True,
    "write_limit": 1.5,
    "receive_budget": "lots",
    "compression": "gzip",
    "origins": "https://example.com",
    "subprotocols": [1],
    "process_request": "not callable",
    "logger": "wsthread",
    "server_header": 42,
    "max_connections": -1,
    "ssl": "yes",
}


@pytest.mark.parametrize(("name", "value"), sorted(BAD.items()))
def test_serve_refuses_a_bad_value_naming_the_option(name: str, value: Any) -> None:
    """A bad value raises TypeError or ValueError at serve(), naming the option; nothing listens."""
    with pytest.raises((TypeError, ValueError), match=name):
        wsthread.serve(lambda ws: None, "127.0.0.1", 0, **{name: value})


@pytest.mark.parametrize("name", ["max_size", "open_timeout", "origin", "compression"])
def test_connect_refuses_a_bad_value_before_connecting(name: str) -> None:
    """connect() checks its options before it opens a socket: no server is needed to see it."""
    value = {"max_size": -1, "open_timeout": "x", "origin": 5, "compression": "gzip"}[name]
    with pytest.raises((TypeError, ValueError), match=name):
        wsthread.connect("ws://127.0.0.1:9/", **{name: value})


def test_the_value_is_frozen_and_passed_down_whole() -> None:
    """server.options is one frozen value; every connection gets that same value."""
    seen: Dict[str, Any] = {}

    def handler(ws: Any) -> None:
        seen["options"] = ws.options
        ws.send("ok")

    server = wsthread.serve(handler, "127.0.0.1", 0, max_size=1234, close_timeout=3).start()
    try:
        assert isinstance(server.options, ServerOptions)
        with pytest.raises(dataclasses.FrozenInstanceError):
            server.options.max_size = 1  # type: ignore[misc]
        with wsthread.connect(f"ws://127.0.0.1:{server.port}/", max_queue=4) as ws:
            assert ws.recv(timeout=5) == "ok"
            assert isinstance(ws.options, ClientOptions) and ws.options.max_queue == 4
        assert seen["options"] is server.options
        # The names the options had as attributes still read them.
        assert server.max_size == 1234 and server.close_timeout == 3  # type: ignore[attr-defined]
        assert server.wsgi_app is None and server.ssl_context is None  # type: ignore[attr-defined]
    finally:
        server.shutdown()


def test_replace_checks_too() -> None:
    """A copy with changes is checked like a new value."""
    options = ServerOptions(max_size=10)
    assert options.replace(max_size=20).max_size == 20 and options.max_size == 10
    with pytest.raises(ValueError, match="max_size"):
        options.replace(max_size=-2)


def test_a_logger_adapter_is_accepted() -> None:
    """``logger`` takes a Logger (or a LoggerAdapter), nothing else."""
    ServerOptions(logger=logging.getLogger("x"))
    with pytest.raises(TypeError, match="logger"):
        ServerOptions(logger=print)  # type: ignore[arg-type]
