"""The README's two test commands: what CI runs, what pytest runs by default, what it prints."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path
from typing import List

from conftest import FULL_SUITE_COMMAND

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> List[str]:
    """The commands in the fenced blocks of the README's "Test" section, in order."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Test\n", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```\n(.*?)```", section, re.S)]


def ci_variable(name: str) -> str:
    """The value of ``NAME="..."`` in ``.ci/run``, as the shell reads it."""
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    match = re.search(rf'^{name}="((?:[^"\\]|\\.)*)"$', script, re.M)
    assert match, f".ci/run defines no {name}"
    return re.sub(r"\\(.)", r"\1", match.group(1))


def test_readme_names_the_fast_and_the_full_command() -> None:
    """The fast command is plain ``pytest`` with the small extra; the full one selects all."""
    assert readme_commands() == [
        "pip install -e '.[test]' && pytest",
        "pip install -e '.[test-full]' && pytest -m \"slow or not slow\"",
    ]
    assert readme_commands()[1] == FULL_SUITE_COMMAND


def test_ci_runs_exactly_the_readme_commands_fast_then_full() -> None:
    """``.ci/run`` holds both commands verbatim and runs each under ``timeout``, fast first."""
    fast, full = readme_commands()
    assert ci_variable("FAST_COMMAND") == fast
    assert ci_variable("FULL_COMMAND") == full
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    runs = re.findall(r'timeout \d+ bash -c "\$(FAST|FULL)_COMMAND"', script)
    assert runs == ["FAST", "FULL"]


def test_pytest_leaves_out_the_slow_tests_by_default() -> None:
    """pyproject.toml's addopts deselect ``slow``; a later ``-m`` replaces that."""
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    addopts = re.search(r"^addopts = (.*)$", pyproject, re.M)
    assert addopts and "-m 'not slow'" in addopts.group(1)


def test_the_fast_run_says_how_to_run_the_full_suite() -> None:
    """A default run that leaves slow tests out ends with their number and the full command."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q"]
        + ["tests/test_autobahn.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert re.search(r"\b3 tests marked slow were left out\b", result.stdout), result.stdout
    assert FULL_SUITE_COMMAND in result.stdout
    everything = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q"]
        + ["-m", "slow or not slow", "tests/test_autobahn.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "3 tests collected" in everything.stdout and "left out" not in everything.stdout


def test_the_test_extra_is_small_and_the_full_one_contains_it() -> None:
    """``test`` is the handful the fast suite needs; ``test-full`` has those and the rest."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    extras = config["options.extras_require"]

    def names(extra: str) -> List[str]:
        lines = [line.strip() for line in extras[extra].splitlines() if line.strip()]
        return [re.split(r"[<>=;\s\[]", line, maxsplit=1)[0].lower() for line in lines]

    small, full = names("test"), names("test-full")
    assert len(small) <= 7 and {"pytest", "pytest-timeout", "websockets"} <= set(small)
    assert set(small) <= set(full)
    assert {"kosoku", "django", "gunicorn", "playwright", "sphinx", "atheris"} <= set(full)
