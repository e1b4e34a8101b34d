"""Two mailhook daemons on one PostgreSQL database, as on two mail hosts: real processes, a real
database server started by the tests, the TrueConf stand-in and a sink as the next hop.

Whatever daemon a copy, an update or a cancel passes through, an event has one conference;
work one daemon leaves (killed, or the database away for a while) is finished by the other,
and no message is lost or doubled.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from mailhook.store.postgres import POOL_TIMEOUT
from mailhook.testing.sink import Sink
from mailhook.testing.standin import StandIn
from tests.integration.conftest import USERS, send
from tests.support.invites import Event, thunderbird
from tests.support.postgres import PostgresServer, free_port, why_not_available

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-value"
EVENT = Event(attendees=("bob@example.com", "carol@example.org"))
LINK = re.compile(rb"https?://[^\s\"<>]+/c/\d+")


class Daemon:
    """One ``mailhook serve`` process."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config, self.port, self.log = config, port, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mailhook", "serve", "--config", str(self.config)],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                env={k: v for k, v in os.environ.items() if not k.startswith("MAILHOOK_")})
        wait_for_port(self.port, self)
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def wait_for_port(port: int, daemon: Daemon, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert daemon.process is not None
        assert daemon.process.poll() is None, daemon.output()
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"mailhook did not listen on {port}:\n{daemon.output()}")


@pytest.fixture(scope="module")
def database() -> Iterator[PostgresServer]:
    """A PostgreSQL server for this module's daemons (restarted by one test)."""
    reason = why_not_available()
    if reason:
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    server = PostgresServer().init().start()
    yield server
    server.destroy()


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with StandIn(users=USERS, client_id="mailhook", client_secret=SECRET) as server:
        yield server


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as server:
        yield server


@pytest.fixture
def daemons(database: PostgresServer, standin: StandIn, sink: Sink, tmp_path: Path
            ) -> Iterator[Callable[[int], list[Daemon]]]:
    """Start daemons on one new database; all are stopped at the end."""
    url = database.new_database()
    password = tmp_path / "db-password"
    password.write_text(database.password + "\n")
    started: list[Daemon] = []

    def start(count: int) -> list[Daemon]:
        made = []
        for _ in range(count):
            port = free_port()
            config = tmp_path / f"mailhook-{len(started)}.toml"
            config.write_text(f"""
[smtp]
listen_port = {port}
[relay]
port = {sink.port}
[trueconf]
server_url = "{standin.url}"
client_id = "mailhook"
client_secret = "{SECRET}"
timeout = 2
[policy]
local_domains = ["example.com"]
[notice]
enabled = false
[retry]
interval = 1
backoff_initial = 1
backoff_max = 2
[store]
url = "{url}"
password_file = "{password}"
[metrics]
enabled = false
""")
            daemon = Daemon(config, port, tmp_path / f"mailhook-{len(started)}.log")
            started.append(daemon)
            made.append(daemon.start())
        return made

    yield start
    for daemon in started:
        daemon.stop()
    for daemon in started:
        assert database.password not in daemon.output()


async def submit(daemon: Daemon, raw: bytes) -> tuple[int, str]:
    """One message to one daemon process; the final reply (a loaded database may be slow)."""
    return await send(daemon, raw, timeout=60)


def links(sink: Sink, uid: str) -> set[bytes]:
    """The join links in the relayed copies of the event's messages."""
    found: set[bytes] = set()
    for message in sink.messages:
        if uid.encode() in message.content:
            found |= set(LINK.findall(message.content))
    return found


