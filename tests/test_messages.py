"""MessageQueue and Receiver on their own: threads, barriers and events, no sockets."""

from __future__ import annotations

import threading
import time
from typing import Callable, List, Optional

import pytest

from wsthread.connection.messages import HOLD, MessageQueue, QueueClosed, Receiver
from wsthread.runtime.deadline import Deadline
from wsthread.sansio.protocol import Fragment

# Generous bounds: the machine may be loaded; no test waits this long unless it fails.
WAIT = 10.0


def start(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_messages_come_out_in_order_and_a_full_queue_holds_the_reader_back() -> None:
    """put() blocks the reader thread at max_size until the application takes one."""
    queue = MessageQueue(2)
    assert queue.put("a") and queue.put(b"b")
    third_put = threading.Event()

    def reader() -> None:
        queue.put("c")
        third_put.set()

    thread = start(reader)
    assert not third_put.wait(0.2)  # held back: the queue is full
    assert queue.get(WAIT) == "a"
    assert third_put.wait(WAIT)
    assert [queue.get(WAIT), queue.get(WAIT)] == [b"b", "c"]
    thread.join(WAIT)


def test_get_times_out_and_close_wakes_a_waiting_getter() -> None:
    """get() raises TimeoutError when nothing comes, QueueClosed once closed and empty."""
    queue = MessageQueue(4)
    with pytest.raises(TimeoutError):
        queue.get(0.05)
    errors: List[BaseException] = []
    waiting = threading.Event()

    def getter() -> None:
        waiting.set()
        try:
            queue.get(WAIT)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            errors.append(exc)

    thread = start(getter)
    assert waiting.wait(WAIT)
    queue.put("last")
    thread.join(WAIT)
    assert errors == []
    queue.put("kept")
    queue.close()
    assert queue.get(WAIT) == "kept"  # what was queued before the close stays readable
    with pytest.raises(QueueClosed):
        queue.get(WAIT)


def test_an_application_thread_reads_for_itself_when_the_socket_is_free() -> None:
    """With nobody reading, get() calls read() on the caller's own thread."""
    queue = MessageQueue(4)
    readers: List[threading.Thread] = []

    def read(timeout: Optional[float]) -> bool:
        readers.append(threading.current_thread())
        queue.put("from the socket", block=False)
        return True

    assert queue.get(WAIT, read) == "from the socket"
    assert readers == [threading.current_thread()]


def test_the_reader_thread_waits_while_an_application_thread_reads() -> None:
    """reader_turn() does not return while read() runs; it does once the hold has passed."""
    queue = MessageQueue(4)
    inside = threading.Barrier(2)
    leave = threading.Event()
    turn_at: List[float] = []
    read_returned_at: List[float] = []

    def read(timeout: Optional[float]) -> bool:
        inside.wait(WAIT)  # the application thread is reading now
        leave.wait(WAIT)
        queue.put("m", block=False)
        read_returned_at.append(time.monotonic())
        return True

    def take_turn() -> None:
        queue.reader_turn()
        turn_at.append(time.monotonic())

    app = start(lambda: queue.get(WAIT, read) and None)
    inside.wait(WAIT)
    reader = start(take_turn)
    time.sleep(0.1)
    assert turn_at == []  # the application thread holds the turn
    leave.set()
    reader.join(WAIT)
    app.join(WAIT)
    assert turn_at and read_returned_at
    # The reader leaves the socket to the application for HOLD seconds after it.
    assert turn_at[0] - read_returned_at[0] >= HOLD * 0.9
    queue.reader_done()


def test_while_the_reader_thread_has_the_turn_an_application_thread_waits_for_messages() -> None:
    """reader_first(): get() does not read; it takes what the reader thread puts."""
    queue = MessageQueue(4)
    queue.reader_first()
    called: List[bool] = []

    def read(timeout: Optional[float]) -> bool:
        called.append(True)
        return True

    def reader() -> None:
        time.sleep(0.1)
        queue.put("via the reader")

    start(reader)
    assert queue.get(WAIT, read) == "via the reader"
    assert called == []


def test_an_awaited_pong_ends_the_hold_at_once() -> None:
    """expect_pong(True): reader_delay() is 0 and a reader thread holding off reads now."""
    queue = MessageQueue(4)
    queue.put("m")
    assert queue.get(WAIT) == "m"  # the application took a message: the hold starts
    delay = queue.reader_delay()
    assert delay is not None and delay > HOLD / 2
    turn_at: List[float] = []

    def take_turn() -> None:
        queue.reader_turn()
        turn_at.append(time.monotonic())

    reader = start(take_turn)
    time.sleep(HOLD / 10)
    assert turn_at == []  # holding off
    asked_at = time.monotonic()
    queue.expect_pong(True)
    reader.join(WAIT)
    assert turn_at and turn_at[0] - asked_at < HOLD / 2
    assert queue.pong_awaited
    queue.reader_done()
    queue.put("n")
    assert queue.get(WAIT) == "n"
    assert queue.reader_delay() == 0.0  # still awaited: no hold
    queue.expect_pong(False)
    delay = queue.reader_delay()
    assert delay is not None and delay > HOLD / 2


def test_an_application_thread_that_reads_the_end_hands_it_to_the_reader_thread() -> None:
    """read() returning False makes reader_turn() return False: the reader finishes the job."""
    queue = MessageQueue(4)

    def read(timeout: Optional[float]) -> bool:
        queue.put("last", block=False)
        return False

    assert queue.get(WAIT, read) == "last"
    assert queue.reader_delay() == 0.0  # start the reader thread now
    assert queue.reader_turn() is False


def test_stop_waiting_drops_instead_of_blocking_and_wait_drained_sees_the_application() -> None:
    """Once closing, a full queue drops; wait_drained() returns when the application caught up."""
    queue = MessageQueue(1)
    queue.put("one")
    drained: List[bool] = []
    thread = start(lambda: drained.append(queue.wait_drained(WAIT, idle=WAIT)))
    time.sleep(0.05)
    assert queue.get(WAIT) == "one"
    with pytest.raises(TimeoutError):
        queue.get(0.2)  # asking for more is what "drained" means
    thread.join(WAIT)
    assert drained == [True]
    queue.put("two")
    queue.stop_waiting()
    assert queue.put("three") is False  # dropped: the reader never blocks while closing
    assert queue.backlog == 1


class _Feed:
    """A take() for Receiver that serves a list of items, then times out."""

    def __init__(self, items: List[object]) -> None:
        self.items = list(items)
        self.lock = threading.Lock()

    def __call__(self, deadline: Deadline, timeout: Optional[float]) -> object:
        with self.lock:
            if self.items:
                return self.items.pop(0)
        raise TimeoutError(f"no message within {timeout} seconds")


def test_receiver_joins_fragments_and_keeps_them_across_a_timeout() -> None:
    """recv() joins a fragmented message; a timeout midway keeps the pieces for the next call."""
    feed = _Feed([Fragment("hel", False), Fragment("lo", False)])
    receiver = Receiver(feed)  # type: ignore[arg-type]
    with pytest.raises(TimeoutError):
        receiver.recv(0.01, None)
    feed.items += [Fragment(" world", True), b"next"]
    assert receiver.recv(0.01, None) == "hello world"
    assert receiver.recv(0.01, True) == "next"  # decode=True turns bytes into text


def test_receiver_streams_pieces_and_skips_the_rest_of_an_abandoned_message() -> None:
    """stream() yields pieces as they come; dropping it early skips the rest of that message."""
    feed = _Feed([Fragment(b"ab", False), Fragment(b"cd", False), Fragment(b"ef", True), "after"])
    receiver = Receiver(feed)  # type: ignore[arg-type]
    stream = receiver.stream(None)
    assert next(stream) == b"ab"
    stream.close()  # abandoned after the first piece
    assert receiver.recv(0.01, None) == "after"


def test_one_receiver_at_a_time() -> None:
    """A second recv() waits for the first (it times out while the first holds the turn)."""
    started = threading.Event()
    release = threading.Event()

    def slow_take(deadline: Deadline, timeout: Optional[float]) -> object:
        started.set()
        release.wait(WAIT)
        return "first"

    receiver = Receiver(slow_take)  # type: ignore[arg-type]
    results: List[object] = []
    thread = start(lambda: results.append(receiver.recv(WAIT, None)))
    assert started.wait(WAIT)
    with pytest.raises(TimeoutError):
        receiver.recv(0.1, None)
    release.set()
    thread.join(WAIT)
    assert results == ["first"]
