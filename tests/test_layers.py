"""The package's layers: imports run one way, core <- connection <- server/client <- the rest.

Every import in ``wsthread/`` is read from the source with :mod:`ast`, those
inside functions and under ``if TYPE_CHECKING:`` included, and resolved to
the module it names. Two rules hold: no import cycle, and no module imports
from a layer above its own (or, within the server/client floor, from the
other side). A new cycle or an upward import fails here, naming the edge.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "wsthread"

#: The floor of each folder (or top-level module); a module may import its own floor or lower.
LAYERS: Dict[str, float] = {
    "exceptions": 0,
    "_speedups": 0,
    "sansio": 1,
    "runtime": 1,
    "options": 1.5,  # wsthread/options.py: the options value, used by every layer above
    "connection": 2,
    "server": 3,
    "client": 3,
    "integrations": 4,
    "cli": 5,
}
#: Top-level modules that are public faces re-exporting the folders: the top floor.
TOP = 6


def module_name(path: Path) -> str:
    """``wsthread/server/registry.py`` -> ``wsthread.server.registry`` (``__init__`` -> package)."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> Dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: Set[str]) -> Set[str]:
    """The package's modules that ``name`` imports, wherever in the file the import is."""
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                stem = ".".join(anchor + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # "from package import submodule" names a module; otherwise the stem is the module.
            targets = [f"{stem}.{alias.name}" for alias in node.names] + [stem]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("wsthread"):
                found.add(target)
    return found


def graph() -> Dict[str, Set[str]]:
    """The import graph of the package's modules."""
    modules = all_modules()
    known = set(modules)
    edges = {name: imports_of(name, path, known) for name, path in modules.items()}
    # "from .x import y" also lists the package stem; drop edges to a module's own parents.
    for name, targets in edges.items():
        targets.difference_update({t for t in targets if name.startswith(t + ".")})
    return edges


def layer(name: str) -> Tuple[float, str]:
    """A module's floor and the folder (or top-level module) that sets it."""
    parts = name.split(".")
    if len(parts) == 1:
        return TOP, "wsthread"
    head = parts[1]
    if head in LAYERS:
        return LAYERS[head], head
    return TOP, head


def test_the_graph_is_read() -> None:
    """The reader finds the imports it should (a check on the checker)."""
    edges = graph()
    assert "wsthread.sansio.frames" in edges["wsthread.sansio.protocol"]
    assert "wsthread.connection.writer" in edges["wsthread.connection.connection"]
    assert "wsthread.exceptions" in edges["wsthread.sansio.frames"]
    assert len(edges) > 40


def test_no_import_cycle() -> None:
    """No chain of imports leads a module back to itself, type-only imports included."""
    edges = graph()
    cycles: List[List[str]] = []
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_imports_run_down_the_layers() -> None:
    """No module imports from a floor above its own, nor across server <-> client."""
    wrong = []
    for name, targets in graph().items():
        floor, folder = layer(name)
        for target in targets:
            target_floor, target_folder = layer(target)
            if target_floor > floor:
                wrong.append(f"{name} (floor {floor}) imports {target} (floor {target_floor})")
            elif target_floor == floor and folder != target_folder and floor != TOP:
                wrong.append(f"{name} imports {target} across the {folder}/{target_folder} floor")
    assert not wrong, "\n".join(sorted(wrong))


@pytest.mark.parametrize("folder", sorted(f for f in LAYERS if (PACKAGE / f).is_dir()))
def test_every_folder_is_a_known_layer(folder: str) -> None:
    """Each folder of the package has a floor, so a new folder must be placed on purpose."""
    assert (PACKAGE / folder / "__init__.py").exists()


def test_no_unplaced_folder() -> None:
    """A folder not in LAYERS fails: place it on a floor first."""
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    folders.discard("__pycache__")
    assert folders <= set(LAYERS), f"folders without a floor: {sorted(folders - set(LAYERS))}"


def test_readme_layout_is_up_to_date() -> None:
    """README.md's "Layout" section is what ``python tools/layout.py`` prints from the package."""
    tools = PACKAGE.parent / "tools"
    spec = importlib.util.spec_from_file_location("layout", tools / "layout.py")
    assert spec is not None and spec.loader is not None
    layout = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(layout)
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    assert layout.readme_section(readme).rstrip() == layout.section().rstrip(), (
        "README.md's Layout section is stale: run python tools/layout.py --write"
    )
