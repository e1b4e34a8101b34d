"""One clock: the time the daemon is given is the only time its flow, effects and background
work go by (stored times, retry times, deadlines), whatever the wall clock says."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from tests.integration.conftest import send
from tests.support.clock import Clock
from tests.support.invites import Event, thunderbird

EVENT = Event()  # on 10 March 2031
GIVEN = datetime(2031, 3, 1, 8, 0, tzinfo=UTC)


async def test_stored_times_are_the_daemons_clock(start_daemon, standin, sink):
    """When the event was first seen and last updated is the daemon's time, not the wall's."""
    clock = Clock(GIVEN)
    daemon = await start_daemon(clock=clock)
    assert (await send(daemon, thunderbird(EVENT)))[0] == 250
    clock.advance(3600)
    assert (await send(daemon, thunderbird(replace(EVENT, summary="Renamed", sequence=1))))[0] == 250
    stored = await daemon.store.get(EVENT.organizer, EVENT.uid)
    assert stored is not None
    assert stored.first_seen == GIVEN.timestamp()
    assert stored.updated_at == GIVEN.timestamp() + 3600


async def test_postponed_deletion_comes_due_by_the_daemons_clock(start_daemon, standin, sink):
    """A deletion TrueConf refused is retried once the daemon's clock passes its backoff (30 s
    at first), not before; the wall clock does not matter."""
    clock = Clock(GIVEN)
    daemon = await start_daemon(clock=clock)
    await send(daemon, thunderbird(EVENT))
    standin.fail_next(1000, 503)
    await send(daemon, thunderbird(replace(EVENT, method="CANCEL", status="CANCELLED", sequence=1)))
    standin.fail_next(0)
    clock.advance(29)
    assert await daemon.app.retries.run_once() == 0
    assert len(standin.conferences) == 1
    clock.advance(2)
    assert await daemon.app.retries.run_once() == 1
    assert standin.conferences == {}


async def test_retry_deadline_runs_on_the_daemons_clock(start_daemon, standin, sink):
    """A new invitation gets 451 while TrueConf is down until retry.deadline has passed on the
    daemon's clock; then it goes out unchanged."""
    clock = Clock(GIVEN)
    daemon = await start_daemon(clock=clock, retry={"deadline": 1800}, notice={"enabled": False})
    standin.fail_next(1000, 503)
    raw = thunderbird(EVENT)
    assert (await send(daemon, raw))[0] == 451
    clock.advance(1799)
    assert (await send(daemon, raw))[0] == 451
    clock.advance(2)
    assert (await send(daemon, raw))[0] == 250
