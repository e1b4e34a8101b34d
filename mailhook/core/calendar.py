"""Lenient reading of iCalendar objects into EventComponent values (times in UTC).

Content lines are split by ``mailhook.core.contentline`` (shared with the rewrite), zones
resolved by ``mailhook.core.zones``; values are read with the ``icalendar`` library. Work is
bounded so hostile objects cannot stall the relay.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo

from icalendar.parser import Contentline
from icalendar.prop import vDDDTypes, vDuration

from mailhook.core.contentline import (
    ContentLine,
    content_lines,
    split_content_line,
    unescape_text,
    unfold,
)
from mailhook.core.model import Attendee, CalendarObject, EventComponent
from mailhook.core.zones import Zones

# What reads content lines is used from here too (it is mailhook.core.contentline's).
__all__ = ["CalendarError", "parse_calendar", "split_content_line", "unescape_text", "unfold"]

MAX_EVENTS = 500
TOO_LARGE = "calendar too large"
MAX_ATTENDEES = 1000
MAX_TIMEZONES = 50
MAX_TIMEZONE_LINES = 2000
# The invitation's own object, up to this many characters, keeps its split content lines for
# the rewrite; a larger one is split again there rather than held for as long as the message
# is handled (split lines take up to about 80 times the text of an object of short lines).
MAX_KEPT_LINES_CHARS = 64 * 1024

# A content line most producers write: a name, parameters whose values are quoted or plain
# text without backslashes, carets, control characters or (unquoted) commas, and the value.
_PLAIN_LINE = re.compile(
    r'([A-Za-z0-9-]+)'
    r'((?:;[A-Za-z0-9-]+=(?:"[^"\x00-\x1f\x7f\\^]*"|[^"\x00-\x1f\x7f\\^,:;=]*))*)'
    r":(.*)"
)
_PLAIN_PARAM = re.compile(r';([A-Za-z0-9-]+)=("[^"]*"|[^;]*)')
_EVENT_PROPERTIES = frozenset(
    {
        "UID", "RECURRENCE-ID", "SEQUENCE", "SUMMARY", "LOCATION", "DESCRIPTION", "DTSTART",
        "DTEND", "DURATION", "STATUS", "ORGANIZER", "ATTENDEE", "CONFERENCE", "RRULE",
        "RDATE", "EXDATE",
    }
)  # fmt: skip


class CalendarError(ValueError):
    """The text is not a calendar object mailhook can read."""




# --- structure --------------------------------------------------------------------------------


@dataclass
class _EventLines:
    """The property lines of one VEVENT that the reader needs."""

    lines: list[str]
    attendees: int = 0


class _Collector:
    """One pass over the content lines: METHOD, top-level VEVENTs and VTIMEZONE blocks."""

    def __init__(self) -> None:
        self.method = ""
        self.seen_calendar = False
        self.events: list[_EventLines] = []
        self.timezones: list[list[str]] = []
        self.stack: list[str] = []
        self.event: _EventLines | None = None
        self.timezone: list[str] | None = None

    def feed(self, line: ContentLine) -> None:
        name, value, logical = line.name, line.value, line.logical
        if name == "BEGIN":
            self.begin(value.strip().upper())
        if self.timezone is not None and len(self.timezone) < MAX_TIMEZONE_LINES:
            self.timezone.append(logical)
        if name == "END":
            self.end()
        elif name != "BEGIN":
            self.property(name, value, logical)

    def begin(self, component: str) -> None:
        self.stack.append(component)
        if self.stack == ["VCALENDAR"]:
            self.seen_calendar = True
        elif self.stack == ["VCALENDAR", "VEVENT"]:
            if len(self.events) >= MAX_EVENTS:
                raise CalendarError(TOO_LARGE)
            self.event = _EventLines([])
            self.events.append(self.event)
        elif self.stack == ["VCALENDAR", "VTIMEZONE"] and len(self.timezones) < MAX_TIMEZONES:
            self.timezone = []
            self.timezones.append(self.timezone)

    def end(self) -> None:
        if self.stack:
            self.stack.pop()
        if len(self.stack) < 2:
            self.event = None
            self.timezone = None

    def property(self, name: str, value: str, logical: str) -> None:
        if self.stack == ["VCALENDAR"] and name == "METHOD" and not self.method:
            self.method = value.strip().upper()
        elif self.event is not None and len(self.stack) == 2 and name in _EVENT_PROPERTIES:
            if name == "ATTENDEE":
                self.event.attendees += 1
                if self.event.attendees > MAX_ATTENDEES:
                    return
            self.event.lines.append(logical)


def parse_calendar(text: str, *, keep_lines: bool = False) -> CalendarObject:
    """Read a calendar object; raises CalendarError when there is no VCALENDAR to read.

    ``keep_lines``: the object is the one the rewrite will edit; up to MAX_KEPT_LINES_CHARS it
    keeps its split lines for it (only that object: a message may carry many).
    """
    collector = _Collector()
    kept = keep_lines and len(text) <= MAX_KEPT_LINES_CHARS
    lines = unfold(text) if kept else content_lines(text)
    for line in lines:
        collector.feed(line)
    if not collector.seen_calendar:
        raise CalendarError("no VCALENDAR")
    zones = Zones(collector.timezones)
    events = tuple(_read_event(event.lines, zones) for event in collector.events)
    return CalendarObject(method=collector.method, events=events, text=text,
                          lines=tuple(lines) if kept else ())



# --- events -----------------------------------------------------------------------------------


@dataclass
class _Property:
    """One parsed property: parameters (upper-case names) and the raw value."""

    params: dict[str, str]
    value: str


def _parse_property(logical: str) -> tuple[str, _Property] | None:
    plain = _read_plain_line(logical)
    if plain is not None:
        return plain
    try:
        name, params, value = Contentline(logical).parts()
    except Exception:  # noqa: BLE001 - a malformed line is skipped, not fatal
        return None
    flat = {key.upper(): _first(val) for key, val in params.items()}
    return name.upper(), _Property(flat, str(value))


def _read_plain_line(logical: str) -> tuple[str, _Property] | None:
    """Read a line in the plain shape; None for any other line.

    For these lines icalendar's Contentline gives the same name, parameters and value: its
    escaping, list splitting and whitespace trimming have nothing to act on.
    """
    match = _PLAIN_LINE.fullmatch(logical)
    if match is None:
        return None
    name, params, value = match.groups()
    if params and (" ;" in params or "= " in params or params.endswith(" ")):
        return None  # padding around a delimiter, which icalendar trims
    flat = {key.upper(): _unquote(val) for key, val in _PLAIN_PARAM.findall(params)}
    return name.upper(), _Property(flat, unescape_text(value))


def _unquote(value: str) -> str:
    return value[1:-1] if value[:1] == '"' else value


def _first(value: object) -> str:
    if isinstance(value, list | tuple):
        return str(value[0]) if value else ""
    return str(value)


def _group(lines: list[str]) -> dict[str, list[_Property]]:
    grouped: dict[str, list[_Property]] = {}
    for line in lines:
        parsed = _parse_property(line)
        if parsed is not None:
            grouped.setdefault(parsed[0], []).append(parsed[1])
    return grouped


def _read_event(lines: list[str], zones: Zones) -> EventComponent:
    props = _group(lines)

    def text(name: str) -> str:
        # Values are unescaped once, when the line is read; a second pass would turn an
        # escaped backslash before "n" into a line break.
        found = props.get(name)
        return found[0].value if found else ""

    start, all_day, offset = _read_time(props.get("DTSTART", [None])[0], zones)
    recurrence = props.get("RECURRENCE-ID", [None])[0]
    organizer = props.get("ORGANIZER", [None])[0]
    return EventComponent(
        uid=text("UID").strip(),
        recurrence_id=_recurrence_id(recurrence, zones),
        recurrence_range=_recurrence_range(recurrence),
        sequence=_sequence(text("SEQUENCE")),
        summary=text("SUMMARY"),
        location=text("LOCATION"),
        description=text("DESCRIPTION"),
        start=start,
        end=_read_end(props, start, all_day, zones),
        all_day=all_day,
        status=text("STATUS").strip().upper(),
        organizer=_calendar_address(organizer) if organizer else "",
        organizer_sent_by=_address(organizer.params.get("SENT-BY", "")) if organizer else "",
        attendees=tuple(_attendee(prop) for prop in props.get("ATTENDEE", [])),
        conference_urls=tuple(prop.value.strip() for prop in props.get("CONFERENCE", [])),
        rrule=tuple(prop.value.strip() for prop in props.get("RRULE", [])),
        rdate=tuple(prop.value.strip() for prop in props.get("RDATE", [])),
        exdate=tuple(prop.value.strip() for prop in props.get("EXDATE", [])),
        floating=any(_floating(prop) for name in ("DTSTART", "DTEND") for prop in props.get(name, [])),
        utc_offset_minutes=offset,
        zone=_start_zone(props.get("DTSTART", [None])[0], zones),
    )


def _start_zone(prop: _Property | None, zones: Zones) -> tzinfo | None:
    """DTSTART's zone: its TZID resolved (the same lookup its time was read with), UTC for a
    UTC time, None for a floating time or a date."""
    if prop is None:
        return None
    if "TZID" in prop.params:
        return zones.get(prop.params["TZID"])
    return UTC if prop.value.strip().upper().endswith("Z") else None


def _floating(prop: _Property) -> bool:
    """A time with neither a TZID nor UTC ("Z"): a floating time, or a date."""
    return "TZID" not in prop.params and not prop.value.strip().upper().endswith("Z")


def _read_time(prop: _Property | None, zones: Zones) -> tuple[datetime | None, bool, int]:
    """Return (UTC datetime, is a DATE, offset minutes of the local zone)."""
    if prop is None:
        return None, False, 0
    try:
        value = vDDDTypes.from_ical(prop.value.strip())
    except Exception:  # noqa: BLE001 - an unreadable time is treated as absent
        return None, False, 0
    if isinstance(value, datetime):
        return _to_utc(value, prop.params.get("TZID"), zones)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC), True, 0
    return None, False, 0


def _to_utc(value: datetime, tzid: str | None, zones: Zones) -> tuple[datetime, bool, int]:
    if value.tzinfo is None:
        # floating times have no zone of their own: read as UTC until a default zone exists
        value = value.replace(tzinfo=zones.get(tzid) if tzid else UTC)
    try:
        offset = value.utcoffset() or timedelta(0)
        return value.astimezone(UTC), False, int(offset.total_seconds() // 60)
    except (OverflowError, ValueError):
        return value.replace(tzinfo=UTC), False, 0


def _read_end(
    props: dict[str, list[_Property]], start: datetime | None, all_day: bool, zones: Zones
) -> datetime | None:
    if start is None:
        return None
    end = _read_time(props.get("DTEND", [None])[0], zones)[0]
    if end is not None:
        return end
    duration = props.get("DURATION")
    if duration:
        try:
            delta: timedelta = vDuration.from_ical(duration[0].value.strip())
            return start + delta
        except Exception:  # noqa: BLE001,S110 - an unreadable DURATION falls back below
            pass
    return start + timedelta(days=1) if all_day else start


def _recurrence_id(prop: _Property | None, zones: Zones) -> str | None:
    moment, is_date, _offset = _read_time(prop, zones)
    if moment is None:
        return None
    return moment.strftime("%Y%m%d") if is_date else moment.strftime("%Y%m%dT%H%M%SZ")


def _recurrence_range(prop: _Property | None) -> str | None:
    if prop is None:
        return None
    value = prop.params.get("RANGE", "").strip().upper()
    return value or None


def _sequence(value: str) -> int:
    try:
        return max(0, int(value.strip()))
    except ValueError:
        return 0


def _address(value: str) -> str:
    value = value.strip().strip('"').strip()
    if value[:7].lower() == "mailto:":
        value = value[7:]
    return value.strip().lower()


def _calendar_address(prop: _Property) -> str:
    """The e-mail address of an ORGANIZER or ATTENDEE.

    CalDAV servers may write a principal path or urn:uuid as the value and the address in the
    EMAIL parameter (RFC 7986); the mailto: value wins when there is one.
    """
    value = prop.value.strip().strip('"').strip()
    email = _address(prop.params.get("EMAIL", ""))
    if value[:7].lower() != "mailto:" and "@" in email:
        return email
    return _address(value)


def _attendee(prop: _Property) -> Attendee:
    params = prop.params
    return Attendee(
        address=_calendar_address(prop),
        name=params.get("CN", "").strip(),
        role=params.get("ROLE", "").strip().upper(),
        cutype=params.get("CUTYPE", "").strip().upper(),
        partstat=params.get("PARTSTAT", "").strip().upper(),
    )
