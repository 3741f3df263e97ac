"""The benchmarks still run: ``benchmarks/run.py --quick`` and ``benchmarks/mask.py --quick``.

No speed is asserted (speed belongs in the benchmark's table); these tests
only check that every server starts, every workload completes with correct
echoes (or, for the fan-out, every client gets every message, in order), and
the table comes out. ``run.py --quick`` takes about 40 s here for the echo
workloads, and the fan-out smoke run about 15 s.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import run_ok

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


# Measured: 68 s on a loaded 2-core machine (load 3-4); 3.5x that.
@pytest.mark.timeout(240)
def test_run_quick(tmp_path: Path) -> None:
    """The quick run starts the five servers, measures every workload and prints the table."""
    report = tmp_path / "report.json"
    workloads = "ping-pong,pipelined,1 MiB,many,idle,close-storm"  # the fan-out: below
    result = run_ok(
        [
            sys.executable,
            BENCHMARKS / "run.py",
            "--quick",
            "--workloads",
            workloads,
            "--json",
            report,
        ],
        cwd=ROOT,
        timeout=230,
    )
    output = result.stdout + result.stderr
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


@pytest.mark.timeout(90)
def test_fanout_quick(tmp_path: Path) -> None:
    """The fan-out workloads on wsthread and the floor: 0 missing, and the topics hook answers."""
    report = tmp_path / "report.json"
    command = [sys.executable, BENCHMARKS / "run.py", "--quick", "--servers", "wsthread,raw floor"]
    command += ["--workloads", "fanout,fanout-deflate,fanout-stall,topics", "--json", report]
    result = run_ok(command, cwd=ROOT, timeout=80)
    assert "| fan-out | wsthread | raw floor |" in result.stdout, result.stdout[-4000:]
    data = json.loads(report.read_text())["fanout"]
    for name in ("wsthread", "raw floor"):
        for key in ("flood", "paced", "deflate flood", "deflate paced", "stall base", "stall"):
            if key.startswith("stall") and name == "raw floor":
                continue
            figures = data["results"][f"{key} / {name}"]
            assert figures["missing"] == figures["disorder"] == figures["wrong"] == 0, figures
            assert figures["received"] == figures["clients"] * figures["messages"] > 0, figures
    # 30 x 256 KiB for each of the 4 stalled clients: past write_limit (3 MiB in
    # --quick) and the kernel's buffers, closed with 1013 (a frame their full
    # sockets could not take: EOF); none of the 16 readers is.
    stall = data["results"]["stall / wsthread"]
    assert stall["clients"] == 16 and stall["endings"]["server sent 1013"] == 4, stall
    assert stall["endings"].get("1013", 0) + stall["endings"].get("no close frame", 0) == 4
    assert data["unsupported"]["stall / raw floor"].startswith("blocks in sendall()")
    assert data["results"]["topics / raw floor"]["missing"] == 0
    topics = data["results"].get("topics / wsthread") or data["unsupported"]["topics / wsthread"]
    assert (
        isinstance(topics, str)
        and topics.startswith("not available")
        or (topics["missing"] == topics["wrong"] == 0 and topics["received"] > 0)
    ), topics


@pytest.mark.timeout(60)
def test_mask_quick() -> None:
    """The masking comparison checks every implementation against the others and prints MB/s."""
    result = run_ok([sys.executable, BENCHMARKS / "mask.py", "--quick"], cwd=ROOT, timeout=50)
    assert "1,048,576" in result.stdout
