"""Tests for lenient iCalendar reading: unfolding, escaping and time zones."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from icalendar import Calendar
from icalendar.parser import Contentline

from mailhook.core.calendar import (
    MAX_KEPT_LINES_CHARS,
    CalendarError,
    _parse_property,
    _read_plain_line,
    parse_calendar,
)
from mailhook.core.contentline import escape_text, split_content_line, unescape_text, unfold


def _calendar(event: str, extra: str = "", eol: str = "\r\n") -> str:
    text = f"BEGIN:VCALENDAR\nVERSION:2.0\nMETHOD:request\n{extra}BEGIN:VEVENT\nUID:u@example.com\n{event}END:VEVENT\nEND:VCALENDAR\n"
    return text.replace("\n", eol)


def test_unfold_accepts_tab_and_space_folding_and_lf():
    """Space and TAB continuations join into one logical line; LF endings are accepted."""
    lines = unfold("SUMMARY:Hel\n lo\n\tworld\nUID:x\n")
    assert [line.logical for line in lines] == ["SUMMARY:Hello" + "world", "UID:x"]
    assert lines[0].physical == ("SUMMARY:Hel", " lo", "\tworld")


@given(
    st.lists(
        st.sampled_from(["SUMMARY", "x-a", ";", ":", "=", '"', " ", "\t", "\r\n", "\n", "\r",
                         "\r\n ", "\n\t", "CN", "a", "é", ""]),
        max_size=16,
    )
)
def test_unfolded_lines_come_split_as_split_content_line_splits_them(pieces):
    """Each line from unfold carries the name (upper-case), parameters and value of its text."""
    for line in unfold("".join(pieces)):
        name, params, value = split_content_line(line.logical)
        assert (line.name, line.params, line.value) == (name.upper(), params, value)


def test_a_small_object_keeps_its_lines_and_a_large_one_does_not():
    """The reader hands its split lines on for an ordinary object it is asked to keep them
    for, never for a huge one, and never unasked."""
    small = _calendar("DTSTART:20260101T000000Z\n")
    assert parse_calendar(small, keep_lines=True).lines == tuple(unfold(small))
    assert parse_calendar(small).lines == ()
    large = _calendar("DTSTART:20260101T000000Z\n" + "X-A:b\n" * (MAX_KEPT_LINES_CHARS // 4))
    assert parse_calendar(large, keep_lines=True).lines == ()


def test_split_content_line_respects_quoted_parameters():
    """A colon inside a quoted parameter does not end the parameters."""
    assert split_content_line('ATTENDEE;CN="a:b";X=1:mailto:x@example.org') == (
        "ATTENDEE",
        ';CN="a:b";X=1',
        "mailto:x@example.org",
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("UID:x:y", ("UID", "", "x:y")),
        ("SUMMARY;LANGUAGE=en:a;b", ("SUMMARY", ";LANGUAGE=en", "a;b")),
        ("NO-COLON;X=1", ("NO-COLON;X=1", "", "")),
        ('X;A="q;r":v', ("X", ';A="q;r"', "v")),
        ('X:v"w;z', ("X", "", 'v"w;z')),  # quotes in the value do not matter
        ('X;A="unclosed:v', ('X;A="unclosed:v', "", "")),
        ("", ("", "", "")),
    ],
)
def test_split_content_line_cases(line, expected):
    """The first colon outside quotes ends the parameters; a line without one is all name."""
    assert split_content_line(line) == expected


def _by_icalendar(line: str) -> tuple[str, dict[str, str], str] | None:
    """What icalendar's own content-line parser reads, in _parse_property's terms."""
    try:
        name, params, value = Contentline(line).parts()
    except Exception:  # noqa: BLE001 - a line icalendar refuses is skipped
        return None
    flat = {
        key.upper(): str(val[0]) if isinstance(val, list) else str(val)
        for key, val in params.items()
    }
    return name.upper(), flat, str(value)


def _read(line: str) -> tuple[str, dict[str, str], str] | None:
    parsed = _parse_property(line)
    return None if parsed is None else (parsed[0], parsed[1].params, parsed[1].value)


@pytest.mark.parametrize(
    ("line", "plain"),
    [
        ("ORGANIZER;CN=Alice Example:mailto:alice@example.com", True),
        ('ATTENDEE;CN="Smith, J";X-A="a;b=c:d";partstat=accepted:mailto:x@example.org', True),
        ('DESCRIPTION;ALTREP="data:text/html,%3Cp%3E%25":a\\, b\\nc', True),
        ("DTSTART;TZID=W. Europe Standard Time:20310101T090000", True),
        ("SUMMARY;X=1;X=2:last wins", True),
        ("UID:", True),
        ("ATTENDEE;CN=a :mailto:x@example.org", False),  # padding icalendar trims
        ("ATTENDEE;CN= a:mailto:x@example.org", False),
        ('ATTENDEE;DELEGATED-TO="a","b":mailto:x@example.org', False),  # a list
        ("ATTENDEE;CN=a^'b:mailto:x@example.org", False),  # RFC 6868 escape
        ("ATTENDEE;CN=a\\,b:mailto:x@example.org", False),  # backslash
        ("DTSTART;:20310101T090000", False),  # empty parameters: icalendar refuses the line
        ("DTSTART;X:20310101", False),
        ("X_Y:value", False),
        ("NO-COLON", False),
    ],
)
def test_plain_lines_read_as_icalendar_reads_them(line, plain):
    """Plain lines skip icalendar's parser; every line reads as icalendar would read it."""
    assert (_read_plain_line(line) is not None) == plain
    assert _read(line) == _by_icalendar(line)


