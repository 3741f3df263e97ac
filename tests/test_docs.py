"""The documentation: its snippets run, its option tables match the code, and the site builds.

Conventions in ``docs/**/*.md`` (see ``docs/README.md``):

* every fenced block opened with exactly `````python`` is run, in order, one
  namespace per page, unless the line before it (blank lines aside) is the
  MyST comment ``% norun``;
* a `````text`` block after a ``% output`` comment is what the previous
  Python block must print.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

import wsthread
from conftest import run_ok

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def pages() -> List[Path]:
    """Every Markdown page of the site."""
    return sorted(
        path
        for path in DOCS.rglob("*.md")
        if "_build" not in path.parts and path != DOCS / "README.md"
    )


def snippets(path: Path) -> List[Tuple[int, str, Optional[str]]]:
    """The runnable Python blocks of a page: (line, code, expected output or None)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: List[Tuple[int, str, Optional[str]]] = []
    marker = ""  # the last "% ..." comment seen before a fence
    index = 0
    while index < len(lines):
        line = lines[index]
        stripped = line.strip()
        if stripped.startswith("% "):
            marker = stripped[2:].strip()
        elif stripped.startswith("```"):
            language = stripped[3:].strip()
            end = index + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            body = "\n".join(lines[index + 1 : end]) + "\n"
            if language == "python" and marker != "norun":
                found.append((index + 1, body, None))
            elif language == "text" and marker == "output":
                assert found, f"{path}:{index + 1}: '% output' with no Python block before"
                line_number, code, _ = found[-1]
                found[-1] = (line_number, code, body)
            marker = ""
            index = end
        elif stripped:
            marker = ""
        index += 1
    return found


# Runs the snippets of every page in one fresh interpreter (one namespace per
# page, each block's stdout captured separately; a failure stops its page).
DRIVER = r"""
import contextlib, io, json, sys, traceback
pages = json.load(sys.stdin)
report = {}
for page, blocks in pages:
    namespace = {"__name__": "__main__"}
    results = report[page] = []
    for line, code in blocks:
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                exec(compile(code, f"<{page} line {line}>", "exec"), namespace)
        except BaseException:
            results.append({"line": line, "out": out.getvalue(), "error": traceback.format_exc()})
            break
        results.append({"line": line, "out": out.getvalue(), "error": None})
sys.__stdout__.write(json.dumps(report))
"""

RUNNABLE = [path for path in pages() if snippets(path)]


@pytest.fixture(scope="module")
def snippet_results() -> Dict[str, List[Dict[str, Any]]]:
    """Run the snippets of every page once; each page's outcomes, by path."""
    payload = [(str(path), [(line, code) for line, code, _ in snippets(path)]) for path in RUNNABLE]
    result = run_ok(
        [sys.executable, "-c", DRIVER], input=json.dumps(payload), cwd=ROOT, timeout=240
    )
    report: Dict[str, List[Dict[str, Any]]] = json.loads(result.stdout)
    return report


def test_snippet_extraction_is_not_vacuous() -> None:
    """The tutorial has runnable blocks, some with expected output, and norun ones are skipped."""
    chat = snippets(DOCS / "tutorial" / "chat.md")
    assert len(chat) == 1 and chat[0][2] is not None and "alice sees" in chat[0][2]
    assert all("serve_forever()" not in code for path in pages() for _, code, _ in snippets(path))
    assert len(RUNNABLE) >= 5


@pytest.mark.parametrize(
    "path", RUNNABLE, ids=lambda path: str(path.relative_to(DOCS)).replace("/", ".")
)
def test_doc_snippets_run(path: Path, snippet_results: Dict[str, List[Dict[str, Any]]]) -> None:
    """Every runnable block of the page runs without error and prints what the page says."""
    blocks = snippets(path)
    outcomes = snippet_results[str(path)]
    for (line, _, expected), outcome in zip(blocks, outcomes):
        where = f"{path.relative_to(ROOT)}:{line}"
        assert outcome["error"] is None, f"{where} failed:\n{outcome['error']}"
        if expected is not None:
            assert outcome["out"] == expected, f"{where} printed something else"
    assert len(outcomes) == len(blocks)


@pytest.mark.parametrize("module", ["wsthread.connection.trace", "wsthread.cli.frames"])
def test_docstring_examples(module: str) -> None:
    """The examples in the tracing modules' docstrings are right."""
    failures, tried = doctest.testmod(importlib.import_module(module), verbose=False)
    assert tried > 0
    assert failures == 0


# -- the option tables ---------------------------------------------------------