async def eventually(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not done in time"
        await asyncio.sleep(0.2)


async def test_copies_sent_to_both_daemons_make_one_conference(daemons, standin, sink):
    """20 copies of one invitation sent to two daemons at once make exactly one conference,
    and every copy goes on with its link."""
    first, second = daemons(2)
    raw = thunderbird(EVENT)
    replies = await asyncio.gather(*(submit((first, second)[n % 2], raw) for n in range(20)))
    assert [code for code, _ in replies] == [250] * 20
    assert len(standin.conferences) == 1
    assert len(links(sink, EVENT.uid)) == 1
    assert len([m for m in sink.messages if EVENT.uid.encode() in m.content]) == 20


async def test_update_and_cancel_through_the_other_daemon(daemons, standin, sink):
    """An event created through one daemon is updated through the other with the same link
    and the conference moved, and cancelled through the other with the conference deleted."""
    first, second = daemons(2)
    assert (await submit(first, thunderbird(EVENT)))[0] == 250
    [(conference_id, made)] = standin.conferences.items()
    moved = replace(EVENT, sequence=1, start=EVENT.start.replace(hour=14))
    assert (await submit(second, thunderbird(moved)))[0] == 250
    assert list(standin.conferences) == [conference_id]
    assert standin.conferences[conference_id]["schedule"] != made["schedule"]
    assert len(links(sink, EVENT.uid)) == 1
    cancel = replace(moved, method="CANCEL", status="CANCELLED", sequence=2)
    assert (await submit(second, thunderbird(cancel)))[0] == 250
    assert standin.conferences == {}


async def test_deletions_of_a_killed_daemon_are_finished_by_the_other(daemons, standin, sink):
    """A daemon killed (SIGKILL) while deletions wait for TrueConf, which is down: the other
    daemon deletes every conference once TrueConf is back."""
    first, second = daemons(2)
    events = [replace(EVENT, uid=f"kill-{n}@example.com") for n in range(5)]
    for event in events:
        assert (await submit(first, thunderbird(event)))[0] == 250
    assert len(standin.conferences) == 5
    standin.fail_next(10**6, 503)
    for event in events:
        cancel = replace(event, method="CANCEL", status="CANCELLED", sequence=1)
        assert (await submit(first, thunderbird(cancel)))[0] == 250  # cancels are not held
    first.kill()
    assert len(standin.conferences) == 5
    standin.fail_next(0)
    await eventually(lambda: standin.conferences == {})
    assert second.process is not None and second.process.poll() is None


async def test_database_restart_under_load_loses_and_doubles_nothing(
        daemons, database, standin, sink):
    """While invitations stream in to both daemons the database stops and starts again: mail
    gets 451 while it is away and is taken when the client retries, as an MTA does; every
    invitation then has exactly one conference and went on exactly once."""
    first, second = daemons(2)
    uids = [f"restart-{n}@example.com" for n in range(40)]
    deferred: list[int] = []

    async def deliver(number: int, uid: str) -> None:
        raw = thunderbird(replace(EVENT, uid=uid))
        daemon = (first, second)[number % 2]
        for _ in range(200):
            code, _ = await submit(daemon, raw)
            if code == 250:
                return
            assert code == 451, code
            deferred.append(number)
            await asyncio.sleep(0.5)
        raise AssertionError(f"{uid} never accepted")

    async def restart() -> None:
        await asyncio.sleep(1.0)
        await asyncio.to_thread(database.stop, "fast")
        # Longer than a message waits for a connection (then it gets 451).
        await asyncio.sleep(POOL_TIMEOUT + 4)
        await asyncio.to_thread(database.start)

    async def stream(part: int) -> None:
        for number, uid in enumerate(uids):
            if number % 2 == part:
                await deliver(number, uid)
                await asyncio.sleep(0.1)

    await asyncio.gather(stream(0), stream(1), restart())
    assert deferred, "no message arrived while the database was away"
    tags = [tuple(c.get("tags") or ()) for c in standin.conferences.values()]
    assert len(tags) == len(set(tags)) == len(uids)
    for uid in uids:
        relayed = [m for m in sink.messages if uid.encode() in m.content]
        assert len(relayed) == 1, uid
    for daemon in (first, second):
        assert "Traceback" not in daemon.output()