@given(
    st.lists(
        st.sampled_from(
            ["ATTENDEE", "X-A", ";", ":", "=", '"', ",", " ", "\t", "\\", "^", "^n", "%2C", "%",
             "CN", "a", "mailto:x@y", "\\,", "é", "_", ".", "\x01", "'", ";CN=", '="q r"']
        ),
        max_size=14,
    )
)
def test_any_property_line_reads_as_icalendar_reads_it(pieces):
    """Whatever the line holds, the name, parameters and value are icalendar's."""
    line = "".join(pieces)
    assert _read(line) == _by_icalendar(line)


@given(st.text())
def test_escape_roundtrip(value):
    """Unescaping an escaped TEXT value gives back the value (newlines normalised)."""
    expected = value.replace("\r\n", "\n").replace("\r", "\n")
    assert unescape_text(escape_text(value)) == expected


def test_method_is_upper_cased_and_missing_method_is_empty():
    """METHOD is upper-cased; an object without METHOD has method ""."""
    assert parse_calendar(_calendar("DTSTART:20260101T000000Z\n")).method == "REQUEST"
    no_method = _calendar("DTSTART:20260101T000000Z\n").replace("METHOD:request\r\n", "")
    assert parse_calendar(no_method).method == ""


def test_escaped_comma_tzid_uses_its_vtimezone():
    """An escaped comma in the VTIMEZONE TZID matches the quoted DTSTART TZID."""
    zone = (
        "BEGIN:VTIMEZONE\nTZID:Pacific Time (US & Canada)\\, Tijuana\nBEGIN:STANDARD\n"
        "DTSTART:16010101T020000\nTZOFFSETFROM:-0700\nTZOFFSETTO:-0800\n"
        "RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU\nEND:STANDARD\nBEGIN:DAYLIGHT\n"
        "DTSTART:16010101T020000\nTZOFFSETFROM:-0800\nTZOFFSETTO:-0700\n"
        "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU\nEND:DAYLIGHT\nEND:VTIMEZONE\n"
    )
    event = 'DTSTART;TZID="Pacific Time (US & Canada), Tijuana":20260115T100000\n'
    parsed = parse_calendar(_calendar(event, zone)).events[0]
    assert parsed.start == datetime(2026, 1, 15, 18, 0, tzinfo=UTC)
    assert parsed.utc_offset_minutes == -480


def test_same_custom_tzid_is_not_shared_between_objects():
    """Two objects defining one custom TZID differently each get their own definition."""

    def zone(offset: str) -> str:
        return (
            f"BEGIN:VTIMEZONE\nTZID:Custom Zone\nBEGIN:STANDARD\nDTSTART:19700101T000000\n"
            f"TZOFFSETFROM:{offset}\nTZOFFSETTO:{offset}\nEND:STANDARD\nEND:VTIMEZONE\n"
        )

    event = "DTSTART;TZID=Custom Zone:20260101T120000\n"
    first = parse_calendar(_calendar(event, zone("+0200"))).events[0]
    second = parse_calendar(_calendar(event, zone("+0500"))).events[0]
    assert first.start.hour == 10 and second.start.hour == 7


def test_unknown_tzid_falls_back_to_utc():
    """A TZID nobody can resolve is treated as UTC rather than failing."""
    event = parse_calendar(_calendar("DTSTART;TZID=BRT:20260101T120000\n")).events[0]
    assert event.start == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_floating_time_is_read_as_utc():
    """A floating DTSTART is read as UTC for now."""
    event = parse_calendar(_calendar("DTSTART:20260101T120000\nDTEND:20260101T130000\n")).events[0]
    assert (event.start.hour, event.end.hour, event.start.tzinfo) == (12, 13, UTC)


def test_all_day_without_end_lasts_one_day():
    """A DATE start without DTEND or DURATION ends one day later."""
    event = parse_calendar(_calendar("DTSTART;VALUE=DATE:20260301\n")).events[0]
    assert event.all_day
    assert event.end == datetime(2026, 3, 2, tzinfo=UTC)


