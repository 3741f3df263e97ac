"""Side-by-side benchmark: wsthread, websockets (sync and asyncio), a raw-socket floor, picows.

One command (see benchmarks/README.md)::

    python benchmarks/run.py            # the full run, about 15 minutes here
    python benchmarks/run.py --quick    # a smoke run, about 40 seconds

It starts five echo servers as subprocesses on free loopback ports:

- ``python -m wsthread.echo --no-compression --quiet``;
- ``benchmarks/servers/websockets_echo.py``: websockets' sync server,
  compression off (the threaded reference: every ratio is to it...);
- ``benchmarks/servers/raw_echo.py``: a thread-per-connection echo that only
  reads a header, unmasks and writes back (the floor: ...and to it);
- ``benchmarks/servers/websockets_asyncio_echo.py``: websockets' asyncio
  server on the standard event loop;
- ``benchmarks/servers/picows_echo.py``: picows' Cython server on uvloop
  (the ceiling);

drives each with the same client, picows (a Cython asyncio WebSocket client,
on uvloop when it is installed), and prints one table. The workloads:

1. round trips/s, 1 connection, 16-byte text, strict ping-pong;
2. messages/s, 1 connection, 16-byte text, 256 in flight;
3. MB/s echoed (payload bytes received back, 10**6 bytes per MB),
   1 connection, 1 MiB binary, ping-pong;
4. round trips/s summed over 100 connections, each in strict ping-pong, and
   the 50th and 99th percentile latency of those round trips;
5. idle connections: the server's RSS and thread count per connection after
   opening 1,000 and then 5,000 connections (measured on a fresh server
   process, against its own baseline), and the most connections held (by
   default up to 10,000, limited by the file descriptor limit, which this
   script raises to the hard limit, and by the machine's thread limit);
6. close-storm: on a fresh server, open 5,000 connections, let them idle,
   drop them all at once; wall time and server CPU to open them and to wind
   them down.

7. fan-out (``fanout``, ``fanout-deflate``, ``fanout-stall``, ``topics``):
   one server broadcasting to 1,000 clients in other processes; see
   ``benchmarks/fanout.py``, which runs them, and its own table.

``--server-python LABEL=PYTHON`` (repeatable) adds the wsthread server run by
another interpreter, as the server ``wsthread LABEL``, to the echo, idle,
close-storm and fan-out workloads; ``NAME=VALUE`` words before the path go
into that server's environment (``'3.13t=PYTHON_GIL=0 /opt/py313t/bin/python'``).
The interpreter needs wsthread importable (this tree is put first on its
``PYTHONPATH``); the header says its version, whether the GIL is on, and
whether wsthread's C masking loaded there. ``--plot FILE.png`` draws each
server's figures against the raw floor's (matplotlib, imported only then).

The throughput workloads run the servers in turn, workload by workload,
so that a change in the machine's load during the run touches them all; the
table keeps each server's median round.
Client and servers share the machine's cores: the client's own CPU time is
part of every figure, the same for every server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

if TYPE_CHECKING:  # the peers are imported when a workload runs, so --help needs none of them
    from picows import WSFrame, WSMsgType, WSTransport

    Listener = Any  # the class listener_class() makes

import fanout

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# --server-python LABEL=SPEC: the wsthread server again under another interpreter, as
# "wsthread LABEL"; SPEC is the interpreter's path, after any NAME=VALUE for its environment.
INTERPRETERS: Dict[str, str] = {}

# ---------------------------------------------------------------------------
# Servers


def server_commands() -> Dict[str, List[str]]:
    """The command of each server, by the name the table uses."""
    python = sys.executable
    wsthread_echo = [python, "-m", "wsthread.echo", "--no-compression", "--quiet", "--port", "0"]
    return {
        "wsthread": wsthread_echo,
        "websockets": [python, str(HERE / "servers" / "websockets_echo.py"), "0"],
        "raw floor": [python, str(HERE / "servers" / "raw_echo.py"), "0"],
        "ws asyncio": [python, str(HERE / "servers" / "websockets_asyncio_echo.py"), "0"],
        "picows": [python, str(HERE / "servers" / "picows_echo.py"), "0"],
        "wsthread si=1ms": switch_interval_command(0.001),
        "wsthread si=20ms": switch_interval_command(0.02),
        "wsthread malloc": [
            "env",
            *(f"{name}={value}" for name, value in MALLOC_TUNING.items()),
            *wsthread_echo,
        ],
        **{
            f"wsthread {label}": [*fanout.interpreter_command(spec), *wsthread_echo[1:]]
            for label, spec in INTERPRETERS.items()
        },
    }


# glibc's allocator settings of docs/howto/allocator.md, for the "wsthread malloc" row.
MALLOC_TUNING = {"MALLOC_MMAP_THRESHOLD_": "8388608", "MALLOC_TRIM_THRESHOLD_": "134217728"}
# Servers left out unless --servers names them.
OPTIONAL = ("wsthread malloc", "wsthread si=1ms", "wsthread si=20ms")


def switch_interval_command(seconds: float) -> List[str]:
    """wsthread's echo server with ``sys.setswitchinterval(seconds)`` (an experiment)."""
    code = (
        f"import runpy, sys; sys.setswitchinterval({seconds}); sys.argv[0] = 'wsthread.echo';"
        " runpy.run_module('wsthread.echo', run_name='__main__', alter_sys=True)"
    )
    return [sys.executable, "-c", code, "--no-compression", "--quiet", "--port", "0"]


