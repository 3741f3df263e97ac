"""Masking speed: the ways to XOR a payload with a 4-byte key in Python, and the C one.

    python benchmarks/mask.py [--quick]

Compares, at several payload sizes, in MB/s (10**6 bytes per second):

- ``bigint``: the whole payload as one integer, XORed with the key repeated
  (what wsthread did first);
- ``bigint-sliced``: the same in 4 KiB slices, joined (wsthread's
  pure-Python path, ``frames._apply_mask_python``);
- ``translate``: four strided passes of ``bytes.translate``, one per key
  byte, each with a 256-byte XOR table;
- ``C``: ``wsthread._speedups.apply_mask``, if it was built.

Every implementation is checked against the others before it is timed.
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit
from pathlib import Path
from typing import Callable, Dict, List, Union

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wsthread.sansio import frames  # noqa: E402

Buffer = Union[bytes, bytearray, memoryview]


def bigint(data: Buffer, mask: Buffer) -> bytes:
    """One big integer for the whole payload."""
    length = len(data)
    repeated = (bytes(mask) * (length // 4 + 1))[:length]
    value = int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")
    return value.to_bytes(length, "little")


_TABLES: Dict[int, bytes] = {}


def translate(data: Buffer, mask: Buffer) -> bytes:
    """Four strided ``bytes.translate`` passes, one per byte of the key."""
    data = bytes(data)
    out = bytearray(len(data))
    for index in range(4):
        key = mask[index]
        table = _TABLES.get(key)
        if table is None:
            table = _TABLES[key] = bytes(byte ^ key for byte in range(256))
        out[index::4] = data[index::4].translate(table)
    return bytes(out)


def main() -> int:
    """Print one line per size and implementation."""
    parser = argparse.ArgumentParser(prog="python benchmarks/mask.py")
    parser.add_argument("--quick", action="store_true", help="a very short run")
    args = parser.parse_args()
    budget = 0.02 if args.quick else 0.3  # seconds of timing per figure
    implementations: Dict[str, Callable[[Buffer, Buffer], bytes]] = {
        "bigint": bigint,
        "bigint-sliced": frames._apply_mask_python,
        "translate": translate,
    }
    try:
        from wsthread._speedups import apply_mask
    except ImportError:
        print("wsthread._speedups is not built: no C figures")
    else:
        implementations["C"] = apply_mask
    print(f"masking in MB/s; frames.apply_mask is {'C' if frames.SPEEDUPS else 'pure Python'}")
    sizes: List[int] = [16, 125, 4096, 65536, 2**20]
    print(f"{'bytes':>9} " + " ".join(f"{name:>14}" for name in implementations))
    mask = os.urandom(4)
    for size in sizes:
        data = os.urandom(size)
        expected = bigint(data, mask)
        cells = []
        for function in implementations.values():
            assert function(data, mask) == expected, function
            timer = timeit.Timer(lambda f=function, d=data: f(d, mask))  # type: ignore[misc]
            number, _ = timer.autorange()
            number = max(1, int(number * budget / 0.2))
            best = min(timer.repeat(repeat=3, number=number)) / number
            cells.append(f"{size / best / 1e6:14,.0f}")
        print(f"{size:>9,} " + " ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
