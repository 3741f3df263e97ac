"""The kernel's futex hash grown with the process's threads (wsthread/runtime/futexes.py).

Each check runs in a fresh interpreter: the hash and its bookkeeping are
process-wide, and this test process has started threads of its own.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from typing import Optional, Tuple

from wsthread.runtime import futexes

# Starts 600 threads through wsthread's own start_thread (as the server does for
# each connection), then prints the hash size before and after.
SCRIPT = textwrap.dedent(
    """
    import threading
    from wsthread.connection.threads import start_thread
    from wsthread.runtime import futexes

    released = threading.Event()
    few = threading.Thread(target=released.wait)
    few.start()  # multi-threaded: the kernel made its private hash
    before = futexes.slots()
    threads = [threading.Thread(target=released.wait, daemon=True) for _ in range(600)]
    for thread in threads:
        start_thread(thread, 256 * 1024)
    print(before, futexes.slots())
    released.set()
    """
)


def kernel_version() -> Tuple[int, int]:
    """This machine's Linux version as (major, minor); (0, 0) elsewhere."""
    if not sys.platform.startswith("linux"):
        return (0, 0)
    found = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def run_script() -> Tuple[Optional[int], Optional[int]]:
    """The hash size before and after 600 threads, from a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    before, after = done.stdout.split()
    return (None if before == "None" else int(before), None if after == "None" else int(after))


def test_the_hash_grows_to_four_buckets_a_thread() -> None:
    """Linux 6.16+ gives a private hash sized for the CPUs; start_thread grows it with the threads.

    Elsewhere (older kernels, other systems) there is nothing to ask, and
    nothing is asked: no error.
    """
    before, after = run_script()
    if kernel_version() >= (6, 16):
        assert before is not None and before < 4 * 600
        assert after is not None and after >= 4 * 600, (before, after)
        assert after & (after - 1) == 0  # a power of two, as the kernel requires
    else:
        assert after == before


def test_make_room_never_shrinks_and_never_raises() -> None:
    """Asking for fewer threads than there is room for changes nothing."""
    slots = futexes.slots()
    futexes.make_room(1)
    futexes.make_room(2)
    assert futexes.slots() == slots