REFERENCE = "websockets"  # websockets' sync server: every ratio is to it...
FLOOR = "raw floor"  # ...and to the raw-socket threaded floor
VERBOSE = False  # set by --verbose: show progress and the servers' stderr
WORKLOADS = ("ping-pong", "pipelined", "1 MiB", "many", "idle", "close-storm", *fanout.WORKLOADS)


def idle_commands() -> Dict[str, List[str]]:
    """The commands for the idle-connection workload, which needs no connection limit.

    ``python -m wsthread.echo`` refuses connections past serve()'s default
    ``max_connections`` (1024): ``--max-connections none`` lifts it.
    """
    commands = server_commands()
    for name in commands:
        if name.startswith("wsthread") and "si=" not in name:
            commands[name] += ["--max-connections", "none"]
    return commands


class Server:
    """A server subprocess: started, asked for its URL, measured, stopped.

    Its stderr goes to a temporary file (a pipe nobody reads would fill up
    and block it) and is shown if the server dies.
    """

    def __init__(self, name: str, command: Sequence[str]) -> None:
        self.name = name
        self.command = list(command)
        self.url = ""
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed by stop())
        self.process: Optional[subprocess.Popen[str]] = None

    def start(self, timeout: float = 20) -> None:
        """Start the process and wait for the line that gives its URL."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=str(ROOT),
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while "ws://" not in line:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"{self.name} did not start: {line!r}{self.stderr()}")
            line = self.process.stdout.readline()
        self.url = next(word for word in line.split() if word.startswith("ws://"))

    def status(self) -> Dict[str, int]:
        """VmRSS (KiB) and Threads from /proc/PID/status."""
        assert self.process is not None
        values: Dict[str, int] = {}
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "Threads"):
                    values[key] = int(value.split()[0])
        return values

    def open_files(self) -> int:
        """How many sockets the server holds (its file descriptors that are sockets)."""
        assert self.process is not None
        directory = f"/proc/{self.process.pid}/fd"
        count = 0
        for name in os.listdir(directory):
            with contextlib.suppress(OSError):  # closed meanwhile
                count += os.readlink(f"{directory}/{name}").startswith("socket:")
        return count

    def context_switches(self) -> int:
        """Context switches of all the server's threads so far (voluntary and not): wake-ups."""
        assert self.process is not None
        total = 0
        directory = f"/proc/{self.process.pid}/task"
        for task in os.listdir(directory):
            with contextlib.suppress(OSError), open(f"{directory}/{task}/status") as status:
                for line in status:
                    if "ctxt_switches" in line:
                        total += int(line.split()[-1])
        return total

    def cpu_seconds(self) -> float:
        """User plus system CPU time the server has used so far."""
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stderr(self) -> str:
        """What the server wrote on stderr, for error messages."""
        self._stderr.seek(0)
        text = self._stderr.read()[-2000:]
        return f"\n--- {self.name} stderr ---\n{text}" if text else ""

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.process is None:
            return
        died = self.process.poll()
        if died is not None:
            print(f"  {self.name} had exited with status {died}{self.stderr()}", flush=True)
        else:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if VERBOSE and died is None:
            print(f"  {self.name} stopped{self.stderr()}", flush=True)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()


@contextlib.contextmanager
def running(
    names: Sequence[str], commands: Optional[Dict[str, List[str]]] = None
) -> Iterator[Dict[str, Server]]:
    """Start the named servers; stop them all on the way out."""
    commands = commands or server_commands()
    servers: Dict[str, Server] = {}
    try:
        for name in names:
            server = Server(name, commands[name])
            servers[name] = server
            server.start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


# ---------------------------------------------------------------------------
# The client


_LISTENER: List[Any] = []


def listener_class() -> Any:
    """The client's picows listener class, made (and picows imported) on first use."""
    if _LISTENER:
        return _LISTENER[0]
    from picows import WSListener, WSMsgType

    class Listener(WSListener):  # type: ignore[misc]
        """A picows listener that hands every data frame to ``on_data``."""

        def __init__(self) -> None:
            self.transport: Optional[WSTransport] = None
            self.on_data: Callable[[WSFrame], None] = lambda frame: None
            self.closed = asyncio.get_running_loop().create_future()

        def on_ws_connected(self, transport: WSTransport) -> None:
            self.transport = transport

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            kind = frame.msg_type
            if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
                self.on_data(frame)
            elif kind is WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            if not self.closed.done():
                self.closed.set_result(None)

    _LISTENER.append(Listener)
    return Listener


async def open_connections(
    url: str, count: int, parallel: int = 50
) -> Tuple[List[Listener], List[str]]:
    """Open up to ``count`` connections, ``parallel`` at a time.

    Returns the listeners of those that opened and the errors of those that did not.
    """
    from picows import ws_connect

    listeners: List[Listener] = []
    errors: List[str] = []
    semaphore = asyncio.Semaphore(parallel)
    factory = listener_class()

    async def one() -> None:
        async with semaphore:
            try:
                _, listener = await ws_connect(
                    factory, url, max_frame_size=2**21, websocket_handshake_timeout=30
                )
            except Exception as exc:  # refused, reset, timed out: counted, not fatal
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            if listener is None:
                errors.append("closed by the server during the handshake")
                return
            listeners.append(listener)

    await asyncio.gather(*(one() for _ in range(count)))
    return listeners, errors


