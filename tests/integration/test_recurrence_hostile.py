"""Hostile recurrence rules through the real daemon: delivered unchanged, no one kept waiting."""

from __future__ import annotations

import asyncio
import resource
import smtplib
import subprocess
import sys
import time

import pytest

from mailhook.core import series
from mailhook.testing.sink import Sink
from mailhook.testing.standin import StandIn
from tests.integration.conftest import USERS, send
from tests.support import reliability
from tests.support.daemon import invitations
from tests.support.process import ROOT, SECRET, free_port, wait_for_port, write_config
from tests.support.recurring import WEEKLY, Clock, epoch, request, scheduled
from tests.support.trace import untraced

# An organizer's invitation with no conference keyword: its series is still worked out.
HOSTILE_EVENT = """UID:{uid}
SEQUENCE:0
ORGANIZER;CN=Alice:mailto:alice@example.com
ATTENDEE;CN=Bob;ROLE=REQ-PARTICIPANT:mailto:bob@example.com
SUMMARY:Weekly sync
LOCATION:Room 4
DTSTART:20291231T090000Z
DTEND:20291231T100000Z
RRULE:{rule}"""
INTERVAL_ZERO = "FREQ=DAILY;INTERVAL=0"
# Rules dateutil walks without producing an occurrence: until the year 9999, one step a day.
NEVER_YIELDING = {
    "FREQ=HOURLY;BYMINUTE=5;BYSETPOS=2": "the second of one occurrence an hour, hour by hour",
    "FREQ=MINUTELY;COUNT=3;BYSECOND=1;BYSETPOS=-2": "the same, minute by minute",
    "FREQ=HOURLY;BYMONTH=2;BYMONTHDAY=30": "30 February, day by day",
    "FREQ=DAILY;INTERVAL=7;BYDAY=TU": "every seventh day from a Monday, never a Tuesday",
}


def hostile(rule: str, uid: str = "hostile-1@example.com") -> bytes:
    """The hostile invitation: one VEVENT with the rule."""
    return request(HOSTILE_EVENT.format(uid=uid, rule=rule), message_id=f"<{uid}>")


@pytest.fixture
def clock() -> Clock:
    """Wednesday 2 January 2030, noon UTC."""
    return Clock("2030-01-02 12:00")


@pytest.mark.parametrize("rule", [INTERVAL_ZERO, *NEVER_YIELDING])
async def test_hostile_rule_is_delivered_unchanged(start_daemon, standin, sink, clock, rule):
    """An invitation whose rule would expand for ever is forwarded byte-identical with 250."""
    reliability.hostile(f"recurrence rule through the daemon: {NEVER_YIELDING.get(rule, rule)}")
    daemon = await start_daemon(clock=clock)
    raw = hostile(rule)
    code, _ = await asyncio.wait_for(send(daemon, raw), timeout=30)
    assert code == 250
    assert untraced(invitations(sink)[0].content) == raw
    assert not standin.conferences


async def test_ordinary_series_is_not_held_up_by_hostile_ones(
    start_daemon, standin, sink, clock, monkeypatch
):
    """While hostile invitations are being expanded, an ordinary recurring one sent on another
    connection gets its conference and link at once."""
    # A budget long enough that the hostile expansions are surely still running meanwhile.
    monkeypatch.setattr(series, "MAX_SECONDS", 4.0, raising=False)
    monkeypatch.setattr(series, "MAX_CALLS", 10**9, raising=False)
    daemon = await start_daemon(clock=clock)
    finished: dict[str, float] = {}

    async def timed(name: str, raw: bytes) -> int:
        code, _ = await send(daemon, raw)
        finished[name] = time.monotonic()
        return code

    rules = [INTERVAL_ZERO, "FREQ=DAILY;INTERVAL=7;BYDAY=TU"]
    pending = [asyncio.create_task(timed(rule, hostile(rule, f"h{i}@example.com")))
               for i, rule in enumerate(rules)]
    await asyncio.sleep(0.3)  # the hostile messages are in their expansions now
    began = time.monotonic()
    code = await asyncio.wait_for(timed("ordinary", request(WEEKLY)), timeout=20)
    waited = finished["ordinary"] - began
    reliability.responsiveness(waited)
    assert code == 250
    assert scheduled(standin) == (epoch("2030-01-07 09:00"), 3600)
    ordinary = [m for m in invitations(sink) if b"series-1@example.com" in m.content]
    assert b"/c/" in ordinary[0].content
    assert await asyncio.wait_for(asyncio.gather(*pending), timeout=30) == [250, 250]
    assert finished["ordinary"] < finished[rules[1]], "the ordinary message waited for another"
    assert waited < 10


def limit_memory() -> None:
    """In the daemon's process, before it starts: at most 1 GiB of address space."""
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def peak_memory(pid: int) -> int:
    """The most memory the process has held (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def test_daemon_under_memory_cap_survives_interval_zero(tmp_path):
    """`mailhook serve` capped at 1 GiB answers the INTERVAL=0 invitation with 250, stays up and
    handles the next message."""
    reliability.hostile("INTERVAL=0 invitation to a daemon capped at 1 GiB")
    standin = StandIn(users=USERS, client_id="mailhook", client_secret=SECRET)
    with standin, Sink() as sink:
        port = free_port()
        config = write_config(tmp_path, standin.url, sink.port, port)
        process = subprocess.Popen(
            [sys.executable, "-m", "mailhook", "serve", "--config", str(config)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
            preexec_fn=limit_memory,
        )
        try:
            wait_for_port(port, process)
            with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
                refused = client.sendmail("alice@example.com", ["bob@example.com"],
                                          hostile(INTERVAL_ZERO))
                assert refused == {}
                assert process.poll() is None
                # Far below the cap: the expansion never ran away to be stopped by it.
                assert peak_memory(process.pid) < 400 << 20
                refused = client.sendmail("alice@example.com", ["bob@example.com"],
                                          hostile("FREQ=WEEKLY", "next@example.com"))
                assert refused == {}
            assert process.poll() is None
            assert len(sink.messages) == 2
        finally:
            process.kill()
            process.wait(timeout=10)
