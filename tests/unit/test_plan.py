"""The plan for one message, as a pure function: the one-off shortcut, the steps it asks for."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from mailhook.core.decide import Action, Policy
from mailhook.core.model import ConferenceSpec, EventState, StoredEvent
from mailhook.core.plan import FlowConfig, Step, needs_series, one_off, plan, read_message
from mailhook.core.series import merge_series, next_occurrence
from tests.support.invites import single_part, vcalendar

NOW = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)
CONFIG = FlowConfig(Policy(local_domains=("example.com",)))
# The zone block Outlook writes: each onset carries the zone's own yearly RRULE.
OUTLOOK_ZONE = """BEGIN:VTIMEZONE
TZID:W. Europe Standard Time
BEGIN:STANDARD
DTSTART:16010101T030000
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:16010101T020000
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=3
END:DAYLIGHT
END:VTIMEZONE
"""
OUTLOOK_EVENT = """CLASS:PUBLIC
CREATED:20310301T100000Z
DESCRIPTION:Let's meet.\\n
DTEND;TZID="W. Europe Standard Time":20310310T110000
DTSTAMP:20310301T100000Z
DTSTART;TZID="W. Europe Standard Time":20310310T100000
LAST-MODIFIED:20310301T100000Z
LOCATION:TrueConf
ORGANIZER;CN=Alice Example:mailto:alice@example.com
ATTENDEE;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=TRUE;CN=Bob:mailto:bob@example.com
PRIORITY:5
SEQUENCE:0
SUMMARY;LANGUAGE=en-US:Quarterly planning
TRANSP:OPAQUE
UID:040000008200E00074C5B7101A82E00800000000B0C9F1D5B1A9DA01000000000000000010000000
X-MICROSOFT-CDO-BUSYSTATUS:BUSY
X-MICROSOFT-CDO-IMPORTANCE:1
X-MICROSOFT-DISALLOW-COUNTER:FALSE"""


def outlook(event: str = OUTLOOK_EVENT) -> bytes:
    """An Outlook-shaped invitation: a VTIMEZONE with yearly rules before the VEVENT."""
    zone = OUTLOOK_ZONE.replace("\n", "\r\n")
    return single_part(vcalendar("REQUEST", event, timezones=zone), "REQUEST")


def test_outlook_one_off_with_zone_rules_takes_the_shortcut():
    """A one-off Outlook invitation whose VTIMEZONE has RRULE lines skips the series work: its
    occurrence is the event's own times, and no series is kept for it."""
    reading = read_message(outlook(), "alice@example.com", CONFIG.policy)
    assert reading.invitation is not None
    assert not needs_series(reading, None, CONFIG)
    planned = plan(reading, None, CONFIG, NOW)
    assert planned.decision.action is Action.CREATE and planned.step is Step.ENSURE
    assert planned.series.text == ""
    assert planned.occurrence is not None
    assert planned.occurrence.start == datetime(2031, 3, 10, 9, 0, tzinfo=UTC)


def test_the_shortcut_agrees_with_the_full_way():
    """The one-off occurrence is the one the series code finds for the same calendar."""
    reading = read_message(outlook(), "alice@example.com", CONFIG.policy)
    assert reading.invitation is not None and reading.parsed.calendar is not None
    shortcut = one_off(reading.parsed, reading.invitation, None, CONFIG)
    series = merge_series("", reading.parsed.calendar.text, reading.invitation.uid, "REQUEST")
    assert shortcut == next_occurrence(series, NOW, UTC)


@pytest.mark.parametrize("line", ["RRULE:FREQ=WEEKLY;COUNT=3", "RDATE:20310317T090000Z",
                                  'EXDATE;TZID="W. Europe Standard Time":20310310T100000'])
def test_the_events_own_recurrence_goes_the_full_way(line):
    """An RRULE, RDATE or EXDATE of the VEVENT itself makes the series code compute the
    occurrence, and the series is kept."""
    reading = read_message(outlook(OUTLOOK_EVENT + "\n" + line), "alice@example.com",
                           CONFIG.policy)
    assert needs_series(reading, None, CONFIG)
    assert plan(reading, None, CONFIG, NOW).series.text


def test_floating_times_go_the_full_way_unless_the_default_zone_is_utc():
    """A start without zone is read in the default zone, which only the series code applies."""
    floating = OUTLOOK_EVENT.replace(';TZID="W. Europe Standard Time"', "")
    reading = read_message(outlook(floating), "alice@example.com", CONFIG.policy)
    assert not needs_series(reading, None, CONFIG)
    berlin = FlowConfig(CONFIG.policy, default_zone=ZoneInfo("Europe/Berlin"))
    assert needs_series(reading, None, berlin)
    occurrence = plan(reading, None, berlin, NOW).occurrence
    assert occurrence is not None
    assert occurrence.start == datetime(2031, 3, 10, 9, 0, tzinfo=UTC)


def test_past_event_passes():
    """An event that is over asks for nothing: the message passes as it came."""
    reading = read_message(outlook(), "alice@example.com", CONFIG.policy)
    planned = plan(reading, None, CONFIG, datetime(2031, 4, 1, tzinfo=UTC))
    assert planned.decision.action is Action.PASS and planned.step is Step.NOTHING
    assert "no upcoming occurrence" in planned.decision.reason and not planned.rewrite


def test_update_with_same_times_rewrites_without_notice():
    """An update of an event with a conference keeps the link and mails no new notice when the
    conference's time stays."""
    reading = read_message(outlook(), "alice@example.com", CONFIG.policy)
    first = plan(reading, None, CONFIG, NOW)
    assert first.notice and first.occurrence is not None
    spec = ConferenceSpec("Quarterly planning", "alice", (), int(first.occurrence.start.timestamp()),
                          3600, False, 36, "tag")
    assert reading.invitation is not None
    stored = StoredEvent("alice@example.com", reading.invitation.uid, EventState.ACTIVE, "tag",
                         "42", "https://video.example.com/c/42", spec)
    again = plan(reading, stored, CONFIG, NOW)
    assert again.decision.action is Action.SYNC and again.step is Step.ENSURE
    assert again.rewrite and not again.notice


def test_cancel_of_a_stored_event_deletes_with_the_newer_sequence():
    """A CANCEL deletes the conference and keeps the higher of the two SEQUENCEs."""
    cancel = single_part(vcalendar("CANCEL", OUTLOOK_EVENT.replace("SEQUENCE:0", "SEQUENCE:3")
                                   + "\nSTATUS:CANCELLED"), "CANCEL")
    reading = read_message(cancel, "alice@example.com", CONFIG.policy)
    assert reading.invitation is not None
    stored = StoredEvent("alice@example.com", reading.invitation.uid, EventState.ACTIVE, "tag",
                         "42", "https://video.example.com/c/42", sequence=1)
    planned = plan(reading, stored, CONFIG, NOW)
    assert planned.step is Step.DELETE and planned.sequence == 3 and not planned.rewrite