async def close_connections(
    listeners: Sequence[Listener], timeout: float = 30, batch: int = 500
) -> None:
    """Close every connection (close frame, then TCP) and wait for them to end.

    In batches, so that thousands of server threads do not all wake at once.
    """
    for start in range(0, len(listeners), batch):
        chunk = listeners[start : start + batch]
        for listener in chunk:
            if listener.transport is not None and not listener.closed.done():
                listener.transport.send_close()
                listener.transport.disconnect()
        pending = [listener.closed for listener in chunk if not listener.closed.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)


@dataclass
class Result:
    """What one workload measured on one server."""

    value: float = 0.0  # the headline figure (per second, or MB/s)
    count: int = 0
    seconds: float = 0.0
    latencies: List[float] = field(default_factory=list)
    server_cpu: float = 0.0  # server CPU seconds per second of the window
    client_cpu: float = 0.0  # the same for this process, the client
    others_cpu: float = 0.0  # the same for everything else on the machine
    errors: int = 0
    switches: float = float("nan")  # the server's context switches per message (all its threads)

    def percentile(self, fraction: float) -> float:
        """A latency percentile in milliseconds (nearest rank)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, int(round(fraction * len(ordered))) - 1))
        return ordered[index] * 1000


async def echo_workload(
    url: str,
    *,
    connections: int,
    payload: bytes,
    kind: WSMsgType,
    in_flight: int,
    warmup: float,
    duration: float,
    server: Server,
) -> Result:
    """Echo ``payload`` over ``connections`` connections, ``in_flight`` each.

    Counts the replies that arrive within the measured window (after the
    warm-up), checks each reply's size and the first reply's content, and
    keeps each reply's round-trip time when ``in_flight`` is 1.
    """
    listeners, failures = await open_connections(url, connections)
    result = Result(errors=len(failures))
    if failures:
        print(f"  {len(failures)} connections failed: {failures[0]}", flush=True)
        await close_connections(listeners)
        return result
    clock = time.perf_counter
    size = len(payload)
    start = clock() + warmup
    end = start + duration
    done = asyncio.get_running_loop().create_future()
    outstanding = [0]
    latencies = result.latencies
    counts = [0]

    def make_handler(listener: Listener) -> None:
        assert listener.transport is not None
        transport = listener.transport
        sent_at: List[float] = []
        checked = [False]

        def on_data(frame: WSFrame) -> None:
            now = clock()
            if frame.payload_size != size:
                result.errors += 1
            elif not checked[0]:
                checked[0] = True
                if frame.get_payload_as_bytes() != payload:
                    result.errors += 1
            sent = sent_at.pop(0) if in_flight == 1 else 0.0
            if start <= now <= end:
                counts[0] += 1
                if in_flight == 1:
                    latencies.append(now - sent)
            if now < end:
                if in_flight == 1:
                    sent_at.append(now)
                transport.send(kind, payload)
            else:
                outstanding[0] -= 1
                if outstanding[0] == 0 and not done.done():
                    done.set_result(None)

        def first() -> None:
            for _ in range(in_flight):
                if in_flight == 1:
                    sent_at.append(clock())
                transport.send(kind, payload)

        listener.on_data = on_data
        starters.append(first)

    starters: List[Callable[[], None]] = []
    for listener in listeners:
        make_handler(listener)
    outstanding[0] = len(listeners) * in_flight
    for starter in starters:
        starter()
    await asyncio.sleep(max(0.0, start - clock()))
    cpu_before = server.cpu_seconds()
    switches_before = server.context_switches()
    own_before = own_seconds()
    machine_before = machine_busy_seconds()
    await asyncio.sleep(max(0.0, end - clock()))
    cpu_after = server.cpu_seconds()
    switches_after = server.context_switches()
    own_after = own_seconds()
    machine_after = machine_busy_seconds()
    try:
        await asyncio.wait_for(done, timeout=30 + 10 * duration)
    except asyncio.TimeoutError:
        result.errors += max(1, outstanding[0])
    result.count = counts[0]
    result.seconds = duration
    result.value = counts[0] / duration
    result.server_cpu = (cpu_after - cpu_before) / duration
    if counts[0]:
        result.switches = (switches_after - switches_before) / counts[0]
    result.client_cpu = (own_after - own_before) / duration
    machine = (machine_after - machine_before) / duration
    result.others_cpu = max(0.0, machine - result.server_cpu - result.client_cpu)
    await close_connections(listeners)
    return result


async def settle(server: Server, timeout: float = 30) -> Dict[str, int]:
    """Wait until the server's thread count stops changing; return its status."""
    deadline = time.monotonic() + timeout
    last = server.status()
    stable = 0
    while time.monotonic() < deadline and stable < 3:
        await asyncio.sleep(0.1)
        now = server.status()
        stable = stable + 1 if now["Threads"] == last["Threads"] else 0
        last = now
    await asyncio.sleep(0.3)
    return server.status()


