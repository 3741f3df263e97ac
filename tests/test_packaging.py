"""Packaging: the console scripts run, and the wheel carries the built extension but no C source."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    ("script", "expected"),
    [("wsthread", "python -m wsthread"), ("wsthread-echo", "python -m wsthread.echo")],
)
def test_console_script_runs(script: str, expected: str) -> None:
    """``wsthread`` and ``wsthread-echo`` are installed beside the interpreter and answer --help."""
    path = BIN / script
    assert path.exists(), f"{script} is not installed in {BIN}: pip install -e ."
    done = subprocess.run(
        [str(path), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


@pytest.mark.slow
def test_wheel_has_no_c_source(tmp_path: Path) -> None:
    """A wheel built from the checkout has the package, its stub and py.typed, and no ``.c``."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = tmp_path.glob("wsthread-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not [name for name in names if name.endswith(".c")]
    assert "wsthread/py.typed" in names and "wsthread/_speedups.pyi" in names
    assert "wsthread/cli/echo.py" in names and "wsthread/connection/writer.py" in names
    entry_points = next(name for name in names if name.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "wsthread = wsthread.cli.client:main" in text
