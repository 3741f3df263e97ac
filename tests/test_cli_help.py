"""Every command-line program's ``--help``: it works, and it is plain text, not reStructuredText."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from typing import List

import pytest

from conftest import run_ok

ROOT = Path(__file__).resolve().parent.parent

# Markup that belongs in docstrings and never in a terminal.
MARKUP = re.compile(r"``|:(?:mod|func|class|meth|attr|exc|doc|ref):`|^\.\. |::$", re.M)


def programs() -> List[List[str]]:
    """The command lines of every program in the package, the examples and the benchmarks."""
    found = []
    for path in sorted((ROOT / "wsthread").glob("*.py")):
        if '__name__ == "__main__"' in path.read_text(encoding="utf-8"):
            module = "wsthread" if path.stem == "__main__" else f"wsthread.{path.stem}"
            found.append(["-m", module])
    for folder in ("examples", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            if '__name__ == "__main__"' in text and "argparse" in text:
                found.append([str(path.relative_to(ROOT))])
    return found


PROGRAMS = programs()

# Packages of the test-full extra (not of test) that a program may import at
# its top: without them installed, its --help cannot run, and the test skips.
OPTIONAL = {"flask", "flask_sock", "django", "gunicorn", "waitress", "redis", "picows", "uvloop"}
# wsthread modules that need one of those when a program uses them at its top
# (the sidecar example builds its Redis publisher as it is imported).
NEEDS = {"wsthread.sidecar": "redis"}


def optional_imports(command: List[str]) -> List[str]:
    """The packages of ``OPTIONAL`` that the program's file imports at its top level."""
    if command[0] == "-m":
        return []
    tree = ast.parse((ROOT / command[0]).read_text(encoding="utf-8"))
    names = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names += [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(NEEDS.get(node.module, node.module.split(".")[0]))
    return sorted(set(names) & OPTIONAL)


def test_every_program_is_found() -> None:
    """The package's three programs and the examples are all checked."""
    names = [" ".join(command) for command in PROGRAMS]
    assert {"-m wsthread", "-m wsthread.echo", "-m wsthread.frames"} <= set(names)
    assert "examples/legacy_app.py" in names and len(names) >= 10


@pytest.mark.parametrize("command", PROGRAMS, ids=" ".join)
def test_help_is_plain_text(command: List[str]) -> None:
    """``--help`` exits 0 and shows no reStructuredText markup."""
    for package in optional_imports(command):
        pytest.importorskip(package)
    result = run_ok([sys.executable, *command, "--help"], cwd=ROOT, timeout=120)
    assert result.stdout.startswith("usage:")
    found = MARKUP.search(result.stdout)
    assert found is None, f"markup {found.group(0)!r} in:\n{result.stdout}"
