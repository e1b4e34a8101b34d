"""Lenient reading of iCalendar objects into EventComponent values (times in UTC).

Content lines are split here (and reused by the rewrite); values are read with the
``icalendar`` library. Work is bounded so hostile objects cannot stall the relay.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from icalendar import Timezone
from icalendar.parser import Contentline
from icalendar.prop import vDDDTypes, vDuration
from icalendar.timezone import tzp
from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

from mailhook.core.model import Attendee, CalendarObject, EventComponent
from mailhook.core.recurrence import RuleError, check_rule

MAX_EVENTS = 500
TOO_LARGE = "calendar too large"
MAX_ATTENDEES = 1000
MAX_TIMEZONES = 50
MAX_TIMEZONE_LINES = 2000

_TZID_LINE = re.compile(r"TZID[;:]", re.IGNORECASE)
_OLD_ONSET = re.compile(
    r"(DTSTART(?:;[^:]*)?:)(0\d{3}|1[0-8]\d\d|19[0-6]\d)(?=\d{4})", re.IGNORECASE
)
_LINE_BREAK = re.compile(r"\r\n|\n|\r")
_ESCAPED = re.compile(r"\\([\\;,nN:])")
_NEEDS_ESCAPE = re.compile(r"[\\;,\n]")
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
    }
)  # fmt: skip


class CalendarError(ValueError):
    """The text is not a calendar object mailhook can read."""


@dataclass(frozen=True, slots=True)
class ContentLine:
    """One logical (unfolded) content line and the physical lines it came from."""

    logical: str
    physical: tuple[str, ...]

    @property
    def name(self) -> str:
        """The upper-case property name ("" for a blank line)."""
        return split_content_line(self.logical)[0].upper()


def unfold(text: str) -> list[ContentLine]:
    """Split text into logical content lines; accepts CRLF, LF, CR, space and TAB folding."""
    physical = _LINE_BREAK.split(text)
    if physical and physical[-1] == "":
        physical.pop()
    lines: list[ContentLine] = []
    group: list[str] = []
    for line in physical:
        if line[:1] in (" ", "\t") and group:
            group.append(line)
            continue
        if group:
            lines.append(_content_line(group))
        group = [line]
    if group:
        lines.append(_content_line(group))
    return lines


def _content_line(group: list[str]) -> ContentLine:
    if len(group) == 1:
        return ContentLine(group[0], (group[0],))
    logical = group[0] + "".join(line[1:] for line in group[1:])
    return ContentLine(logical, tuple(group))


def split_content_line(line: str) -> tuple[str, str, str]:
    """Split "NAME;PARAMS:VALUE" into (name, ";PARAMS", value), honouring quoted parameters."""
    colon = line.find(":")
    if colon < 0:
        return line, "", ""
    if line.find('"', 0, colon) >= 0:
        return _split_quoted_line(line)  # a quoted parameter may hold the first ":" or ";"
    semicolon = line.find(";", 0, colon)
    name_end = colon if semicolon < 0 else semicolon
    return line[:name_end], line[name_end:colon], line[colon + 1 :]


def _split_quoted_line(line: str) -> tuple[str, str, str]:
    quoted = False
    name_end = -1
    for index, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif char == ";" and name_end < 0:
            name_end = index
        elif char == ":":
            name_end = index if name_end < 0 else name_end
            return line[:name_end], line[name_end:index], line[index + 1 :]
    return line, "", ""


def unescape_text(value: str) -> str:
    """Undo iCalendar TEXT escaping (lenient: "\\N" and "\\:" accepted)."""

    def replace(match: re.Match[str]) -> str:
        char = match.group(1)
        return "\n" if char in "nN" else char

    return _ESCAPED.sub(replace, value)


def escape_text(value: str) -> str:
    """Escape a value as iCalendar TEXT (backslash, semicolon, comma, newline)."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    return _NEEDS_ESCAPE.sub(lambda m: "\\n" if m.group(0) == "\n" else "\\" + m.group(0), value)


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

    def feed(self, logical: str) -> None:
        name, _params, value = split_content_line(logical)
        name = name.upper()
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


def parse_calendar(text: str) -> CalendarObject:
    """Read a calendar object; raises CalendarError when there is no VCALENDAR to read."""
    collector = _Collector()
    for line in unfold(text):
        collector.feed(line.logical)
    if not collector.seen_calendar:
        raise CalendarError("no VCALENDAR")
    zones = _Zones(collector.timezones)
    events = tuple(_read_event(event.lines, zones) for event in collector.events)
    return CalendarObject(method=collector.method, events=events, text=text)


# --- time zones -------------------------------------------------------------------------------


def _normalise_tzid(tzid: str) -> str:
    return tzid.strip().strip('"').replace("\\,", ",").replace("\\;", ";").strip()


