"""Recurrence rules built to make the series expansion run away: each is answered, quickly."""

from __future__ import annotations

import re
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from icalendar import Calendar

from mailhook.core import series
from mailhook.core.calendar import parse_calendar
from mailhook.core.recurrence import RuleError, check_rule
from mailhook.core.series import SeriesError, merge_series, next_occurrence
from tests.support import reliability
from tests.support.invites import vcalendar

NOW = datetime(2030, 1, 2, 12, 0, tzinfo=UTC)  # a Wednesday
MONDAY = "20291231T090000Z"
WORST: list[float] = []  # the slowest answer the property test saw
RUNAWAY = 20  # seconds after which an expansion counts as never ending


def answer(rule: str, start: str = MONDAY, zone_rule: str = "") -> tuple[object, float]:
    """The next occurrence of a one-rule series (or the SeriesError), and the seconds it took.

    Computed in a helper thread, so a runaway expansion fails the test instead of hanging it.
    """
    found: list[object] = []
    began = time.monotonic()
    worker = threading.Thread(target=lambda: found.append(compute(rule, start, zone_rule)),
                              daemon=True)
    worker.start()
    worker.join(timeout=RUNAWAY)
    assert found, f"{rule} from {start} still runs after {RUNAWAY} s"
    return found[0], time.monotonic() - began


def compute(rule: str, start: str = MONDAY, zone_rule: str = "") -> object:
    """The next occurrence of a one-rule series, or the SeriesError."""
    try:
        text = merge_series("", vcalendar("REQUEST", series_body(rule, start, zone_rule),
                                          timezones=zone(zone_rule)), "s1", "REQUEST")
        return next_occurrence(text, NOW, UTC)
    except SeriesError as exc:
        return exc


def series_body(rule: str, start: str, zone_rule: str) -> str:
    """A VEVENT with the rule; in the sender's own zone when that zone has a rule to test."""
    when = f"DTSTART;TZID=Office:{start.rstrip('Z')}" if zone_rule else f"DTSTART:{start}"
    return f"UID:s1\nSUMMARY:Planning\n{when}\nDURATION:PT1H\nRRULE:{rule}"


def zone(rule: str) -> str:
    """A VTIMEZONE "Office" whose daylight-saving rule is ``rule`` (none when empty)."""
    if not rule:
        return ""
    return ("BEGIN:VTIMEZONE\r\nTZID:Office\r\nBEGIN:STANDARD\r\nDTSTART:19701025T030000\r\n"
            "TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nRRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\n"
            "END:STANDARD\r\nBEGIN:DAYLIGHT\r\nDTSTART:19700329T020000\r\nTZOFFSETFROM:+0100\r\n"
            f"TZOFFSETTO:+0200\r\nRRULE:{rule}\r\nEND:DAYLIGHT\r\nEND:VTIMEZONE\r\n")


# Rules the expansion used to run away on, each with what makes it hostile.
HOSTILE = {
    "FREQ=DAILY;INTERVAL=0": "never moves on: endless loop, memory grows",
    "FREQ=SECONDLY;BYMONTH=2;BYMONTHDAY=30": "30 February, walked day by day to 9999",
    "FREQ=MINUTELY;BYYEARDAY=366;BYMONTH=1": "day 366 is never in January",
    "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=31": "31 February",
    "FREQ=SECONDLY;BYSECOND=1;BYSETPOS=2": "a one-second period has no second position",
    "FREQ=DAILY;BYHOUR=9;BYSETPOS=2": "a one-hour day has no second position",
    "FREQ=MONTHLY;BYDAY=6MO": "no month has six Mondays",
    "FREQ=DAILY;INTERVAL=7;BYDAY=TU": "from a Monday, every seventh day is never a Tuesday",
    "FREQ=YEARLY;INTERVAL=4;BYMONTH=2;BYMONTHDAY=29": "from 2029 every fourth year is not leap",
    "FREQ=MONTHLY;INTERVAL=12;BYMONTH=6": "from December, every twelfth month is never June",
    "FREQ=YEARLY;BYSETPOS=" + ",".join(str(-n) for n in range(1, 367)): "a huge BYSETPOS list",
    "FREQ=SECONDLY;BYHOUR=" + ",".join(map(str, range(24))) + ";BYMINUTE="
    + ",".join(map(str, range(60))): "every second of the day, long lists",
    "FREQ=DAILY;COUNT=1000000000": "a billion occurrences",
    "FREQ=MINUTELY;BYDAY=MO,TU,WE,TH,FR,SA,SU;BYHOUR=1,2,3,4,5,6,7,8,9,10,11,12": "dense minutely",
    "FREQ=DAILY;UNTIL=20000101T000000Z": "UNTIL before DTSTART",
    "FREQ=DAILY;BYMONTH=13": "a month out of range",
    "FREQ=WEEKLY;BYDAY=60MO": "a week out of range",
    "FREQ=DAILY;WKST=XY": "not a weekday",
    "FREQ=FORTNIGHTLY": "not a frequency",
}


