#!/usr/bin/env python3
"""Invitations per second through mailhook with a PostgreSQL store and with SQLite, side by side.

    .venv/bin/python benchmarks/store_bench.py              # about a minute on 2 cores
    .venv/bin/python benchmarks/store_bench.py --count 400 --sessions 20 --slices 4

It starts, each as its own process on loopback: a discarding sink (benchmarks/sink.py), the
TrueConf API stand-in, a PostgreSQL server of its own (initdb + pg_ctl in a temporary folder,
durable: fsync and synchronous commit on, as in production; see tests/support/postgres.py), and
three ``mailhook serve`` daemons on the shipped defaults: one on a SQLite store, and two on one
PostgreSQL database (the two-host layout, here on one host). Every invitation has a UID of its
own, so each one makes a conference. The load goes in slices, the stores taking turns, so that
machine drift does not favour either. It prints invitations per second for each, the ratio,
and the load average; it checks that every invitation got exactly one conference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import load  # noqa: E402  (benchmarks/load.py)
from load import Message, Run  # noqa: E402
from run import API_SECRET, Server, free_port, machine, revision  # noqa: E402

from tests.support.postgres import (  # noqa: E402
    PostgresServer,
    find_binaries,
    why_not_available,
)

TARGET_RATIO = 0.7  # PostgreSQL must reach this share of SQLite's rate


def config(path: Path, port: int, sink: int, standin: int, store: str, workers: int) -> Path:
    """The shipped defaults, except addresses, the store, and what the run does not measure
    (organizer notices and the metrics endpoint are off)."""
    path.write_text(f"""\
