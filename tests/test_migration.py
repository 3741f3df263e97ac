"""The "Coming from websockets" guide covers every name and option of the installed websockets.sync.

The guide (``docs/howto/websockets.md``) has one table per part of the API;
its first column names the websockets side. Each test here takes the names
from the installed ``websockets`` with ``inspect`` and fails, naming what
to add, when a new websockets version brings an option the guide does not
mention yet. The wsthread side of each row is checked too: where the guide
names a wsthread option, that option exists.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Dict, List, Set

import pytest
import websockets.sync.client
import websockets.sync.server

import wsthread
from conftest import ServerFactory, wait_until

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "howto" / "websockets.md"


def table(title: str) -> Dict[str, str]:
    """The rows of the table under ``## title``: first column's name -> second column."""
    text = GUIDE.read_text(encoding="utf-8")
    assert f"## {title}\n" in text, f"the guide has no section {title!r}"
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\|\s*`([^`(]+)[^`]*`\s*\|\s*(.*?)\s*\|", line)
        if match and match.group(1) != "---":
            rows[match.group(1).strip()] = match.group(2)
    assert rows, f"no rows under {title!r}"
    return rows


def parameters(function: object) -> Set[str]:
    """The parameter names of ``function``, ``**kwargs`` written as such."""
    names = set()
    for name, parameter in inspect.signature(function).parameters.items():  # type: ignore[arg-type]
        names.add(f"**{name}" if parameter.kind is parameter.VAR_KEYWORD else name)
    return names


def missing(required: Set[str], rows: Dict[str, str]) -> Set[str]:
    return {name for name in required if name not in rows}


def test_guide_covers_every_parameter_of_serve() -> None:
    """Every parameter of websockets.sync.server.serve (and unix_serve) has a row."""
    rows = table("`serve()` options")
    required = parameters(websockets.sync.server.serve)
    required |= parameters(websockets.sync.server.unix_serve) - {"path"}
    assert not missing(required, rows), f"add rows for {sorted(missing(required, rows))}"


def test_guide_covers_every_parameter_of_connect() -> None:
    """Every parameter of websockets.sync.client.connect (and unix_connect) has a row."""
    rows = table("`connect()` options")
    required = parameters(websockets.sync.client.connect)
    required |= parameters(websockets.sync.client.unix_connect) - {"path"}
    assert not missing(required, rows), f"add rows for {sorted(missing(required, rows))}"


def test_guide_covers_every_public_name() -> None:
    """Everything in websockets.sync.server.__all__ and websockets.sync.client.__all__."""
    rows = table("Module-level names")
    required = {f"websockets.sync.server.{name}" for name in websockets.sync.server.__all__}
    required |= {f"websockets.sync.client.{name}" for name in websockets.sync.client.__all__}
    assert not missing(required, rows), f"add rows for {sorted(missing(required, rows))}"


def test_guide_covers_every_connection_method_and_attribute() -> None:
    """Every public attribute of websockets' sync ServerConnection and ClientConnection."""
    rows = table("Connection methods and attributes")
    required = {"__iter__"}
    for cls in (websockets.sync.server.ServerConnection, websockets.sync.client.ClientConnection):
        required |= {name for name in dir(cls) if not name.startswith("_")}
    assert not missing(required, rows), f"add rows for {sorted(missing(required, rows))}"


@pytest.mark.parametrize(
    ("title", "function", "skip"),
    [
        ("`serve()` options", wsthread.serve, set()),
        ("`connect()` options", wsthread.connect, set()),
    ],
)
def test_wsthread_options_named_in_the_guide_exist(
    title: str, function: object, skip: Set[str]
) -> None:
    """Where the second column names a wsthread option (`name`), wsthread has it."""
    ours = parameters(function) - skip
    named = set()
    for second in table(title).values():
        match = re.fullmatch(r"`(\w+)`", second.strip())
        if match:
            named.add(match.group(1))
    assert named and named <= ours, f"not options of wsthread: {sorted(named - ours)}"


def test_wsthread_connection_names_in_the_guide_exist(make_server: ServerFactory) -> None:
    """Every connection attribute the guide gives as the wsthread equivalent exists, both sides."""
    names = set()
    for second in table("Connection methods and attributes").values():
        match = re.match(r"`(\w+)", second.strip())
        if match and match.group(1) != "for":
            names.add(match.group(1))
    accepted: List[wsthread.ServerConnection] = []
    server = make_server(lambda ws: (accepted.append(ws), ws.recv()))
    with wsthread.connect(f"ws://127.0.0.1:{server.port}/") as client:
        assert wait_until(lambda: bool(accepted))
        for connection in (client, accepted[0]):
            absent = sorted(name for name in names if not hasattr(connection, name))
            if isinstance(connection, wsthread.ServerConnection):
                absent = [name for name in absent if name != "response"]  # the client's
            assert not absent, f"{type(connection).__name__} has no {absent}"
        client.send("done")
