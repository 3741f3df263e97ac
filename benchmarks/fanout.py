"""The fan-out workloads of ``benchmarks/run.py``: one server broadcasting to many clients.

Run by ``run.py``'s event loop (``--workloads fanout,fanout-deflate,fanout-stall,topics``).
Each server is a subprocess (``benchmarks/servers/*_fanout.py``) that takes
its orders on stdin (see ``servers/fanout_control.py``); the clients are
picows connections spread over several client processes
(``benchmarks/fanout_client.py``), none of them the server's. Every message
carries its sequence number and the ``time.monotonic_ns()`` at which the
server began to send it (one clock for every process on Linux), so each
client checks that it got every message, in order, and the latency of each
delivery is measured from the server's side.

Workloads, on a fresh server per server and round, servers in turn within a
round, the median round kept:

- **fanout**: ``--fanout-clients`` clients (1,000); a flood of
  ``--fanout-broadcasts`` (300) broadcasts of ``--fanout-size`` (64) bytes as
  fast as the server makes them (deliveries/s: messages received by all
  clients over the time from the first broadcast to the last delivery), then
  ``--fanout-paced`` (100) broadcasts at ``--fanout-rate`` (50) a second
  (p50, p99 and max delivery latency);
- **fanout-deflate**: the same, every client offering Chromium's
  ``permessage-deflate; client_max_window_bits``; the servers accept it
  without server context takeover where they can;
- **fanout-stall**: a flood of the same count of larger broadcasts
  (``--fanout-stall-size``, 20 KiB: 6 MB per client, more than the
  ``write_limit`` of 1 MiB plus the ~4 MB the kernel holds for a loopback
  client that stopped reading), to the readers (``clients - stall``)
  alone, then to the same readers beside ``--fanout-stall`` (200) clients
  that stopped reading: the readers' deliveries/s against what they got
  alone, how the stalled ones ended once they read again (1013 expected),
  and the server's RSS. Servers that write to each client with a blocking
  call (``sendall``, a sync ``send()`` loop) would wait on the first
  stalled client, and do not take part;
- **topics**: ``--topics`` (100) topics, the clients spread evenly over them
  (10 each), the flood's count of rounds each publishing once to every
  topic; each client must get its own topic's messages only, all, in order.
  It runs where the server has topics; wsthread's runs once
  ``server.publish()`` exists, and until then says "not available".

Any missing, reordered, wrong or extra message is counted as an error, and
``run.py`` then exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERVERS = HERE / "servers"
FLOOR = "raw floor"
ASYNCIO = "ws asyncio"
SCRIPTS = {
    "wsthread": "wsthread_fanout.py",
    "websockets": "websockets_fanout.py",
    "raw floor": "raw_fanout.py",
    "ws asyncio": "websockets_asyncio_fanout.py",
    "picows": "picows_fanout.py",
}
NO_DEFLATE = {"picows": "picows has no permessage-deflate"}
#: Servers that write to each client in turn with a blocking call: a client that
#: stopped reading holds the whole broadcast up, so the stall workload leaves them out.
BLOCKS_ON_STALL = {
    "raw floor": "blocks in sendall() on a stalled client",
    "websockets": "blocks in send() on a stalled client",
}
WORKLOADS = ("fanout", "fanout-deflate", "fanout-stall", "topics")


def interpreter_command(spec: str) -> List[str]:
    """``"PYTHON_GIL=0 /path/python"`` as a command prefix: variables through ``env``."""
    words = shlex.split(spec)
    variables = [word for word in words if "=" in word and not word.startswith("/")]
    rest = words[len(variables) :]
    return (["env", *variables] if variables else []) + rest


def fanout_commands(interpreters: Dict[str, str]) -> Dict[str, List[str]]:
    """Each fan-out server's command, by table name; ``wsthread LABEL`` per interpreter."""
    commands = {name: [sys.executable, str(SERVERS / script)] for name, script in SCRIPTS.items()}
    for label, spec in interpreters.items():
        commands[f"wsthread {label}"] = [
            *interpreter_command(spec),
            str(SERVERS / SCRIPTS["wsthread"]),
        ]
    return commands