class _Zones:
    """Resolves TZIDs for one object: known IANA/Windows names, then its own VTIMEZONEs, then
    Notes-style short Windows names, then UTC."""

    def __init__(self, blocks: list[list[str]]) -> None:
        self.blocks: dict[str, list[str]] = {}
        for block in blocks:
            tzid = _block_tzid(block)
            if tzid and tzid not in self.blocks:
                self.blocks[tzid] = block
        self.cache: dict[str, tzinfo] = {}

    def get(self, tzid: str) -> tzinfo:
        key = _normalise_tzid(tzid)
        if key not in self.cache:
            self.cache[key] = self._lookup(key)
        return self.cache[key]

    def _lookup(self, key: str) -> tzinfo:
        known = _known_zone(key)
        if known is not None:
            return known
        block = self.blocks.get(key)
        built = _zone_from_block(block) if block else None
        if built is not None:
            return built
        # Lotus Notes writes Windows zone names without " Standard Time" ("FLE", "W. Europe").
        guessed = _known_zone(f"{key} Standard Time") if key else None
        return guessed if guessed is not None else UTC


def _block_tzid(block: list[str]) -> str:
    for line in block:
        name, _params, value = split_content_line(line)
        if name.upper() == "TZID":
            return _normalise_tzid(value)
    return ""


def _known_zone(key: str) -> tzinfo | None:
    """An IANA zone for a TZID: an IANA or Windows name, or libical's "/vendor/Area/City".

    Looked up in the zone database itself, never in icalendar's process-wide cache, which also
    holds whatever VTIMEZONE some other sender once defined under that name.
    """
    if not key or len(key) > 200:
        return None
    for name in _zone_names(key):
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            continue
    return None


def _zone_names(key: str) -> Iterator[str]:
    cleaned = key.strip("/")
    yield cleaned
    if cleaned in WINDOWS_TO_OLSON:
        yield WINDOWS_TO_OLSON[cleaned]
    if key.startswith("/"):
        parts = cleaned.split("/")
        for start in range(1, len(parts)):
            yield "/".join(parts[start:])


def _zone_from_block(block: list[str]) -> tzinfo | None:
    """Build a tzinfo from a VTIMEZONE without registering it in icalendar's global cache."""
    tzid = _block_tzid(block)
    if not _bounded_zone(block):
        return None
    # icalendar caches every parsed VTIMEZONE by TZID process-wide; hiding the TZID line keeps
    # one sender's definition from leaking into another message.
    hidden = ["X-MAILHOOK-TZID:x" if _TZID_LINE.match(line) else line for line in block]
    hidden = [_clamp_onset(line) for line in hidden]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            component = Timezone.from_ical("\r\n".join(hidden) + "\r\n")
            component.pop("X-MAILHOOK-TZID", None)
            component.add("TZID", tzid)
            return tzp.create_timezone(component)
    except Exception:  # noqa: BLE001 - a broken VTIMEZONE falls back to UTC
        return None


def _bounded_zone(block: list[str]) -> bool:
    """Whether evaluating this VTIMEZONE stays cheap: short lines, yearly rules only."""
    for line in block:
        if len(line) > 1000:
            return False
        name, _params, value = split_content_line(line)
        if name.upper() in ("RRULE", "EXRULE") and not _usable_zone_rule(value):
            return False
    return True


def _usable_zone_rule(value: str) -> bool:
    """A yearly rule within RFC 5545's ranges that can occur: INTERVAL=0 or 30 February would
    keep every conversion to or from the zone walking the rule for ever."""
    try:
        check_rule(value, observance=True)
    except RuleError:
        return False
    return True


def _clamp_onset(line: str) -> str:
    """Move a pre-1970 onset (Exchange writes 1601) to 1970 so rules are not iterated for ages."""
    match = _OLD_ONSET.match(line)
    return f"{match.group(1)}1970{line[match.end() :]}" if match else line


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


def _read_event(lines: list[str], zones: _Zones) -> EventComponent:
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
        utc_offset_minutes=offset,
    )


def _read_time(prop: _Property | None, zones: _Zones) -> tuple[datetime | None, bool, int]:
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


def _to_utc(value: datetime, tzid: str | None, zones: _Zones) -> tuple[datetime, bool, int]:
    if value.tzinfo is None:
        # floating times have no zone of their own: read as UTC until a default zone exists
        value = value.replace(tzinfo=zones.get(tzid) if tzid else UTC)
    try:
        offset = value.utcoffset() or timedelta(0)
        return value.astimezone(UTC), False, int(offset.total_seconds() // 60)
    except (OverflowError, ValueError):
        return value.replace(tzinfo=UTC), False, 0


def _read_end(
    props: dict[str, list[_Property]], start: datetime | None, all_day: bool, zones: _Zones
) -> datetime | None:
    if start is None:
        return None
    end = _read_time(props.get("DTEND", [None])[0], zones)[0]
    if end is not None:
        return end
    duration = props.get("DURATION")
    if duration:
        try:
            delta = vDuration.from_ical(duration[0].value.strip())
            return start + delta
        except Exception:  # noqa: BLE001,S110 - an unreadable DURATION falls back below
            pass
    return start + timedelta(days=1) if all_day else start


def _recurrence_id(prop: _Property | None, zones: _Zones) -> str | None:
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
