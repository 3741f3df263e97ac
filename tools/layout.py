"""Print the README's "Layout" section from the package: its folders, each module's first line.

    python tools/layout.py           # print the section
    python tools/layout.py --write   # replace the section in README.md

The folders are listed bottom layer first, as ``tests/test_layers.py``
orders them; each module is named with the first line of its docstring.
``tests/test_layers.py`` fails when README.md and this output differ.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "wsthread"
README = ROOT / "README.md"
FOLDERS = ["sansio", "runtime", "connection", "server", "client", "integrations", "cli"]
HEADING = "## Layout"


def markdown(text: str) -> str:
    """reST inline markup as Markdown: ``:class:`~a.B``` -> `` `B` ``, double backquotes -> one."""
    text = re.sub(r":\w+:`~?([^`]+)`", lambda m: "`" + m.group(1).rpartition(".")[2] + "`", text)
    return text.replace("``", "`")


def first_line(path: Path) -> str:
    """The first line of a module's docstring, in Markdown (empty when it has none)."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return markdown(doc.strip().splitlines()[0]) if doc.strip() else ""


def section() -> str:
    """The whole "Layout" section, heading included, ending with a newline."""
    lines: List[str] = [
        HEADING,
        "",
        "The folders of `wsthread/` are its layers, from the bottom up; a module",
        "imports only from its own layer and those listed before it (server and",
        "client never from each other), and there is no import cycle:",
        "`tests/test_layers.py` checks both, and that this list is up to date",
        "(`python tools/layout.py --write` writes it from the modules' docstrings).",
        "",
        f"- `wsthread/exceptions.py` — {first_line(PACKAGE / 'exceptions.py')}",
        f"- `wsthread/options.py` — {first_line(PACKAGE / 'options.py')}",
    ]
    for folder in FOLDERS:
        lines.append(f"- `wsthread/{folder}/` — {first_line(PACKAGE / folder / '__init__.py')}")
        for module in sorted((PACKAGE / folder).glob("*.py")):
            if module.name != "__init__.py":
                lines.append(f"  - `{module.name}` — {first_line(module)}")
    faces = sorted(
        p.name
        for p in PACKAGE.glob("*.py")
        if p.name not in ("__init__.py", "exceptions.py", "options.py", "_speedups.pyi")
    )
    lines += [
        f"- `wsthread/__init__.py` — {first_line(PACKAGE / '__init__.py')}",
        "- The public paths users import and run, each re-exporting its folder's module: "
        + ", ".join(f"`{name}`" for name in faces)
        + ".",
        "- `wsthread/_speedups.c` — the optional C accelerator for masking.",
        "- `tests/` (mirroring the layers; `tests/sansio/` without sockets), `examples/`,",
        "  `docs/`, `benchmarks/`, `fuzzing/`, `stress/`, `tools/`, `certs/` (development",
        "  certificates).",
    ]
    return "\n".join(lines) + "\n"


def readme_section(text: str) -> str:
    """The "Layout" section as README.md has it, up to the next ``## `` heading."""
    start = text.index(HEADING + "\n")
    end = text.find("\n## ", start + len(HEADING))
    return text[start : end + 1 if end != -1 else len(text)]


def main(argv: List[str]) -> int:
    """Print the section, or write it into README.md with ``--write``."""
    parser = argparse.ArgumentParser(description="Print or write the README's Layout section.")
    parser.add_argument("--write", action="store_true", help="replace the section in README.md")
    args = parser.parse_args(argv)
    if not args.write:
        sys.stdout.write(section())
        return 0
    text = README.read_text(encoding="utf-8")
    old = readme_section(text)
    README.write_text(text.replace(old, section() + ("\n" if old.endswith("\n\n") else "")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
