"""The sans-I/O core imports nothing that does I/O, threads or clocks."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import List

import pytest

SANSIO = Path(__file__).resolve().parents[2] / "wsthread" / "sansio"

FORBIDDEN = frozenset(
    {
        "socket",
        "ssl",
        "threading",
        "_thread",
        "select",
        "selectors",
        "time",
        "asyncio",
        "socketserver",
    }
)


def imported_modules(tree: ast.AST) -> List[str]:
    """Every absolute module name a syntax tree imports, statically or by a literal name."""
    names: List[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                names.append(node.module)
                # "from x import y" may name a submodule: record "x.y" too.
                names += [f"{node.module}.{alias.name}" for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
        ):
            names.append(node.args[0].value)
    return names


def forbidden_in(names: List[str]) -> List[str]:
    """The names whose top-level package is one the core must not use."""
    return [name for name in names if name.split(".")[0] in FORBIDDEN]


def sansio_files() -> List[Path]:
    """Every Python file of the sans-I/O package, subpackages included."""
    return sorted(SANSIO.rglob("*.py"))


def test_sansio_package_found() -> None:
    """The scan sees the frames, utf8 and protocol modules (so it is not vacuous)."""
    names = {path.name for path in sansio_files()}
    assert {"__init__.py", "frames.py", "utf8.py", "protocol.py"} <= names


@pytest.mark.parametrize("path", sansio_files(), ids=lambda path: path.name)
def test_module_imports_no_io(path: Path) -> None:
    """The module imports no socket, ssl, threading, select, selectors, time or asyncio."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    offenders = forbidden_in(imported_modules(tree))
    assert not offenders, f"{path.name} imports {offenders}"


@pytest.mark.parametrize(
    "source",
    [
        "import socket",
        "import ssl as tls",
        "import os, threading",
        "import asyncio.events",
        "from select import select",
        "from selectors import DefaultSelector",
        "from time import monotonic",
        "from socketserver import TCPServer",
        "def f():\n    import time\n",
        "try:\n    import ssl\nexcept ImportError:\n    pass\n",
        "__import__('socket')",
        "importlib.import_module('threading')",
    ],
)
def test_checker_catches_forbidden_imports(source: str) -> None:
    """The checker itself flags every import form, nested ones included."""
    assert forbidden_in(imported_modules(ast.parse(source)))


@pytest.mark.parametrize(
    "source",
    [
        "import struct, codecs, os",
        "from ..exceptions import ProtocolError",
        "from .frames import Frame",
        "from typing import Optional",
        "import timeit_like_but_not_time",
    ],
)
def test_checker_allows_harmless_imports(source: str) -> None:
    """The checker does not flag relative imports or unrelated modules."""
    assert not forbidden_in(imported_modules(ast.parse(source)))
