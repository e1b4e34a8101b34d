"""Time zones of one calendar object: TZIDs resolved to zones (IANA and Windows names, the
object's own VTIMEZONE blocks, Notes-style short names, else UTC), with bounded work and without
leaking one sender's definitions into another message.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from datetime import UTC, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from icalendar import Timezone
from icalendar.timezone import tzp
from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

from mailhook.core.contentline import split_content_line
from mailhook.core.recurrence import RuleError, check_rule

_TZID_LINE = re.compile(r"TZID[;:]", re.IGNORECASE)
_OLD_ONSET = re.compile(
    r"(DTSTART(?:;[^:]*)?:)(0\d{3}|1[0-8]\d\d|19[0-6]\d)(?=\d{4})", re.IGNORECASE
)


def _normalise_tzid(tzid: str) -> str:
    return tzid.strip().strip('"').replace("\\,", ",").replace("\\;", ";").strip()


class Zones:
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


# The answer depends on the name and the zone database alone, so it is kept: a Windows name
# ("W. Europe Standard Time", in every Outlook invitation) otherwise costs a failed search of
# the zone database's files for each message. Bounded, so hostile names only churn it.
@lru_cache(maxsize=512)
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

