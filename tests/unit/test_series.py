"""Series merging and the nearest occurrence, with the clock passed in."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from mailhook.core.series import SeriesError, merge_series, next_occurrence
from tests.support.invites import vcalendar

NOW = datetime(2030, 1, 2, 12, 0, tzinfo=UTC)  # a Wednesday
WEEKLY = """UID:s1
DTSTART;TZID=Europe/Berlin:20291001T100000
DTEND;TZID=Europe/Berlin:20291001T110000
RRULE:FREQ=WEEKLY;BYDAY=MO
SUMMARY:Stand-up"""


def occurrence_of(*vevents: str, now: datetime = NOW, zone=UTC, method: str = "REQUEST"):
    """The nearest occurrence of a series made of the given VEVENTs."""
    series = merge_series("", vcalendar(method, *vevents), "s1", method)
    return next_occurrence(series, now, zone)


def at(text: str) -> datetime:
    """A UTC time from 'YYYY-MM-DD HH:MM'."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


def test_single_event_is_its_own_occurrence():
    """A non-recurring event's occurrence is its DTSTART..DTEND."""
    found = occurrence_of("UID:s1\nDTSTART:20300105T080000Z\nDTEND:20300105T083000Z")
    assert (found.start, found.end) == (at("2030-01-05 08:00"), at("2030-01-05 08:30"))


def test_past_single_event_has_none():
    """An event that has ended has no occurrence left."""
    assert occurrence_of("UID:s1\nDTSTART:20291205T080000Z\nDTEND:20291205T083000Z") is None


def test_weekly_series_nearest_future_occurrence():
    """A weekly series started in the past is scheduled at its next occurrence, in UTC."""
    found = occurrence_of(WEEKLY)
    assert (found.start, found.duration, found.utc_offset_minutes) == (at("2030-01-07 09:00"), 3600, 60)


def test_occurrence_in_progress_counts():
    """The occurrence under way is still the one the conference is for."""
    found = occurrence_of(WEEKLY, now=at("2030-01-07 09:59"))
    assert found.start == at("2030-01-07 09:00")
    assert occurrence_of(WEEKLY, now=at("2030-01-07 10:00")).start == at("2030-01-14 09:00")


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("FREQ=DAILY;INTERVAL=3", "2030-01-05 09:00"),
        ("FREQ=MONTHLY;BYDAY=2TU", "2030-01-08 09:00"),
        ("FREQ=MONTHLY;BYMONTHDAY=15", "2030-01-15 09:00"),
        ("FREQ=YEARLY;BYMONTH=3;BYMONTHDAY=1", "2030-03-01 09:00"),
        ("FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,TH", "2030-01-07 09:00"),
        ("FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1", "2030-01-31 09:00"),
        ("FREQ=WEEKLY;COUNT=5", None),
        ("FREQ=WEEKLY;UNTIL=20291231T235959Z", None),
        ("FREQ=WEEKLY;UNTIL=20300201T000000Z", "2030-01-07 09:00"),
        ("FREQ=HOURLY;INTERVAL=6", "2030-01-02 15:00"),
    ],
)
def test_recurrence_rules(rule, expected):
    """Every FREQ with INTERVAL, BYxxx, COUNT and UNTIL gives the right next occurrence."""
    found = occurrence_of(f"UID:s1\nDTSTART;TZID=Europe/Berlin:20291001T100000\n"
                          f"DTEND;TZID=Europe/Berlin:20291001T110000\nRRULE:{rule}")
    assert (found.start if found else None) == (at(expected) if expected else None)


def test_rdate_and_exdate():
    """RDATE adds an occurrence; EXDATE removes one."""
    found = occurrence_of(WEEKLY + "\nRDATE;TZID=Europe/Berlin:20300103T150000")
    assert found.start == at("2030-01-03 14:00")
    found = occurrence_of(WEEKLY + "\nEXDATE;TZID=Europe/Berlin:20300107T100000")
    assert found.start == at("2030-01-14 09:00")


def test_overridden_instance_moves_the_nearest_occurrence():
    """An instance moved to another day is the nearest occurrence at its new time."""
    series = merge_series("", vcalendar("REQUEST", WEEKLY), "s1", "REQUEST")
    moved = vcalendar("REQUEST", """UID:s1
RECURRENCE-ID;TZID=Europe/Berlin:20300107T100000
DTSTART;TZID=Europe/Berlin:20300109T160000
DTEND;TZID=Europe/Berlin:20300109T163000""")
    series = merge_series(series, moved, "s1", "REQUEST")
    found = next_occurrence(series, NOW, UTC)
    assert (found.start, found.duration) == (at("2030-01-09 15:00"), 1800)


