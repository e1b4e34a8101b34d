#!/usr/bin/env python3
"""mailhook's benchmark: mailhook against bare relays, on loopback, with figures and ratios.

    .venv/bin/python benchmarks/run.py            # full run, a few minutes on 2 cores
    .venv/bin/python benchmarks/run.py --quick    # small counts, under a minute (CI runs this)

It starts, each as its own process: a sink (Postfix's ``smtp-sink`` when installed, else
benchmarks/sink.py), the TrueConf API stand-in, the relays of benchmarks/bare_relay.py (a new
next-hop connection per message, and the pooled one, each with as many processes as mailhook
has workers) and ``python -m mailhook serve`` on a generated config. Ordinary mail is driven
with Postfix's ``smtp-source`` when installed (else the Python client in benchmarks/load.py);
invitations and every latency figure come from the Python client. The fair comparison with the
pooled relay (CPU per message, rounds interleaved, min/median/max) is benchmarks/fair.py's. It
prints the tables of figures and one of targets (ratio, PASS/FAIL). See benchmarks/README.md
for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import platform
import random
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import fair  # noqa: E402  (benchmarks/fair.py, next to this script)
import load  # noqa: E402  (benchmarks/load.py, next to this script)
import outlook  # noqa: E402  (benchmarks/outlook.py)
from load import Message, Run  # noqa: E402
from tables import figures_table, markdown, targets_table  # noqa: E402

MB = 1024 * 1024
SMTP_SINK = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if os.access("/usr/sbin/smtp-sink", os.X_OK) else None)
SMTP_SOURCE = shutil.which("smtp-source") or ("/usr/sbin/smtp-source" if os.access("/usr/sbin/smtp-source", os.X_OK) else None)
API_SECRET = "bench-only-client-secret"  # the stand-in's, never a real one
WATCHDOG_USEC = 30_000_000  # systemd/mailhook.service: WatchdogSec=30
SCENARIOS = ("fair", "growth", "ordinary", "invitations", "slow", "big", "idle", "store")


@dataclass(frozen=True)
class Scale:
    """How much each scenario sends."""

    ordinary_4k: int
    ordinary_100k: int
    invitations: int
    slow_invitations: int
    latency: int  # messages of each 1-session latency run
    warmup: int
    stored_events: int
    store_seconds: float  # length of each timed run of the stored-events comparison
    big_size: int
    idle: int
    rounds: int  # slices of each loaded comparison, the paths taking turns
    fair_invitations: int  # per path and round of the fair comparison
    fair_ordinary: int
    growth: int  # invitations per point and round of the growth checks
    fair_rounds: int  # rounds of the fair comparison, growth checks and stored-events runs


FULL = Scale(ordinary_4k=4000, ordinary_100k=1000, invitations=1000, slow_invitations=1000,
             latency=300, warmup=100, stored_events=100_000, store_seconds=8.0,
             big_size=25 * MB, idle=1000, rounds=4, fair_invitations=1000, fair_ordinary=3000,
             growth=500, fair_rounds=3)
QUICK = Scale(ordinary_4k=300, ordinary_100k=100, invitations=100, slow_invitations=100,
              latency=30, warmup=20, stored_events=5_000, store_seconds=1.0,
              big_size=5 * MB, idle=1000, rounds=1, fair_invitations=60, fair_ordinary=200,
              growth=20, fair_rounds=3)


# --- processes --------------------------------------------------------------------------------


def free_port() -> int:
    """A free loopback port below the ephemeral range, so that no outgoing connection of the
    benchmark (there are many thousands) can take it between this check and the server's bind."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randrange(10000, max(10001, low - 1))
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found")


