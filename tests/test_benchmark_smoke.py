"""The benchmarks still run: ``benchmarks/run.py --quick`` and ``benchmarks/mask.py --quick``.

No speed is asserted (speed belongs in the benchmark's table); these tests
only check that every server starts, every workload completes with correct
echoes, and the table comes out. ``run.py --quick`` takes about 40 s here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


@pytest.mark.timeout(150)
def test_run_quick(tmp_path: Path) -> None:
    """The quick run starts the five servers, measures every workload and prints the table."""
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "run.py"), "--quick", "--json", str(report)],
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=140,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "| workload | wsthread | websockets | raw floor |" in result.stdout, output[-4000:]
    data = json.loads(report.read_text())
    names = ("wsthread", "websockets", "raw floor", "ws asyncio", "picows")
    for workload in ("ping-pong", "pipelined", "1 MiB", "many"):
        for name in names:
            figures = data["results"][f"{workload} / {name}"]
            assert figures["errors"] == 0, (workload, name, figures)
            assert figures["count"] > 0, (workload, name, figures)
    for name in names:
        idle = data["idle"][name]
        held = [count for count, _ in idle["steps"]]
        assert held == [50, 200], (name, idle)
        if name in ("wsthread", "websockets", "raw floor"):  # the others are event loops
            assert idle["steps"][-1][1]["Threads"] > idle["baseline"]["Threads"], (name, idle)
        (storm,) = data["close-storm"][name]
        assert storm["count"] == 200 and not storm["failed"], (name, storm)
        assert storm["close_seconds"] > 0 and storm["open_seconds"] > 0, (name, storm)


@pytest.mark.timeout(60)
def test_mask_quick() -> None:
    """The masking comparison checks every implementation against the others and prints MB/s."""
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "mask.py"), "--quick"],
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "1,048,576" in result.stdout