def test_date_time_without_end_is_instant():
    """A DATE-TIME start without DTEND or DURATION ends when it starts."""
    event = parse_calendar(_calendar("DTSTART:20260301T100000Z\n")).events[0]
    assert event.end == event.start


def test_recurrence_id_forms_and_range():
    """RECURRENCE-ID is normalised to UTC or a date, and RANGE is kept."""
    dated = parse_calendar(_calendar("RECURRENCE-ID;VALUE=DATE:20260301\n")).events[0]
    assert dated.recurrence_id == "20260301"
    ranged = "RECURRENCE-ID;RANGE=THISANDFUTURE;TZID=Europe/Berlin:20260301T100000\n"
    event = parse_calendar(_calendar(ranged)).events[0]
    assert (event.recurrence_id, event.recurrence_range) == ("20260301T090000Z", "THISANDFUTURE")


def test_valarm_properties_do_not_leak_into_event():
    """A DESCRIPTION inside VALARM is not the event's description."""
    event = parse_calendar(
        _calendar("DESCRIPTION:Event\nBEGIN:VALARM\nDESCRIPTION:Alarm\nEND:VALARM\n")
    ).events[0]
    assert event.description == "Event"


def test_conference_urls_and_text_unescaping():
    """CONFERENCE values and unescaped TEXT values are reported."""
    event = parse_calendar(
        _calendar("SUMMARY:a\\, b\\; c\\nd\nCONFERENCE;VALUE=URI:https://c.example.com/1\n")
    ).events[0]
    assert event.summary == "a, b; c\nd"
    assert event.conference_urls == ("https://c.example.com/1",)


def test_text_without_vcalendar_is_an_error():
    """Text that is no VCALENDAR raises CalendarError."""
    with pytest.raises(CalendarError):
        parse_calendar("BEGIN:VEVENT\nUID:x\nEND:VEVENT\n")


def test_organizer_address_from_email_parameter():
    """A CalDAV principal ORGANIZER is read from its EMAIL parameter; a mailto: value wins."""
    principal = (
        'ORGANIZER;CN=Adam;EMAIL="Adam@Example.com":urn:x-uid:1\n'
        "ATTENDEE;EMAIL=z@example.org:/p/2/\n"
    )
    event = parse_calendar(_calendar(principal)).events[0]
    assert event.organizer == "adam@example.com"
    assert event.attendees[0].address == "z@example.org"
    both = "ORGANIZER;EMAIL=other@example.com:mailto:real@example.com\n"
    assert parse_calendar(_calendar(both)).events[0].organizer == "real@example.com"


def test_notes_short_windows_zone_name_without_vtimezone():
    """Notes' TZID "FLE" (no VTIMEZONE) is read as the Windows zone FLE Standard Time."""
    event = parse_calendar(_calendar('DTSTART;TZID="FLE":20310321T100000\n')).events[0]
    assert event.start == datetime(2031, 3, 21, 8, 0, tzinfo=UTC)
    assert event.utc_offset_minutes == 120


def test_own_vtimezone_wins_over_short_name_guess():
    """A VTIMEZONE named like a short Windows name is used as the sender defined it."""
    zone = (
        "BEGIN:VTIMEZONE\nTZID:Eastern\nBEGIN:STANDARD\nDTSTART:19700101T000000\n"
        "TZOFFSETFROM:+0500\nTZOFFSETTO:+0500\nEND:STANDARD\nEND:VTIMEZONE\n"
    )
    event = parse_calendar(_calendar("DTSTART;TZID=Eastern:20310101T120000\n", zone)).events[0]
    assert event.utc_offset_minutes == 300


def test_zone_names_ignore_definitions_other_senders_registered():
    """A VTIMEZONE icalendar cached for one sender never decides another object's TZID."""
    Calendar.from_ical(
        "BEGIN:VCALENDAR\r\nBEGIN:VTIMEZONE\r\nTZID:FLE\r\nBEGIN:STANDARD\r\n"
        "DTSTART:19700101T000000\r\nTZOFFSETFROM:+0900\r\nTZOFFSETTO:+0900\r\nEND:STANDARD\r\n"
        "END:VTIMEZONE\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTART;TZID=FLE:20310101T120000\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    ).walk("VEVENT")[0].decoded("DTSTART")
    event = parse_calendar(_calendar('DTSTART;TZID="FLE":20310321T100000\n')).events[0]
    assert event.utc_offset_minutes == 120


@pytest.mark.parametrize("params", ["", ';LANGUAGE=en;X-NOTE="a b"'])
def test_escaped_backslash_before_n_stays_a_backslash(params):
    """An escaped backslash followed by "n" in SUMMARY is a backslash and an "n", not a line break."""
    text = _calendar(f"SUMMARY{params}:Share C:\\\\new\\, now\nDTSTART:20300101T100000Z\n")
    event = parse_calendar(text).events[0]
    assert event.summary == "Share C:\\new, now"
