"""A weekly series and a clock the test moves by hand, for recurring events end to end."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.support.invites import single_part, vcalendar

WEEKLY = """UID:series-1@example.com
SEQUENCE:0
ORGANIZER;CN=Alice:mailto:alice@example.com
ATTENDEE;CN=Bob;ROLE=REQ-PARTICIPANT:mailto:bob@example.com
SUMMARY:Stand-up
LOCATION:TrueConf
DTSTART;TZID=Europe/Berlin:20291001T100000
DTEND;TZID=Europe/Berlin:20291001T110000
RRULE:FREQ=WEEKLY;BYDAY=MO"""
UID = "series-1@example.com"


def at(text: str) -> datetime:
    """A UTC time from 'YYYY-MM-DD HH:MM'."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


def epoch(text: str) -> int:
    """UTC epoch seconds of 'YYYY-MM-DD HH:MM'."""
    return int(at(text).timestamp())


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: str) -> None:
        self.now = at(now)

    def __call__(self) -> datetime:
        return self.now

    def set(self, now: str) -> None:
        self.now = at(now)


def request(*vevents: str, method: str = "REQUEST", message_id: str = "<r@example.com>") -> bytes:
    """A single-part invitation holding the given VEVENTs."""
    return single_part(vcalendar(method, *vevents), method, message_id=message_id)


def scheduled(standin) -> tuple[int, int]:
    """(start, duration) of the one conference on the stand-in."""
    [conference] = standin.conferences.values()
    return conference["schedule"]["start_time"], conference["schedule"]["duration"]
