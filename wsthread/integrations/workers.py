"""Several worker processes serving one port: :func:`run_workers`.

A thread-per-connection server is bounded by one process: one interpreter
lock, one address space. :func:`run_workers` starts ``workers`` processes
that each run a complete :class:`~wsthread.server.WebSocketServer` (with its
own threads) on the **same** host and port, by setting ``SO_REUSEPORT``
(``serve(..., reuse_port=True)``). The kernel then spreads incoming
connections over the processes; on Linux by a hash of the client's address
and port.

::

    parent ── reserves the port (bound with SO_REUSEPORT, never listening)
      ├── worker 1: serve(handler, host, port, reuse_port=True).start()
      ├── worker 2: ...                                   each reports ready
      └── worker N: ...
    parent ── closes the reservation, waits; on Ctrl-C or SIGTERM it asks
              every worker to shut down (each closes its connections with
              1001), waits for all, and returns 0

Connections in different workers share nothing: ``server.broadcast``
reaches the clients of *one* worker unless the servers share a hub, such as
:class:`wsthread.hubs.RedisHub` (pass ``hub_factory``: each worker builds its
own hub).

Workers are started with the ``spawn`` method, so everything handed to them
is pickled: the handler must be a module-level function, the factories and
options picklable (``functools.partial`` of module-level callables is), and a
script calling :func:`run_workers` must guard it with ``if __name__ ==
"__main__":``.

``SO_REUSEPORT`` exists on Linux and the BSDs (macOS included, where it
shares the port but does not balance the load); elsewhere more than one
worker raises :class:`OSError`.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import socket
import threading
import time
from multiprocessing.connection import wait as wait_for_processes
from types import FrameType
from typing import Any, Callable, Dict, Iterator, List, Optional

from ..runtime.deadline import Deadline

__all__ = ["run_workers", "HAS_REUSE_PORT"]

logger = logging.getLogger("wsthread")

#: Whether this platform can share a listening port between processes.
HAS_REUSE_PORT = hasattr(socket, "SO_REUSEPORT")


def _reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) a socket that joins the port's SO_REUSEPORT group.

    It fixes the port number when ``port`` is 0, and fails early if the port
    is held by a process that does not share it. Never listening, it
    receives no connections.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _worker(
    index: int,
    handler: Callable[..., None],
    host: str,
    port: int,
    parent_pid: int,
    ready: Any,
    hub_factory: Optional[Callable[[], Any]],
    ssl_factory: Optional[Callable[[], Any]],
    initializer: Optional[Callable[[], None]],
    hub_timeout: float,
    options: Dict[str, Any],
) -> None:
    """The body of one worker process: serve until asked to stop, then shut down."""
    from ..server.server import serve  # imported in the worker, after spawn

    stopping: List[int] = []

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        # A terminal's Ctrl-C reaches every process of the group, and the
        # parent forwards SIGTERM as well: act on the first one only. (The
        # handler stays in place: swapping in SIG_IGN here would make Python
        # report a signal that arrived meanwhile as a "race condition".)
        if not stopping:
            stopping.append(signum)
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    server = None
    try:
        if initializer is not None:
            initializer()
        hub = hub_factory() if hub_factory is not None else None
        context = ssl_factory() if ssl_factory is not None else None
        server = serve(handler, host, port, hub=hub, ssl=context, reuse_port=True, **options)
        server.start()
        # A hub that can say when it is connected (RedisHub) gets a moment to
        # connect, so that the first broadcasts reach the other processes.
        wait_healthy = getattr(hub, "wait_healthy", None)
        if callable(wait_healthy) and not wait_healthy(hub_timeout):
            logger.warning("worker %d: its hub is not connected yet; serving anyway", index)
        logger.info("worker %d (pid %d) serving on port %d", index, os.getpid(), server.port)
        ready.put((index, os.getpid()))
        # Sleep until a signal arrives, or until the parent is gone.
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        logger.warning("worker %d: the parent process is gone; shutting down", index)
    except KeyboardInterrupt:
        pass
    finally:
        stopping.append(0)  # from here on, signals are ignored
        if server is not None:
            server.shutdown()
            server.server_close()


def run_workers(
    handler: Callable[..., None],
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    workers: int = 2,
    hub_factory: Optional[Callable[[], Any]] = None,
    ssl_factory: Optional[Callable[[], Any]] = None,
    initializer: Optional[Callable[[], None]] = None,
    on_ready: Optional[Callable[[int, List[int]], None]] = None,
    hub_timeout: float = 5,
    start_timeout: float = 30,
    stop_timeout: float = 30,
    **options: Any,
) -> int:
    """Serve ``handler`` from ``workers`` processes sharing ``host:port``; return an exit status.

    Blocks until Ctrl-C (SIGINT) or SIGTERM, then shuts every worker down
    gracefully (connections closed with 1001) and returns 0. If a worker
    dies on its own, or does not start, the others are stopped too and the
    result is 1. Call it from the main thread (it installs signal handlers
    for its duration); when called from another thread, stop it by
    signalling the process.

    Args:
        handler: the connection handler, a module-level function (it is
            pickled for the workers).
        host, port: where to listen; port 0 picks a free port, the same for
            every worker (see ``on_ready``).
        workers: how many processes.
        hub_factory: called in each worker to make its hub (``serve(hub=)``),
            e.g. ``functools.partial(RedisHub, url, channel="chat")``.
        ssl_factory: called in each worker to make its ``ssl.SSLContext``
            (contexts cannot be pickled), e.g.
            ``functools.partial(wsthread.tls.server_context, "cert.pem")``.
        initializer: called first in each worker, e.g. to configure logging.
        on_ready: called in this process once every worker is listening,
            with the port and the workers' process ids.
        hub_timeout: seconds a worker waits for its hub to connect (if the
            hub has a ``wait_healthy(timeout)`` method, as
            :class:`~wsthread.hubs.RedisHub` does) before it reports ready;
            past that it serves anyway, broadcasting locally.
        start_timeout: seconds the workers have to start listening.
        stop_timeout: seconds the workers have to shut down before they are
            killed.
        options: passed to :func:`wsthread.serve` in each worker (picklable).

    Raises:
        OSError: more than one worker on a platform without ``SO_REUSEPORT``,
            or the port is taken.
        ValueError: ``workers`` is less than 1.
    """
    if workers < 1:
        raise ValueError("workers must be at least 1")
    if not HAS_REUSE_PORT:
        raise OSError("several workers need SO_REUSEPORT, which this platform lacks")
    for name in ("hub", "reuse_port", "ssl"):
        if name in options:
            raise TypeError(f"run_workers() sets {name!r} itself; see hub_factory and ssl_factory")

    context = multiprocessing.get_context("spawn")
    reservation = _reserve_port(host, port)
    port = reservation.getsockname()[1]
    ready = context.Queue()
    processes = [
        context.Process(
            target=_worker,
            name=f"wsthread-worker-{index}",
            args=(
                index,
                handler,
                host,
                port,
                os.getpid(),
                ready,
                hub_factory,
                ssl_factory,
                initializer,
                hub_timeout,
                options,
            ),
        )
        for index in range(1, workers + 1)
    ]
    stopping = threading.Event()
    with _signals_interrupt(stopping):
        try:
            status = _supervise(processes, ready, reservation, stopping, start_timeout, on_ready)
            stopping.set()  # from here on, signals are ignored
            if not _stop_all(processes, stop_timeout):
                status = 1
        finally:
            reservation.close()
            ready.close()
            ready.join_thread()
    return status


@contextlib.contextmanager
def _signals_interrupt(stopping: threading.Event) -> Iterator[None]:
    """While inside, the first SIGINT or SIGTERM raises KeyboardInterrupt (main thread only).

    ``stopping`` is set by that first signal, and by the caller once it
    stops the workers: later signals are then ignored. The previous
    handlers come back on the way out.
    """

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        if not stopping.is_set():
            stopping.set()
            raise KeyboardInterrupt

    previous: Dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
    try:
        yield
    finally:
        for signum, handler_before in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler_before is None else handler_before)


def _supervise(
    processes: List[Any],
    ready: Any,
    reservation: socket.socket,
    stopping: threading.Event,
    start_timeout: float,
    on_ready: Optional[Callable[[int, List[int]], None]],
) -> int:
    """Start the workers and watch them until a signal (0), or one dies or fails to start (1)."""
    host, port = reservation.getsockname()[:2]
    try:
        for process in processes:
            process.start()
        pids = _wait_ready(processes, ready, start_timeout)
        reservation.close()
        logger.info("%d workers listening on %s:%d: pids %s", len(processes), host, port, pids)
        if on_ready is not None:
            on_ready(port, pids)
        # Wait for a signal; a worker that exits meanwhile ends the wait.
        dead = wait_for_processes([process.sentinel for process in processes])
        if dead and not stopping.is_set():
            for process in processes:
                if process.sentinel in dead:
                    process.join(5)  # reap it, for its exit code
                    logger.error(
                        "%s (pid %s) exited with %s; stopping the others",
                        process.name,
                        process.pid,
                        process.exitcode,
                    )
            return 1
    except KeyboardInterrupt:
        pass
    except _StartFailed as exc:
        logger.error("%s", exc)
        return 1
    return 0


class _StartFailed(Exception):
    """A worker did not start listening."""


def _wait_ready(processes: List[Any], ready: Any, timeout: float) -> List[int]:
    """Wait until every worker reported ready; return their pids in worker order."""
    deadline = Deadline(timeout)
    pids: Dict[int, int] = {}
    while len(pids) < len(processes):
        try:
            index, pid = ready.get(timeout=0.1)
        except queue.Empty:
            for process in processes:
                if process.exitcode is not None:
                    raise _StartFailed(
                        f"{process.name} exited with {process.exitcode} before listening"
                    ) from None
            if deadline.remaining() == 0:
                raise _StartFailed(f"workers not listening after {timeout}s") from None
            continue
        pids[index] = pid
    return [pids[index] for index in sorted(pids)]


def _stop_all(processes: List[Any], timeout: float) -> bool:
    """SIGTERM every live worker, wait, kill the stragglers; True if all exited with 0."""
    for process in processes:
        if process.pid is not None and process.exitcode is None:
            try:
                os.kill(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = Deadline(timeout)
    clean = True
    for process in processes:
        if process.pid is None:
            continue  # never started
        process.join(deadline.remaining())
        if process.exitcode is None:
            logger.error(
                "%s (pid %s) did not stop in %ss; killing it", process.name, process.pid, timeout
            )
            process.kill()
            process.join()
            clean = False
        elif process.exitcode != 0:
            clean = False
    return clean
