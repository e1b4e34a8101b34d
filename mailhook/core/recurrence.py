"""Recurrence rules (RRULE) checked before anything expands them.

dateutil, which icalendar's time zones and recurring-ical-events use, walks a rule period by
period and stops only at an occurrence past the end it was asked for, at COUNT or UNTIL, or in
the year 9999. A rule outside RFC 5545's value ranges, or one that can never produce an
occurrence, keeps it walking: INTERVAL=0 never moves on, and 30 February never comes. This
module reads the rule text and refuses such rules; it never expands anything itself.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache

FREQUENCIES = ("SECONDLY", "MINUTELY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY")
WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
# RFC 5545 section 3.3.10: each number list with its range and whether 0 is a value.
_RANGES = {
    "BYSECOND": (0, 60),
    "BYMINUTE": (0, 59),
    "BYHOUR": (0, 23),
    "BYMONTHDAY": (-31, 31),
    "BYYEARDAY": (-366, 366),
    "BYWEEKNO": (-53, 53),
    "BYMONTH": (1, 12),
    "BYSETPOS": (-366, 366),
}
_SIGNED = frozenset({"BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYSETPOS"})
_PARTS = frozenset({"FREQ", "UNTIL", "COUNT", "INTERVAL", "BYDAY", "WKST", *_RANGES})
# The parts that pick days (as opposed to times of day) within a period.
_DAY_PARTS = ("BYMONTH", "BYWEEKNO", "BYYEARDAY", "BYMONTHDAY", "BYDAY")
_NUMBER = re.compile(r"[+-]?\d{1,3}")
_WEEKDAY = re.compile(r"([+-]?)(\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)")
_UNTIL = re.compile(r"\d{8}(T\d{6}Z?)?")
MAX_OBSERVANCE_LIST = 31  # values in one list of a time zone's rule ("BYMONTHDAY=8,...,14")
# One year of each of the 14 kinds (leap or not, times the weekday of 1 January): whether any
# day matches a rule's day parts depends only on the kind of year.
_YEARS = (2001, 2002, 2003, 2004, 2005, 2006, 2007, 2008, 2009, 2012, 2016, 2020, 2024, 2028)


class RuleError(ValueError):
    """The rule breaks RFC 5545, or can never produce an occurrence."""


@dataclass(frozen=True, slots=True)
class Rule:
    """A recurrence rule as RFC 5545 reads it; lists are empty when the part is absent."""

    freq: str
    interval: int = 1
    count: int | None = None
    until: str = ""
    seconds: tuple[int, ...] = ()
    minutes: tuple[int, ...] = ()
    hours: tuple[int, ...] = ()
    weekdays: tuple[tuple[int, int], ...] = ()  # (ordinal, 0 for Monday): (0, 0) is every Monday
    month_days: tuple[int, ...] = ()
    year_days: tuple[int, ...] = ()
    week_numbers: tuple[int, ...] = ()
    months: tuple[int, ...] = ()
    set_positions: tuple[int, ...] = ()


def check_rule(text: str, start: date | None = None, *, observance: bool = False) -> Rule:
    """The rule, if every part is in range and it can produce an occurrence at all.

    ``start`` is the DTSTART the rule belongs to: parts the rule leaves out (the day of the
    month of a monthly rule, ...) are taken from it. ``observance`` is for the STANDARD and
    DAYLIGHT rules inside a VTIMEZONE, which are yearly.
    """
    rule = read_rule(text)
    if observance:
        _check_observance(rule)
    _check_combinations(rule)
    if not _some_day_matches(_with_defaults(rule, start)):
        raise RuleError("no day can match the rule's BYxxx parts")
    if rule.set_positions and min(map(abs, rule.set_positions)) > _largest_set(rule, start):
        raise RuleError("BYSETPOS asks for positions no period has")
    return rule


def read_rule(text: str) -> Rule:
    """Read the rule parts, each checked against its RFC 5545 range."""
    parts = _split(text)
    freq = parts.get("FREQ", "")
    if freq not in FREQUENCIES:
        raise RuleError(f"FREQ must be one of {', '.join(FREQUENCIES)}, not {freq[:40]!r}")
    numbers = {name: _numbers(name, parts[name]) for name in _RANGES if name in parts}
    return Rule(
        freq=freq,
        interval=_positive(parts, "INTERVAL") or 1,
        count=_positive(parts, "COUNT"),
        until=_until(parts.get("UNTIL", "")),
        seconds=numbers.get("BYSECOND", ()),
        minutes=numbers.get("BYMINUTE", ()),
        hours=numbers.get("BYHOUR", ()),
        weekdays=_weekdays(parts["BYDAY"]) if "BYDAY" in parts else (),
        month_days=numbers.get("BYMONTHDAY", ()),
        year_days=numbers.get("BYYEARDAY", ()),
        week_numbers=numbers.get("BYWEEKNO", ()),
        months=numbers.get("BYMONTH", ()),
        set_positions=numbers.get("BYSETPOS", ()),
    )


def _split(text: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for item in text.strip().split(";"):
        name, equals, value = item.partition("=")
        name = name.strip().upper()
        if not equals or not value:
            raise RuleError(f"rule part {item[:40]!r} has no value")
        if name not in _PARTS:
            raise RuleError(f"{name[:40]} is not a rule part of RFC 5545")
        if name in parts:
            raise RuleError(f"{name} is given twice")
        parts[name] = value.strip().upper()
    if parts.get("WKST", "MO") not in WEEKDAYS:
        raise RuleError(f"WKST {parts['WKST'][:40]!r} is not a weekday")
    return parts


def _positive(parts: dict[str, str], name: str) -> int | None:
    value = parts.get(name)
    if value is None:
        return None
    if not value.isdigit() or len(value) > 18 or int(value) < 1:
        raise RuleError(f"{name} must be a whole number from 1, not {value[:40]!r}")
    return int(value)


def _until(value: str) -> str:
    if not value:
        return ""
    if not _UNTIL.fullmatch(value):
        raise RuleError(f"UNTIL {value[:40]!r} is not a date or date-time")
    try:
        datetime.strptime(value[:15], "%Y%m%dT%H%M%S" if "T" in value else "%Y%m%d")
    except ValueError as exc:
        raise RuleError(f"UNTIL {value!r} is not a real date") from exc
    return value


def _numbers(name: str, value: str) -> tuple[int, ...]:
    low, high = _RANGES[name]
    items = [item.strip() for item in value.split(",")]  # "MO, TU" is seen in the wild
    # Duplicates are harmless, but a list longer than its range has values is padding.
    if len(items) > high - low + 1:
        raise RuleError(f"{name} lists {len(items)} values")
    numbers = []
    for item in items:
        if not _NUMBER.fullmatch(item) or (item[0] in "+-" and name not in _SIGNED):
            raise RuleError(f"{name} value {item[:40]!r} is not a number")
        number = int(item)
        if not low <= number <= high or (number == 0 and name in _SIGNED):
            raise RuleError(f"{name} value {number} is outside {low}..{high}")
        numbers.append(number)
    return tuple(numbers)


def _weekdays(value: str) -> tuple[tuple[int, int], ...]:
    items = [item.strip() for item in value.split(",")]
    if len(items) > 7 * (1 + 2 * 53):
        raise RuleError(f"BYDAY lists {len(items)} values")
    days = []
    for item in items:
        match = _WEEKDAY.fullmatch(item)
        if match is None:
            raise RuleError(f"BYDAY value {item[:40]!r} is not a weekday")
        sign, number, weekday = match.groups()
        ordinal = int(number) if number else 0
        if number and not 1 <= ordinal <= 53:
            raise RuleError(f"BYDAY value {item!r}: the week must be 1..53")
        days.append((-ordinal if sign == "-" else ordinal, WEEKDAYS.index(weekday)))
    return tuple(days)


def _check_observance(rule: Rule) -> None:
    """A time zone's rule is walked outside any budget, whenever a time in the zone is
    converted: only the plain yearly shapes real zones use are taken."""
    if rule.freq != "YEARLY":
        raise RuleError(f"a time zone rule must be yearly, not FREQ={rule.freq}")
    if rule.set_positions:
        raise RuleError("a time zone rule has no BYSETPOS")
    lists = (rule.seconds, rule.minutes, rule.hours, rule.weekdays, rule.month_days,
             rule.year_days, rule.week_numbers, rule.months)
    if any(len(values) > MAX_OBSERVANCE_LIST for values in lists):
        raise RuleError(f"a time zone rule lists more than {MAX_OBSERVANCE_LIST} values")


def _check_combinations(rule: Rule) -> None:
    """The parts RFC 5545 allows only with some frequencies."""
    ordinals = any(ordinal for ordinal, _ in rule.weekdays)
    if ordinals and (rule.freq not in ("MONTHLY", "YEARLY") or rule.week_numbers):
        raise RuleError("a numbered BYDAY needs FREQ=MONTHLY or YEARLY without BYWEEKNO")
    if rule.month_days and rule.freq == "WEEKLY":
        raise RuleError("BYMONTHDAY cannot be used with FREQ=WEEKLY")
    if rule.year_days and rule.freq in ("DAILY", "WEEKLY", "MONTHLY"):
        raise RuleError(f"BYYEARDAY cannot be used with FREQ={rule.freq}")
    if rule.week_numbers and rule.freq != "YEARLY":
        raise RuleError("BYWEEKNO needs FREQ=YEARLY")
    others = (rule.seconds, rule.minutes, rule.hours, rule.weekdays, rule.month_days,
              rule.year_days, rule.week_numbers, rule.months)
    if rule.set_positions and not any(others):
        raise RuleError("BYSETPOS needs another BYxxx part")


def _with_defaults(rule: Rule, start: date | None) -> Rule:
    """The rule with the day parts RFC 5545 takes from DTSTART when the rule names none."""
    if start is None or rule.week_numbers or rule.year_days or rule.month_days or rule.weekdays:
        return rule
    if rule.freq == "YEARLY":
        months = rule.months or (start.month,)
        return Rule(rule.freq, months=months, month_days=(start.day,))
    if rule.freq == "MONTHLY":
        return Rule(rule.freq, months=rule.months, month_days=(start.day,))
    if rule.freq == "WEEKLY":
        return Rule(rule.freq, months=rule.months, weekdays=((0, start.weekday()),))
    return rule


@lru_cache(maxsize=512)
def _some_day_matches(rule: Rule) -> bool:
    """Whether any day of any year matches the rule's day parts (BYWEEKNO is not looked at, so
    a rule that only it makes impossible passes here)."""
    if not any((rule.months, rule.month_days, rule.year_days, rule.weekdays)):
        return True
    return any(_day_matches(rule, day) for year in _YEARS for day in _candidate_days(rule, year))


def _candidate_days(rule: Rule, year: int) -> Iterator[date]:
    for month in rule.months or range(1, 13):
        length = calendar.monthrange(year, month)[1]
        days = {d if d > 0 else length + 1 + d for d in rule.month_days}
        for day in range(1, length + 1):
            if not rule.month_days or day in days:
                yield date(year, month, day)


def _day_matches(rule: Rule, day: date) -> bool:
    year_length = 366 if calendar.isleap(day.year) else 365
    year_day = day.timetuple().tm_yday
    from_end = year_day - year_length - 1
    if rule.year_days and year_day not in rule.year_days and from_end not in rule.year_days:
        return False
    # dateutil reads a BYDAY list mixing plain and numbered days as both at once (RFC 5545 has
    # either): MO,1TU is the first Tuesday only if it is a Monday, so never.
    plain = [w for w in rule.weekdays if not w[0]]
    numbered = [w for w in rule.weekdays if w[0]]
    return all(not kind or any(_weekday_matches(rule, day, w) for w in kind)
               for kind in (plain, numbered))


def _weekday_matches(rule: Rule, day: date, weekday: tuple[int, int]) -> bool:
    ordinal, wanted = weekday
    if day.weekday() != wanted:
        return False
    if not ordinal:
        return True
    if rule.freq == "MONTHLY" or rule.months:
        position, length = day.day, calendar.monthrange(day.year, day.month)[1]
    else:
        position = day.timetuple().tm_yday
        length = 366 if calendar.isleap(day.year) else 365
    if ordinal > 0:
        return (position - 1) // 7 + 1 == ordinal
    return (length - position) // 7 + 1 == -ordinal


def _largest_set(rule: Rule, start: date | None) -> int:
    """At most how many occurrences one period of the rule holds (what BYSETPOS counts in)."""
    defaults = _with_defaults(rule, start)
    times = _distinct(rule.hours) * _distinct(rule.minutes) * _distinct(rule.seconds)
    if rule.freq in ("SECONDLY", "MINUTELY", "HOURLY"):
        # A period is one hour, minute or second: only the finer time parts multiply it.
        finer = {"HOURLY": _distinct(rule.minutes) * _distinct(rule.seconds),
                 "MINUTELY": _distinct(rule.seconds), "SECONDLY": 1}
        return finer[rule.freq]
    return _days_per_period(defaults) * times


def _days_per_period(rule: Rule) -> int:
    months = len(set(rule.months)) or 12
    limits = [{"DAILY": 1, "WEEKLY": 7, "MONTHLY": 31, "YEARLY": 366}[rule.freq]]
    months_in_period = 1 if rule.freq == "MONTHLY" else months
    if rule.month_days:
        limits.append(len(set(rule.month_days)) * months_in_period)
    if rule.year_days:
        limits.append(len(set(rule.year_days)))
    if rule.week_numbers:
        limits.append(7 * len(set(rule.week_numbers)))
    if rule.weekdays:
        weeks = {"DAILY": 1, "WEEKLY": 1, "MONTHLY": 5, "YEARLY": 53}[rule.freq]
        each = [months_in_period if ordinal else weeks for ordinal, _ in set(rule.weekdays)]
        limits.append(sum(each))
    return min(limits)


def _distinct(values: tuple[int, ...]) -> int:
    return len(set(values)) or 1