[smtp]
listen_host = "127.0.0.1"
listen_port = {port}
workers = {workers}
[relay]
host = "127.0.0.1"
port = {sink}
[trueconf]
server_url = "http://127.0.0.1:{standin}"
client_id = "mailhook"
client_secret = "{API_SECRET}"
user_mapping = "local_part"
[policy]
local_domains = ["example.com"]
[notice]
enabled = false
[store]
{store}
[metrics]
enabled = false
""")
    return path


def start(name: str, argv: list[str], port: int, logdir: Path, smtp: bool = True,
          env: dict[str, str] | None = None) -> Server:
    server = Server(name, argv, port, logdir, env=env, smtp=smtp).start()
    server.settle()
    return server


def drive(ports: list[int], messages: list[Message], sessions: int) -> Run:
    """Send the messages over ``sessions`` connections spread over the ports (one daemon or
    several behind one name, as Postfix would spread them)."""
    async def both() -> list[Run]:
        share = max(1, sessions // len(ports))
        parts = [messages[i::len(ports)] for i in range(len(ports))]
        return await asyncio.gather(*(load.drive("127.0.0.1", port, part, share)
                                      for port, part in zip(ports, parts)))
    runs = asyncio.run(both())
    total = Run()
    for run in runs:
        total.sent += run.sent
        total.latencies += run.latencies
        total.failures.update(run.failures)
        total.elapsed = max(total.elapsed, run.elapsed)
    return total


def conferences(port: int) -> int:
    """How many conferences the stand-in holds."""
    url = f"http://127.0.0.1:{port}/_standin/conferences"
    with urllib.request.urlopen(url, timeout=30) as response:
        return len(json.loads(response.read())["conferences"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="invitations per slice and store")
    parser.add_argument("--sessions", type=int, default=20, help="SMTP sessions at once")
    parser.add_argument("--slices", type=int, default=4, help="turns each store takes")
    parser.add_argument("--workers", type=int, default=1, help="smtp.workers of each daemon")
    args = parser.parse_args(argv)
    if reason := why_not_available():
        print(f"store_bench: {reason}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="mailhook-store-bench-"))
    servers: list[Server] = []
    database = PostgresServer(durable=True).init().start()
    try:
        url = database.new_database()
        (work / "db-password").write_text(database.password + "\n")
        sink_port, standin_port = free_port(), free_port()
        servers.append(start("sink", [sys.executable, str(HERE / "sink.py"), "--port",
                                      str(sink_port)], sink_port, work))
        servers.append(start("standin", [
            sys.executable, "-m", "mailhook.testing.standin", "--port", str(standin_port),
            "--users", str(ROOT / "config" / "standin-users.json"), "--client-secret",
            API_SECRET], standin_port, work, smtp=False))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILHOOK_")}
        database_section = f'url = "{url}"\npassword_file = "{work / "db-password"}"'
        stores = {
            "sqlite": ['path = "%s"' % (work / "sqlite" / "mailhook.sqlite3")],
            "postgresql": [database_section],
            "postgresql, 2 daemons": [database_section] * 2,
        }
        ports: dict[str, list[int]] = {}
        for name, sections in stores.items():
            for section in sections:
                port = free_port()
                label = f"{len(servers)}-{name.split(',')[0]}"
                path = config(work / f"{label}.toml", port, sink_port, standin_port, section,
                              args.workers)
                servers.append(start(f"mailhook-{len(servers)}", [
                    sys.executable, "-m", "mailhook", "serve", "--config", str(path)],
                    port, work, env=env))
                ports.setdefault(name, []).append(port)
        runs: dict[str, list[Run]] = {name: [] for name in ports}
        serial = 0
        for turn in range(args.slices):
            order = list(ports) if turn % 2 == 0 else list(reversed(ports))
            for name in order:
                messages = [Message.of(load.invitation(serial + i, run=name))
                            for i in range(args.count)]
                serial += args.count
                runs[name].append(drive(ports[name], messages, args.sessions))
        load_average = os.getloadavg()
        report(runs, load_average, args)
        failures = sum(sum(r.failures.values()) for rs in runs.values() for r in rs)
        made = conferences(standin_port)
        accepted = sum(r.accepted for rs in runs.values() for r in rs)
        print(f"conferences on the stand-in: {made} for {accepted} invitations accepted")
        return 1 if failures or made != accepted else 0
    finally:
        for server in reversed(servers):
            server.stop()
        database.destroy()


def database_version() -> str:
    binaries = find_binaries()
    return binaries.parent.name if binaries is not None else "?"


def report(runs: dict[str, list[Run]], load_average: tuple[float, float, float],
           args: argparse.Namespace) -> None:
    rates = {}
    print(f"# {revision()} on {machine()}")
    print(f"# {args.slices} slices of {args.count} invitations per store, {args.sessions} "
          f"sessions, smtp.workers = {args.workers}; PostgreSQL {database_version()} on this "
          "host over loopback, durable (fsync on); SQLite store.synchronous = full")
    print("| store | daemons | invitations | per second | p50 ms | p99 ms | refused |")
    print("|---|---|---|---|---|---|---|")
    for name, slices in runs.items():
        accepted = sum(r.accepted for r in slices)
        elapsed = sum(r.elapsed for r in slices)
        latencies = Run(latencies=[x for r in slices for x in r.latencies])
        rates[name] = accepted / elapsed if elapsed else 0.0
        refused = sum(sum(r.failures.values()) for r in slices)
        daemons = 2 if "2 daemons" in name else 1
        print(f"| {name} | {daemons} | {accepted} | {rates[name]:.0f} | "
              f"{latencies.percentile(0.5) * 1000:.0f} | {latencies.percentile(0.99) * 1000:.0f}"
              f" | {refused} |")
    ratio = rates["postgresql"] / rates["sqlite"] if rates.get("sqlite") else 0.0
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    print(f"\nPostgreSQL / SQLite = {ratio:.2f} (target >= {TARGET_RATIO}: {verdict})")
    one, five, fifteen = load_average
    print(f"load average (1, 5, 15 min) at the end: {one:.2f} {five:.2f} {fifteen:.2f}")


if __name__ == "__main__":
    started = time.monotonic()
    status = main()
    print(f"# took {time.monotonic() - started:.0f} s")
    raise SystemExit(status)