class Server:
    """One server process on loopback: started, measured through /proc, stopped."""

    def __init__(self, name: str, argv: list[str], port: int, logdir: Path,
                 env: dict[str, str] | None = None, smtp: bool = True) -> None:
        self.name, self.argv, self.port, self.smtp = name, argv, port, smtp
        self.log_path = logdir / f"{name}-{port}.log"
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 30.0) -> Server:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if self._answers():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not come up in {timeout:.0f} s:\n{self.log_tail()}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as conn:
                if not self.smtp:
                    return True
                conn.settimeout(5)
                greeting = conn.recv(512)
                conn.sendall(b"QUIT\r\n")
                return greeting.startswith(b"220")
        except OSError:
            return False

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    # /proc figures (summed over the server's processes: mailhook's supervisor and workers too)

    def pids(self) -> list[int]:
        """The server process and every process it started."""
        found, index = [self.pid], 0
        while index < len(found):
            for task in Path(f"/proc/{found[index]}/task").glob("*"):
                try:
                    found += [int(pid) for pid in (task / "children").read_text().split()]
                except OSError:
                    pass
            index += 1
        return found

    def memory(self) -> dict[str, int]:
        """Bytes, summed over the processes: VmRSS, VmHWM, and Pss (the resident pages with
        those shared between processes divided among them, so forked workers are not counted
        twice; with one process it is about VmRSS)."""
        figures = {"VmRSS": 0, "VmHWM": 0, "Pss": 0}
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            for line in (*status.splitlines(), *rollup.splitlines()):
                key, _, value = line.partition(":")
                if key in figures:
                    figures[key] += int(value.split()[0]) * 1024
        return figures

    def reset_peak(self) -> bool:
        """Make VmHWM start again from the current RSS (Linux 4.0+); False when not allowed."""
        try:
            for pid in self.pids():
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def cpu(self) -> float:
        """User + system CPU seconds used so far by the server's processes."""
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def settle(self, timeout: float = 60.0) -> None:
        """Wait until the process is idle (start-up work, such as reading the store, is done)."""
        deadline = time.monotonic() + timeout
        last = self.cpu()
        while time.monotonic() < deadline:
            time.sleep(0.3)
            now = self.cpu()
            if now - last < 0.03:
                return
            last = now


