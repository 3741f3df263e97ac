"""wsthread.server.serving: the accept loop's start, its serving thread, a stop from any thread."""

from __future__ import annotations

import threading
from typing import List

import pytest

from wsthread.server.serving import ServingState


def test_one_thread_serves_at_a_time_and_a_closed_server_serves_none() -> None:
    """begin() twice is refused until end(); after stop(), begin() says no."""
    state = ServingState(threading.RLock())
    assert state.begin()
    with pytest.raises(RuntimeError, match="already serving"):
        state.begin()
    state.end()
    assert state.begin()
    state.end()
    assert state.stop()
    assert not state.stop()  # only the first stop counts
    assert state.closed and state.stopping
    assert not state.begin()


def test_start_thread_runs_the_loop_once() -> None:
    """The loop runs on wsthread-accept; a second start is refused."""
    state = ServingState(threading.RLock())
    names: List[str] = []
    ran = threading.Event()

    def loop() -> None:
        names.append(threading.current_thread().name)
        ran.set()

    state.start_thread(loop)
    ran.wait(10)
    assert names == ["wsthread-accept"]
    with pytest.raises(RuntimeError, match="already started"):
        state.start_thread(loop)


def test_wait_loop_wakes_another_thread_and_waits_for_it() -> None:
    """From another thread: wake is called and wait_loop returns once the loop ended."""
    state = ServingState(threading.RLock())
    began = threading.Event()
    woken = threading.Event()
    steps: List[str] = []

    def loop() -> None:
        assert state.begin()
        began.set()
        woken.wait(10)  # an accept step that only the wake ends
        steps.append("loop ended")
        state.end()

    thread = threading.Thread(target=loop)
    thread.start()
    began.wait(10)
    assert state.stop()
    state.wait_loop(woken.set)
    steps.append("wait_loop returned")
    assert steps == ["loop ended", "wait_loop returned"]
    thread.join(10)


def test_wait_loop_on_the_loops_own_thread_returns_at_once() -> None:
    """shutdown() from a signal handler on the accept thread must not wait for itself."""
    state = ServingState(threading.RLock())
    assert state.begin()
    wakes: List[int] = []
    state.stop()
    state.wait_loop(lambda: wakes.append(1))
    assert wakes == []
    state.end()