def test_cancelled_occurrences_are_skipped():
    """A CANCEL with RECURRENCE-ID, or an override with STATUS:CANCELLED, is stepped over."""
    series = merge_series("", vcalendar("REQUEST", WEEKLY), "s1", "REQUEST")
    cancel = vcalendar("CANCEL", "UID:s1\nRECURRENCE-ID;TZID=Europe/Berlin:20300107T100000\n"
                                 "DTSTART;TZID=Europe/Berlin:20300107T100000")
    after_cancel = merge_series(series, cancel, "s1", "CANCEL")
    assert next_occurrence(after_cancel, NOW, UTC).start == at("2030-01-14 09:00")
    google = occurrence_of(WEEKLY, "UID:s1\nRECURRENCE-ID;TZID=Europe/Berlin:20300107T100000\n"
                                   "DTSTART;TZID=Europe/Berlin:20300107T100000\nSTATUS:CANCELLED")
    assert google.start == at("2030-01-14 09:00")


def test_this_and_future_cancel_ends_the_series():
    """Cancelling an instance with RANGE=THISANDFUTURE cancels the rest of the series."""
    series = merge_series("", vcalendar("REQUEST", WEEKLY), "s1", "REQUEST")
    cancel = vcalendar("CANCEL", "UID:s1\nRECURRENCE-ID;RANGE=THISANDFUTURE;TZID=Europe/Berlin:"
                                 "20300114T100000\nDTSTART;TZID=Europe/Berlin:20300114T100000")
    merged = merge_series(series, cancel, "s1", "CANCEL")
    assert next_occurrence(merged, NOW, UTC).start == at("2030-01-07 09:00")
    assert next_occurrence(merged, at("2030-01-07 10:00"), UTC) is None


def test_series_update_keeps_overrides_unless_retimed():
    """A series update keeps known instances; re-timing the series drops them."""
    moved = vcalendar("REQUEST", "UID:s1\nRECURRENCE-ID;TZID=Europe/Berlin:20300107T100000\n"
                                 "DTSTART;TZID=Europe/Berlin:20300109T160000\n"
                                 "DTEND;TZID=Europe/Berlin:20300109T163000")
    series = merge_series(merge_series("", vcalendar("REQUEST", WEEKLY), "s1", "REQUEST"),
                          moved, "s1", "REQUEST")
    renamed = merge_series(series, vcalendar("REQUEST", WEEKLY.replace("Stand-up", "Daily")),
                           "s1", "REQUEST")
    assert next_occurrence(renamed, NOW, UTC).start == at("2030-01-09 15:00")
    retimed = merge_series(series, vcalendar("REQUEST", WEEKLY.replace("T100000", "T120000")
                                                         .replace("T110000", "T130000")),
                           "s1", "REQUEST")
    assert next_occurrence(retimed, NOW, UTC).start == at("2030-01-07 11:00")


def test_exception_only_series_has_no_master():
    """A series known only from an exception message cannot be scheduled by itself."""
    only = merge_series("", vcalendar("REQUEST", "UID:s1\nRECURRENCE-ID:20300107T090000Z\n"
                                                 "DTSTART:20300108T090000Z"), "s1", "REQUEST")
    assert next_occurrence(only, NOW, UTC) is None


@pytest.mark.parametrize(
    ("start", "timezones", "expected"),
    [
        ("DTSTART;TZID=Russian Standard Time:20300106T100000", "", "2030-01-06 07:00"),
        ("DTSTART;TZID=America/New_York:20300106T100000", "", "2030-01-06 15:00"),
        ("DTSTART:20300106T100000Z", "", "2030-01-06 10:00"),
        ("DTSTART;TZID=FLE Standard Time:20300106T100000", """BEGIN:VTIMEZONE
TZID:FLE Standard Time
BEGIN:STANDARD
DTSTART:16010101T040000
TZOFFSETFROM:+0300
TZOFFSETTO:+0200
RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:16010101T030000
TZOFFSETFROM:+0200
TZOFFSETTO:+0300
RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=3
END:DAYLIGHT
END:VTIMEZONE
""", "2030-01-06 08:00"),
    ],
)
def test_time_zones(start, timezones, expected):
    """Windows names with or without VTIMEZONE, IANA names and UTC all give the right instant."""
    body = f"UID:s1\n{start}\nDURATION:PT1H"
    series = merge_series("", vcalendar("REQUEST", body, timezones=timezones.replace("\n", "\r\n")),
                          "s1", "REQUEST")
    assert next_occurrence(series, NOW, UTC).start == at(expected)


def test_floating_time_uses_default_zone():
    """A time without zone is read in the configured default zone."""
    found = occurrence_of("UID:s1\nDTSTART:20300106T100000\nDURATION:PT1H",
                          zone=ZoneInfo("Europe/Moscow"))
    assert found.start == at("2030-01-06 07:00")


def test_all_day_event_is_the_whole_local_day():
    """An all-day event runs from local midnight to the next, in the default zone."""
    found = occurrence_of("UID:s1\nDTSTART;VALUE=DATE:20300106\nDTEND;VALUE=DATE:20300107",
                          zone=ZoneInfo("Europe/Moscow"))
    assert (found.start, found.duration) == (at("2030-01-05 21:00"), 86400)