@pytest.mark.parametrize("rule", HOSTILE)
def test_hostile_rule_is_answered_within_a_second(rule):
    """Each hostile rule gets an answer (an occurrence, none, or a refusal) within a second."""
    reliability.hostile(f"recurrence rule: {HOSTILE[rule]}")
    _, seconds = answer(rule)
    assert seconds < 1.0


@pytest.mark.parametrize(("start", "why"), [("00010101T090000Z", "year 1"),
                                            ("99991230T090000Z", "year 9999")])
def test_extreme_start_is_answered_within_a_second(start, why):
    """A daily rule starting in the year 1 or 9999 gets an answer within a second."""
    reliability.hostile(f"recurrence rule starting in the {why}")
    _, seconds = answer("FREQ=SECONDLY;BYHOUR=9", start)
    assert seconds < 1.0


def test_interval_zero_is_refused_at_once():
    """INTERVAL=0 breaks RFC 5545 and is refused before anything is expanded."""
    result, _ = answer("FREQ=DAILY;INTERVAL=0")
    assert isinstance(result, SeriesError) and "INTERVAL" in str(result)


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        ("FREQ=DAILY;BYSECOND=61", "BYSECOND value 61 is outside"),
        ("FREQ=DAILY;BYMINUTE=60", "BYMINUTE value 60 is outside"),
        ("FREQ=DAILY;BYHOUR=24", "BYHOUR value 24 is outside"),
        ("FREQ=MONTHLY;BYMONTHDAY=0", "BYMONTHDAY value 0 is outside"),
        ("FREQ=YEARLY;BYYEARDAY=-367", "BYYEARDAY value -367 is outside"),
        ("FREQ=YEARLY;BYWEEKNO=54", "BYWEEKNO value 54 is outside"),
        ("FREQ=MONTHLY;BYWEEKNO=20", "BYWEEKNO needs FREQ=YEARLY"),
        ("FREQ=YEARLY;BYMONTH=0", "BYMONTH value 0 is outside"),
        ("FREQ=MONTHLY;BYDAY=MO;BYSETPOS=367", "BYSETPOS value 367 is outside"),
        ("FREQ=DAILY;BYSETPOS=1", "BYSETPOS needs another BYxxx part"),
        ("FREQ=WEEKLY;BYDAY=2MO", "a numbered BYDAY needs"),
        ("FREQ=MONTHLY;BYDAY=54MO", "the week must be 1..53"),
        ("FREQ=DAILY;BYYEARDAY=1", "BYYEARDAY cannot be used with FREQ=DAILY"),
        ("FREQ=WEEKLY;BYMONTHDAY=1", "BYMONTHDAY cannot be used with FREQ=WEEKLY"),
        ("FREQ=DAILY;COUNT=0", "COUNT must be a whole number from 1"),
        ("FREQ=DAILY;WKST=XY", "unreadable RRULE"),
        ("FREQ=DAILY;BYEASTER=0", "BYEASTER is not a rule part"),
        ("FREQ=DAILY;UNTIL=20300230", "unreadable RRULE"),
        ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "no day can match"),
        ("FREQ=SECONDLY;BYSECOND=1;BYSETPOS=2", "BYSETPOS asks for positions no period has"),
    ],
)
def test_rule_outside_rfc5545_is_refused_with_the_reason(rule, reason):
    """A rule part outside RFC 5545 section 3.3.10, or no possible day, is refused by name."""
    result, _ = answer(rule)
    assert isinstance(result, SeriesError) and reason in str(result)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("FREQ=MONTHLY;BYDAY=5MO", datetime(2030, 4, 29, 9, 0, tzinfo=UTC)),
        ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29", datetime(2032, 2, 29, 9, 0, tzinfo=UTC)),
        ("FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3", datetime(2030, 3, 31, 9, 0, tzinfo=UTC)),
        ("FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1", datetime(2030, 1, 31, 9, 0, tzinfo=UTC)),
        ("FREQ=DAILY;COUNT=1000000000", datetime(2030, 1, 3, 9, 0, tzinfo=UTC)),
        ("FREQ=YEARLY;BYWEEKNO=1;BYDAY=MO", datetime(2030, 12, 30, 9, 0, tzinfo=UTC)),
    ],
)
def test_rare_but_possible_rules_still_schedule(rule, expected):
    """Rules that match rarely (fifth Mondays, 29 February, week 1) are still expanded."""
    result, _ = answer(rule)
    assert getattr(result, "start", result) == expected


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        ("FREQ=DAILY;WKST=XY", "WKST 'XY' is not a weekday"),
        ("FREQ=DAILY;UNTIL=20300230", "not a real date"),
        ("FREQ=DAILY;UNTIL=2030", "not a date or date-time"),
        ("FREQ=DAILY;INTERVAL=1;INTERVAL=2", "INTERVAL is given twice"),
        ("FREQ=DAILY;BYSETPOS=" + ",".join(["1"] * 800), "BYSETPOS lists 800 values"),
        ("FREQ=MONTHLY;BYDAY=1X", "not a weekday"),
        ("FREQ=DAILY;BYHOUR=+9", "not a number"),
    ],
)
def test_rule_text_is_checked_before_any_library_reads_it(rule, reason):
    """The checker reads the rule text itself: parts icalendar would drop or mend are refused."""
    with pytest.raises(RuleError, match=re.escape(reason)):
        check_rule(rule)


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        ("FREQ=DAILY", "must be yearly"),
        ("FREQ=YEARLY;BYMONTH=3;BYDAY=SU;BYSETPOS=-1", "no BYSETPOS"),
        ("FREQ=YEARLY;BYYEARDAY=" + ",".join(map(str, range(1, 40))), "more than 31 values"),
    ],
)
def test_time_zone_rules_keep_the_shapes_real_zones_use(rule, reason):
    """A STANDARD or DAYLIGHT rule is yearly, without BYSETPOS or long lists."""
    with pytest.raises(RuleError, match=reason):
        check_rule(rule, observance=True)
    assert check_rule("FREQ=YEARLY;BYMONTH=3;BYMONTHDAY=8,9,10,11,12,13,14;BYDAY=SU",
                      observance=True)


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("RDATE;VALUE=PERIOD:20300105T100000Z/20300104T100000Z", "not a date, a date-time or a"),
        ("RDATE;VALUE=PERIOD:20300105T100000Z/-PT1H", "not a date, a date-time or a period"),
        ("EXDATE:" + ",".join(["20310101T090000Z"] * 5001), "5001 EXDATE values"),
    ],
)
def test_unusable_rdate_or_exdate_is_refused(extra, reason):
    """A period that ends before it starts, or thousands of EXDATEs, is refused by name."""
    reliability.hostile("RDATE/EXDATE values")
    body = f"UID:s1\nDTSTART:{MONDAY}\nDURATION:PT1H\nRRULE:FREQ=WEEKLY\n{extra}"
    with pytest.raises(SeriesError, match=reason):
        merge_series("", vcalendar("REQUEST", body), "s1", "REQUEST")