class NotifySocket:
    """A stand-in for systemd's notify socket, so mailhook runs as under its unit (Type=notify)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(path))
        self._socket.settimeout(0.5)
        self.messages = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True, name="notify")
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self._socket.recv(4096)
                self.messages += 1
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._socket.close()


# --- results ----------------------------------------------------------------------------------


@dataclass
class Figure:
    """One row of the figures table: one workload through one path."""

    workload: str
    path: str
    client: str
    sessions: int
    messages: int
    rate: float = math.nan
    cpu_ms: float = math.nan  # server CPU per message during the loaded run
    p50: float = math.nan  # seconds
    p99: float = math.nan
    added_p50: float = math.nan  # over direct-to-sink, same load
    added_p99: float = math.nan
    peak_rss: float = math.nan  # bytes, VmHWM of the server process
    latency_from: str = "1 session"
    failures: Counter[str] = field(default_factory=Counter)
    slices: list[tuple[float, float]] = field(default_factory=list)  # (msg/s, CPU ms) per slice


@dataclass
class Target:
    """One row of the targets table."""

    scenario: str
    target: str
    measured: str
    ratio: float
    needs: str  # ">= 1.00" or "<= 4.00"
    note: str = ""

    @property
    def passed(self) -> bool:
        if math.isnan(self.ratio):
            return False
        bound = float(self.needs.split()[1])
        return self.ratio >= bound if self.needs.startswith(">=") else self.ratio <= bound


# --- the benchmark ----------------------------------------------------------------------------


class Bench:
    """Runs every scenario; collects figures and targets."""

    def __init__(self, scale: Scale, workdir: Path, *, postfix_tools: bool, notify: bool,
                 say: Callable[[str], None], workers: int = 1) -> None:
        self.scale = scale
        self.workdir = workdir
        self.logdir = workdir / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.use_sink = bool(postfix_tools and SMTP_SINK)
        self.use_source = bool(postfix_tools and SMTP_SOURCE)
        self.notify = NotifySocket(workdir / "notify.sock") if notify else None
        self.say = say
        self.workers = workers
        self.figures: list[Figure] = []
        self.targets: list[Target] = []
        self.servers: list[Server] = []
        self.sink: Server | None = None
        self.standin: Server | None = None
        self._runs = 0
        self.fair: fair.Fair | None = None
        self.store_rows: list[fair.PathFigures] = []

    # processes

    def _start(self, build: Callable[[int], Server]) -> Server:
        """Start the server ``build`` makes for a free port; try another port if that fails."""
        for attempt in range(3):
            server = build(free_port())
            self.servers.append(server)
            try:
                return server.start()
            except RuntimeError:
                server.stop()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def stop(self, server: Server | None) -> None:
        if server is not None:
            server.stop()

    def stop_all(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        if self.notify is not None:
            self.notify.close()

    def start_sink(self) -> Server:
        def build(port: int) -> Server:
            if self.use_sink:
                argv = [str(SMTP_SINK)]
                if os.geteuid() == 0:
                    argv += ["-u", "nobody"]  # smtp-sink refuses to run as root without it
                argv += [f"127.0.0.1:{port}", "1024"]
                return Server("smtp-sink", argv, port, self.logdir)
            return Server("sink", [sys.executable, str(HERE / "sink.py"), "--port", str(port)],
                          port, self.logdir)
        return self._start(build)

    def start_standin(self, latency: float = 0.0) -> Server:
        def build(port: int) -> Server:
            argv = [sys.executable, "-m", "mailhook.testing.standin", "--port", str(port),
                    "--users", str(ROOT / "config" / "standin-users.json"),
                    "--client-secret", API_SECRET, "--latency", str(latency)]
            return Server("standin", argv, port, self.logdir, smtp=False)
        return self._start(build)

    def set_api_latency(self, seconds: float) -> None:
        self._control("latency", {"seconds": seconds})

    def _control(self, action: str, body: dict[str, object] | None = None) -> object:
        assert self.standin is not None
        url = f"http://127.0.0.1:{self.standin.port}/_standin/{action}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def conference_count(self) -> int:
        answer = self._control("conferences")
        assert isinstance(answer, dict)
        return len(answer["conferences"])

    def start_bare(self) -> Server:
        return self.start_relay(pooled=False)

    def start_relay(self, pooled: bool) -> Server:
        """A relay of benchmarks/bare_relay.py with as many processes as mailhook's workers."""
        assert self.sink is not None
        next_hop = f"127.0.0.1:{self.sink.port}"
        extra = ["--pooled"] if pooled else []
        server = self._start(lambda port: Server(
            "pooled-relay" if pooled else "bare-relay",
            [sys.executable, str(HERE / "bare_relay.py"), "--port", str(port), "--next-hop", next_hop,
             "--processes", str(self.workers), *extra], port, self.logdir))
        server.settle()
        return server

    def start_mailhook(self, store: Path | None = None) -> Server:
        assert self.sink is not None and self.standin is not None
        self._runs += 1
        store = store or self.workdir / f"store-{self._runs}" / "mailhook.sqlite3"
        config = self.workdir / f"mailhook-{self._runs}.toml"
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("MAILHOOK_", "NOTIFY_SOCKET", "WATCHDOG_"))}
        if self.notify is not None:
            env["NOTIFY_SOCKET"] = str(self.notify.path)
            env["WATCHDOG_USEC"] = str(WATCHDOG_USEC)
        argv = [sys.executable, "-m", "mailhook", "serve", "--config", str(config)]
        server = self._start(lambda port: self._mailhook(config, store, port, argv, env))
        server.settle()
        return server

    def _mailhook(self, config: Path, store: Path, port: int, argv: list[str],
                  env: dict[str, str]) -> Server:
        assert self.sink is not None and self.standin is not None
        # The shipped defaults (the organizer notice on: it goes to the sink too), except for
        # addresses, the store, and the metrics endpoint, which a throughput run does not measure.
        config.write_text(f"""\
[smtp]
listen_host = "127.0.0.1"
listen_port = {port}
workers = {self.workers}
[relay]
host = "127.0.0.1"
port = {self.sink.port}
[trueconf]
server_url = "http://127.0.0.1:{self.standin.port}"
client_id = "mailhook"
client_secret = "{API_SECRET}"
user_mapping = "local_part"
[policy]
local_domains = ["example.com"]
[store]
path = "{store}"
[metrics]
enabled = false
""")
        return Server("mailhook", argv, port, self.logdir, env=env)

    # load

    def drive(self, port: int, messages: Sequence[Message], sessions: int,
              until: float | None = None) -> Run:
        return asyncio.run(load.drive(port=port, host="127.0.0.1", messages=messages,
                                      sessions=sessions, until=until))

    def source(self, port: int, sessions: int, count: int, size: int) -> Run:
        """Ordinary mail with smtp-source: -d keeps each session's connection for its messages."""
        assert SMTP_SOURCE is not None
        argv = [SMTP_SOURCE, "-s", str(sessions), "-m", str(count), "-l", str(size), "-d",
                "-f", load.SENDER, "-t", load.RECIPIENTS[0], f"127.0.0.1:{port}"]
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, timeout=600)
        elapsed = time.perf_counter() - started
        run = Run(sent=count, elapsed=elapsed)
        trouble = (done.stderr or b"").decode(errors="replace").strip()
        if done.returncode != 0 or trouble:
            run.failures[(trouble.splitlines() or [f"exit {done.returncode}"])[0][:120]] += 1
            return run
        run.latencies = [math.nan] * count  # accepted, but smtp-source does not time messages
        return run

    def loaded(self, server: Server | None, port: int, figure: Figure, *,
               messages: Sequence[Message] | None = None, size: int = 0) -> Run:
        """The loaded run of ``figure``: its rate, and the server's CPU per message."""
        cpu = server.cpu() if server else 0.0
        if messages is None:
            run = self.source(port, figure.sessions, figure.messages, size)
        else:
            run = self.drive(port, messages, figure.sessions)
        if server is not None:
            figure.cpu_ms = (server.cpu() - cpu) * 1000 / max(1, run.accepted)
        figure.rate = run.rate
        figure.messages = run.sent
        figure.failures.update(run.failures)
        return run

    def warm(self, port: int, messages: Sequence[Message], sessions: int = 20) -> None:
        run = self.drive(port, messages, sessions)
        if run.failures:
            raise RuntimeError(f"warm-up on port {port} failed: {dict(run.failures)}")

    def add(self, figure: Figure, server: Server | None = None) -> Figure:
        if server is not None:
            figure.peak_rss = server.memory()["VmHWM"]
        self.figures.append(figure)
        return figure

    # scenarios

    def run(self, only: Sequence[str] = SCENARIOS) -> None:
        self.sink = self._start_sink_once()
        self.standin = self.start_standin()
        if "fair" in only or "growth" in only:
            scale = self.scale
            self.fair = fair.Fair(self, invitations=scale.fair_invitations, ordinary=scale.fair_ordinary,
                                  growth=scale.growth, rounds=scale.fair_rounds)
            if "fair" in only:
                self.fair.comparison()
            if "growth" in only:
                self.fair.growth_checks()
            self.targets += [Target(**target) for target in self.fair.targets]
        if "ordinary" in only:
            self.ordinary(4 * 1024, self.scale.ordinary_4k)
            self.ordinary(100 * 1024, self.scale.ordinary_100k)
        if "invitations" in only:
            self.invitations()
        if "slow" in only:
            self.slow_invitations()
        if "big" in only:
            self.big_message()
        if "idle" in only:
            self.idle_connections()
        if "store" in only:
            self.stored_events()

    def _start_sink_once(self) -> Server:
        sink = self.start_sink()
        self.say(f"sink: {sink.name} on port {sink.port}; ordinary load from "
                 f"{'smtp-source' if self.use_source else 'the Python client'}")
        return sink

    def compare(self, label: str, client: str, paths: Sequence[tuple[str, Server]], count: int,
                bulk: Sequence[Message] | None, size: int, timed: Sequence[Message]) -> list[Figure]:
        """Throughput and latency of several paths under the same conditions.

        The loaded runs go in ``rounds`` slices, the paths taking turns (order rotating), and
        the latency runs interleave message by message, so drift in the machine's speed
        affects every path alike. ``bulk`` None means smtp-source with ``size`` byte bodies.
        """
        rounds = self.scale.rounds
        figures = [Figure(label, name, client, 20, 0) for name, _ in paths]
        cpu, elapsed, accepted = [0.0] * len(paths), [0.0] * len(paths), [0] * len(paths)
        for number in range(rounds):
            first, last = count * number // rounds, count * (number + 1) // rounds
            for turn in range(len(paths)):
                which = (number + turn) % len(paths)
                server, figure = paths[which][1], figures[which]
                before = server.cpu()
                if bulk is None:
                    run = self.source(server.port, figure.sessions, last - first, size)
                else:
                    run = self.drive(server.port, bulk[first:last], figure.sessions)
                used = server.cpu() - before
                figure.slices.append((run.rate, used * 1000 / max(1, run.accepted)))
                cpu[which] += used
                elapsed[which] += run.elapsed
                accepted[which] += run.accepted
                figure.messages += run.sent
                figure.failures.update(run.failures)
        for which, figure in enumerate(figures):
            figure.rate = accepted[which] / elapsed[which] if elapsed[which] else math.nan
            figure.cpu_ms = cpu[which] * 1000 / max(1, accepted[which])
        runs = asyncio.run(load.interleave("127.0.0.1", [server.port for _, server in paths], timed))
        for (_, server), figure, run in zip(paths, figures, runs):
            figure.p50, figure.p99 = run.percentile(0.5), run.percentile(0.99)
            figure.failures.update(run.failures)
            figure.peak_rss = server.memory()["VmHWM"]
            self.figures.append(figure)
        direct = figures[0]
        for figure in figures[1:]:
            self._added(figure, direct)
        return figures

    def ordinary(self, size: int, count: int) -> None:
        assert self.sink is not None
        label = f"ordinary {size // 1024} KB"
        self.say(f"{label}: {count} messages, 20 sessions, then {self.scale.latency} on 1 session")
        client = "smtp-source" if self.use_source else "python"
        bulk = None if self.use_source else [Message.of(load.ordinary(size, i)) for i in range(count)]
        timed = [Message.of(load.ordinary(size, i)) for i in range(self.scale.latency)]
        warmup = [Message.of(load.ordinary(size, i)) for i in range(self.scale.warmup)]
        bare_server, mailhook = self.start_bare(), self.start_mailhook()
        for server in (bare_server, mailhook):
            self.warm(server.port, warmup)
        paths = [("direct to sink", self.sink), ("bare relay", bare_server), ("mailhook", mailhook)]
        _, bare, mine = self.compare(label, client, paths, count, bulk, size, timed)
        self.stop(bare_server)
        self.stop(mailhook)
        self.targets.append(Target(
            f"{label}, 20 sessions: msg/s", "mailhook ≥ 1.0× bare relay",
            f"{mine.rate:.0f} vs {bare.rate:.0f} msg/s", mine.rate / bare.rate, ">= 1.00",
            note=_failures(mine, bare)))
        self.targets.append(Target(
            f"{label}: added latency p50", "≤ 2 ms over the bare relay",
            f"{(mine.p50 - bare.p50) * 1000:+.2f} ms ({mine.p50 * 1000:.2f} vs {bare.p50 * 1000:.2f})",
            (mine.p50 - bare.p50) * 1000 / 2.0, "<= 1.00", note=_failures(mine, bare)))

    def invitations(self) -> None:
        """Invitations at 0 ms API latency, and the bare relay on the same bytes."""
        assert self.sink is not None
        count, label = self.scale.invitations, "invitation, API 0 ms"
        self.say(f"{label}: {count} invitations, 20 sessions, then {self.scale.latency} on 1 session")
        bulk = [Message.of(load.invitation(i, "bulk")) for i in range(count)]
        timed = [Message.of(load.invitation(i, "timed")) for i in range(self.scale.latency)]
        warmup = [Message.of(load.invitation(i, "warm")) for i in range(self.scale.warmup)]
        bare_server, mailhook = self.start_bare(), self.start_mailhook()
        for server in (bare_server, mailhook):
            self.warm(server.port, warmup)
        before = self.conference_count()
        paths = [("direct to sink", self.sink), ("bare relay (as ordinary mail)", bare_server),
                 ("mailhook", mailhook)]
        _, bare, mine = self.compare(label, "python", paths, count, bulk, 0, timed)
        created = self.conference_count() - before
        self.stop(bare_server)
        self.stop(mailhook)
        expected = mine.messages + len(timed)
        note = _failures(mine, bare) or (f"only {created} of {expected} got a conference"
                                         if created != expected else "")
        self.targets.append(Target(
            f"{label}, 20 sessions: msg/s", "≥ 0.5× bare relay's rate (same messages and client)",
            f"{mine.rate:.0f} vs {bare.rate:.0f} msg/s",
            mine.rate / bare.rate if created == expected else math.nan, ">= 0.50", note=note))
        self.targets.append(Target(
            f"{label}: added latency p50", "≤ 15 ms over the bare relay",
            f"{(mine.p50 - bare.p50) * 1000:+.2f} ms ({mine.p50 * 1000:.2f} vs {bare.p50 * 1000:.2f})",
            (mine.p50 - bare.p50) * 1000 / 15.0, "<= 1.00", note=_failures(mine, bare)))

    def slow_invitations(self) -> None:
        latency, sessions, count = 0.2, 50, self.scale.slow_invitations
        label = "invitation, API 200 ms"
        self.say(f"{label}: {count} invitations, {sessions} sessions")
        self.set_api_latency(latency)
        try:
            server = self.start_mailhook()
            self.warm(server.port, [Message.of(load.invitation(i, "slow-warm")) for i in range(sessions)],
                      sessions)
            before = self.conference_count()
            mine = Figure(label, "mailhook", "python", sessions, count, latency_from="loaded")
            run = self.loaded(server, server.port, mine,
                              messages=[Message.of(load.invitation(i, "slow")) for i in range(count)])
            mine.p50, mine.p99 = run.percentile(0.5), run.percentile(0.99)
            created = self.conference_count() - before
            self.add(mine, server)
            self.stop(server)
        finally:
            self.set_api_latency(0.0)
        ceiling = sessions / latency
        note = _failures(mine) or (f"only {created} of {mine.messages} got a conference"
                                   if created != mine.messages else "")
        self.targets.append(Target(
            f"{label}, {sessions} sessions: msg/s", f"≥ 0.8 × sessions ÷ latency = {0.8 * ceiling:.0f} msg/s",
            f"{mine.rate:.0f} msg/s (p50 {mine.p50 * 1000:.0f} ms)",
            mine.rate / ceiling if created == mine.messages else math.nan, ">= 0.80", note=note))

    def big_message(self) -> None:
        size = self.scale.big_size
        label = f"{size // MB} MB message"
        self.say(f"{label}: peak RSS growth of one message, mailhook and bare relay")
        ordinary = [Message.of(load.with_attachment(size))]
        invite = [Message.of(load.invitation(0, "big", attachment=os.urandom(size * 3 // 4)))]
        growth = {}
        for path, starter in (("bare relay", self.start_bare), ("mailhook", self.start_mailhook)):
            for kind, messages in (("ordinary", ordinary), ("invitation", invite)):
                if path == "bare relay" and kind == "invitation":
                    continue
                server = starter()
                base = server.memory()["VmRSS"]
                exact = server.reset_peak()
                run = self.drive(server.port, messages, 1)
                figure = Figure(f"{label} ({kind})", path, "python", 1, 1, rate=math.nan,
                                p50=run.percentile(0.5), p99=run.percentile(0.99))
                figure.failures.update(run.failures)
                self.add(figure, server)
                peak = server.memory()["VmHWM"]
                growth[(path, kind)] = (peak - base, exact, figure)
                self.stop(server)
        bare_growth = growth[("bare relay", "ordinary")][0]
        for kind in ("ordinary", "invitation"):
            grown, exact, figure = growth[("mailhook", kind)]
            if kind == "ordinary":
                self.targets.append(Target(
                    f"{label}, {kind}: peak RSS growth", "≤ 4× the message size",
                    f"{grown / MB:.0f} MB for {len(ordinary[0].payload) / MB:.0f} MB "
                    f"(bare relay {bare_growth / MB:.0f} MB)",
                    grown / len(ordinary[0].payload), "<= 4.00",
                    note=_failures(figure) or ("" if exact else "VmHWM not resettable: includes start-up peak")))
            else:
                self.targets.append(Target(
                    f"{label}, {kind}: peak RSS growth", "(not a target) ≤ 4× the message size",
                    f"{grown / MB:.0f} MB for {len(invite[0].payload) / MB:.0f} MB",
                    grown / len(invite[0].payload), "<= 4.00", note=_failures(figure) or "informative"))

    def idle_connections(self) -> None:
        count = self.scale.idle
        label = f"{count} idle connections"
        self.say(f"{label}: RSS of mailhook and the bare relay holding them")
        held = {}
        for path, starter in (("bare relay", self.start_bare), ("mailhook", self.start_mailhook)):
            server = starter()
            base = server.memory()["Pss"]

            async def hold(server: Server = server) -> tuple[int, int]:
                writers = await load.hold_idle("127.0.0.1", server.port, count)
                await asyncio.sleep(1.0)
                rss = server.memory()["Pss"]  # while they are all open
                for writer in writers:
                    writer.close()
                return len(writers), rss

            opened, rss = asyncio.run(hold())
            held[path] = (base, rss, opened)
            self.add(Figure(label, path, "python", count, opened), server)
            self.stop(server)
        base, rss, opened = held["mailhook"]
        self.targets.append(Target(
            f"{label}: mailhook RSS (PSS, all processes)", "≤ 100 MB",
            f"{rss / MB:.0f} MB ({base / MB:.0f} MB before; bare relay {held['bare relay'][1] / MB:.0f} MB)",
            rss / (100 * MB), "<= 1.00", note="" if opened == count else f"only {opened} opened"))

    def stored_events(self) -> None:
        """Outlook invitations on a large store against an empty one, rounds interleaved.

        Two mailhook servers run side by side, one on a store filled with ``stored_events``
        events, one on a store that starts empty; each round gives each of them
        ``store_seconds`` of invitations (the order rotating), for ``fair_rounds`` rounds, so
        drift in the machine's speed hits both alike. Compared: the median rate and the median
        CPU per invitation. Under systemd's notify socket mailhook's periodic STATUS work runs
        every 15 s, in both servers alike.
        """
        count, seconds, rounds = self.scale.stored_events, self.scale.store_seconds, self.scale.fair_rounds
        label = f"{count:,} stored events".replace(",", " ")
        self.say(f"{label}: filling the store, then {rounds} rounds of {seconds:.0f} s of invitations "
                 f"each on an empty and on the filled store")
        filled = self.workdir / "filled" / "mailhook.sqlite3"
        server = self.start_mailhook(filled)
        seed = self.drive(server.port, [Message.of(outlook.invitation(0, "seed"))], 1)
        self.stop(server)
        if seed.failures or not fill_store(filled, count):
            raise RuntimeError(f"could not seed the store: {dict(seed.failures)}")
        os.sync()  # write the filled file out now, not during the runs that fsync the store
        servers = {"empty store": self.start_mailhook(), label: self.start_mailhook(filled)}
        rows = {tag: fair.PathFigures(f"Outlook invitations, {tag}", "mailhook", self.workers)
                for tag in servers}
        for tag, server in servers.items():
            self.warm(server.port, [Message.of(outlook.invitation(i, f"warm-{tag}"))
                                    for i in range(self.scale.warmup)])
        tags = list(servers)
        for number in range(rounds):
            for turn in range(len(tags)):
                tag = tags[(number + turn) % len(tags)]
                server, row = servers[tag], rows[tag]
                # More messages than the run can send; it stops taking new ones after `seconds`.
                bulk = [Message.of(outlook.invitation(i, f"store-{number}-{turn}"))
                        for i in range(int(seconds * 1000) + 100)]
                cpu = server.cpu()
                run = self.drive(server.port, bulk, 20, until=seconds)
                row.messages += run.sent
                row.refused += sum(run.failures.values())
                if run.accepted:
                    row.cpu_ms.add((server.cpu() - cpu) * 1000 / run.accepted)
                    row.rate.add(run.rate)
        for server in servers.values():
            self.stop(server)
        empty, full = rows["empty store"], rows[label]
        self.store_rows = [empty, full]
        note = fair._refused(empty, full)
        rate = fair.spread_of(list(zip(full.rate.values, empty.rate.values)), lambda a, b: a / b)
        cpu = fair.spread_of(list(zip(full.cpu_ms.values, empty.cpu_ms.values)), lambda a, b: a / b)
        self.targets.append(Target(
            f"{label}: invitation msg/s", "within 10% of an empty store",
            f"{rate.text()}× (min/median/max; {full.rate.median:.0f} vs {empty.rate.median:.0f} msg/s)",
            rate.median, ">= 0.90", note=note))
        self.targets.append(Target(
            f"{label}: CPU per invitation (flat)", "≤ 1.1× an empty store's",
            f"{cpu.text()}× (min/median/max; {full.cpu_ms.median:.2f} vs {empty.cpu_ms.median:.2f} ms)",
            cpu.median, "<= 1.10", note=note))

    def _added(self, figure: Figure, direct: Figure) -> Figure:
        figure.added_p50 = figure.p50 - direct.p50
        figure.added_p99 = figure.p99 - direct.p99
        return figure


def _failures(*figures: Figure) -> str:
    refused = sum(sum(f.failures.values()) for f in figures)
    if not refused:
        return ""
    first = next(iter(next(f.failures for f in figures if f.failures)))
    return f"{refused} refused, e.g. {first}"


def fill_store(path: Path, count: int) -> bool:
    """Add ``count`` copies of the store's one event (new organizer, UID, tag and conference)."""
    with sqlite3.connect(path) as db:
        cursor = db.execute("select * from events limit 1")
        columns = [d[0] for d in cursor.description]
        seed = cursor.fetchone()
        if seed is None:
            return False
        row = dict(zip(columns, seed))
        now = time.time()

        def rows():
            for i in range(count):
                organizer, uid = f"user{i % 2000}@example.com", f"stored-{i:07d}@example.com"
                digest = hashlib.sha256(f"{organizer}\0{uid}".encode()).hexdigest()[:24]
                conference = str(6_000_000_000 + i)
                yield tuple({**row, "organizer": organizer, "uid": uid, "tag": f"mailhook_{digest}",
                             "conference_id": conference,
                             "url": row["url"].rsplit("/", 1)[0] + "/" + conference,
                             "calendar": row["calendar"].replace(row["uid"], uid),
                             "first_seen": now - i, "updated_at": now - i}[c] for c in columns)

        marks = ", ".join("?" for _ in columns)
        db.executemany(f"insert into events ({', '.join(columns)}) values ({marks})", rows())
    return True


# --- output -----------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPU(s), {model}, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def revision() -> str:
    """The commit measured, with "+changes" when the working tree differs from it."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "mailhook"],
                               cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown revision"
    return f"mailhook {commit or 'unknown'}{'+changes' if dirty else ''}"


def raise_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="mailhook against bare relays, on loopback.")
    parser.add_argument("--quick", action="store_true",
                        help="small counts (under a minute); what CI runs to keep the script working")
    parser.add_argument("--no-postfix-tools", action="store_true",
                        help="use the Python sink and client even where smtp-sink/smtp-source exist")
    parser.add_argument("--no-notify", action="store_true",
                        help="run mailhook without a systemd notify socket (no periodic STATUS)")
    parser.add_argument("--only", metavar="NAME,...", default=",".join(SCENARIOS),
                        help=f"run only these scenarios, of: {', '.join(SCENARIOS)}")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (configs, logs)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures and targets as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="mailhook's smtp.workers (default: one per CPU, as docs/operations.md advises)")
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")

    scale = QUICK if args.quick else FULL
    raise_file_limit(scale.idle * 2 + 512)
    workdir = Path(tempfile.mkdtemp(prefix="mailhook-bench-"))
    started = time.monotonic()
    load_start = os.getloadavg()[0]

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:5.1f} s] {text}", file=sys.stderr, flush=True)

    bench = Bench(scale, workdir, postfix_tools=not args.no_postfix_tools,
                  notify=not args.no_notify, say=say, workers=max(1, args.workers))
    # SIGTERM (a CI timeout) unwinds like an error, so every server started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        bench.run(only)
    except BaseException:
        bench.stop_all()
        print(f"benchmark failed; configs and logs are in {workdir}", file=sys.stderr)
        raise
    bench.stop_all()
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)

    mode = "quick" if args.quick else "full"
    failed = report(bench, mode, time.monotonic() - started, load_start)
    if args.json:
        write_json(Path(args.json), bench, mode)
    return 1 if args.strict and failed else 0


def report(bench: Bench, mode: str, seconds: float, load_start: float) -> list[Target]:
    """Print the run's tables; return the targets that failed."""
    print(f"mailhook benchmark ({mode} mode), {revision()}, {machine()}")
    print(f"sink: {'smtp-sink' if bench.use_sink else 'benchmarks/sink.py'}; ordinary load: "
          f"{'smtp-source' if bench.use_source else 'Python client'}; "
          f"mailhook with {bench.workers} worker process(es) "
          f"{'under a systemd notify socket (WatchdogSec=30)' if bench.notify else 'without notify socket'}; "
          f"{seconds:.0f} s")
    print(f"load average (1 min) at start {load_start:.2f}, at end {os.getloadavg()[0]:.2f}")
    print()
    spread_rows = (bench.fair.rows if bench.fair else []) + bench.store_rows
    if spread_rows:
        print(fair.table(spread_rows, markdown))
        print()
        print("Rounds interleaved (the paths taking turns); msg/s and CPU per message (user + system "
              "CPU of the server's processes) as min / median / max over the rounds. "
              f"\"{fair.HTTP_PATH}\": mailhook's TrueConf client alone in the benchmark's process, "
              f"create_conference with {bench.fair.http_concurrency if bench.fair else 0} calls under "
              "way (20 sessions shared among mailhook's workers), against the same stand-in.")
        print()
    if bench.figures:
        print(figures_table(bench.figures))
        print()
        print("msg/s and CPU ms/msg of the side-by-side runs: min / median / max over their "
              f"{bench.scale.rounds} interleaved slices when there are three or more (the issue-7 "
              "targets take all slices together); p50/p99: one session sending one message after "
              "another (* : during the loaded run); +p50/+p99: over direct to sink, same messages; "
              "CPU and peak RSS (VmHWM): summed over the server's processes.")
        print()
    print(targets_table(bench.targets))
    scored = [t for t in bench.targets if not t.target.startswith("(not a target)")]
    failed = [t for t in scored if not t.passed]
    print()
    print(f"{len(scored) - len(failed)} of {len(scored)} targets hold"
          + (f"; failing: {', '.join(t.scenario for t in failed)}" if failed else ""))
    return failed


def write_json(path: Path, bench: Bench, mode: str) -> None:
    """Every figure, target and round, for comparing runs."""
    path.write_text(json.dumps({
        "mode": mode, "revision": revision(), "machine": machine(),
        "figures": [{**{k: v for k, v in vars(f).items() if k != "failures"},
                     "failures": dict(f.failures)} for f in bench.figures],
        "targets": [{**vars(t), "passed": t.passed} for t in bench.targets],
        "rounds": [{"workload": r.workload, "path": r.path, "processes": r.processes,
                    "messages": r.messages, "rate": r.rate.values, "cpu_ms": r.cpu_ms.values}
                   for r in (bench.fair.rows if bench.fair else []) + bench.store_rows],
    }, indent=2, default=str))


if __name__ == "__main__":
    raise SystemExit(main())
