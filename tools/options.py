"""Write the public functions' option parameters from ``wsthread/options.py``, the one declaration.

    python tools/options.py           # say which blocks are out of date (exit 1 if any)
    python tools/options.py --write   # rewrite them

:func:`wsthread.serve`, :func:`wsthread.connect` and the others keep
explicit, typed keyword parameters, so that ``help()`` and an IDE show
every option; this tool writes them, with the call that builds the
options value, from the fields of ``ServerOptions`` and ``ClientOptions``
(their annotations and defaults as written there). A block starts at a
line ``# -- <kind> of <Class> --`` and ends at
``# -- end of <Class> <kind>, written by tools/options.py --``, where ``<kind>`` is ``parameters``
(``name: annotation = default,``) or ``arguments`` (``name=name,``); a
block ``... of <Class> for <use> --`` leaves out the options ``LEFT_OUT[use]`` names.
It also writes the options tables of README.md and
docs/reference/options.md between ``<!-- <Class> table -->`` markers.
``tests/test_options.py`` fails while anything here is out of date.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
OPTIONS = ROOT / "wsthread" / "options.py"
TARGETS = [
    ROOT / "wsthread" / "server" / "server.py",
    ROOT / "wsthread" / "client" / "client.py",
    ROOT / "wsthread" / "integrations" / "testing.py",
    ROOT / "wsthread" / "integrations" / "wsgi.py",
]
TABLES = [ROOT / "README.md", ROOT / "docs" / "reference" / "options.md"]
#: The options a block ``... of <Class> for <use> --`` leaves out, by use.
LEFT_OUT = {
    # A client broadcasts nothing, and its one reader thread keeps the default stack.
    "clients": {"write_limit", "thread_stack_size"},
    # wsthread.testing.connect: an in-process socket pair, no TLS, no keepalive, no User-Agent.
    "testing": {
        "write_limit",
        "thread_stack_size",
        "ping_interval",
        "ping_timeout",
        "ssl",
        "server_hostname",
        "user_agent_header",
    },
    # The middleware: the listening socket and plain HTTP belong to the WSGI server.
    "middleware": {"ssl", "reuse_port", "wsgi", "max_body_size"},
}
BLOCK = re.compile(
    r"^(?P<indent>[ ]*)# -- (?P<kind>parameters|arguments) of (?P<cls>\w+)"
    r"(?: for (?P<use>\w+))? --\n"
    r"(?P<body>.*?)"
    r"^(?P=indent)# -- end of (?P=cls) (?P=kind), written by tools/options.py --$",
    re.M | re.S,
)
TABLE = re.compile(
    r"^<!-- (?P<cls>\w+) table, written by tools/options.py -->\n(?P<body>.*?)"
    r"^<!-- end of (?P=cls) table -->$",
    re.M | re.S,
)

Field = Tuple[str, str, str, str]  # name, annotation, default, doc


def fields() -> Dict[str, List[Field]]:
    """Each options class's fields, bases first, as written in wsthread/options.py."""
    source = OPTIONS.read_text(encoding="utf-8")
    classes: Dict[str, List[Field]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef) or not node.name.endswith("Options"):
            continue
        own: List[Field] = []
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                call = item.value
                assert isinstance(call, ast.Call), f"{node.name}.{item.target.id}: use option()"
                annotation = ast.get_source_segment(source, item.annotation)
                default = ast.get_source_segment(source, call.args[0])
                doc = ast.literal_eval(call.args[1])
                assert annotation and default
                own.append((item.target.id, " ".join(annotation.split()), default, doc))
        inherited: List[Field] = []
        for base in node.bases:
            if isinstance(base, ast.Name) and base.id in classes:
                inherited = list(classes[base.id])
        names = {name for name, *_ in own}
        classes[node.name] = [f for f in inherited if f[0] not in names] + own
    return classes


def render_block(kind: str, indent: str, options: List[Field]) -> str:
    """The lines of one block, without its marker lines."""
    if kind == "parameters":
        return "".join(
            f"{indent}{name}: {annotation} = {default},\n"
            for name, annotation, default, _ in options
        )
    return "".join(f"{indent}{name}={name},\n" for name, *_ in options)


def render_table(options: List[Field]) -> str:
    """A Markdown table of options: name, default, meaning."""
    rows = ["| option | default | meaning |", "| --- | --- | --- |"]
    for name, _, default, doc in options:
        rows.append(f"| `{name}` | `{default}` | {doc} |")
    return "\n".join(rows) + "\n"


def rewrite(text: str, classes: Dict[str, List[Field]]) -> str:
    """``text`` with every block and table written afresh."""

    def block(match: re.Match[str]) -> str:
        skip = LEFT_OUT.get(match.group("use") or "", set())
        chosen = [f for f in classes[match.group("cls")] if f[0] not in skip]
        first, last = match.group(0).split("\n", 1)[0], match.group(0).rsplit("\n", 1)[-1]
        return (
            first + "\n" + render_block(match.group("kind"), match.group("indent"), chosen) + last
        )

    def table(match: re.Match[str]) -> str:
        first, last = match.group(0).split("\n", 1)[0], match.group(0).rsplit("\n", 1)[-1]
        return first + "\n" + render_table(classes[match.group("cls")]) + last

    return TABLE.sub(table, BLOCK.sub(block, text))


def main(argv: List[str]) -> int:
    """Check (or with ``--write``, rewrite) every generated block; 1 when one was stale."""
    parser = argparse.ArgumentParser(description="Write the option parameters and tables.")
    parser.add_argument("--write", action="store_true", help="rewrite the stale blocks")
    args = parser.parse_args(argv)
    classes = fields()
    stale = []
    for path in TARGETS + TABLES:
        text = path.read_text(encoding="utf-8")
        new = rewrite(text, classes)
        if new != text:
            stale.append(path.relative_to(ROOT))
            if args.write:
                path.write_text(new, encoding="utf-8")
    for path in stale:
        print(f"{'rewrote' if args.write else 'out of date'}: {path}")
    return 1 if stale and not args.write else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
