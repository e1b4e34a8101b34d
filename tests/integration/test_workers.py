"""Worker processes on one listening socket (smtp.workers > 1) under a supervisor that serves no
mail, as real processes.

Which worker the kernel hands a connection to is up to the kernel. To decide it, a test pauses
every other worker (SIGSTOP): a paused process cannot accept, so the one left running takes
the connections opened meanwhile, and keeps them once the others resume (SIGCONT).
"""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from mailhook.testing.sink import Sink
from mailhook.testing.standin import StandIn
from tests.integration.conftest import USERS
from tests.support.invites import Event, thunderbird
from tests.support.process import ROOT, SECRET, free_port, wait_for_port, write_config
from tests.support.trace import untraced

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
    text += "[retry]\ninterval = 1\nbackoff_initial = 1\n"
    text += f"[metrics]\nenabled = {'true' if metrics else 'false'}\nlisten_port = {metrics or 9425}\n"
    config.write_text(text)
    return config


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (the supervisor's workers)."""
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


def serving(pid: int) -> bool:
    """Has the process's event loop taken over SIGHUP (so a reload reaches it)?"""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    caught = int(status.split("SigCgt:")[1].split()[0], 16)
    return bool(caught & (1 << (signal.SIGHUP - 1)))


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def in_threads(jobs: list) -> list[object]:
    """Run every job at once; their results (or the SMTP or socket error each raised)."""
    results: list[object] = [None] * len(jobs)

    def one(i: int) -> None:
        try:
            results[i] = jobs[i]()
        except (smtplib.SMTPException, OSError) as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def send_all(port: int, messages: list[bytes]) -> list[object]:
    """Send each message on its own connection, all at once; the refusals (or errors)."""

    def job(message: bytes):
        def send() -> object:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
                return client.sendmail("alice@example.com", ["bob@example.com"], message)
        return send

    return in_threads([job(message) for message in messages])


def send_over(sessions: list[smtplib.SMTP], messages: list[bytes]) -> list[object]:
    """Send one message over each open session, all at once, then close them."""

    def job(client: smtplib.SMTP, message: bytes):
        def send() -> object:
            with client:
                return client.sendmail("alice@example.com", ["bob@example.com"], message)
        return send

    return in_threads([job(client, message) for client, message in zip(sessions, messages)])


def invitation(i: int) -> bytes:
    return thunderbird(Event(uid=f"worker-{i}@example.com"), message_id=f"<worker-{i}@example.com>")


class Log:
    """The daemon's standard error, read as it comes (so a test can wait for a line)."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line)

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def text(self) -> str:
        self._thread.join(timeout=30)
        return "".join(self.lines)


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Running:
    """A supervisor with its workers, its stand-in and its sink; ``log`` once it stopped."""

    standin: StandIn
    sink: Sink
    port: int
    config: Path
    daemon: subprocess.Popen[str]
    stderr: Log = field(init=False)
    log: str = ""

    def __post_init__(self) -> None:
        self.stderr = Log(self.daemon.stderr)

    def workers(self) -> list[int]:
        return children(self.daemon.pid)

    def all_serving(self) -> bool:
        workers = self.workers()
        return len(workers) == WORKERS and all(serving(pid) for pid in workers)

    @contextmanager
    def only(self, *pids: int) -> Iterator[None]:
        """Pause every worker but ``pids``, so that only they accept connections."""
        paused = [pid for pid in self.workers() if pid not in pids]
        for pid in paused:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in paused:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def sessions_on(self, pid: int, count: int) -> list[smtplib.SMTP]:
        """``count`` SMTP sessions, greeted (so accepted) by worker ``pid``."""
        with self.only(pid):
            return [smtplib.SMTP("127.0.0.1", self.port, timeout=60) for _ in range(count)]

    def kill_a_worker(self) -> int:
        """SIGKILL one worker and wait until the supervisor has started another; the new pid."""
        before = self.workers()
        os.kill(before[0], signal.SIGKILL)
        wait_until(lambda: before[0] not in self.workers() and self.all_serving())
        [fresh] = set(self.workers()) - set(before)
        return fresh

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
            wait_until(run.all_serving)
            yield run
        finally:
            stop(run.daemon)
            run.log = run.stderr.text()


def relayed(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
        if line.startswith("mailhook_messages_total{") and 'outcome="relayed"' in line
    )


def test_every_worker_serves_mail_and_the_metrics_add_up(tmp_path):
    """Each worker relays the invitations on the connections it took, each with its link, and
    the supervisor's /metrics counts every worker's messages."""
    metrics_port = free_port()
    with running(tmp_path, latency=0.05, metrics_port=metrics_port) as run:
        workers = run.workers()
        sessions = [session for pid in workers for session in run.sessions_on(pid, 5)]
        results = send_over(sessions, [invitation(i) for i in range(len(sessions))])
        assert results == [{}] * 15
        assert len(run.sink.messages) == 15
        assert all(b"https://" in m.content or b"http://" in m.content for m in run.sink.messages)
        assert len(run.standin.conferences) == 15
        assert relayed(metrics_port) == 15
        assert run.workers() == workers  # none died on the way
    assert run.daemon.returncode == 0, run.log
    assert "Traceback" not in run.log


def test_the_supervisor_serves_no_mail(tmp_path):
    """With every worker paused nobody greets a client; the connection waits in the listen
    queue for a worker, which greets it once it runs again."""
    with running(tmp_path) as run, run.only():
        client = socket.create_connection(("127.0.0.1", run.port), timeout=10)
        with client:
            client.settimeout(1.5)
            try:
                greeting = client.recv(100)
            except TimeoutError:
                greeting = b""
            assert greeting == b""
            for pid in run.workers():
                os.kill(pid, signal.SIGCONT)
            client.settimeout(30)
            assert client.recv(100).startswith(b"220 ")


def test_copies_on_different_workers_make_one_conference(tmp_path):
    """Copies of one invitation sent at once over connections held by every worker: one
    conference, and every copy carries its link."""
    with running(tmp_path, latency=0.3) as run:
        sessions = [session for pid in run.workers() for session in run.sessions_on(pid, 4)]
        assert send_over(sessions, [thunderbird(Event())] * len(sessions)) == [{}] * 12
        creates = [r for r in run.standin.requests
                   if r.method == "POST" and r.path.endswith("/conferences")]
        assert len(creates) == 1
        assert len(run.standin.conferences) == 1
        # every copy got the same link (the trace fields' times may differ by a second)
        assert len({untraced(m.content) for m in run.sink.messages}) == 1


def test_postponed_deletions_are_retried_by_the_supervisor(tmp_path):
    """The periodic passes run in the supervisor: with every worker paused, a deletion TrueConf
    refused is still pushed until TrueConf takes it."""
    with running(tmp_path) as run:
        assert send_all(run.port, [thunderbird(Event())]) == [{}]
        assert len(run.standin.conferences) == 1
        run.standin.fail_next(1000, 503, path_prefix="/api/")
        cancel = thunderbird(Event(method="CANCEL", status="CANCELLED", sequence=1),
                             message_id="<cancel-1@example.com>")
        assert send_all(run.port, [cancel]) == [{}]  # the cancel goes out at once
        assert len(run.standin.conferences) == 1
        with run.only():
            run.standin.fail_next(0)
            wait_until(lambda: run.standin.conferences == {}, timeout=60)


def test_a_worker_that_dies_is_replaced_and_sigterm_stops_all(tmp_path):
    """A killed worker is started again and serves; SIGTERM to the supervisor stops every worker
    and frees the port."""
    with running(tmp_path) as run:
        fresh = run.kill_a_worker()
        with run.only(fresh):
            assert send_all(run.port, [invitation(i) for i in range(5)]) == [{}] * 5
        workers = run.workers()
        run.daemon.send_signal(signal.SIGTERM)
        run.daemon.wait(timeout=30)
        assert run.daemon.returncode == 0
        wait_until(lambda: not any(alive(pid) for pid in workers), timeout=10)
    assert "exited with status" in run.log  # the replacement was logged
    with smtplib.SMTP() as probe:  # nothing listens any more
        try:
            probe.connect("127.0.0.1", run.port)
            connected = True
        except OSError:
            connected = False
    assert not connected


def test_workers_die_with_a_killed_supervisor(tmp_path):
    """SIGKILL of the supervisor leaves no worker holding the port."""
    with running(tmp_path) as run:
        workers = run.workers()
        run.daemon.send_signal(signal.SIGKILL)
        run.daemon.wait(timeout=10)
        wait_until(lambda: not any(alive(pid) for pid in workers), timeout=15)
        again = start(run.config)  # the port is free again
        try:
            wait_for_port(run.port, again)
            assert send_all(run.port, [invitation(1)]) == [{}]
        finally:
            stop(again)


def test_sighup_reaches_every_worker(tmp_path):
    """A reload of the supervisor reaches every worker: after it, no worker makes conferences
    for the keyword the new config dropped."""
    with running(tmp_path) as run:
        run.stop_matching()
        run.daemon.send_signal(signal.SIGHUP)
        wait_until(lambda: run.stderr.count("configuration reloaded") == WORKERS + 1)
        sessions = [session for pid in run.workers() for session in run.sessions_on(pid, 2)]
        assert send_over(sessions, [invitation(i) for i in range(len(sessions))]) == [{}] * 6
        assert run.standin.conferences == {}


def test_a_replaced_worker_runs_on_the_supervisors_settings(tmp_path):
    """A worker started again later runs with the settings the others run with, not with a
    config file edited since (which only a reload or a restart may bring in)."""
    with running(tmp_path) as run:
        run.stop_matching()
        fresh = run.kill_a_worker()
        with run.only(fresh):
            assert send_all(run.port, [invitation(i) for i in range(5)]) == [{}] * 5
        assert len(run.standin.conferences) == 5  # the new worker kept the keyword too
    assert run.log.count("exited with status") == 1, run.log


def test_a_reload_while_a_worker_starts_does_not_kill_it(tmp_path):
    """A reload asked for while a worker starts is neither fatal to it nor lost."""
    with running(tmp_path) as run:
        victim = run.workers()[0]
        os.kill(victim, signal.SIGKILL)
        # Reloads all through the replacement's start.
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            run.daemon.send_signal(signal.SIGHUP)
            time.sleep(0.1)
        wait_until(lambda: victim not in run.workers() and run.all_serving())
        sessions = [session for pid in run.workers() for session in run.sessions_on(pid, 2)]
        assert send_over(sessions, [invitation(i) for i in range(len(sessions))]) == [{}] * 6
    assert run.log.count("exited with status") == 1, run.log  # only the one killed on purpose