def test_daylight_saving_keeps_wall_clock():
    """After the switch to summer time the occurrence keeps its local 10:00."""
    found = occurrence_of(WEEKLY, now=at("2030-03-26 12:00"))
    assert (found.start, found.utc_offset_minutes) == (at("2030-04-01 08:00"), 120)


@pytest.mark.parametrize(
    "body",
    [
        "UID:s1\nDTSTART:19000101T000000Z\nRRULE:FREQ=SECONDLY",
        "UID:s1\nDTSTART:19000101T000000Z\nRRULE:FREQ=DAILY;BYHOUR=0,1,2,3,4,5,6,7,8,9,10,11;"
        "BYMINUTE=0,5,10,15,20,25,30,35,40,45,50,55",
        "UID:s1\nDTSTART:20290101T000000Z\nRRULE:FREQ=MINUTELY;COUNT=100000000",
        "UID:s1\nDTSTART:20300101T000000Z\n"
        + "\n".join(f"RDATE:2031{m:02d}{d:02d}T{h:02d}0000Z" for m in range(1, 13)
                    for d in range(1, 29) for h in range(24)),
    ],
)
def test_hostile_recurrence_is_refused_quickly(body):
    """Rules that would take huge expansions are refused before expanding, in bounded time."""
    started = time.monotonic()
    with pytest.raises(SeriesError):
        occurrence_of(body)
    assert time.monotonic() - started < 30  # a guard against hanging, not a speed target


def test_impossible_rule_is_refused():
    """A rule that never matches (30 February) is refused, not walked until the year 9999."""
    with pytest.raises(SeriesError, match="no day can match"):
        occurrence_of("UID:s1\nDTSTART:20300101T090000Z\nRRULE:FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30")


def test_unreadable_series_raises_series_error():
    """Garbage is reported as SeriesError, not as a crash."""
    with pytest.raises(SeriesError):
        next_occurrence("not a calendar", NOW, UTC)


def test_dates_used_in_test_are_what_they_claim():
    """NOW is a Wednesday, so the Monday series' next occurrence is five days later."""
    assert NOW.weekday() == 2 and (NOW + timedelta(days=5)).weekday() == 0


def test_one_senders_time_zone_never_leaks_into_another_series():
    """Two senders defining the same TZID differently each get their own offset."""

    def series(offset: str) -> str:
        zone = (f"BEGIN:VTIMEZONE\r\nTZID:Office Time\r\nBEGIN:STANDARD\r\nDTSTART:19700101T000000"
                f"\r\nTZOFFSETFROM:{offset}\r\nTZOFFSETTO:{offset}\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n")
        body = "UID:s1\nDTSTART;TZID=Office Time:20300106T100000\nDURATION:PT1H"
        return merge_series("", vcalendar("REQUEST", body, timezones=zone), "s1", "REQUEST")

    east, west = series("+0900"), series("+0100")
    assert next_occurrence(east, NOW, UTC).start == at("2030-01-06 01:00")
    assert next_occurrence(west, NOW, UTC).start == at("2030-01-06 09:00")
    assert next_occurrence(east, NOW, UTC).start == at("2030-01-06 01:00")


def test_this_and_future_request_moves_later_occurrences():
    """A REQUEST with RANGE=THISANDFUTURE (Lotus Notes) re-times that and every later instance."""
    series = merge_series("", vcalendar("REQUEST", WEEKLY), "s1", "REQUEST")
    change = vcalendar("REQUEST", "UID:s1\nRECURRENCE-ID;RANGE=THISANDFUTURE;TZID=Europe/Berlin:"
                                  "20300107T100000\nDTSTART;TZID=Europe/Berlin:20300107T150000\n"
                                  "DTEND;TZID=Europe/Berlin:20300107T160000")
    merged = merge_series(series, change, "s1", "REQUEST")
    assert next_occurrence(merged, NOW, UTC).start == at("2030-01-07 14:00")
    assert next_occurrence(merged, at("2030-01-07 16:00"), UTC).start == at("2030-01-14 14:00")


def test_a_series_begun_before_1970_keeps_its_weekday():
    """A weekly series without BYDAY that began before 1970 recurs on its own weekday: only
    the time zones' old onsets are moved forward, never the event's own start (1969-01-06 was
    a Monday; 1970-01-06 a Tuesday)."""
    found = occurrence_of("UID:s1\nDTSTART:19690106T090000Z\nDTEND:19690106T093000Z\n"
                          "RRULE:FREQ=WEEKLY")
    assert found.start == at("2030-01-07 09:00") and found.start.weekday() == 0


def test_a_yearly_series_from_a_leap_day_before_1970_is_read():
    """A birthday-style yearly series from 29 February 1964 is read and recurs on leap days
    (a start moved to 1970 would be a date that does not exist)."""
    found = occurrence_of("UID:s1\nDTSTART;VALUE=DATE:19640229\nDTEND;VALUE=DATE:19640301\n"
                          "RRULE:FREQ=YEARLY", zone=UTC)
    assert found.start == at("2032-02-29 00:00")
