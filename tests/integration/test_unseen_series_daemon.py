"""A changed occurrence of a series mailhook never saw, through the real daemon: it gets a
conference of its own, which the series' later REQUEST takes over."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from tests.integration.conftest import send
from tests.support.daemon import api_calls, calendars_in, invitations
from tests.support.invites import FUTURE, Event, thunderbird
from tests.support.trace import untraced

UID = "5f3c1d7e-3333-4a2b-9c3d-000000000216@example.com"
SERIES = Event(uid=UID, extra=("RRULE:FREQ=WEEKLY;COUNT=6",))
# The second occurrence, moved an hour later: an instance-only REQUEST (no master in it).
MOVED_OCCURRENCE = replace(
    SERIES, start=FUTURE + timedelta(days=7, hours=1), sequence=1,
    extra=(f"RECURRENCE-ID:{(FUTURE + timedelta(days=7)).strftime('%Y%m%dT%H%M%SZ')}",))


async def test_changed_occurrence_of_unseen_series_gets_a_conference(daemon, standin, sink):
    """An instance-only REQUEST asking for a conference gets one for that occurrence, and
    its message carries the link."""
    code, _ = await send(daemon, thunderbird(MOVED_OCCURRENCE))
    assert code == 250
    [created] = api_calls(standin, "POST")
    assert created.json["schedule"]["start_time"] == int(MOVED_OCCURRENCE.start.timestamp())
    url = next(iter(standin.conferences.values()))["url"]
    [event] = calendars_in(invitations(sink)[0].content)[0].walk("VEVENT")
    assert url in str(event["DESCRIPTION"]) and "RECURRENCE-ID" in event


async def test_series_request_takes_the_occurrences_conference_over(daemon, standin, sink):
    """The series' REQUEST that follows uses the same conference (no second one), moved to
    the series' nearest occurrence, and carries the same link."""
    await send(daemon, thunderbird(MOVED_OCCURRENCE))
    url = next(iter(standin.conferences.values()))["url"]
    code, _ = await send(daemon, thunderbird(SERIES))
    assert code == 250
    assert len(api_calls(standin, "POST")) == 1
    [conference] = standin.conferences.values()
    assert conference["schedule"]["start_time"] == int(FUTURE.timestamp())
    [event] = calendars_in(invitations(sink)[-1].content)[0].walk("VEVENT")
    assert url in str(event["DESCRIPTION"])


async def test_changed_occurrence_without_trigger_passes(daemon, standin, sink):
    """An instance-only REQUEST that does not ask for a conference still passes unchanged."""
    raw = thunderbird(replace(MOVED_OCCURRENCE, location="Room 4"))
    assert (await send(daemon, raw))[0] == 250
    assert standin.conferences == {}
    assert untraced(invitations(sink)[0].content) == raw
