"""Time the Autobahn 9.* cases (large messages, many frames) with kosoku.

    python benchmarks/autobahn.py [--cases '9.*'] [--servers wsthread,websockets]

Starts each echo server in turn (``python -m wsthread.echo --no-compression
--max-size 67108864 --quiet``; websockets' sync server with compression off
and no size limit), runs ``kosoku -p 1 -i CASES`` against it, and prints the
wall time, the sum of kosoku's per-case durations, the slowest cases and the
tally of outcomes. kosoku is in the ``test`` extra (Python 3.10+).
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import HERE, Server  # noqa: E402


def commands() -> Dict[str, List[str]]:
    """The servers under test, with room for 16 MiB messages."""
    python = sys.executable
    return {
        "wsthread": [
            python,
            "-m",
            "wsthread.echo",
            "--no-compression",
            "--max-size",
            "67108864",
            "--quiet",
            "--port",
            "0",
        ],
        "websockets": [python, str(HERE / "servers" / "websockets_echo.py"), "0", "none"],
    }


def kosoku() -> str:
    """The kosoku command, from PATH or beside this Python."""
    found = shutil.which("kosoku")
    if found is None:
        candidate = Path(sys.executable).with_name("kosoku")
        if not candidate.exists():
            sys.exit("kosoku is not installed: pip install -e '.[test]' (Python 3.10+)")
        found = str(candidate)
    return found


def main() -> int:
    """Run the cases against each server and print the timings."""
    parser = argparse.ArgumentParser(prog="python benchmarks/autobahn.py")
    parser.add_argument("--cases", default="9.*", help="kosoku -i pattern (default 9.*)")
    parser.add_argument(
        "--servers",
        type=lambda text: [n.strip() for n in text.split(",")],
        default=list(commands()),
        help="comma-separated: " + ", ".join(commands()),
    )
    args = parser.parse_args()
    failed = False
    for name in args.servers:
        server = Server(name, commands()[name])
        server.start()
        port = server.url.rstrip("/").rsplit(":", 1)[1]
        try:
            with tempfile.TemporaryDirectory() as outdir:
                started = time.monotonic()
                subprocess.run(
                    [kosoku(), "-p", "1", "-i", args.cases, "-o", outdir, f"127.0.0.1:{port}"],
                    check=False,
                    timeout=1800,
                    stdout=subprocess.DEVNULL,
                )
                elapsed = time.monotonic() - started
                index = json.loads((Path(outdir) / "index.json").read_text())
        finally:
            server.stop()
        cases = next(iter(index.values()))
        tally = collections.Counter(
            f"{case['behavior']}/{case['behaviorClose']}" for case in cases.values()
        )
        total = sum(case["duration"] for case in cases.values()) / 1000
        slowest = sorted(cases, key=lambda case_id: -cases[case_id]["duration"])[:3]
        print(
            f"{name}: {len(cases)} cases {args.cases} in {elapsed:.1f}s wall,"
            f" {total:.1f}s of case durations; outcomes {dict(tally)}; slowest "
            + ", ".join(f"{c} {cases[c]['duration'] / 1000:.1f}s" for c in slowest),
            flush=True,
        )
        failed |= any(
            case["behavior"] not in ("OK", "NON-STRICT", "INFORMATIONAL") for case in cases.values()
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