def option_table(title: str) -> Dict[str, str]:
    """The ``option | default | meaning`` rows under the heading ``title`` of options.md."""
    text = (DOCS / "reference" / "options.md").read_text(encoding="utf-8")
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\|\s*`(\w+)`\s*\|\s*(.*?)\s*\|", line)
        if match:
            rows[match.group(1)] = match.group(2).strip("`")
    return rows


def signature_defaults(function: Any, skip: Tuple[str, ...]) -> Dict[str, str]:
    """Each parameter of ``function`` and its default, as written in the table."""
    defaults = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if name in skip or parameter.kind is parameter.VAR_KEYWORD:
            continue
        default = parameter.default
        if default is parameter.empty:
            defaults[name] = "required"
        elif isinstance(default, int) and not isinstance(default, bool) and default >= 2**16:
            defaults[name] = f"2**{default.bit_length() - 1}"
        else:
            defaults[name] = repr(default)
    return defaults


def assert_table_matches(title: str, expected: Dict[str, str]) -> None:
    """Compare a table of options.md with the code, saying what to fix."""
    table = option_table(title)
    missing = {name: default for name, default in expected.items() if name not in table}
    extra = sorted(set(table) - set(expected))
    wrong = {
        name: (table[name], default)
        for name, default in expected.items()
        if name in table and table[name] != default
    }
    assert not (missing or extra or wrong), (
        f"docs/reference/options.md, table {title}, is out of date: add rows for {missing}, "
        f"remove {extra}, fix the defaults (table, code) of {wrong}"
    )


def test_serve_options_table_matches_the_code() -> None:
    """Every option of serve() is in the reference, with its real default, and no other."""
    expected = signature_defaults(wsthread.serve, ("handler",))
    assert_table_matches("serve()", expected)


def test_connect_options_table_matches_the_code() -> None:
    """Every option of connect() is in the reference, with its real default, and no other."""
    expected = signature_defaults(wsthread.connect, ())
    assert_table_matches("connect()", expected)


# -- the site --------------------------------------------------------------------


@pytest.mark.slow
def test_site_builds_without_warnings(tmp_path: Path) -> None:
    """sphinx-build -W succeeds, and every public name has a reference entry."""
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    pytest.importorskip("furo")
    from sphinx.util.inventory import InventoryFile

    output = tmp_path / "html"
    result = run_ok(
        [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", DOCS, output],
        cwd=ROOT,
        timeout=600,
    )
    assert "WARNING" not in result.stderr

    with open(output / "objects.inv", "rb") as stream:
        inventory = InventoryFile.load(stream, "", lambda base, uri: uri)
    data = getattr(inventory, "data", inventory)  # an object since Sphinx 8.2, a dict before
    documented = {name for entries in data.values() for name in entries}
    public = [f"wsthread.{name}" for name in wsthread.__all__]
    # The public paths re-export their folder's module, where the reference documents them.
    implementations = {
        "wsthread.trace": "wsthread.connection.trace",
        "wsthread.frames": "wsthread.cli.frames",
        "wsthread.wsgi": "wsthread.integrations.wsgi",
        "wsthread.testing": "wsthread.integrations.testing",
    }
    for module, implementation in implementations.items():
        assert importlib.import_module(module).__all__ == (
            importlib.import_module(implementation).__all__
        )
        public += [f"{implementation}.{name}" for name in importlib.import_module(module).__all__]
    missing = [
        name
        for name in public
        if name not in documented
        and name.replace("wsthread.", "wsthread.exceptions.", 1) not in documented
    ]
    assert not missing
    for page in ("tutorial/chat", "howto/tracing", "explanation/frames", "reference/options"):
        assert (output / f"{page}.html").exists(), page


# -- traces shown in the pages ---------------------------------------------------

TRACE_FRAME = re.compile(
    r"(?:\[[^\]]+\] )?(?:client -> server|server -> client)  "
    r"(?:CONTINUATION|TEXT|BINARY|CLOSE|PING|PONG) FIN=[01] RSV=[01]{3} "
    r"(?:MASK=1 key=(?:[0-9a-f]{8}|\.{8})|MASK=0) len=\d+(?: \((?:16|64)-bit length\))?  \S.*"
)


def test_traces_in_the_pages_have_the_current_format() -> None:
    """Every frame line the pages show is in the format the tracer writes today."""
    shown = 0
    for path in pages():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            text = line.strip().lstrip("$ ")
            if re.search(r"(client -> server|server -> client)  [A-Z]+ FIN=", text):
                shown += 1
                assert TRACE_FRAME.fullmatch(text), f"{path.relative_to(ROOT)}:{number}: {text}"
    assert shown >= 20
