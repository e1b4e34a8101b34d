"""Several worker processes on one listening socket (smtp.workers > 1), as real processes."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mailhook.testing.sink import Sink
from mailhook.testing.standin import StandIn
from tests.integration.conftest import USERS
from tests.integration.test_cli import ROOT, SECRET, free_port, wait_for_port, write_config
from tests.support.invites import Event, thunderbird

WORKERS = 3


def start(config: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mailhook", "serve", "--config", str(config), *extra],
        cwd=ROOT, env={k: v for k, v in os.environ.items() if not k.startswith("MAILHOOK_")},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def configure(tmp_path: Path, standin: StandIn, sink: Sink, port: int, metrics: int = 0) -> Path:
    config = write_config(tmp_path, standin.url, sink.port, port)
    text = config.read_text().replace("[smtp]\n", f"[smtp]\nworkers = {WORKERS}\n")
    text += "[notice]\nenabled = false\n"
    text += f"[metrics]\nenabled = {'true' if metrics else 'false'}\nlisten_port = {metrics or 9425}\n"
    config.write_text(text)
    return config


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (its helper workers)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def serving(pid: int) -> bool:
    """Has the process's event loop taken over SIGHUP (so a reload reaches it)?"""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    caught = int(status.split("SigCgt:")[1].split()[0], 16)
    return bool(caught & (1 << (signal.SIGHUP - 1)))


def wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def send_all(port: int, messages: list[bytes]) -> list[object]:
    """Send each message on its own connection, all at once; the refusals (or errors)."""
    results: list[object] = [None] * len(messages)

    def one(i: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
                results[i] = client.sendmail("alice@example.com", ["bob@example.com"], messages[i])
        except (smtplib.SMTPException, OSError) as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(messages))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def invitation(i: int) -> bytes:
    return thunderbird(Event(uid=f"worker-{i}@example.com"), message_id=f"<worker-{i}@example.com>")


def stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.stderr.read() if process.stderr else ""


@dataclass
class Running:
    """A daemon with its helpers, its stand-in and its sink; ``log`` once it stopped."""

    standin: StandIn
    sink: Sink
    port: int
    config: Path
    daemon: subprocess.Popen[str]
    log: str = ""

    def helpers(self) -> list[int]:
        return children(self.daemon.pid)

    def kill_a_helper(self) -> int:
        """SIGKILL one helper and wait until the primary has started another; its pid."""
        victim = self.helpers()[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in self.helpers() and len(self.helpers()) == WORKERS - 1)
        return victim

    def stop_matching(self) -> None:
        """Edit the config file so that no invitation asks for a conference any more."""
        self.config.write_text(self.config.read_text().replace(
            "[policy]\n", '[policy]\nkeywords = ["nothing-matches-this"]\n'))


@contextmanager
def running(tmp_path: Path, latency: float = 0.0, metrics_port: int = 0) -> Iterator[Running]:
    with StandIn(users=USERS, client_id="mailhook", client_secret=SECRET) as standin, Sink() as sink:
        standin.set_latency(latency)
        port = free_port()
        config = configure(tmp_path, standin, sink, port, metrics_port)
        run = Running(standin, sink, port, config, start(config))
        try:
            wait_for_port(port, run.daemon)
            wait_until(lambda: len(run.helpers()) == WORKERS - 1)
            yield run
        finally:
            run.log = stop(run.daemon)


def test_workers_share_the_load_and_the_metrics(tmp_path):
    """Every worker serves connections; each invitation gets its link; /metrics counts them all."""
    metrics_port = free_port()
    with running(tmp_path, latency=0.05, metrics_port=metrics_port) as run:
        processes = [run.daemon.pid, *run.helpers()]
        before = {pid: cpu_ticks(pid) for pid in processes}
        results = send_all(run.port, [invitation(i) for i in range(60)])
        assert results == [{}] * 60
        assert len(run.sink.messages) == 60
        links = [m for m in run.sink.messages if b"https://" in m.content or b"http://" in m.content]
        assert len(links) == 60
        assert len(run.standin.conferences) == 60
        busy = [pid for pid in processes if cpu_ticks(pid) - before[pid] >= 5]
        assert len(busy) >= 2, "connections were not spread over the workers"
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        counted = sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("mailhook_messages_total{") and 'outcome="relayed"' in line
        )
        assert counted == 60
    assert run.daemon.returncode == 0, run.log
    assert "Traceback" not in run.log


