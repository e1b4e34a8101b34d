"""Reading a series' calendar text safely: only the timing of one event is kept, each sender's
time zones get a name of their own, and every rule and date list is checked before anything
expands it.
"""

from __future__ import annotations

import hashlib
import re
import threading
from datetime import UTC, date, datetime, timedelta

from icalendar import Calendar, Component
from icalendar.prop import vRecur
from icalendar.timezone import tzp

from mailhook.core.contentline import unfold
from mailhook.core.mime import MAX_CALENDAR_BYTES
from mailhook.core.recurrence import RuleError, check_rule

MAX_RDATES = 5_000
MAX_EXDATES = 5_000
MAX_OVERRIDES = 1_000
MAX_ZONES = 50
MAX_OBSERVANCES = 200  # STANDARD/DAYLIGHT blocks in one VTIMEZONE; real zones have a handful
MAX_ZONE_DATES = 2_000  # RDATEs over one VTIMEZONE's observances
MAX_CACHED_ZONES = 2_000
_SEEN_ZONES: set[str] = set()

# icalendar keeps the VTIMEZONEs it parses in one process-wide table, from which it resolves
# TZIDs while parsing: a parse and the clearing of that table must not overlap. Nothing else in
# series work touches the table, so expanding runs without the lock.
_LOCK = threading.Lock()

# A TZID parameter: ";TZID=" then a quoted string or a bare value up to ";" or ":".
_TZID_PARAM = re.compile(r'(?i)(;TZID=)("[^"]*"|[^;:]*)')

# The properties that decide when an event happens; the series keeps only these.
_TIMING = frozenset({"UID", "DTSTART", "DTEND", "DURATION", "RRULE", "RDATE", "EXDATE",
                     "RECURRENCE-ID", "STATUS", "SEQUENCE", "SUMMARY", "X-MICROSOFT-CDO-ALLDAYEVENT"})

# Exchange's time zones start in 1601; expanding their rules from then costs for nothing.
_OLD_ONSET = re.compile(r"(?m)^(DTSTART(?:;[^:\r\n]*)?:)(0\d{3}|1[0-8]\d\d|19[0-6]\d)(?=\d{4})")


class SeriesError(ValueError):
    """The series cannot be used: unreadable, or too costly to expand."""


def relevant_timing(text: str, uid: str) -> str:
    """Only what scheduling needs: the time zones and this UID's VEVENTs, with their timing
    properties. Attendee lists, descriptions and other components are dropped before parsing,
    so their size never costs anything."""
    if len(text) > MAX_CALENDAR_BYTES:
        raise SeriesError("calendar object too large")
    zones: list[str] = []
    events: list[list[str]] = []
    block: list[str] | None = None
    kind = ""
    nested = 0  # depth of components inside a VEVENT (VALARM...), which scheduling ignores
    for line in (content.logical for content in unfold(text) if content.logical):
        upper = line.upper()
        if block is None:
            if upper in ("BEGIN:VTIMEZONE", "BEGIN:VEVENT"):
                block, kind = [line], upper[6:]
            continue
        if kind == "VEVENT" and (nested or upper.startswith("BEGIN:")) and upper != "END:VEVENT":
            nested += 1 if upper.startswith("BEGIN:") else -1 if upper.startswith("END:") else 0
            continue
        if upper == f"END:{kind}":
            block.append(line)
            if kind == "VTIMEZONE":
                zones.append("\r\n".join(block))
            else:
                events.append(block)
            block = None
            if len(events) > MAX_OVERRIDES + 1 or len(zones) > MAX_ZONES:
                raise SeriesError("too many components")
            continue
        if kind == "VTIMEZONE" or _kept(upper):
            block.append(line)
    wanted = [e for e in events if any(_is_uid(line, uid) for line in e)]
    names = _zone_names(zones)
    body = "".join(_renamed(z.split("\r\n"), names) + "\r\n" for z in zones)
    body += "".join(_renamed(e, names) + "\r\n" for e in wanted)
    return f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\n{body}END:VCALENDAR\r\n"


def _zone_names(zones: list[str]) -> dict[str, str]:
    """A name for each sender-defined zone that is unique to its definition.

    icalendar keeps every VTIMEZONE it parses in a process-wide table keyed by TZID; without
    this, one sender's "FLE Standard Time" would be used for the next sender's events.
    """
    names: dict[str, str] = {}
    for zone in zones:
        tzid = next((_tzid_of(line) for line in zone.split("\r\n") if line.upper().startswith("TZID")), "")
        if tzid:
            digest = hashlib.sha256(zone.encode("utf-8", "replace")).hexdigest()[:16]
            names[tzid] = f"{tzid}~{digest}"
    _note_zones(names.values())
    return names


def _tzid_of(line: str) -> str:
    """The TZID of a "TZID:..." line, unescaped."""
    return _clean_tzid(line.partition(":")[2])


def _clean_tzid(value: str) -> str:
    return re.sub(r"\\([,;\\])", r"\1", value.strip().strip('"'))