def test_hostile_time_zone_rule_is_refused():
    """A VTIMEZONE whose rule never moves on (INTERVAL=0) is refused, not evaluated."""
    reliability.hostile("time zone rule with INTERVAL=0")
    result, seconds = answer("FREQ=WEEKLY", zone_rule="FREQ=YEARLY;INTERVAL=0;BYMONTH=3;BYDAY=-1SU")
    assert isinstance(result, SeriesError) and "INTERVAL" in str(result)
    assert seconds < 1.0


def test_expansion_holds_no_lock_that_blocks_others(monkeypatch):
    """While one series spends its whole budget, another is expanded at the same time."""
    monkeypatch.setattr(series, "MAX_SECONDS", 5.0)
    monkeypatch.setattr(series, "MAX_CALLS", 10**9)
    slow = threading.Thread(target=compute, args=("FREQ=DAILY;INTERVAL=7;BYDAY=TU",))
    slow.start()
    time.sleep(0.2)  # the slow one is expanding now
    result, seconds = answer("FREQ=WEEKLY;BYDAY=MO")
    busy = slow.is_alive()
    slow.join()
    assert busy, "the slow expansion ended before the other one was tried"
    assert getattr(result, "start", None) == datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
    assert seconds < 3.0


def test_budget_is_restored_after_each_expansion():
    """The budget's trace hook is gone once an expansion ends, whether it ran out or not."""
    assert "budget" in str(compute("FREQ=DAILY;INTERVAL=7;BYDAY=TU"))
    assert sys.gettrace() is None
    assert compute("FREQ=WEEKLY;BYDAY=MO") is not None
    assert sys.gettrace() is None


def test_budget_never_breaks_off_work_on_a_shared_time_zone(monkeypatch):
    """Work on a sender's time zone, which every series in that zone shares, is never broken
    off half-way (dateutil would keep the zone rule's lock taken and the next series hang)."""
    monkeypatch.setattr(series, "MAX_CALLS", 0)  # spent before the first call
    text = vcalendar("REQUEST", timezones=zone("FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU"))
    office = Calendar.from_ical(text).walk("VTIMEZONE")[0].to_tz()
    for year in (2030, 2040):
        offset = series._within_budget(partial(office.utcoffset, datetime(year, 6, 1, 12, 0)))
        assert offset == timedelta(hours=2)


