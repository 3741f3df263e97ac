"""examples/django_app: a message on one WebSocket becomes an ORM write that another client sees.

The project is served as its README says: ``manage.py migrate``, then
``python -m wsthread.wsgi mysite.wsgi:application``, on a free port, with
its SQLite database in the test's temporary directory.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, Set

import pytest
from websockets.sync.client import connect as websockets_connect
from websockets.typing import Origin

import wsthread
from conftest import announced_port, reap

pytest.importorskip("django")

PROJECT = Path(__file__).resolve().parent.parent / "examples" / "django_app"
ROOT = PROJECT.parent.parent


@pytest.fixture
def notes_server(tmp_path: Path) -> Iterator[Dict[str, object]]:
    """The migrated project, served by python -m wsthread.wsgi on a free port."""
    env = dict(os.environ, NOTES_DB=str(tmp_path / "notes.sqlite3"))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
        cwd=PROJECT, env=env, check=True, timeout=120,
    )  # fmt: skip
    log = tmp_path / "server.log"
    with open(log, "w") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "wsthread.wsgi", "mysite.wsgi:application", "--port", "0"],
            cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=errors, text=True,
        )  # fmt: skip
    try:
        port = announced_port(process, log)
        yield {"port": port, "process": process, "log": log, "db": env["NOTES_DB"]}
    finally:
        reap(process)


def next_note(ws: Any, seen: Set[int]) -> Dict[str, Any]:
    """The next note not seen yet on ``ws``.

    A note saved while a client's handler loads the backlog reaches that
    client twice (in the backlog, and broadcast): as the page does, keep
    the first.
    """
    while True:
        note: Dict[str, Any] = json.loads(ws.recv(timeout=10))
        if note["id"] not in seen:
            seen.add(note["id"])
            return note


def test_a_note_saved_over_one_websocket_reaches_another(notes_server: Dict[str, object]) -> None:
    """Client A's message is saved with the ORM; client B is told, the view and the DB agree."""
    port = notes_server["port"]
    url = f"ws://127.0.0.1:{port}/ws"
    with wsthread.connect(url) as alice, wsthread.connect(url) as bob:
        seen: Dict[object, Set[int]] = {alice: set(), bob: set()}
        alice.send("buy milk")
        for ws in (alice, bob):
            note = next_note(ws, seen[ws])
            assert note["text"] == "buy milk" and note["id"] == 1
        bob.send("and bread")
        assert next_note(alice, seen[alice])["text"] == "and bread"
        assert next_note(bob, seen[bob])["id"] == 2
    # An ordinary Django view reads what the handlers wrote.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/notes/", timeout=10) as response:
        texts = [note["text"] for note in json.loads(response.read())["notes"]]
    assert texts == ["and bread", "buy milk"]
    # And so does the database itself.
    with sqlite3.connect(str(notes_server["db"])) as db:
        rows = db.execute("SELECT text FROM notes_note ORDER BY id").fetchall()
    assert rows == [("buy milk",), ("and bread",)]
    # A client that connects later gets the saved notes first.
    with wsthread.connect(url) as carol:
        assert [json.loads(carol.recv(timeout=10))["text"] for _ in range(2)] == texts[::-1]
    process = notes_server["process"]
    assert isinstance(process, subprocess.Popen)
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
    log = Path(str(notes_server["log"])).read_text()
    assert "Traceback" not in log, log


def test_a_view_saves_a_note_and_pushes_it_to_a_browser_like_client(
    notes_server: Dict[str, object],
) -> None:
    """POST /notes/add saves with the ORM, then the middleware's broadcast() reaches a
    client that connected as a page does (websockets' client, with an Origin)."""
    port = notes_server["port"]
    origin = f"http://127.0.0.1:{port}"
    with websockets_connect(
        f"ws://127.0.0.1:{port}/ws", origin=Origin(origin), open_timeout=10
    ) as page:
        page.ping().wait(10)  # the connection is open on the server's side too
        form = urllib.parse.urlencode({"text": "posted by a view"}).encode()
        request = urllib.request.Request(f"{origin}/notes/add", data=form, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 201
            saved = json.loads(response.read())
        pushed = json.loads(page.recv(timeout=10))
        assert pushed == saved and pushed["text"] == "posted by a view"
    with sqlite3.connect(str(notes_server["db"])) as db:
        rows = db.execute("SELECT id, text FROM notes_note").fetchall()
    assert rows == [(saved["id"], "posted by a view")]
    # The view takes posts only, and refuses an empty note without saving it.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{origin}/notes/add", timeout=10)
    assert refused.value.code == 405
    empty = urllib.request.Request(f"{origin}/notes/add", data=b"text=", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(empty, timeout=10)
    assert refused.value.code == 400
    process = notes_server["process"]
    assert isinstance(process, subprocess.Popen)
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
    log = Path(str(notes_server["log"])).read_text()
    assert "Traceback" not in log, log