def _renamed(lines: list[str], names: dict[str, str]) -> str:
    """The lines with every TZID (parameter or VTIMEZONE property) under its unique name."""
    if not names:
        return "\r\n".join(lines)
    out = []
    for line in lines:
        if line.upper().startswith("TZID:") and _tzid_of(line) in names:
            line = "TZID:" + _escape_tzid(names[_tzid_of(line)])
        else:
            line = _TZID_PARAM.sub(lambda m: m.group(1) + _param_value(names, m.group(2)), line)
        out.append(line)
    return "\r\n".join(out)


def _param_value(names: dict[str, str], raw: str) -> str:
    renamed = names.get(_clean_tzid(raw))
    return f'"{renamed}"' if renamed else raw


def _escape_tzid(name: str) -> str:
    return name.replace("\\", "\\\\").replace(",", "\\,").replace(";", "\\;")


def _note_zones(names: object) -> None:
    """Keep icalendar's table of sender-defined zones from growing without bound."""
    with _LOCK:
        _SEEN_ZONES.update(names)  # type: ignore[arg-type]
        if len(_SEEN_ZONES) > MAX_CACHED_ZONES:
            _SEEN_ZONES.clear()
            tzp.use_default()  # starts a fresh table


def _kept(upper_line: str) -> bool:
    return re.split(r"[;:]", upper_line, maxsplit=1)[0] in _TIMING


def _is_uid(line: str, uid: str) -> bool:
    name, _, value = line.partition(":")
    return name.split(";")[0].upper() == "UID" and value == uid


def read_series(text: str) -> Calendar:
    """The calendar, once its recurrence data is known to be safe to expand."""
    try:
        with _LOCK:
            calendar = Calendar.from_ical(_zone_onsets_from_1970(text))
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise SeriesError(f"unreadable calendar: {exc}") from exc
    _check_recurrence(calendar)
    return calendar


def _zone_onsets_from_1970(text: str) -> str:
    """The calendar with its time zones' onsets before 1970 moved to 1970. Only the zones':
    an event's own start stays where it is, since moving it could change the weekday its
    weekly rule recurs on, or name a day that does not exist (29 February 1970)."""
    if not _OLD_ONSET.search(text):
        return text
    lines = text.splitlines(keepends=True)
    in_zone = False
    for index, line in enumerate(lines):
        marker = line.rstrip("\r\n").upper()
        if marker == "BEGIN:VTIMEZONE":
            in_zone = True
        elif marker == "END:VTIMEZONE":
            in_zone = False
        elif in_zone:
            lines[index] = _OLD_ONSET.sub(r"\g<1>1970", line)
    return "".join(lines)


def _check_recurrence(calendar: Calendar) -> None:
    """Refuse rules and dates that no expansion should be asked to walk: the events' and the
    time zones' (a zone's rules are expanded whenever one of its times is converted)."""
    for zone in calendar.walk("VTIMEZONE"):
        if len(zone.subcomponents) > MAX_OBSERVANCES:
            raise SeriesError(f"time zone with {len(zone.subcomponents)} observances")
        dates = 0
        for observance in zone.subcomponents:
            _check_rules(observance, observance=True)
            dates += _count_dates(observance, "RDATE")
        if dates > MAX_ZONE_DATES:
            raise SeriesError(f"time zone with {dates} RDATE values")
    for event in calendar.walk("VEVENT"):
        _check_rules(event)
        for name, limit in (("RDATE", MAX_RDATES), ("EXDATE", MAX_EXDATES)):
            if (count := _count_dates(event, name)) > limit:
                raise SeriesError(f"{count} {name} values")


def _check_rules(component: Component, observance: bool = False) -> None:
    start = component.decoded("DTSTART") if "DTSTART" in component else None
    for name in ("RRULE", "EXRULE"):
        values = component.get(name, [])
        for value in values if isinstance(values, list) else [values]:
            if not isinstance(value, vRecur):
                raise SeriesError(f"unreadable {name}")
            text = value.to_ical().decode("utf-8", "replace")
            try:
                check_rule(text, start, observance=observance)
            except RuleError as exc:
                shown = text if len(text) <= 120 else text[:117] + "..."
                raise SeriesError(f"the rule {shown} cannot be used: {exc}") from None


def _count_dates(component: Component, name: str) -> int:
    """How many values the component's RDATE or EXDATE lines hold, each a date, a date-time or
    (RDATE only) a period that does not end before it starts."""
    values = component.get(name, [])
    count = 0
    for line in values if isinstance(values, list) else [values]:
        for value in line.dts:
            _check_date(value.dt, name)
            count += 1
    return count


def _check_date(value: object, name: str) -> None:
    if isinstance(value, tuple) and name == "RDATE" and len(value) == 2:
        start, end = value
        if isinstance(end, timedelta) and end >= timedelta(0):
            return
        if (isinstance(end, datetime) and isinstance(start, datetime)
                and as_utc(end) >= as_utc(start)):
            return
    elif isinstance(value, date):
        return
    raise SeriesError(f"{name} value {value!r} is not a date, a date-time or a period")


def as_utc(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)