async def check_alive(listeners: Sequence[Listener], sample: int = 20) -> int:
    """Echo one message on up to ``sample`` connections spread over the list.

    Returns how many did not answer within 10 s.
    """
    from picows import WSMsgType

    if not listeners:
        return 0
    step = max(1, len(listeners) // sample)
    chosen = list(listeners[::step])[:sample]
    loop = asyncio.get_running_loop()
    replies = []
    for listener in chosen:
        reply = loop.create_future()

        def on_data(frame: WSFrame, reply: asyncio.Future[None] = reply) -> None:
            if not reply.done():
                reply.set_result(None)

        listener.on_data = on_data
        assert listener.transport is not None
        listener.transport.send(WSMsgType.TEXT, b"still there?")
        replies.append(reply)
    finished, _ = await asyncio.wait(replies, timeout=10)
    return len(replies) - len(finished)


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    """CPU seconds this process (the client) has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_threads() -> Tuple[int, int]:
    """Threads on the whole machine now (from /proc/loadavg) and the kernel's pid_max."""
    with open("/proc/loadavg") as loadavg:
        total = int(loadavg.read().split()[3].split("/")[1])
    with open("/proc/sys/kernel/pid_max") as pid_max:
        return total, int(pid_max.read())


@dataclass
class IdleResult:
    """Idle connections on one fresh server."""

    baseline: Dict[str, int] = field(default_factory=dict)
    steps: List[Tuple[int, Dict[str, int]]] = field(default_factory=list)
    most_held: int = 0
    stopped_by: str = ""
    not_answering: int = 0


async def idle_workload(
    server: Server, counts: Sequence[int], most: int, verbose: bool = False
) -> IdleResult:
    """Open connections in steps up to each of ``counts``, then up to ``most``."""
    result = IdleResult(baseline=await settle(server))
    listeners: List[Listener] = []
    targets = sorted(set(counts) | ({most} if most else set()))
    headroom = 3000  # threads left free on the machine for everyone else
    try:
        for target in targets:
            while len(listeners) < target:
                total, pid_max = machine_threads()
                added = server.status()["Threads"] - result.baseline["Threads"]
                per_connection = added / len(listeners) if listeners else 3
                batch = min(500, target - len(listeners))
                if total + batch * per_connection > pid_max - headroom:
                    result.stopped_by = (
                        f"the machine's thread limit (pid_max {pid_max}, {total} threads in use,"
                        f" {headroom} kept free)"
                    )
                    break
                began = time.monotonic()
                opened, failures = await open_connections(server.url, batch)
                listeners += opened
                if verbose:
                    print(
                        f"    {server.name}: {len(listeners):,} open"
                        f" (last {batch} in {time.monotonic() - began:.1f}s)",
                        flush=True,
                    )
                if failures:
                    result.stopped_by = (
                        f"{len(failures)} connections failed to open ({failures[0]})"
                    )
                    break
                if not server.alive():
                    result.stopped_by = "the server died" + server.stderr()
                    break
            if result.stopped_by:
                break
            began = time.monotonic()
            status = await settle(server)
            result.steps.append((len(listeners), status))
            if verbose:
                print(f"    settled in {time.monotonic() - began:.1f}s", flush=True)
        result.most_held = len(listeners)
        began = time.monotonic()
        result.not_answering = await check_alive(listeners)
        if verbose:
            print(f"    checked in {time.monotonic() - began:.1f}s", flush=True)
        if result.not_answering:
            result.stopped_by += f"; {result.not_answering} sampled connections did not answer"
    finally:
        began = time.monotonic()
        await close_connections(listeners)
        if verbose:
            print(f"    closed in {time.monotonic() - began:.1f}s", flush=True)
    return result


@dataclass
class StormResult:
    """Opening N connections, then dropping them all at once, on one fresh server."""

    count: int = 0  # connections opened (and then dropped)
    open_seconds: float = float("nan")  # wall time to open them (50 handshakes in parallel)
    open_cpu: float = float("nan")  # server CPU seconds spent meanwhile
    close_seconds: float = float("nan")  # wall time from the drop to the server wound down
    close_cpu: float = float("nan")  # server CPU seconds spent meanwhile
    left: str = ""  # what was still there when waiting gave up
    failed: str = ""


async def storm_workload(
    server: Server, count: int, timeout: float = 120, verbose: bool = False
) -> StormResult:
    """Open ``count`` idle connections, then drop them all at once (TCP close, no close frame).

    "Wound down" means the server holds no more sockets than before the
    first connection (``/proc/PID/fd`` entries that are sockets) and no more threads than then plus
    two (helper threads of a threaded server may linger a moment). The CPU
    figures are the server's user plus system time over each phase.
    """
    result = StormResult()
    baseline = await settle(server)
    base_fds = server.open_files()
    total, pid_max = machine_threads()
    if total + 3 * count > pid_max - 3000:
        result.failed = f"not tried: {count} connections could take the machine's last threads"
        return result
    cpu = server.cpu_seconds()
    began = time.monotonic()
    listeners, failures = await open_connections(server.url, count)
    result.open_seconds = time.monotonic() - began
    result.open_cpu = server.cpu_seconds() - cpu
    result.count = len(listeners)
    if failures:
        result.failed = f"{len(failures)} connections failed to open ({failures[0]})"
        await close_connections(listeners)
        return result
    await settle(server)
    await asyncio.sleep(1.0)  # idle connections: nothing sent for a while
    if verbose:
        print(f"    {server.name}: {len(listeners):,} open, dropping them", flush=True)
    cpu = server.cpu_seconds()
    began = time.monotonic()
    for listener in listeners:
        if listener.transport is not None:
            listener.transport.disconnect(graceful=False)
    deadline = began + timeout
    while True:
        fds = server.open_files()
        threads = server.status()["Threads"]
        if fds <= base_fds and threads <= baseline["Threads"] + 2:
            break
        if time.monotonic() > deadline or not server.alive():
            result.left = f"{fds - base_fds} sockets and {threads - baseline['Threads']} threads"
            result.failed = f"not wound down after {timeout:.0f}s: {result.left} left"
            break
        await asyncio.sleep(0.02)
    result.close_seconds = time.monotonic() - began
    result.close_cpu = server.cpu_seconds() - cpu
    return result


# ---------------------------------------------------------------------------
# The run


def raise_fd_limit() -> Tuple[int, int, int]:
    """Raise the soft open-files limit to the hard one; return (old soft, new soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard


def read_first_line(path: str, default: str = "?") -> str:
    """The first line of a small system file, or ``default``."""
    try:
        with open(path) as file:
            return file.readline().strip()
    except OSError:
        return default


def machine_description() -> Dict[str, str]:
    """What the table was measured on."""
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for module in ("websockets", "picows", "uvloop"):
        try:
            versions[module] = __import__(module).__version__
        except (ImportError, AttributeError):
            versions[module] = "not installed"
    masking = subprocess.run(
        [sys.executable, "-c", "from wsthread.sansio import frames; print(frames.SPEEDUPS)"],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        check=False,
    ).stdout.strip()
    commit = subprocess.run(
        ["git", "log", "-1", "--format=%h %s"],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        check=False,
    ).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit[:72] or "?",
        "machine": f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "python": platform.python_implementation() + " " + platform.python_version(),
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "wsthread masking": "C (wsthread._speedups)" if masking == "True" else "pure Python",
        "pid_max": read_first_line("/proc/sys/kernel/pid_max"),
        "max_map_count": read_first_line("/proc/sys/vm/max_map_count"),
    }


def interpreter_description(spec: str) -> str:
    """What an interpreter of --server-python is: version, GIL, wsthread's masking."""
    code = (
        "import sys, wsthread\n"
        "try:\n    from wsthread.sansio import frames; speedups = frames.SPEEDUPS\n"
        "except Exception:\n    speedups = '?'\n"
        "gil = getattr(sys, '_is_gil_enabled', lambda: True)()\n"
        "print(sys.version.split()[0], 'GIL on' if gil else 'GIL off',"
        " 'C masking' if speedups is True else 'masking: ' + str(speedups))"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [*fanout.interpreter_command(spec), "-c", code],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        env=env,
        check=False,
    )
    answer = done.stdout.strip() or done.stderr.strip()[-200:]
    return f"{spec}: {answer}"


def fanout_settings(args: argparse.Namespace) -> fanout.Settings:
    """The fan-out workloads' sizes from the command line."""
    return fanout.Settings(
        clients=args.fanout_clients,
        broadcasts=args.fanout_broadcasts,
        paced=args.fanout_paced,
        rate=args.fanout_rate,
        size=args.fanout_size,
        stall=args.fanout_stall,
        stall_size=args.fanout_stall_size,
        topics=args.topics,
        processes=args.fanout_processes,
        write_limit=args.fanout_write_limit,
    )


def load() -> str:
    """The load averages, as uptime prints them."""
    return " ".join(read_first_line("/proc/loadavg").split()[:3])


def fmt(value: float, digits: int = 0) -> str:
    """A number with thousands separators."""
    if value != value:  # NaN
        return "-"
    return f"{value:,.{digits}f}"


def ratio(value: float, reference: float) -> str:
    """``value / reference`` as ``1.23x``."""
    if not reference or value != value or reference != reference:
        return "-"
    return f"{value / reference:.2f}x"


@dataclass
class Row:
    """One line of the table: a label and a figure per server.

    ``ratios`` says whether the line gets ratio columns (figures of the same
    unit); ``cells`` overrides how a server's figure is shown.
    """

    label: str
    figures: Dict[str, float]
    digits: int = 0
    ratios: bool = True
    cells: Dict[str, str] = field(default_factory=dict)

    def cell(self, name: str) -> str:
        if name in self.cells:
            return self.cells[name]
        return fmt(self.figures.get(name, float("nan")), self.digits)


def print_table(rows: List[Row], names: Sequence[str]) -> str:
    """Format the rows as one Markdown table: figures, then ratios to the floor and to websockets.

    Each ratio cell reads ``server / raw floor`` then ``server / websockets``
    (sync); a ratio above 1 means a larger figure (for latencies, RSS and
    seconds, larger is worse).
    """
    refs = [ref for ref in (FLOOR, REFERENCE) if ref in names]
    others = [name for name in names if name not in refs or len(refs) == 1] if refs else []
    header = ["workload"] + list(names)
    header += [f"{name} / {' ; '.join(refs)}" for name in others if name not in refs]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.label] + [row.cell(name) for name in names]
        for name in others:
            if name in refs:
                continue
            if not row.ratios:
                cells.append("")
                continue
            value = row.figures.get(name, float("nan"))
            cells.append(
                " ; ".join(ratio(value, row.figures.get(ref, float("nan"))) for ref in refs)
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def median_round(results: List[Result]) -> Result:
    """The round whose headline figure is the median (the lower middle for an even count)."""
    ordered = sorted(results, key=lambda result: result.value)
    return ordered[(len(ordered) - 1) // 2]


async def run(args: argparse.Namespace) -> int:
    """Run every workload on every server and print the table."""
    from picows import WSMsgType

    names = [name for name in server_commands() if name in args.servers]
    fd_soft_before, fd_soft, fd_hard = raise_fd_limit()
    info = machine_description()
    info["open files limit"] = f"soft {fd_soft_before} raised to {fd_soft} (hard {fd_hard})"
    info["load before"] = load()
    busy = machine_busy_seconds()
    await asyncio.sleep(2)
    info["CPU busy before (2 s, cores)"] = f"{(machine_busy_seconds() - busy) / 2:.2f}"
    for label, spec in INTERPRETERS.items():
        info[f"wsthread {label}"] = interpreter_description(spec)
    for key, value in info.items():
        print(f"{key}: {value}", flush=True)
    print(
        f"durations: {args.warmup}s warm-up + {args.duration}s measured per workload,"
        f" {args.repeat} round(s) with the servers in turn, median kept",
        flush=True,
    )

    small = b"0123456789abcdef"
    big = os.urandom(2**20)
    workloads = [
        ("ping-pong", "round trips/s, 1 conn, 16 B text", 1, small, WSMsgType.TEXT, 1),
        ("pipelined", "msgs/s, 1 conn, 16 B text, 256 in flight", 1, small, WSMsgType.TEXT, 256),
        ("1 MiB", "MB/s, 1 conn, 1 MiB binary ping-pong", 1, big, WSMsgType.BINARY, 1),
        (
            "many",
            f"round trips/s, {args.connections} conns, 16 B text",
            args.connections,
            small,
            WSMsgType.TEXT,
            1,
        ),
    ]
    workloads = [workload for workload in workloads if workload[0] in args.workloads]
    rounds: Dict[Tuple[str, str], List[Result]] = {}
    rows: List[Row] = []
    errors = 0
    with running(names if workloads else []) as servers:
        for key, label, connections, payload, kind, in_flight in workloads:
            for _round in range(args.repeat):
                for name in names:
                    result = await echo_workload(
                        servers[name].url,
                        connections=connections,
                        payload=payload,
                        kind=kind,
                        in_flight=in_flight,
                        warmup=args.warmup,
                        duration=args.duration,
                        server=servers[name],
                    )
                    if key == "1 MiB":
                        result.value = result.value * len(payload) / 1e6
                    errors += result.errors
                    rounds.setdefault((key, name), []).append(result)
                    extra = (
                        f", p50 {result.percentile(0.5):.2f} ms,"
                        f" p99 {result.percentile(0.99):.2f} ms"
                        if connections > 1
                        else ""
                    )
                    print(
                        f"  {label:<42} {name:<11} {fmt(result.value, 1):>12}{extra}"
                        f"  (CPU: server {result.server_cpu:.2f}, client {result.client_cpu:.2f},"
                        f" switches/msg {result.switches:.2f},"
                        f" others {result.others_cpu:.2f}"
                        f"{', ERRORS ' + str(result.errors) if result.errors else ''})",
                        flush=True,
                    )
    results = {key: median_round(values) for key, values in rounds.items()}
    for key, label, connections, *_ in workloads:
        rows.append(Row(label, {n: results[key, n].value for n in names}))
        if connections > 1:
            rows.append(
                Row(
                    f"p99 latency (ms), {connections} conns",
                    {n: results[key, n].percentile(0.99) for n in names},
                    digits=2,
                )
            )
        rows.append(
            Row(
                "  CPU: server / client / others (cores)",
                {},
                ratios=False,
                cells={
                    n: f"{results[key, n].server_cpu:.2f} / {results[key, n].client_cpu:.2f}"
                    f" / {results[key, n].others_cpu:.2f}"
                    for n in names
                },
            )
        )
        rows.append(
            Row(
                "  server context switches per message",
                {n: results[key, n].switches for n in names},
                digits=2,
            )
        )

    fan_table, fan_report, fan_figures = "", {}, {}
    if set(fanout.WORKLOADS) & set(args.workloads):
        fan_table, fan_report, fan_errors, fan_figures = await fanout.run(
            names, INTERPRETERS, fanout_settings(args), args.workloads, args.repeat
        )
        errors += fan_errors

    idle: Dict[str, IdleResult] = {}
    if args.idle and "idle" in args.workloads:
        commands = idle_commands()
        print(f"idle workload: wsthread runs as {' '.join(commands['wsthread'][1:])}", flush=True)
        for name in names:
            with running([name], commands) as servers:
                started = time.monotonic()
                idle[name] = await idle_workload(servers[name], args.idle, args.most, args.verbose)
                result = idle[name]
                for count, status in result.steps:
                    print(
                        f"  idle {count:>6} conns {name:<11} RSS {status['VmRSS']:>9,} KiB "
                        f"threads {status['Threads']:>6} (baseline {result.baseline['VmRSS']:,} "
                        f"KiB, {result.baseline['Threads']} threads)",
                        flush=True,
                    )
                print(
                    f"  most held by {name}: {result.most_held:,} in"
                    f" {time.monotonic() - started:.0f}s"
                    f"{' (stopped by ' + result.stopped_by + ')' if result.stopped_by else ''}",
                    flush=True,
                )
                errors += result.not_answering
        for count in args.idle:
            rss: Dict[str, float] = {}
            threads: Dict[str, float] = {}
            for name in names:
                result = idle[name]
                step = dict(result.steps).get(count)
                if step is None:
                    rss[name] = threads[name] = float("nan")
                    continue
                rss[name] = (step["VmRSS"] - result.baseline["VmRSS"]) * 1.024 / count
                threads[name] = (step["Threads"] - result.baseline["Threads"]) / count
            rows.append(Row(f"idle: RSS KB per conn at {count:,}", rss, digits=1))
            rows.append(
                Row(f"idle: threads per conn at {count:,}", threads, digits=2, ratios=False)
            )
        if args.most:
            rows.append(
                Row(
                    f"most idle conns held (tried {args.most:,})",
                    {n: float(idle[n].most_held) for n in names},
                )
            )

    storms: Dict[str, List[StormResult]] = {}
    if args.storm and "close-storm" in args.workloads:
        commands = idle_commands()
        storm_names = [n for n in names if not args.storm_servers or n in args.storm_servers]
        for _round in range(args.storm_repeat):
            for name in storm_names:
                with running([name], commands) as servers:
                    storm = await storm_workload(servers[name], args.storm, verbose=args.verbose)
                storms.setdefault(name, []).append(storm)
                print(
                    f"  close-storm {args.storm:,} conns {name:<11}"
                    f" open {storm.open_seconds:.2f}s wall, {storm.open_cpu:.2f}s server CPU;"
                    f" drop {storm.close_seconds:.2f}s wall, {storm.close_cpu:.2f}s server CPU"
                    f"{' (' + storm.failed + ')' if storm.failed else ''}",
                    flush=True,
                )
                if storm.failed and not storm.failed.startswith("not tried"):
                    errors += 1
        medians: Dict[str, Dict[str, float]] = {}
        for name, values in storms.items():
            medians[name] = {}
            for attribute in ("open_seconds", "open_cpu", "close_seconds", "close_cpu"):
                figures = sorted(getattr(storm, attribute) for storm in values)
                medians[name][attribute] = figures[(len(figures) - 1) // 2]
        count = args.storm
        for attribute, label in (
            ("close_seconds", f"close-storm: s wall to wind down {count:,} dropped conns"),
            ("close_cpu", f"close-storm: s server CPU to wind down {count:,} dropped conns"),
            ("open_seconds", f"close-storm: s wall to open {count:,} conns"),
            ("open_cpu", f"close-storm: s server CPU to open {count:,} conns"),
        ):
            rows.append(
                Row(label, {n: medians.get(n, {}).get(attribute, float("nan")) for n in names}, 2)
            )

    table = print_table(rows, names) if rows else ""
    for text in (table, fan_table):
        if text:
            print()
            print(text)
    print()
    print(f"load after: {load()}")
    if args.json:
        report = {
            "info": info,
            "load after": load(),
            "args": {k: v for k, v in vars(args).items() if k != "json"},
            "results": {
                f"{key} / {name}": {
                    "value": r.value,
                    "count": r.count,
                    "p50_ms": r.percentile(0.5),
                    "p99_ms": r.percentile(0.99),
                    "server_cpu": r.server_cpu,
                    "client_cpu": r.client_cpu,
                    "others_cpu": r.others_cpu,
                    "errors": r.errors,
                    "rounds": [round_.value for round_ in rounds[key, name]],
                }
                for (key, name), r in results.items()
            },
            "idle": {
                name: {
                    "baseline": r.baseline,
                    "steps": r.steps,
                    "most_held": r.most_held,
                    "stopped_by": r.stopped_by,
                }
                for name, r in idle.items()
            },
            "close-storm": {
                name: [vars(storm) for storm in values] for name, values in storms.items()
            },
            "table": table,
            "fanout": fan_report,
        }
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.plot:
        import chart

        echo = {
            label: {name: results[key, name].value for name in names}
            for key, label, *_ in workloads
        }
        for key, _label, connections, *_ in workloads:
            if connections > 1:
                echo[f"p99 latency (ms), {connections} conns"] = {
                    name: results[key, name].percentile(0.99) for name in names
                }
        chart.draw(args.plot, echo, fan_figures, names, info)
        print(f"chart: {args.plot}")
    if errors:
        print(f"ERRORS: {errors} (wrong replies, failed connections or missing answers)")
        return 1
    return 0


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description="Echo benchmark: wsthread, websockets sync and a raw-socket floor.",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--duration", type=float, help="measured seconds per workload (5)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per workload (1)")
    parser.add_argument(
        "--repeat",
        type=int,
        help="rounds of the throughput workloads; the table keeps each server's median (3)",
    )
    parser.add_argument("--connections", type=int, help="connections of the 'many' workload (100)")
    parser.add_argument(
        "--idle",
        type=lambda text: [int(n) for n in text.split(",") if n],
        help="idle connection counts to measure, comma-separated (1000,5000); '' skips",
    )
    parser.add_argument(
        "--most", type=int, help="try to hold this many idle connections (10000; 0 skips)"
    )
    parser.add_argument(
        "--servers",
        type=lambda text: [n.strip() for n in text.split(",")],
        default=[name for name in server_commands() if name not in OPTIONAL],
        help="comma-separated subset of: " + ", ".join(server_commands()),
    )
    parser.add_argument(
        "--workloads",
        type=lambda text: [n.strip() for n in text.split(",")],
        default=list(WORKLOADS),
        help="comma-separated subset of: " + ", ".join(WORKLOADS),
    )
    parser.add_argument(
        "--storm", type=int, help="connections of the close-storm workload (5000; 0 skips)"
    )
    parser.add_argument(
        "--storm-repeat", type=int, help="rounds of the close-storm workload, median kept (3)"
    )
    parser.add_argument(
        "--storm-servers",
        type=lambda text: [n.strip() for n in text.split(",")],
        default=[],
        help="the servers of the close-storm workload (default: those of --servers)",
    )
    parser.add_argument(
        "--server-python",
        action="append",
        default=[],
        metavar="LABEL=PYTHON",
        help="also run the wsthread server under this interpreter, as 'wsthread LABEL';"
        " NAME=VALUE words before the path go into its environment"
        " ('3.13t=PYTHON_GIL=0 /opt/py313t/bin/python'); repeatable",
    )
    fan = parser.add_argument_group(
        "fan-out workloads (fanout, fanout-deflate, fanout-stall, topics)"
    )
    fan.add_argument("--fanout-clients", type=int, help="clients of one server (1000)")
    fan.add_argument("--fanout-processes", type=int, help="client processes they share (2)")
    fan.add_argument("--fanout-broadcasts", type=int, help="broadcasts of the flood (300)")
    fan.add_argument("--fanout-paced", type=int, help="paced broadcasts (100)")
    fan.add_argument("--fanout-rate", type=float, help="paced broadcasts a second (50)")
    fan.add_argument("--fanout-size", type=int, help="bytes per broadcast (64)")
    fan.add_argument("--fanout-stall", type=int, help="clients that stop reading (200)")
    fan.add_argument(
        "--fanout-stall-size", type=int, help="bytes per broadcast of the stall floods (20480)"
    )
    fan.add_argument(
        "--fanout-write-limit", type=int, help="write_limit of the wsthread server (its default)"
    )
    fan.add_argument("--topics", type=int, help="topics of the topic fan-out (100)")
    parser.add_argument("--plot", metavar="FILE.png", help="draw a bar chart (needs matplotlib)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--verbose", action="store_true", help="show progress while connecting")
    args = parser.parse_args(argv)
    for entry in args.server_python:
        label, equals, spec = entry.partition("=")
        if not equals or not label or not spec:
            parser.error(f"--server-python {entry!r}: expected LABEL=PYTHON")
        INTERPRETERS[label] = spec
        if f"wsthread {label}" not in args.servers:
            args.servers.append(f"wsthread {label}")
    defaults: Dict[str, Any] = {
        "duration": 5.0,
        "warmup": 1.0,
        "repeat": 3,
        "connections": 100,
        "idle": [1000, 5000],
        "most": 10000,
        "storm": 5000,
        "storm_repeat": 3,
        "fanout_clients": 1000,
        "fanout_processes": 2,
        "fanout_broadcasts": 300,
        "fanout_paced": 100,
        "fanout_rate": 50.0,
        "fanout_size": 64,
        "fanout_stall": 200,
        "fanout_stall_size": 20480,
        "topics": 100,
    }
    if args.quick:
        defaults.update(
            duration=0.3,
            warmup=0.1,
            repeat=1,
            connections=20,
            idle=[50, 200],
            most=0,
            storm=200,
            storm_repeat=1,
            fanout_clients=20,
            fanout_broadcasts=30,
            fanout_paced=10,
            fanout_stall=4,
            fanout_stall_size=262144,
            # 30 x 256 KiB is past a stalled client's ~4 MB of socket buffers
            # and a 3 MiB write_limit; with the default 1 MiB, a reader that
            # the busy machine left behind for a moment in the first flood
            # was closed with 1013 as well (1 run in 3-8; the workload then
            # waited for it for 120 s).
            fanout_write_limit=3 * 2**20,
            topics=4,
        )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if set(args.workloads) - set(WORKLOADS):
        parser.error(f"unknown workloads {sorted(set(args.workloads) - set(WORKLOADS))}")
    unknown = set(args.servers) - set(server_commands())
    if unknown:
        parser.error(f"unknown servers {sorted(unknown)}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    global VERBOSE
    VERBOSE = args.verbose
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run(args))
    return uvloop.run(run(args))  # type: ignore[no-any-return]


if __name__ == "__main__":
    sys.exit(main())