def test_invitation_with_hostile_time_zone_is_read_at_once():
    """A one-off event in a zone whose rule never moves on is read (the zone set aside)."""
    reliability.hostile("time zone rule with INTERVAL=0 in a one-off invitation")
    text = ("BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\n"
            + zone("FREQ=YEARLY;INTERVAL=0;BYMONTH=3;BYDAY=-1SU")
            + "BEGIN:VEVENT\r\nUID:x\r\nDTSTART;TZID=Office:20300601T100000\r\n"
            "DTEND;TZID=Office:20300601T110000\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    read: list[object] = []
    worker = threading.Thread(target=lambda: read.append(parse_calendar(text)), daemon=True)
    worker.start()
    worker.join(timeout=RUNAWAY)
    assert read, "reading the invitation never ends"


# --- generated hostile rules --------------------------------------------------------------------

FREQS = ("SECONDLY", "MINUTELY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY")
# Each list part with its RFC 5545 range, and the frequencies RFC 5545 allows it with.
LISTS = {
    "BYSECOND": (0, 60, FREQS), "BYMINUTE": (0, 59, FREQS), "BYHOUR": (0, 23, FREQS),
    "BYMONTHDAY": (-31, 31, ("SECONDLY", "MINUTELY", "HOURLY", "DAILY", "MONTHLY", "YEARLY")),
    "BYYEARDAY": (-366, 366, ("SECONDLY", "MINUTELY", "HOURLY", "YEARLY")),
    "BYWEEKNO": (-53, 53, ("YEARLY",)), "BYMONTH": (1, 12, FREQS),
    "BYSETPOS": (-366, 366, FREQS),
}


def list_values(low: int, high: int, clean: bool) -> st.SearchStrategy[int]:
    """Values of one list part: in range (never 0 for the signed ones), or also just outside."""
    inside = st.integers(low, high).filter(lambda n: n != 0 or low == 0 or low == 1)
    return inside if clean else st.one_of(inside, st.sampled_from([low - 1, high + 1, 0]))


@st.composite
def hostile_rules(draw: st.DrawFn) -> str:
    """A syntactically valid rule: mostly one RFC 5545 allows (so it reaches the expansion),
    sometimes with values out of range; random lists, intervals, COUNT and UNTIL extremes."""
    freq = draw(st.sampled_from(FREQS))
    clean = draw(st.integers(0, 9)) < 8
    parts = [f"FREQ={freq}"]
    if draw(st.booleans()):
        intervals = [1, 2, 3, 7, 12, 400, 10**6, 10**12] + ([] if clean else [0])
        interval = draw(st.sampled_from(intervals))
        parts.append(f"INTERVAL={interval}")
    for name, (low, high, freqs) in LISTS.items():
        if draw(st.integers(0, 3)) == 0 and (freq in freqs or not clean):
            size = draw(st.sampled_from([1, 2, 5, 60, 366]))
            values = draw(st.lists(list_values(low, high, clean), min_size=1, max_size=size))
            parts.append(f"{name}={','.join(map(str, values))}")
    if draw(st.integers(0, 2)) == 0:
        numbered = freq in ("MONTHLY", "YEARLY") or not clean
        ordinals = [0, 1, 2, 5, -1, -5, 53, -53] if numbered else [0]
        days = draw(st.lists(st.tuples(st.sampled_from(ordinals), st.sampled_from(
            ["MO", "TU", "WE", "TH", "FR", "SA", "SU"])), min_size=1, max_size=12))
        parts.append("BYDAY=" + ",".join(f"{n}{d}" if n else d for n, d in days))
    end = draw(st.sampled_from(["", "", "COUNT=1", "COUNT=2", "COUNT=1000000000", "COUNT=0",
                                "UNTIL=20000101T000000Z", "UNTIL=99991231T235959Z",
                                "UNTIL=20300110"]))
    return ";".join(parts + ([end] if end else []))


STARTS = st.sampled_from(["00010101T000000Z", "16010101T000000Z", "19000101T000000Z",
                          "20000229T120000Z", MONDAY, "20300131T235959Z", "99991231T000000Z"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule=hostile_rules(), start=STARTS)
def test_any_hostile_rule_is_answered_within_a_second(rule, start):
    """Whatever the rule and DTSTART, next_occurrence answers or refuses within a second."""
    _, seconds = answer(rule, start)
    WORST.append(seconds)
    reliability.hostile("generated recurrence rule")
    assert max(WORST) < 1.0, f"{rule} from {start} took {seconds:.2f} s"
