"""An event's series as mailhook remembers it, and the occurrence its conference follows.

The series is kept as one calendar object: the time zones, the master VEVENT and every
overridden or cancelled instance seen so far. Messages are merged into it as they arrive, and
the nearest occurrence that has not ended is found with recurring-ical-events. All work is
bounded: a rule that breaks RFC 5545 or can never produce an occurrence is refused before it is
expanded, one that would take too many steps too, and every expansion runs under a budget of
time and steps that no rule can escape.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any, TypeVar

import recurring_ical_events
from icalendar import Calendar, Component

from mailhook.core.series_read import (
    MAX_OVERRIDES,
    SeriesError,
    as_utc,
    read_series,
    relevant_timing,
)

__all__ = ["Occurrence", "SeriesError", "merge_series", "next_occurrence"]

# Refuse rules whose expansion up to the search horizon would take more steps than this.
MAX_EXPANSION = 200_000
# The budget of one search for the next occurrence, whatever the rule: wall-clock seconds, and
# Python function calls made (a measure of the work done that does not depend on load).
MAX_SECONDS = 0.5
MAX_CALLS = 1_000_000
_T = TypeVar("_T")
# Code that works on objects shared between threads: the time zones in icalendar's table (and
# the rules inside them). The budget never breaks off work in the middle of it.
_SHARED_CODE = tuple(os.sep + os.path.join(*parts) + os.sep
                     for parts in (("dateutil", "tz"), ("zoneinfo",), ("icalendar", "timezone")))
MAX_SKIPPED = 2_000  # cancelled occurrences stepped over while looking for the next one
# The occurrence is looked for in growing windows; nothing further than the last is scheduled.
WINDOWS = (timedelta(days=8), timedelta(days=100), timedelta(days=800), timedelta(days=3700))
_FREQ_SECONDS = {
    "SECONDLY": 1,
    "MINUTELY": 60,
    "HOURLY": 3600,
    "DAILY": 86400,
    "WEEKLY": 7 * 86400,
    "MONTHLY": 28 * 86400,
    "YEARLY": 365 * 86400,
}
# BYxxx parts that multiply the occurrences of a coarser FREQ.
_UNITS = {"BYSECOND": "SECONDLY", "BYMINUTE": "MINUTELY", "BYHOUR": "HOURLY", "BYDAY": "DAILY",
          "BYMONTHDAY": "DAILY", "BYYEARDAY": "DAILY", "BYMONTH": "MONTHLY"}


class _Overrun(BaseException):
    """Raised inside an expansion that used up its budget. Not an Exception, so that no
    library's ``except Exception`` can swallow it and carry on."""


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One occurrence of an event, in UTC."""

    start: datetime
    end: datetime
    utc_offset_minutes: int = 0

    @property
    def duration(self) -> int:
        return int((self.end - self.start).total_seconds())


def merge_series(stored: str, incoming: str, uid: str, method: str) -> str:
    """The series after one organizer message (REQUEST or CANCEL) about it."""
    try:
        return _merge(stored, incoming, uid, method)
    except SeriesError:
        raise
    except Exception as exc:
        # icalendar reports broken values in many ways; any of them means "cannot use this".
        raise SeriesError(f"unusable calendar data: {type(exc).__name__}: {exc}") from exc


def _merge(stored: str, incoming: str, uid: str, method: str) -> str:
    new = read_series(relevant_timing(incoming, uid))
    old = read_series(stored) if stored else None
    events = [e for e in new.walk("VEVENT") if str(e.get("UID", "")) == uid]
    master = next((e for e in events if "RECURRENCE-ID" not in e), None)
    old_master = _master(old) if old is not None else None
    overrides = _overrides(old) if old is not None else {}
    if method == "REQUEST" and master is not None and not _same_timing(master, old_master):
        # A re-timed series makes the old instances' RECURRENCE-IDs meaningless.
        overrides = {}
    for event in events:
        if "RECURRENCE-ID" not in event:
            continue
        instance = copy.deepcopy(event)
        if method == "CANCEL":
            instance["STATUS"] = "CANCELLED"
        overrides[_instance_key(instance)] = instance
    if len(overrides) > MAX_OVERRIDES:
        raise SeriesError("too many overridden instances")
    chosen = master if method == "REQUEST" and master is not None else old_master
    return _compose(new, old, chosen, overrides)


def next_occurrence(series: str, now: datetime, default_zone: tzinfo) -> Occurrence | None:
    """The nearest occurrence that has not ended at ``now`` (one in progress counts)."""
    try:
        return _next_occurrence(series, now, default_zone)
    except SeriesError:
        raise
    except Exception as exc:
        raise SeriesError(f"cannot expand the series: {type(exc).__name__}: {exc}") from exc


def _within_budget(work: Callable[[], _T]) -> _T:
    """Run an expansion, breaking it off with SeriesError once it has taken MAX_SECONDS or made
    MAX_CALLS Python function calls. (Reading and merging are bounded by the input's size.)

    dateutil can walk a rule for a long time between two occurrences without coming back to
    mailhook's code (a rule matching one day in decades, a BYSETPOS that is rarely met): only a
    hook inside the interpreter reaches it there. A trace function is called at every Python
    function call, in this thread only; it raises once the budget is spent.
    """
    deadline = time.monotonic() + MAX_SECONDS
    calls = MAX_CALLS

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        calls -= 1
        if (calls < 0 or time.monotonic() > deadline) and not _in_shared_code(frame):
            raise _Overrun

    previous = sys.gettrace()
    sys.settrace(count)
    try:
        return work()
    except _Overrun:
        spent = "steps" if calls < 0 else f"{MAX_SECONDS} s"
        raise SeriesError(f"expanding the series took more than its budget of {spent}") from None
    finally:
        sys.settrace(previous)


def _in_shared_code(frame: object) -> bool:
    """Is the call part of work on a shared time zone? Breaking off there could leave the zone
    half-updated (dateutil's rule cache keeps a lock taken), so the budget waits until it ends;
    such work is short, as every zone rule is checked before use."""
    while frame is not None:
        filename = frame.f_code.co_filename  # type: ignore[attr-defined]
        if any(part in filename for part in _SHARED_CODE):
            return True
        frame = frame.f_back  # type: ignore[attr-defined]
    return False


def _next_occurrence(series: str, now: datetime, default_zone: tzinfo) -> Occurrence | None:
    calendar = read_series(series)
    master = _master(calendar)
    if master is None:
        return None
    spacing = _check_cost(master, now)
    return _within_budget(lambda: _search(calendar, _windows(spacing), now, default_zone))


def _search(
    calendar: Calendar, windows: list[timedelta], now: datetime, default_zone: tzinfo
) -> Occurrence | None:
    """Expand the series in growing windows from ``now`` until a live occurrence turns up."""
    master = _master(calendar)
    floating = master is not None and _is_floating(master)
    query_from = now.astimezone(default_zone).replace(tzinfo=None) if floating else now
    query = recurring_ical_events.of(calendar)
    for window in windows:
        found = _first_live(query.between(query_from, query_from + window), now, default_zone)
        if found is not None:
            return found
    return None


def _first_live(components: list[Component], now: datetime, default_zone: tzinfo) -> Occurrence | None:
    live = [
        _occurrence(c, default_zone)
        for c in components[:MAX_SKIPPED]
        if str(c.get("STATUS", "")).upper() != "CANCELLED"
    ]
    live = [o for o in live if o.end > now]
    return min(live, key=lambda o: o.start) if live else None


def _master(calendar: Calendar) -> Component | None:
    return next((e for e in calendar.walk("VEVENT") if "RECURRENCE-ID" not in e), None)


def _overrides(calendar: Calendar) -> dict[str, Component]:
    return {_instance_key(e): e for e in calendar.walk("VEVENT") if "RECURRENCE-ID" in e}


def _instance_key(event: Component) -> str:
    value: date | datetime = event.decoded("RECURRENCE-ID")
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime("%Y%m%dT%H%M%S")
    return value.strftime("%Y%m%d")


def _same_timing(new: Component, old: Component | None) -> bool:
    if old is None:
        return True
    return all(new.get(name) == old.get(name) for name in ("DTSTART", "RRULE", "RDATE", "EXDATE"))


def _compose(
    new: Calendar, old: Calendar | None, master: Component | None,
    overrides: dict[str, Component],
) -> str:
    out = Calendar()
    out.add("PRODID", "-//mailhook//series//EN")
    out.add("VERSION", "2.0")
    zones: dict[str, Component] = {}
    for source in (old, new):
        for zone in source.walk("VTIMEZONE") if source is not None else ():
            zones[str(zone.get("TZID", ""))] = zone
    for zone in zones.values():
        out.add_component(zone)
    if master is not None:
        out.add_component(master)
    for instance in overrides.values():
        out.add_component(instance)
    text: str = out.to_ical().decode("utf-8")
    return text


def _check_cost(master: Component, now: datetime) -> timedelta:
    """Refuse rules whose expansion up to the search horizon would take too many steps; the
    shortest time between two occurrences that any rule of the event gives."""
    rules = master.get("RRULE")
    spacing = WINDOWS[0]
    for rule in rules if isinstance(rules, list) else [rules] if rules else []:
        spacing = min(spacing, _check_rule(rule, master, now))
    return spacing


def _check_rule(rule: dict[str, Any], master: Component, now: datetime) -> timedelta:
    """Estimate the steps expanding the rule up to the search horizon takes; refuse huge ones.
    The rule's mean time between occurrences."""
    freq = str(rule.get("FREQ", ["DAILY"])[0]).upper()
    interval = max(int(rule.get("INTERVAL", [1])[0]), 1)
    period = _FREQ_SECONDS.get(freq, 86400) * interval
    factor = 1
    for part, unit in _UNITS.items():
        if part in rule and _FREQ_SECONDS.get(freq, 0) > _FREQ_SECONDS[unit]:
            factor *= max(len(rule[part]), 1)
    spacing = timedelta(seconds=period / factor)
    counts = rule.get("COUNT")
    if counts and int(counts[0]) <= MAX_EXPANSION:
        return spacing
    start = as_utc(master.decoded("DTSTART"))
    end = now + WINDOWS[-1]
    until = rule.get("UNTIL")
    if until:
        end = min(end, as_utc(until[0]))
    steps = max((end - start).total_seconds(), 0) / period * factor
    if steps > MAX_EXPANSION:
        raise SeriesError(f"the rule FREQ={freq} would take about {int(steps)} steps to expand")
    return spacing


def _windows(spacing: timedelta) -> list[timedelta]:
    """The growing windows to look for the next occurrence in. The first holds a few dozen
    occurrences, so a rule repeating every few minutes is not turned into thousands of
    occurrences when the next one is minutes away."""
    windows: list[timedelta] = []
    window = max(spacing * 32, timedelta(minutes=1))
    while window < WINDOWS[0]:
        windows.append(window)
        window *= 16
    return windows + list(WINDOWS)


def _is_floating(master: Component) -> bool:
    start = master.decoded("DTSTART")
    return not isinstance(start, datetime) or start.tzinfo is None


def _occurrence(component: Component, default_zone: tzinfo) -> Occurrence:
    start = _localised(component.decoded("DTSTART"), default_zone)
    if "DTEND" in component:
        end = _localised(component.decoded("DTEND"), default_zone)
    elif "DURATION" in component:
        end = start + component.decoded("DURATION")
    elif not isinstance(component.decoded("DTSTART"), datetime):
        end = start + timedelta(days=1)
    else:
        end = start
    offset = start.utcoffset() or timedelta(0)
    return Occurrence(
        start.astimezone(UTC),
        max(end, start).astimezone(UTC),
        int(offset.total_seconds() // 60),
    )


def _localised(value: date | datetime, default_zone: tzinfo) -> datetime:
    """An aware datetime; floating times and dates are read in the default zone."""
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        value = value.replace(tzinfo=default_zone)
    return value
