"""Postponed work after TrueConf changed under it, and the users directory after a restart,
through the real daemon, the TrueConf stand-in and the sink."""

from __future__ import annotations

import logging
from dataclasses import replace

from mailhook.core.decide import event_tag
from mailhook.core.model import ConferenceSpec
from mailhook.testing.standin import StandIn
from mailhook.trueconf.client import TrueConfClient
from tests.integration.conftest import USERS, send
from tests.support.clock import Clock
from tests.support.daemon import invitations
from tests.support.invites import Event, thunderbird

LATER = 10 * 3600  # seconds: a retry pass "ten hours later"
CANCELLED = Event(uid="cancelled@example.com")
MOVED = Event(uid="moved@example.com")


async def retry_later(daemon, clock: Clock) -> int:
    """One pass of the retry queue, ten hours on."""
    clock.advance(LATER)
    return int(await daemon.app.retries.run_once())


async def test_postponed_work_leaves_a_reused_id_alone(start_daemon, standin, caplog):
    """TrueConf restarted while a deletion and an update waited, and gave their conference ids
    to other meetings: the retry pass drops both (with a warning) and touches neither meeting."""
    clock = Clock()
    daemon = await start_daemon(clock=clock)
    for event in (CANCELLED, MOVED):
        assert (await send(daemon, thunderbird(event)))[0] == 250
    ids = sorted(standin.conferences)
    standin.fail_next(10**6, 503)
    cancel = replace(CANCELLED, method="CANCEL", status="CANCELLED", sequence=1)
    assert (await send(daemon, thunderbird(cancel)))[0] == 250
    update = replace(MOVED, sequence=1, start=MOVED.start.replace(hour=15))
    assert (await send(daemon, thunderbird(update)))[0] == 250
    assert await daemon.store.count_pending() == 2
    port = int(standin.url.rsplit(":", 1)[1])
    standin.stop()
    with StandIn(users=USERS, client_id="mailhook", client_secret="s3cret-value",
                 port=port) as restarted:
        others = await _other_meetings(restarted, 2)
        assert sorted(others) == ids  # the ids were given anew
        before = restarted.conferences
        with caplog.at_level(logging.WARNING):
            await retry_later(daemon, clock)
        assert restarted.conferences == before  # neither deleted nor re-timed
        assert await daemon.store.count_pending() == 0
        dropped = [r.getMessage() for r in caplog.records if "another meeting" in r.getMessage()]
        assert len(dropped) == 2
        assert any("deletion" in m for m in dropped) and any("update" in m for m in dropped)


async def _other_meetings(server: StandIn, count: int) -> list[str]:
    async with TrueConfClient(server.url, "mailhook", "s3cret-value") as client:
        made = []
        for number in range(count):
            spec = ConferenceSpec(f"Other {number}", "bob", (), 1900000000, 3600, False, 36,
                                  event_tag("bob@example.com", f"other-{number}"))
            made.append((await client.create_conference(spec)).id)
        return made


async def test_update_right_after_a_restart_during_an_outage_keeps_its_link(
        start_daemon, standin, sink):
    """A daemon restarted while TrueConf is down still knows the TrueConf accounts (kept in the
    store): an update goes on at once with the event's link, and TrueConf gets it later."""
    clock = Clock()
    first = await start_daemon(clock=clock)
    assert (await send(first, thunderbird(MOVED)))[0] == 250
    [link] = {c["url"] for c in standin.conferences.values()}
    await first.shutdown()
    standin.fail_next(10**6, 503)
    restarted = await start_daemon(clock=clock)
    update = replace(MOVED, sequence=1, start=MOVED.start.replace(hour=15))
    assert (await send(restarted, thunderbird(update)))[0] == 250
    assert link.encode() in invitations(sink)[-1].content
    assert await restarted.store.count_pending() == 1
    standin.fail_next(0)
    assert await retry_later(restarted, clock) == 1