# ---------------------------------------------------------------------------
# Processes


class Process:
    """A subprocess that answers each line on its stdin with one JSON line on stdout."""

    def __init__(self, name: str, command: Sequence[str]) -> None:
        self.name = name
        self.command = list(command)
        self.stderr = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115 (closed by stop())
        self.process: Optional[asyncio.subprocess.Process] = None
        self.url = ""  # a server's, once started

    async def start(self) -> None:
        """Start it, with this tree first on its ``PYTHONPATH``."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.process = await asyncio.create_subprocess_exec(
            *self.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self.stderr,
            env=env,
            cwd=str(ROOT),
            limit=2**26,  # a phase's latencies come back on one line
        )

    async def line(self, timeout: float) -> str:
        """The next line on its stdout, or RuntimeError (with its stderr) if none comes."""
        assert self.process is not None and self.process.stdout is not None
        try:
            raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        except asyncio.TimeoutError:
            raw = b""
        if not raw:
            raise RuntimeError(f"{self.name}: no answer within {timeout:.0f}s{self.tail()}")
        return raw.decode()

    async def ask(self, text: str, timeout: float = 120) -> Dict[str, Any]:
        """Send one command line; its JSON answer."""
        self.send(text)
        return json.loads(await self.line(timeout))  # type: ignore[no-any-return]

    def send(self, text: str) -> None:
        """Write one command line."""
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(text.encode() + b"\n")

    def tail(self) -> str:
        """The end of its stderr, for error messages."""
        self.stderr.seek(0)
        text = self.stderr.read()[-2000:].decode(errors="replace")
        return f"\n--- {self.name} stderr ---\n{text}" if text else ""

    def status(self, key: str) -> int:
        """A figure of /proc/PID/status (VmRSS in KiB, Threads)."""
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name == key:
                    return int(value.split()[0])
        return 0

    def cpu_seconds(self) -> float:
        """User plus system CPU time so far."""
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def stop(self, quit_line: str) -> None:
        """Ask it to quit; SIGTERM after 10 s, SIGKILL after 10 more."""
        if self.process is None:
            return
        with contextlib.suppress(Exception):
            self.send(quit_line)
            assert self.process.stdin is not None
            self.process.stdin.close()
        for stop in (None, self.process.terminate, self.process.kill):
            if stop is not None and self.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    stop()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.process.wait(), 10)
                break
        self.stderr.close()


class Clients:
    """The client processes of one run, their connections split evenly between them."""

    def __init__(self, url: str, count: int, processes: int, deflate: bool) -> None:
        processes = max(1, min(processes, count))
        shares = [count // processes + (index < count % processes) for index in range(processes)]
        script = str(HERE / "fanout_client.py")
        extra = ["--deflate"] if deflate else []
        self.shares = shares
        self.processes = [
            Process(f"clients {index}", [sys.executable, script, url, str(share), *extra])
            for index, share in enumerate(shares)
        ]

    @classmethod
    def joined(cls, *groups: Clients) -> Clients:
        """The processes of several groups as one (each started and stopped once)."""
        clients = cls.__new__(cls)
        clients.shares = [share for group in groups for share in group.shares]
        clients.processes = [process for group in groups for process in group.processes]
        return clients

    async def start(self) -> List[str]:
        """Start them all and wait for their connections; the errors of those that failed."""
        for process in self.processes:
            await process.start()
        lines = await asyncio.gather(*(process.line(300) for process in self.processes))
        answers = [json.loads(line) for line in lines]
        return [error for answer in answers for error in answer["errors"]]

    async def ask(self, commands: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """One command to each process (in order); their answers."""
        return list(
            await asyncio.gather(*(p.ask(json.dumps(c)) for p, c in zip(self.processes, commands)))
        )

    async def stop(self) -> None:
        """Close every connection and end the processes."""
        await asyncio.gather(*(p.stop(json.dumps({"cmd": "close"})) for p in self.processes))


@contextlib.asynccontextmanager
async def started(process: Process) -> Any:
    """A server process, started and waited for its URL; stopped on the way out."""
    try:
        await process.start()
        line = ""
        while "ws://" not in line:
            line = await process.line(30)
        process.url = next(word for word in line.split() if word.startswith("ws://"))
        yield process
    finally:
        await process.stop("quit")


# ---------------------------------------------------------------------------
# Phases


@dataclass
class Phase:
    """What one sending command measured on one server."""

    clients: int = 0  # clients that were expected to get everything
    messages: int = 0  # messages each of them should get
    received: int = 0
    missing: int = 0
    disorder: int = 0
    wrong: int = 0
    seconds: float = float("nan")  # first broadcast to last delivery
    latencies_us: List[int] = field(default_factory=list)
    server_cpu: float = 0.0  # server CPU seconds over the phase
    cores: Tuple[float, float, float] = (0.0, 0.0, 0.0)  # CPU of server, clients, others / wall
    rss_kib: int = 0  # server RSS at the end of the phase
    endings: Dict[str, int] = field(default_factory=dict)  # how the stalled clients ended
    error: str = ""

    @property
    def rate(self) -> float:
        """Deliveries per second."""
        return self.received / self.seconds if self.seconds > 0 else float("nan")

    @property
    def faults(self) -> int:
        """Missing, out-of-order and wrong messages, all of which are errors."""
        return self.missing + self.disorder + self.wrong

    def percentile(self, fraction: float) -> float:
        """A delivery latency percentile in ms (nearest rank); ``1.0`` is the max."""
        if not self.latencies_us:
            return float("nan")
        ordered = sorted(self.latencies_us)
        index = min(len(ordered) - 1, max(0, int(round(fraction * len(ordered))) - 1))
        return ordered[index] / 1000

    def summary(self) -> Dict[str, Any]:
        """The figures, for the JSON report."""
        return {
            "clients": self.clients,
            "messages": self.messages,
            "received": self.received,
            "missing": self.missing,
            "disorder": self.disorder,
            "wrong": self.wrong,
            "seconds": self.seconds,
            "deliveries_per_s": self.rate,
            "p50_ms": self.percentile(0.5),
            "p99_ms": self.percentile(0.99),
            "max_ms": self.percentile(1.0),
            "server_cpu_s": self.server_cpu,
            "cores_server_clients_others": self.cores,
            "rss_kib": self.rss_kib,
            "endings": self.endings,
            "error": self.error,
        }


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def split(total: int, shares: Sequence[int]) -> List[int]:
    """``total`` spread over processes in proportion to their ``shares`` (for the stalled ones)."""
    count = sum(shares)
    parts = [total * share // count for share in shares]
    for index in range(total - sum(parts)):
        parts[index % len(parts)] += 1
    return parts


async def phase(
    server: Process,
    clients: Clients,
    order: str,
    messages: int,
    size: int,
    *,
    stalls: Optional[List[int]] = None,
    latency: bool = False,
    topics: bool = False,
) -> Phase:
    """Have the clients expect ``messages``, the server run ``order``, and tally.

    ``stalls``: how many connections of each client process stop reading.
    """
    stalls = stalls or [0] * len(clients.processes)
    result = Phase(clients=sum(clients.shares) - sum(stalls), messages=messages)
    for process, stalled in zip(clients.processes, stalls):
        process.send(
            json.dumps(
                {
                    "cmd": "expect",
                    "count": messages,
                    "size": size,
                    "stall": stalled,
                    "latency": latency,
                    "topics": topics,
                }
            )
        )
    for process in clients.processes:
        assert json.loads(await process.line(60)) == {"ready": True}
    cpu, began, busy = server.cpu_seconds(), time.monotonic(), machine_busy_seconds()
    client_cpu = sum(process.cpu_seconds() for process in clients.processes)
    answer = await server.ask(order, timeout=120)  # a server stuck on a stalled client fails
    if "error" in answer:
        result.error = answer["error"]
        for process in clients.processes:  # the clients end the phase once idle
            await process.line(120)
        return result
    tallies = [json.loads(await p.line(600)) for p in clients.processes]
    result.server_cpu = server.cpu_seconds() - cpu
    wall = time.monotonic() - began
    client_cpu = sum(process.cpu_seconds() for process in clients.processes) - client_cpu
    others = machine_busy_seconds() - busy - result.server_cpu - client_cpu
    result.cores = (result.server_cpu / wall, client_cpu / wall, max(0.0, others) / wall)
    result.rss_kib = server.status("VmRSS")
    for tally in tallies:
        result.received += tally["received"]
        result.missing += tally["missing"]
        result.disorder += tally["disorder"]
        result.wrong += tally["wrong"]
        result.latencies_us += tally["latencies_us"]
    last = max((tally["last_ns"] for tally in tallies), default=0)
    if last:
        result.seconds = (last - answer["started_ns"]) / 1e9
    result.wrong += max(0, result.received - result.clients * messages)  # extras
    return result


async def wait_connected(server: Process, count: int, key: str = "connections") -> None:
    """Until the server counts ``count`` clients (or subscriptions) on its side."""
    deadline = time.monotonic() + 120
    while True:
        seen = (await server.ask("count"))[key]
        if seen >= count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name}: {seen} of {count} {key} after 120 s")
        await asyncio.sleep(0.1)


@dataclass
class Settings:
    """The sizes of the fan-out workloads (from run.py's command line)."""

    clients: int = 1000
    broadcasts: int = 300
    paced: int = 100
    rate: float = 50.0
    size: int = 64
    stall: int = 200
    stall_size: int = 20480
    topics: int = 100
    processes: int = 2
    write_limit: Optional[int] = None


async def one_server(
    name: str, command: List[str], settings: Settings, deflate: bool, workloads: Sequence[str]
) -> Dict[str, Phase]:
    """Every phase of one block (plain or deflate) on a fresh server and fresh clients."""
    phases: Dict[str, Phase] = {}
    extra = ["--deflate"] if deflate else []
    if settings.write_limit is not None:
        extra += ["--write-limit", str(settings.write_limit)]
    size, count = settings.size, settings.broadcasts
    async with started(Process(name, [*command, *extra])) as server:
        clients = Clients(server.url, settings.clients, settings.processes, deflate)
        try:
            errors = await clients.start()
            if errors:
                raise RuntimeError(f"{name}: {len(errors)} clients failed to open: {errors[0]}")
            await wait_connected(server, settings.clients)
            prefix = "deflate " if deflate else ""
            warm = min(count, 20)
            phases["warm-up"] = await phase(server, clients, f"flood {warm} {size}", warm, size)
            phases[prefix + "flood"] = await phase(
                server, clients, f"flood {count} {size}", count, size
            )
            phases[prefix + "paced"] = await phase(
                server,
                clients,
                f"paced {settings.paced} {settings.rate} {size}",
                settings.paced,
                size,
                latency=True,
            )
            if not deflate and "topics" in workloads:
                phases["topics"] = await topics_phase(server, clients, settings)
        finally:
            await clients.stop()
    return phases


async def topics_phase(server: Process, clients: Clients, settings: Settings) -> Phase:
    """Subscribe the clients evenly to the topics, then publish rounds to every topic."""
    first = 0
    commands = []
    for share in clients.shares:
        commands.append({"cmd": "subscribe", "topics": settings.topics, "first": first})
        first += share
    await clients.ask(commands)
    count = settings.broadcasts
    probe = await server.ask("topics 0 0 0")
    if "error" in probe:
        return Phase(error=probe["error"])
    await wait_connected(server, settings.clients, "subscribed")
    order = f"topics {count} {settings.topics} {settings.size}"
    return await phase(server, clients, order, count, settings.size, topics=True)


async def stall_server(name: str, command: List[str], settings: Settings) -> Dict[str, Phase]:
    """The stall workload on a fresh server: the readers alone, then beside stalled clients.

    The readers (``clients - stall`` of them) take the flood of larger
    broadcasts alone first ("stall base"); then the stalled clients join,
    from a process of their own, and stop reading, and the readers take
    the same flood again ("stall"); at last the stalled ones read again
    and say how they ended.
    """
    base_name = "wsthread" if name.startswith("wsthread ") else name
    if base_name in BLOCKS_ON_STALL:
        return {"stall": Phase(error=BLOCKS_ON_STALL[base_name])}
    extra = []
    if settings.write_limit is not None:
        extra += ["--write-limit", str(settings.write_limit)]
    count, size, stall = settings.broadcasts, settings.stall_size, settings.stall
    order = f"flood {count} {size}"
    async with started(Process(name, [*command, *extra])) as server:
        readers = Clients(server.url, settings.clients - stall, settings.processes, False)
        stalled = Clients(server.url, stall, 1, False)
        everyone = Clients.joined(readers, stalled)
        try:
            for group, total in ((readers, settings.clients - stall), (stalled, settings.clients)):
                errors = await group.start()
                if errors:
                    raise RuntimeError(f"{name}: {len(errors)} clients failed: {errors[0]}")
                await wait_connected(server, total)
                if group is readers:
                    base = await phase(server, readers, order, count, size)
            stalls = [0] * len(readers.processes) + [stall]
            result = await phase(server, everyone, order, count, size, stalls=stalls)
            (answer,) = await stalled.ask([{"cmd": "resume", "stall": stall, "wait": 5.0}])
            result.endings = dict(answer["endings"])
            # The close codes the server sent, where it counts them (wsthread's
            # stats()): a 1013 it could not deliver to a full socket shows here.
            counted = (await server.ask("stats")).get("stats", {}).get("sent_closes", {})
            for code, number in counted.items():
                result.endings[f"server sent {code}"] = number
        finally:
            await everyone.stop()
    return {"stall base": base, "stall": result}


# ---------------------------------------------------------------------------
# The run and the table


def median(phases: List[Phase], key: str) -> Phase:
    """The round whose figure is the median (the lower middle for an even count)."""
    if key.endswith("paced"):
        ordered = sorted(phases, key=lambda p: p.percentile(0.99))
    else:
        ordered = sorted(phases, key=lambda p: -p.rate if p.rate == p.rate else 0)
    return ordered[(len(ordered) - 1) // 2]


async def run(
    names: Sequence[str],
    interpreters: Dict[str, str],
    settings: Settings,
    workloads: Sequence[str],
    repeat: int,
) -> Tuple[str, Dict[str, Any], int, Dict[str, Dict[str, float]]]:
    """Run the fan-out workloads; the table, the JSON report, the error count and plot figures."""
    commands = fanout_commands(interpreters)
    chosen = [name for name in names if name in commands]
    skipped = [name for name in names if name not in commands]
    if skipped:
        print(f"fan-out: no fan-out server for {', '.join(skipped)}", flush=True)
    blocks = []  # one fresh server and fresh clients each
    if {"fanout", "topics"} & set(workloads):
        blocks.append("plain")
    if "fanout-deflate" in workloads:
        blocks.append("deflate")
    if "fanout-stall" in workloads:
        blocks.append("stall")
    print(
        f"fan-out: {settings.clients:,} clients in {settings.processes} processes,"
        f" {settings.size} B binary; flood {settings.broadcasts}, paced {settings.paced}"
        f" at {settings.rate:g}/s; {repeat} round(s), servers in turn, median kept",
        flush=True,
    )
    rounds: Dict[Tuple[str, str], List[Phase]] = {}
    unsupported: Dict[Tuple[str, str], str] = {}
    errors = 0
    for _round in range(repeat):
        for block in blocks:
            deflate = block == "deflate"
            for name in chosen:
                base = name.split(" ")[0] if name.startswith("wsthread ") else name
                if deflate and base in NO_DEFLATE:
                    unsupported[name, "deflate"] = NO_DEFLATE[base]
                    continue
                try:
                    if block == "stall":
                        phases = await stall_server(name, commands[name], settings)
                    else:
                        phases = await one_server(
                            name, commands[name], settings, deflate, workloads
                        )
                except RuntimeError as exc:
                    print(f"  fan-out {name}: FAILED: {exc}", flush=True)
                    errors += 1
                    continue
                for key, result in phases.items():
                    if result.error:
                        unsupported[name, key] = result.error
                        print(f"  {key:<14} {name:<14} {result.error}", flush=True)
                        continue
                    errors += result.faults
                    rounds.setdefault((key, name), []).append(result)
                    if key not in ("warm-up", "stall base"):
                        print(f"  {key:<14} {name:<14} {describe(key, result)}", flush=True)
    results = {key: median(values, key[0]) for key, values in rounds.items()}
    table, figures = make_table(results, unsupported, chosen, settings)
    report: Dict[str, Any] = {
        "settings": vars(settings),
        "results": {f"{key} / {name}": r.summary() for (key, name), r in results.items()},
        "rounds": {
            f"{key} / {name}": [r.summary() for r in values]
            for (key, name), values in rounds.items()
        },
        "unsupported": {f"{key} / {name}": why for (name, key), why in unsupported.items()},
        "table": table,
    }
    return table, report, errors, figures


def describe(key: str, result: Phase) -> str:
    """One progress line."""
    rate = "" if key.endswith("paced") else f"{result.rate:>10,.0f} deliveries/s, "
    text = (
        f"{rate}{result.received:,} of {result.clients * result.messages:,},"
        f" {result.faults} missing/wrong"
    )
    if key.endswith("paced"):
        text += (
            f", p50 {result.percentile(0.5):.2f} ms, p99 {result.percentile(0.99):.2f} ms,"
            f" max {result.percentile(1.0):.2f} ms"
        )
    text += f" (server CPU {result.server_cpu:.2f} s, RSS {result.rss_kib / 1024:.0f} MiB"
    if result.endings:
        text += ", stalled ones: " + ", ".join(f"{k}: {v}" for k, v in result.endings.items())
    return text + ")"


def make_table(
    results: Dict[Tuple[str, str], Phase],
    unsupported: Dict[Tuple[str, str], str],
    names: Sequence[str],
    settings: Settings,
) -> Tuple[str, Dict[str, Dict[str, float]]]:
    """The Markdown table (figures, then ratios to the floor and to websockets asyncio).

    Also returns the rows the chart draws (``--plot``): the deliveries/s and p99 rows.
    """
    refs = [ref for ref in (FLOOR, ASYNCIO) if ref in names]
    others = [name for name in names if name not in refs]
    header = ["fan-out", *names, *(f"{name} / {' ; '.join(refs)}" for name in others)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    figures: Dict[str, Dict[str, float]] = {}
    clients = settings.clients

    def add(
        label: str,
        key: str,
        value: Callable[..., float],
        digits: int,
        ratios: bool = True,
        plot: Optional[bool] = None,
    ) -> None:
        row: Dict[str, float] = {}
        cells = [label]
        for name in names:
            result = results.get((key, name))
            why = unsupported.get((name, key)) or unsupported.get((name, key.split()[0]))
            if result is None:
                cells.append("n/a: " + why if why else "-")
                row[name] = float("nan")
                continue
            row[name] = value(result, name)
            shown = row[name]
            cells.append("-" if shown != shown else f"{shown:,.{digits}f}")
        for name in others:
            cells.append(
                " ; ".join(ratio(row[name], row[ref]) for ref in refs) if ratios and refs else ""
            )
        lines.append("| " + " | ".join(cells) + " |")
        if ratios if plot is None else plot:
            figures[label] = row

    flood = f"flood, deliveries/s ({clients:,} clients x {settings.broadcasts})"
    for prefix, title in (("", ""), ("deflate ", "deflate ")):
        if not any(key == prefix + "flood" for key, _ in results):
            continue
        add(f"{title}{flood}", prefix + "flood", lambda r, n: r.rate, 0)
        for fraction, tag in ((0.5, "p50"), (0.99, "p99"), (1.0, "max")):
            add(
                f"{title}paced {settings.rate:g}/s: {tag} latency (ms)",
                prefix + "paced",
                lambda r, n, f=fraction: r.percentile(f),
                2,
                plot=tag == "p99",
            )
        add(
            f"{title}flood: server CPU s",
            prefix + "flood",
            lambda r, n: r.server_cpu,
            2,
            ratios=False,
        )
        add(
            f"{title}flood: server CPU us per delivery",
            prefix + "flood",
            lambda r, n: r.server_cpu / r.received * 1e6 if r.received else float("nan"),
            1,
            plot=False,
        )
        cells = []
        for name in names:
            result = results.get((prefix + "flood", name))
            cells.append(" / ".join(f"{c:.2f}" for c in result.cores) if result else "-")
        lines.append(
            f"| {title}flood: CPU of server / clients / others (cores) | "
            + " | ".join(cells)
            + " |" * (1 + len(others))
        )
    if any(key == "stall" for key, _ in results) or any(k == "stall" for _, k in unsupported):
        active = clients - settings.stall
        add(
            f"stall: deliveries/s to the {active:,} still reading ({settings.stall} stalled,"
            f" {settings.broadcasts} x {settings.stall_size} B)",
            "stall",
            lambda r, n: r.rate,
            0,
        )
        add(
            "stall: per-reader rate vs the readers alone",
            "stall",
            lambda r, n: stall_ratio(r, results.get(("stall base", n)), active, clients),
            2,
            ratios=False,
        )
        add("stall: server RSS MiB at the end", "stall", lambda r, n: r.rss_kib / 1024, 0, False)
        lines.append(
            "| stall: how the stalled ended once read again | "
            + " | ".join(endings(results.get(("stall", n))) for n in names)
            + " |" * (1 + len(others))
        )
    if any(key == "topics" for key, _ in results) or any(k == "topics" for _, k in unsupported):
        per = clients // max(1, settings.topics)
        add(
            f"topics: deliveries/s ({settings.topics} topics x {per} subscribers)",
            "topics",
            lambda r, n: r.rate,
            0,
        )
    missing = {name: 0 for name in names}
    for (_key, name), result in results.items():
        missing[name] += result.faults
    lines.append(
        "| missing, reordered or wrong messages | "
        + " | ".join(str(missing[n]) for n in names)
        + " |" * (1 + len(others))
    )
    return "\n".join(lines), figures


def stall_ratio(stalled: Phase, plain: Optional[Phase], active: int, clients: int) -> float:
    """Deliveries/s per reading client with stalled ones, over the same without (same server)."""
    if plain is None or plain.rate != plain.rate:
        return float("nan")
    return (stalled.rate / active) / (plain.rate / clients)


def endings(result: Optional[Phase]) -> str:
    """How the stalled clients ended, as ``1013: 200``."""
    if result is None or not result.endings:
        return "-"
    return ", ".join(f"{key}: {value}" for key, value in sorted(result.endings.items()))


def ratio(value: float, reference: float) -> str:
    """``value / reference`` as ``1.23x``."""
    if not reference or value != value or reference != reference:
        return "-"
    return f"{value / reference:.2f}x"
