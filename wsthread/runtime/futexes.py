"""Room in the kernel's futex hash for thousands of waiting threads (Linux 6.16 and newer).

Every lock a Python thread blocks on (``threading.Lock``, the GIL's mutex
and condition variable) is a *futex*: the kernel keeps the waiting threads
in a hash table, and a wake-up walks the one bucket the lock's address
falls in. Since Linux 6.16 a multi-threaded process gets a hash of its own,
sized for the CPUs, not for the threads: 16 buckets on a 2-core machine.
With 20,000 connection threads each blocked on its own lock, that is about
1,250 waiters per bucket, so every wake-up in the process (each hand-over
of the GIL among them) walks a long list under the bucket's spinlock.
Measured here at 19,900 idle connections (``benchmarks/idle20k.py``):
``futex_wake`` took 37% of the server's CPU while it was idle, and the
connections' wind-down took 41-102 s after the clients left, against
1.1-1.8 s for 5,000; with the hash grown, 5-6 s.

:func:`make_room` asks for a bigger private hash (``prctl(PR_FUTEX_HASH)``)
as the process's thread count grows: four buckets a thread, as the kernel
itself gives four per CPU, up to :data:`MOST_SLOTS`. On other systems and
older kernels the call is refused once and never made again (older Linux
kernels share one big hash between all processes, which does not have the
problem).

Called by :func:`wsthread.connection.threads.start_thread` before each
thread it starts; the common case is one comparison.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, Optional

from .forks import after_fork_in_child

__all__ = ["MOST_SLOTS", "make_room", "slots"]

logger = logging.getLogger("wsthread")

#: The largest private futex hash asked for (each bucket is one cache line: 4 MiB).
MOST_SLOTS = 1 << 16

_PR_FUTEX_HASH = 78
_SET_SLOTS = 1
_GET_SLOTS = 2

_lock = threading.Lock()
# Below this many threads the kernel's own size is left alone; by then the
# process is multi-threaded and has its private hash (or chose the shared one).
_FEW = 32
# How many threads the hash has room for now; beyond it, ask for more.
_room = _FEW
# The C library's prctl(), None before the first use, False where it cannot work.
_prctl: Any = None


def _load_prctl() -> Any:
    """The C library's ``prctl`` function, or ``False`` where there is none to use."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes  # not in every build of Python: then nothing is done

        function = ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return False
    function.restype = ctypes.c_int
    function.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    return function


def slots() -> Optional[int]:
    """The size of this process's private futex hash; ``None`` where it has none to ask about.

    0 means the process uses the kernel's shared hash.
    """
    global _prctl
    with _lock:
        if _prctl is None:
            _prctl = _load_prctl()
        if _prctl is False:
            return None
        result = int(_prctl(_PR_FUTEX_HASH, _GET_SLOTS, 0, 0, 0))
    return None if result < 0 else result


def make_room(threads: int) -> None:
    """Make sure the futex hash suits ``threads`` threads: grow it, never shrink it.

    Never raises: a kernel that refuses (too old, or not Linux) is asked
    nothing again.
    """
    global _room, _prctl
    if threads <= _room:
        return  # the common case, without the lock
    with _lock:
        if threads <= _room or _prctl is False:
            return
        if _prctl is None:
            _prctl = _load_prctl()
            if _prctl is False:
                _room = sys.maxsize
                return
        wanted = 16
        while wanted < 4 * threads and wanted < MOST_SLOTS:
            wanted *= 2
        current = _prctl(_PR_FUTEX_HASH, _GET_SLOTS, 0, 0, 0)
        if current <= 0:
            # No private hash to size (an old kernel), or the shared one chosen.
            _room = sys.maxsize
            return
        if current >= wanted:
            _room = _room_in(current)
            return
        if _prctl(_PR_FUTEX_HASH, _SET_SLOTS, wanted, 0, 0) != 0:
            logger.debug("could not grow the futex hash to %d slots", wanted)
            _room = sys.maxsize
            return
        _room = _room_in(wanted)
        logger.debug("futex hash grown to %d slots for %d threads", wanted, threads)


def _room_in(slots: int) -> int:
    """How many threads a hash of ``slots`` buckets is for (no limit once it is the largest)."""
    return slots // 4 if slots < MOST_SLOTS else sys.maxsize


def _reset_after_fork() -> None:
    """In a forked child: its hash is its own, and it has one thread; size it afresh."""
    global _room, _lock
    _lock = threading.Lock()
    _room = _FEW


after_fork_in_child(_reset_after_fork)
