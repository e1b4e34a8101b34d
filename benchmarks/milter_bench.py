"""Postfix with the mailhook milter against the same Postfix without any milter.

Private Postfix instances run side by side (as root: Postfix starts as root and drops to its
own user). Each discards what it accepts (discard(8) as the only transport), so the figure is
what Postfix's smtpd takes in, with and without a milter in its path, not local delivery. One
has ``smtpd_milters`` pointing at ``mailhook serve`` (milter only, ``[smtp] enabled = false``,
the TrueConf stand-in in this process), one has no milter, and one has a milter that does
nothing but answer (``benchmarks/null_milter.py``): the floor any milter starts from. Ordinary
4 KB mail is sent with Postfix's own smtp-source, invitations (Thunderbird's shape, a new event
each) with a Python client; each comparison runs several times, interleaved::

    sudo .venv/bin/python benchmarks/milter_bench.py            # 2000 messages, 3 runs
    sudo .venv/bin/python benchmarks/milter_bench.py --quick    # 200 messages, 1 run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mailhook.testing.standin import StandIn  # noqa: E402
from tests.support import postfix  # noqa: E402
from tests.support.invites import Event, thunderbird  # noqa: E402
from tests.support.process import free_port, wait_for_port  # noqa: E402

SECRET = "bench-secret"
TARGET = 0.8  # ordinary mail through the milter: at least this share of Postfix alone
SENDER, RECIPIENT = "alice@example.com", "bob@sink.test"  # sink.test: discarded


class DiscardingPostfix(postfix.PostfixInstance):
    """A private Postfix that takes mail on SMTP and throws it away after queueing it."""

    def __init__(self, submission_port: int, milter: str = "") -> None:
        super().__init__(0, 0, submission_port, ["nobody@example.com"])
        self.milter = milter

    def _main_cf(self, uid: int, gid: int) -> str:
        # Later lines win in main.cf. No flow control: smtpd is measured, not the queue manager.
        extra = ("default_transport = discard:benchmark\n"
                 "in_flow_delay = 0s\n"
                 "smtpd_relay_restrictions = permit_mynetworks, reject\n")
        if self.milter:
            extra += (f"smtpd_milters = {self.milter}\n"
                      "milter_default_action = tempfail\n"
                      "milter_protocol = 6\n")
        return super()._main_cf(uid, gid) + extra

    def _master_cf(self) -> str:
        kept = [line for line in super()._master_cf().splitlines()
                if "content_filter=mailhook" not in line]
        return "\n".join(kept) + "\n"


def serve_milter(base: Path, standin: StandIn, milter_port: int, relay_port: int
                 ) -> subprocess.Popen[str]:
    """`mailhook serve` as a milter only."""
    return postfix.serve_mailhook(base, standin.url, SECRET, postfix.milter_front(milter_port),
                                  relay_port)


def ordinary(port: int, messages: int, sessions: int) -> float:
    """Messages per second smtp-source gets accepted: 4 KB each, ``sessions`` in parallel."""
    started = time.perf_counter()
    subprocess.run(["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", "4096",
                    "-f", SENDER, "-t", RECIPIENT, f"127.0.0.1:{port}"],
                   check=True, capture_output=True, timeout=600)
    return messages / (time.perf_counter() - started)


def cpu_seconds(root: int) -> dict[int, float]:
    """CPU time (user + system, with reaped children's) of ``root`` and every process below
    it, by pid: Postfix's master reaps its smtpd and cleanup processes, so what they used
    after exiting is in the master's children's time."""
    parents: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = (Path("/proc") / entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        parents.setdefault(int(fields[1]), []).append(pid)
        times[pid] = sum(int(value) for value in fields[11:15]) / tick
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in times:
            found[pid] = times[pid]
            todo += parents.get(pid, [])
    return found


def used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two ``cpu_seconds`` readings (processes that came and went since
    are in their parent's children's time)."""
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


def master_pid(instance: DiscardingPostfix) -> int:
    return int((instance.base / "spool" / "pid" / "master.pid").read_text().split()[0])


def invitations(port: int, messages: int, sessions: int, run: str) -> float:
    """Messages per second a Python client gets accepted: Thunderbird invitations, each a new
    event (so the milter creates a conference for each)."""
    def session(number: int) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
            for index in range(number, messages, sessions):
                uid = f"bench-{run}-{index}@example.com"
                client.sendmail(SENDER, [RECIPIENT], thunderbird(
                    Event(uid=uid, attendees=(RECIPIENT,)), message_id=f"<{uid}>"))

    started = time.perf_counter()
    with ThreadPoolExecutor(sessions) as pool:
        for future in [pool.submit(session, number) for number in range(sessions)]:
            future.result()
    return messages / (time.perf_counter() - started)


def row(name: str, plain: list[float], milter: list[float], target: float | None) -> str:
    ratio = statistics.median(milter) / statistics.median(plain)
    figures = " | ".join(f"{min(r):7.1f} | {statistics.median(r):7.1f} | {max(r):7.1f}"
                         for r in (plain, milter))
    verdict = ("PASS" if ratio >= target else "FAIL") if target is not None else "info"
    goal = f">= {target:.2f}" if target is not None else "-"
    return f"| {name:<22} | {figures} | {ratio:5.2f} | {goal:<7} | {verdict:<4} |"


def report(results: dict[str, list[float]], cpu: dict[str, list[float]], runs: int,
           messages: int, invites: int, sessions: int) -> None:
    """Print the rates with their ratio, and the CPU per message on each side."""
    print(f"\nPostfix smtpd, messages/s accepted ({runs} run(s), interleaved; "
          f"{messages} ordinary 4 KB messages and {invites} invitations per run, "
          f"{sessions} sessions; discard(8) delivery; {os.cpu_count()} CPUs)\n")
    print("| workload               | no milter: min | median | max "
          "| milter: min | median | max | ratio | target  | verdict |")
    print("|------------------------|---------|---------|---------|---------|---------|---------"
          "|-------|---------|------|")
    print(row("ordinary 4 KB", results["ordinary/plain"], results["ordinary/milter"], TARGET))
    print(row("invitation (new event)", results["invitation/plain"],
              results["invitation/milter"], None))
    print(row("ordinary, null milter", results["ordinary/plain"], results["ordinary/null"],
              None))
    print("\n(null milter: benchmarks/null_milter.py, which only answers, accepting each message"
          " at the end of its header section as mailhook does for ordinary mail)")
    print("\nCPU per ordinary message, ms (min / median / max): what the rate ratio is made of "
          "on a CPU-bound machine\n")
    print("| process                                   | min  | median | max  |")
    print("|-------------------------------------------|------|--------|------|")
    for label, key in (("Postfix, no milter", "postfix/plain"),
                       ("Postfix, with the milter", "postfix/milter"),
                       ("mailhook (the milter)", "mailhook"),
                       ("Postfix, with the null milter", "postfix/null"),
                       ("the null milter", "null")):
        figures = [value * 1000 for value in cpu[key]]
        print(f"| {label:<41} | {min(figures):4.2f} | {statistics.median(figures):6.2f} | "
              f"{max(figures):4.2f} |")
    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 messages, 1 run")
    parser.add_argument("--messages", type=int, help="ordinary messages per run (2000)")
    parser.add_argument("--invitations", type=int, help="invitations per run (300)")
    parser.add_argument("--runs", type=int, help="runs of each comparison (3)")
    parser.add_argument("--sessions", type=int, default=20, help="parallel SMTP sessions")
    args = parser.parse_args()
    reason = postfix.available() or ("" if shutil.which("smtp-source")
                                     else "smtp-source is not installed (Postfix's tools)")
    if reason:
        print(f"milter benchmark: cannot run: {reason}", file=sys.stderr)
        return 2
    messages = args.messages or (200 if args.quick else 2000)
    invites = args.invitations or (50 if args.quick else 300)
    runs = args.runs or (1 if args.quick else 3)
    users = json.loads((ROOT / "config" / "standin-users.json").read_text())

    base = Path(tempfile.mkdtemp(prefix="mailhook-milter-bench-"))
    milter_port = free_port()
    plain = DiscardingPostfix(free_port())
    milter = DiscardingPostfix(free_port(), f"inet:127.0.0.1:{milter_port}")
    null_port = free_port()
    null = DiscardingPostfix(free_port(), f"inet:127.0.0.1:{null_port}")
    results: dict[str, list[float]] = {key: [] for key in
                                       ("ordinary/plain", "ordinary/milter", "ordinary/null",
                                        "invitation/plain", "invitation/milter")}
    cpu: dict[str, list[float]] = {key: [] for key in ("postfix/plain", "postfix/milter",
                                                        "postfix/null", "mailhook", "null")}
    with StandIn(users=users, client_id="mailhook", client_secret=SECRET) as standin:
        daemon = serve_milter(base, standin, milter_port, milter.submission_port)
        floor = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "null_milter.py"),
                                  str(null_port)])
        milters = {"milter": daemon, "null": floor}
        try:
            wait_for_port(milter_port, daemon)
            wait_for_port(null_port, floor)
            for instance in (plain, milter, null):
                instance.start()
                wait_for_port(instance.submission_port, daemon)
            for run in range(runs):
                for name, instance in (("plain", plain), ("milter", milter), ("null", null)):
                    postfix_before = cpu_seconds(master_pid(instance))
                    milter_before = cpu_seconds(milters[name].pid) if name in milters else {}
                    results[f"ordinary/{name}"].append(
                        ordinary(instance.submission_port, messages, args.sessions))
                    cpu[f"postfix/{name}"].append(
                        used(postfix_before, cpu_seconds(master_pid(instance))) / messages)
                    if name in milters:
                        cpu["mailhook" if name == "milter" else name].append(
                            used(milter_before, cpu_seconds(milters[name].pid)) / messages)
                    if name == "null":
                        continue
                    results[f"invitation/{name}"].append(invitations(
                        instance.submission_port, invites, args.sessions, f"{name}{run}"))
                    print(f"run {run + 1}/{runs} {name}: "
                          f"{results[f'ordinary/{name}'][-1]:.1f} ordinary/s, "
                          f"{results[f'invitation/{name}'][-1]:.1f} invitations/s",
                          file=sys.stderr, flush=True)
            print(f"conferences created through the milter: {len(standin.conferences)}",
                  file=sys.stderr)
        finally:
            for process in (daemon, floor):
                process.terminate()
                process.wait(timeout=30)
            for instance in (plain, milter, null):
                instance.stop()
            shutil.rmtree(base, ignore_errors=True)

    report(results, cpu, runs, messages, invites, args.sessions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