def test_copies_on_different_workers_make_one_conference(tmp_path):
    """Twenty copies of one invitation at once, spread over the processes: one conference."""
    with running(tmp_path, latency=0.3) as run:
        results = send_all(run.port, [thunderbird(Event())] * 20)
        assert results == [{}] * 20
        creates = [r for r in run.standin.requests
                   if r.method == "POST" and r.path.endswith("/conferences")]
        assert len(creates) == 1
        assert len(run.standin.conferences) == 1
        assert len({m.content for m in run.sink.messages}) == 1  # every copy got the same link


def test_a_helper_that_dies_is_replaced_and_sigterm_stops_all(tmp_path):
    with running(tmp_path) as run:
        run.kill_a_helper()
        helpers = run.helpers()
        assert send_all(run.port, [invitation(i) for i in range(10)]) == [{}] * 10
        run.daemon.send_signal(signal.SIGTERM)
        run.daemon.wait(timeout=30)
        assert run.daemon.returncode == 0
        wait_until(lambda: not any(alive(pid) for pid in helpers), timeout=10)
    assert "exited with status" in run.log  # the replacement was logged
    with smtplib.SMTP() as probe:  # nothing listens any more
        try:
            probe.connect("127.0.0.1", run.port)
            connected = True
        except OSError:
            connected = False
    assert not connected


def test_helpers_die_with_a_killed_primary(tmp_path):
    """SIGKILL of the primary leaves no helper holding the port."""
    with running(tmp_path) as run:
        helpers = run.helpers()
        run.daemon.send_signal(signal.SIGKILL)
        run.daemon.wait(timeout=10)
        wait_until(lambda: not any(alive(pid) for pid in helpers), timeout=15)
        again = start(run.config)  # the port is free again
        try:
            wait_for_port(run.port, again)
            assert send_all(run.port, [invitation(1)]) == [{}]
        finally:
            stop(again)


def test_sighup_reaches_every_worker(tmp_path):
    with running(tmp_path) as run:
        wait_until(lambda: all(serving(pid) for pid in run.helpers()))
        # After the reload, the keyword no longer triggers: all workers must have taken it.
        run.stop_matching()
        run.daemon.send_signal(signal.SIGHUP)
        time.sleep(2.0)
        assert send_all(run.port, [invitation(i) for i in range(12)]) == [{}] * 12
        assert run.standin.conferences == {}
    assert run.log.count("configuration reloaded") == WORKERS


def test_a_replaced_helper_runs_on_the_primarys_settings(tmp_path):
    """A helper started again later runs with the settings the others run with, not with a
    config file edited since (which only a reload or a restart may bring in)."""
    with running(tmp_path) as run:
        run.stop_matching()
        run.kill_a_helper()
        fresh = max(run.helpers())  # the newest process
        wait_until(lambda: all(serving(pid) for pid in run.helpers()))
        before = cpu_ticks(fresh)
        assert send_all(run.port, [invitation(i) for i in range(60)]) == [{}] * 60
        assert cpu_ticks(fresh) - before >= 2, "the new helper took no connection"
        assert len(run.standin.conferences) == 60  # the new helper kept the keyword too
    assert run.log.count("exited with status") == 1, run.log


def test_a_reload_while_a_helper_starts_does_not_kill_it(tmp_path):
    """A reload asked for while a helper starts is neither fatal to it nor lost."""
    with running(tmp_path) as run:
        os.kill(run.helpers()[0], signal.SIGKILL)
        # Reloads all through the replacement's start (not too many: each logs a line into a
        # pipe this test reads only at the end).
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            run.daemon.send_signal(signal.SIGHUP)
            time.sleep(0.1)
        wait_until(lambda: len(run.helpers()) == WORKERS - 1)
        wait_until(lambda: all(serving(pid) for pid in run.helpers()))
        assert send_all(run.port, [invitation(i) for i in range(10)]) == [{}] * 10
    assert run.log.count("exited with status") == 1, run.log  # only the one killed on purpose
