"""Tests for the line-level calendar rewrite, the link blocks and byte splicing of messages."""

from __future__ import annotations

import base64
import dataclasses
import email
import re
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from icalendar import Calendar

from mailhook.core import blocks
from mailhook.core.calendar import unescape_text, unfold
from mailhook.core.mime import (
    MimePart,
    calendar_leaves,
    decode_body,
    parse_message,
    read_calendar,
    scan_message,
)
from mailhook.core.model import LinkInsertion
from mailhook.core.rewrite import fold_line, rewrite_calendar_text, rewrite_message
from mailhook.errors import InvitationError
from tests.fixtures.checks import link_places

URL = "https://video.example.com/c/0123456789?lang=en&x=1"
OTHER_URL = "https://video.example.com/c/9999"
EN = LinkInsertion(URL)
RU = LinkInsertion(URL, language="ru")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "messages"
INVITATIONS = [
    "exchange_online.eml", "google.eml", "thunderbird.eml", "apple_mail.eml", "exchange_cdo.eml",
    "outlook2007.eml", "bare_calendar.eml", "yahoo_cancel.eml", "content_length.eml",
]  # fmt: skip

CALENDAR = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\n"
    "UID:040000008200E00074C5B7101A82E0080000000012345678901234567890123456789012\r\n"
    " 3456\r\nSEQUENCE:4\r\nDTSTAMP:20260601T000000Z\r\n"
    'ORGANIZER;CN="Org, Anna":mailto:anna@example.com\r\n'
    "ATTENDEE;CN=Bob;PARTSTAT=NEEDS-ACTION:mailto:bob@example.org\r\n"
    "DTSTART:20260701T100000Z\r\nSUMMARY:Review\r\nLOCATION;LANGUAGE=en-US:Room 5 @TrueConf\r\n"
    "DESCRIPTION;LANGUAGE=en-US:Agenda\\, notes\\nSecond line\r\n"
    "X-ALT-DESC;FMTTYPE=text/html:<html><body><p>Agenda</p></body></html>\r\n"
    "CONFERENCE;VALUE=URI;FEATURE=VIDEO;LABEL=TrueConf:https://old.example.com/x\r\n"
    "X-VENDOR;X-P=1:keep\r\nBEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:Reminder\r\n"
    "TRIGGER:-PT15M\r\nEND:VALARM\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


def _logical(text: str, name: str) -> list[str]:
    unfolded = re.sub(r"\r\n[ \t]", "", text)
    return [line for line in unfolded.split("\r\n") if line.split(";")[0].split(":")[0] == name]


def _event(text: str):
    return next(iter(Calendar.from_ical(text).walk("VEVENT")))


# --- calendar text ----------------------------------------------------------------------------


def test_conference_added_once_and_old_trueconf_conference_dropped():
    """The CONFERENCE line is written once; an older TrueConf CONFERENCE is dropped."""
    out = rewrite_calendar_text(CALENDAR, EN)
    assert _logical(out, "CONFERENCE") == [
        f"CONFERENCE;VALUE=URI;FEATURE=AUDIO,VIDEO;LABEL=TrueConf:{URL}"
    ]


def test_location_keyword_replaced_keeping_text_and_parameters():
    """'@TrueConf' becomes the URL; other location text and LANGUAGE stay."""
    out = rewrite_calendar_text(CALENDAR, EN)
    assert _logical(out, "LOCATION") == [f"LOCATION;LANGUAGE=en-US:Room 5 {URL}"]


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("LOCATION:Видеоконференция TrueConf", f"LOCATION:Видеоконференция {URL}"),
        ("LOCATION:", f"LOCATION:{URL}"),
        ("LOCATION:Room 5", "LOCATION:Room 5"),
        (f"LOCATION:{URL} trueconf", f"LOCATION:{URL} trueconf"),
        ("LOCATION:trueconf\\, TRUECONF", f"LOCATION:{URL}\\, {URL}"),
    ],
)
def test_location_cases(location, expected):
    """Keywords are replaced case-insensitively; empty is set; foreign or linked text is kept."""
    text = CALENDAR.replace("LOCATION;LANGUAGE=en-US:Room 5 @TrueConf", location)
    assert _logical(rewrite_calendar_text(text, EN), "LOCATION") == [expected]


def test_missing_location_and_description_are_created():
    """An event without LOCATION and DESCRIPTION gets both."""
    text = re.sub(r"(LOCATION|DESCRIPTION)[^\r]*\r\n", "", CALENDAR)
    event = _event(rewrite_calendar_text(text, RU))
    assert str(event["LOCATION"]) == URL
    assert f"Видеоконференция TrueConf: {URL}" in str(event["DESCRIPTION"])


def test_description_block_appended_keeping_parameters():
    """DESCRIPTION keeps its text and LANGUAGE parameter and gains the plain block."""
    out = rewrite_calendar_text(CALENDAR, EN)
    event = _event(out)
    description = str(event["DESCRIPTION"])
    assert description.startswith("Agenda, notes\nSecond line\n\n" + blocks.PLAIN_START)
    assert f"TrueConf video conference: {URL}" in description
    assert _logical(out, "DESCRIPTION")[0].startswith("DESCRIPTION;LANGUAGE=en-US:Agenda\\, notes")


def test_alt_desc_gets_html_block_before_body_end():
    """X-ALT-DESC text/html gets the escaped HTML block before </body>."""
    (line,) = _logical(rewrite_calendar_text(CALENDAR, EN), "X-ALT-DESC")
    alt = unescape_text(line.split(":", 1)[1])
    assert blocks.HTML_START in alt and alt.endswith("</body></html>")
    assert 'href="https://video.example.com/c/0123456789?lang=en&amp;x=1"' in alt


def test_valarm_and_identity_lines_untouched():
    """VALARM lines and UID/SEQUENCE/DTSTAMP/ORGANIZER/ATTENDEE/METHOD stay byte-identical."""
    out = rewrite_calendar_text(CALENDAR, EN)
    for name in ("UID", "SEQUENCE", "DTSTAMP", "ORGANIZER", "ATTENDEE", "METHOD", "X-VENDOR"):
        assert _logical(out, name) == _logical(CALENDAR, name)
    assert (
        "BEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:Reminder\r\nTRIGGER:-PT15M\r\nEND:VALARM"
        in out
    )
    assert (
        "UID:040000008200E00074C5B7101A82E0080000000012345678901234567890123456789012\r\n 3456\r\n"
        in out
    )


def test_output_is_crlf_and_folded_on_utf8_boundaries():
    """Every line ends in CRLF and written lines are at most 75 octets."""
    out = rewrite_calendar_text(CALENDAR.replace("\r\n", "\n"), RU)
    assert "\n" not in out.replace("\r\n", "")
    original = set(CALENDAR.split("\r\n"))
    for line in set(out.split("\r\n")) - original:
        assert len(line.encode("utf-8")) <= 75
    Calendar.from_ical(out)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300))
def test_fold_line_keeps_content_and_limits(value):
    """Folding splits only between characters and never exceeds 75 octets."""
    lines = fold_line("DESCRIPTION:" + value)
    assert all(len(line.encode("utf-8")) <= 75 for line in lines)
    assert lines[0] + "".join(line[1:] for line in lines[1:]) == "DESCRIPTION:" + value


@pytest.mark.parametrize(
    ("value", "lines"),
    [
        ("", [""]),
        ("a" * 75, ["a" * 75]),
        ("a" * 76, ["a" * 75, " a"]),
        ("a" * 149, ["a" * 75, " " + "a" * 74]),
        ("a" * 150, ["a" * 75, " " + "a" * 74, " a"]),
        ("a" * 74 + "é", ["a" * 74, " é"]),  # a two-octet character is never split
        ("a" * 73 + "é", ["a" * 73 + "é"]),
        ("a" * 72 + "€b", ["a" * 72 + "€", " b"]),
        ("a" * 74 + "\ud83d\ude00", ["a" * 74, " \ud83d\ude00"]),  # lone surrogates: 3 octets each
    ],
)
def test_fold_line_exact_pieces(value, lines):
    """The first line holds 75 octets, each continuation a space and 74 more."""
    assert fold_line(value) == lines


def test_rewrite_is_idempotent():
    """Rewriting an already-rewritten object with the same insertion changes nothing."""
    once = rewrite_calendar_text(CALENDAR, RU)
    assert rewrite_calendar_text(once, RU) == once


def test_update_replaces_block_without_duplicates():
    """A new URL or language replaces the block, CONFERENCE and nothing is doubled."""
    once = rewrite_calendar_text(CALENDAR, RU)
    updated = rewrite_calendar_text(once, LinkInsertion(OTHER_URL))
    event = _event(updated)
    assert str(event["DESCRIPTION"]).count(blocks.PLAIN_START) == 1
    assert URL not in str(event["DESCRIPTION"]) and OTHER_URL in str(event["DESCRIPTION"])
    assert str(event["X-ALT-DESC"]).count(blocks.HTML_START) == 1
    assert _logical(updated, "CONFERENCE") == [
        f"CONFERENCE;VALUE=URI;FEATURE=AUDIO,VIDEO;LABEL=TrueConf:{OTHER_URL}"
    ]


def test_unsafe_url_is_refused():
    """A javascript: URL is never written."""
    with pytest.raises(InvitationError):
        rewrite_calendar_text(CALENDAR, LinkInsertion("javascript:alert(1)"))


# --- blocks -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", "data:text/html,x", "ftp://x.example.com", "https://", "https://a b.example",
     'https://x.example.com/"><script>', "", "//x.example.com"],
)  # fmt: skip
def test_is_safe_url_rejects(url):
    """Only absolute http(s) URLs without odd characters are safe."""
    assert not blocks.is_safe_url(url)


def test_html_block_escapes_everything():
    """The HTML block escapes a hostile URL in both href and text."""
    block = blocks.html_block('https://x.example.com/"><script>alert(1)</script>')
    assert "<script>" not in block and "&quot;&gt;&lt;script&gt;" in block


def test_plain_block_insert_replace_remove():
    """Insert, replace (other language) and remove round-trip the text."""
    text = "Body text\n"
    inserted = blocks.insert_plain_block(text, URL, "en")
    replaced = blocks.insert_plain_block(inserted, URL, "ru")
    assert replaced.count(blocks.PLAIN_START) == 1 and "Видеоконференция" in replaced
    assert blocks.remove_plain_block(replaced) == text


def test_html_block_insert_remove():
    """The HTML block goes before </body> and can be removed again."""
    markup = "<html><body><p>x</p></body></html>"
    inserted = blocks.insert_html_block(markup, URL)
    assert inserted.index(blocks.HTML_END) < inserted.index("</body>")
    assert blocks.remove_html_block(blocks.insert_html_block(inserted, URL, "ru")) == markup
    assert blocks.insert_html_block("plain", URL).endswith(blocks.HTML_END)


# --- messages ---------------------------------------------------------------------------------


def _load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _leaves(root: MimePart) -> list[MimePart]:
    return [part for part in root.walk() if not part.children]


def _masked(raw: bytes, paths: set[tuple[int, ...]]) -> bytes:
    """The message with each listed part (headers and body) replaced by a placeholder."""
    root = scan_message(raw).root
    out, position = [], 0
    for part in _leaves(root):
        if part.path in paths:
            out += [raw[position : part.header_start], repr(part.path).encode()]
            position = part.body_end
    return b"".join([*out, raw[position:]])


def _changed_paths(before: bytes, after: bytes) -> set[tuple[int, ...]]:
    old = {p.path: p for p in _leaves(scan_message(before).root)}
    new = {p.path: p for p in _leaves(scan_message(after).root)}
    assert old.keys() == new.keys()
    return {
        path
        for path in old
        if before[old[path].header_start : old[path].body_end]
        != after[new[path].header_start : new[path].body_end]
    }


@pytest.mark.parametrize("name", INVITATIONS)
def test_rewrite_reuses_the_parse_scan_with_identical_bytes(name):
    """The scan parse_message kept gives the same bytes as scanning the message again."""
    raw = _load(name)
    parsed = parse_message(raw)
    assert parsed.scanned is not None and parsed.scanned.raw is raw
    without = dataclasses.replace(parsed, scanned=None)
    assert rewrite_message(parsed, EN) == rewrite_message(without, EN)
    assert rewrite_message(parsed, RU) == rewrite_message(without, RU)


def test_rewrite_ignores_a_scan_of_other_bytes():
    """A kept scan is used only for the very bytes it was made of; others are scanned anew."""
    raw = _load("thunderbird.eml")
    other = parse_message(_load("google.eml"))
    stale = dataclasses.replace(parse_message(raw), scanned=other.scanned)
    assert rewrite_message(stale, EN) == rewrite_message(parse_message(raw), EN)
    copy = dataclasses.replace(parse_message(raw), raw=bytes(bytearray(raw)))
    assert rewrite_message(copy, EN) == rewrite_message(parse_message(raw), EN)


def test_kept_scan_is_not_part_of_equality_or_repr():
    """Two parses of one message compare equal; the repr does not spell out the MIME tree."""
    raw = _load("thunderbird.eml")
    first, second = parse_message(raw), parse_message(raw)
    assert first == second and "scanned" not in repr(first)


@pytest.mark.parametrize("name", INVITATIONS)
def test_bytes_outside_changed_parts_are_identical(name):
    """Boundaries, preamble, other parts and the top headers are byte-identical."""
    raw = _load(name)
    out = rewrite_message(parse_message(raw), EN)
    changed = _changed_paths(raw, out)
    assert changed
    assert _masked(raw, changed) == _masked(out, changed)


@pytest.mark.parametrize("name", INVITATIONS)
def test_changed_parts_keep_their_headers(name):
    """Changed parts keep every header except Content-Length, CTE and the charset parameter."""
    raw = _load(name)
    out = rewrite_message(parse_message(raw), EN)
    old = {p.path: p for p in _leaves(scan_message(raw).root)}
    for part in _leaves(scan_message(out).root):
        before = old[part.path].headers
        for key in {k.lower() for k in before} - {
            "content-length",
            "content-transfer-encoding",
            "content-type",
        }:
            assert part.headers.get_all(key) == before.get_all(key)
        assert "content-length" not in part.headers or part.path not in _changed_paths(raw, out)
        assert part.content_type == old[part.path].content_type
        assert part.param("method") == old[part.path].param("method")


@pytest.mark.parametrize("name", INVITATIONS)
def test_every_calendar_copy_identical_and_linked(name):
    """All calendar copies decode to the same text, which icalendar reads with the URL in place."""
    out = rewrite_message(parse_message(_load(name)), EN)
    root = scan_message(out).root
    texts = {
        read_calendar(out, leaf)[0].replace("\r\n", "\n") for leaf in calendar_leaves(out, root)
    }
    assert len(texts) == 1
    for event in Calendar.from_ical(texts.pop()).walk("VEVENT"):
        assert str(event["CONFERENCE"]) == URL
        assert URL in str(event["LOCATION"])
        assert URL in str(event["DESCRIPTION"])


@pytest.mark.parametrize("name", INVITATIONS)
def test_stdlib_email_reads_rewritten_bodies(name):
    """The stdlib email parser finds the link in every text and calendar part it decodes."""
    message = email.message_from_bytes(rewrite_message(parse_message(_load(name)), EN))
    types = [part.get_content_type() for part in message.walk()]
    expected = 2 if {"text/plain", "text/html"} & set(types) else 1
    found = 0
    for part in message.walk():
        if part.get_content_maintype() == "multipart" or part.get_filename("").endswith(
            "winmail.dat"
        ):
            continue
        payload = part.get_payload(decode=True) or b""
        charset = part.get_content_charset() or "utf-8"
        text = payload.decode("cp1252" if charset == "us-ascii" else charset, "replace")
        if part.get_content_type() == "text/html" and blocks.HTML_START in text:
            assert "https://video.example.com/c/0123456789?lang=en&amp;x=1" in text
            found += 1
        elif URL in text.replace("\r\n ", "").replace("\r\n", "\n").replace("\n ", ""):
            found += 1
    assert found >= expected


@pytest.mark.parametrize("name", INVITATIONS)
def test_message_rewrite_is_idempotent(name):
    """Rewriting the rewritten message again gives the same bytes."""
    once = rewrite_message(parse_message(_load(name)), RU)
    assert rewrite_message(parse_message(once), RU) == once


def test_message_update_replaces_blocks(message_bytes):
    """A second rewrite with another URL leaves exactly one block per body."""
    once = rewrite_message(parse_message(message_bytes("google.eml")), EN)
    twice = rewrite_message(parse_message(once), LinkInsertion(OTHER_URL, language="ru"))
    message = email.message_from_bytes(twice)
    for part in message.walk():
        if part.get_content_type() in ("text/plain", "text/html"):
            text = part.get_payload(decode=True).decode("utf-8")
            assert URL not in text.replace("&amp;", "&")
            assert text.count("TrueConf ~~") + text.count(blocks.HTML_START) == 1


def test_content_length_dropped_on_changed_parts(message_bytes):
    """Part-level Content-Length headers are dropped where the body changed."""
    out = rewrite_message(parse_message(message_bytes("content_length.eml")), EN)
    assert b"Content-Length" not in out


def test_latin1_body_with_russian_block_becomes_utf8(message_bytes):
    """An iso-8859-1 body that cannot hold the ru block is re-encoded as UTF-8."""
    out = rewrite_message(parse_message(message_bytes("content_length.eml")), RU)
    plain = scan_message(out).root.children[0]
    assert plain.param("charset") == "utf-8"
    assert b'Content-Type: text/plain; charset="utf-8"' in out
    text = decode_body(out, plain).decode("utf-8")
    assert text.startswith("Café meeting.") and "Видеоконференция TrueConf" in text
    assert plain.cte == "8bit"


def test_koi8r_html_keeps_its_charset(message_bytes):
    """A koi8-r HTML body keeps koi8-r for both an English and a Russian block."""
    for insertion in (EN, RU):
        out = rewrite_message(parse_message(message_bytes("outlook2007.eml")), insertion)
        html = scan_message(out).root.children[1]
        assert html.param("charset") == "koi8-r"
        text = decode_body(out, html).decode("koi8-r")
        assert blocks.HTML_START in text and "Обсуждение бюджета." in text


def test_latin1_html_gets_character_references(message_bytes):
    """An iso-8859-1 HTML body keeps its charset; Cyrillic is written as references."""
    out = rewrite_message(parse_message(message_bytes("exchange_online.eml")), RU)
    html = scan_message(out).root.children[1]
    assert html.param("charset") == "iso-8859-1"
    assert "&#1042;" in decode_body(out, html).decode("iso-8859-1")


def test_seven_bit_part_becomes_quoted_printable(message_bytes):
    """A 7bit text part that now carries non-ASCII switches to quoted-printable."""
    out = rewrite_message(parse_message(message_bytes("exchange_cdo.eml")), RU)
    plain = scan_message(out).root.children[0]
    assert plain.cte == "quoted-printable" and plain.param("charset") == "utf-8"


def test_cdo_calendar_stays_in_its_decoded_charset(message_bytes):
    """A Latin-1 calendar without charset is re-encoded in cp1252 when the block fits."""
    raw = message_bytes("exchange_cdo.eml")
    out = rewrite_message(parse_message(raw), EN)
    calendar = scan_message(out).root.children[1]
    assert calendar.param("charset") is None
    assert "K\xf6ln".encode("latin-1") in decode_body(out, calendar)


def test_cdo_calendar_with_russian_block_switches_to_utf8(message_bytes):
    """When cp1252 cannot hold the block, the calendar becomes UTF-8 with a charset param."""
    out = rewrite_message(parse_message(message_bytes("exchange_cdo.eml")), RU)
    calendar = scan_message(out).root.children[1]
    assert calendar.param("charset") == "utf-8"
    assert "Köln".encode() in decode_body(out, calendar)


def test_bare_lf_message_keeps_lf(message_bytes):
    """A bare-LF single-part message keeps LF line ends in its rewritten body."""
    out = rewrite_message(parse_message(message_bytes("bare_calendar.eml")), EN)
    assert b"\r" not in out
    assert parse_message(out).calendar.events[0].conference_urls == (URL,)


def test_base64_body_stays_base64_at_76_columns(message_bytes):
    """A base64 calendar is re-encoded as base64 in lines of at most 76 characters."""
    out = rewrite_message(parse_message(message_bytes("exchange_online.eml")), EN)
    calendar = scan_message(out).root.children[2]
    lines = out[calendar.body_start : calendar.body_end].split(b"\r\n")
    assert calendar.cte == "base64" and max(len(line) for line in lines) == 76


@pytest.mark.parametrize(
    "name", ["signed.eml", "dsn.eml", "forwarded.eml", "plain.eml", "tnef.eml"]
)
def test_skipped_messages_are_refused(name):
    """rewrite_message raises InvitationError for anything parse_message skipped."""
    with pytest.raises(InvitationError):
        rewrite_message(parse_message(_load(name)), EN)


def test_unlabelled_text_part_gets_utf8_charset():
    """A text part without charset that now holds Cyrillic is labelled utf-8 and quoted."""
    raw = (
        b"From: o@example.com\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n\r\nHello\r\n--b\r\n"
        b"Content-Type: text/calendar; method=REQUEST\r\n\r\n"
        b"BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:x@example.com\r\n"
        b"DTSTART:20260701T100000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n--b--\r\n"
    )
    out = rewrite_message(parse_message(raw), RU)
    plain = scan_message(out).root.children[0]
    assert (plain.param("charset"), plain.cte) == ("utf-8", "quoted-printable")
    assert "Видеоконференция" in decode_body(out, plain).decode("utf-8")


# --- producer shapes: where the link must show ------------------------------------------------


@pytest.mark.parametrize("encoding", ["percent", "base64"])
def test_thunderbird_altrep_html_description_gets_the_block(encoding):
    """Thunderbird's DESCRIPTION;ALTREP="data:text/html,..." gains the HTML block too."""
    markup = "<p>Agenda: <b>release</b></p>"
    if encoding == "base64":
        uri = "data:text/html;base64," + base64.b64encode(markup.encode()).decode()
    else:
        uri = "data:text/html," + quote(markup)
    altrep = f'DESCRIPTION;ALTREP="{uri}";LANGUAGE=en-US:'
    text = CALENDAR.replace("DESCRIPTION;LANGUAGE=en-US:", altrep)
    out = rewrite_calendar_text(text, EN)
    params = Calendar.from_ical(out).walk("VEVENT")[0]["DESCRIPTION"].params
    altrep = params["ALTREP"]
    data = altrep.split(",", 1)[1]
    html = base64.b64decode(data).decode() if encoding == "base64" else unquote(data)
    assert html.startswith(markup) and blocks.HTML_START in html
    assert URL.replace("&", "&amp;") in html
    assert params["LANGUAGE"] == "en-US"
    assert rewrite_calendar_text(out, EN) == out


def test_non_data_altrep_is_left_alone():
    """An ALTREP pointing elsewhere (cid:) is kept as it was."""
    cid = 'DESCRIPTION;ALTREP="cid:part1@example.com":'
    text = CALENDAR.replace("DESCRIPTION;LANGUAGE=en-US:", cid)
    (line,) = _logical(rewrite_calendar_text(text, EN), "DESCRIPTION")[:1]
    assert line.startswith('DESCRIPTION;ALTREP="cid:part1@example.com":Agenda')


def test_styled_description_html_gets_the_block():
    """RFC 9073 STYLED-DESCRIPTION in text/html gains the HTML block, like X-ALT-DESC."""
    text = CALENDAR.replace("X-ALT-DESC;", "STYLED-DESCRIPTION;VALUE=TEXT;")
    (line,) = _logical(rewrite_calendar_text(text, EN), "STYLED-DESCRIPTION")
    assert blocks.HTML_START in line


_CALENDAR_PIECES = st.sampled_from(
    ["BEGIN:VEVENT", "END:VEVENT", "BEGIN:VALARM", "END:VALARM", "LOCATION:Room @TrueConf",
     "DESCRIPTION:a\\nb", "CONFERENCE;LABEL=TrueConf:x", 'X-A;P="q:r":v', "\r\n", "\n", "\r",
     "\r\n ", "\n\t", "", " ", "begin:vevent"]
)


@given(st.lists(_CALENDAR_PIECES, max_size=20))
def test_the_readers_lines_rewrite_as_the_text_does(pieces):
    """Rewriting with the reader's split lines gives the same object as splitting the text anew."""
    text = "BEGIN:VCALENDAR\r\n" + "".join(pieces)
    assert rewrite_calendar_text(text, EN, unfold(text)) == rewrite_calendar_text(text, EN)


@pytest.mark.parametrize("name", INVITATIONS)
def test_a_message_rewrites_the_same_with_or_without_the_readers_lines(name):
    """The rewrite of a parsed message does not depend on the lines the reader handed on."""
    parsed = parse_message((FIXTURES / name).read_bytes())
    assert parsed.calendar is not None and parsed.calendar.lines
    without = dataclasses.replace(parsed, calendar=dataclasses.replace(parsed.calendar, lines=()))
    assert rewrite_message(parsed, EN) == rewrite_message(without, EN)


@pytest.mark.parametrize("inside", [True, False])
def test_a_large_calendar_is_never_held_split_whole(inside):
    """Reading and rewriting a 1 MB object of short lines (inside its event or not) peaks at
    a few times its size, not at its lines split into content lines all at once."""
    import tracemalloc

    filler = "X-A:b\r\n" * (1024 * 1024 // 7)
    event = "BEGIN:VEVENT\r\nUID:x\r\nDTSTART:20310101T100000Z\r\nLOCATION:TrueConf\r\n"
    body = (event + filler if inside else filler + event) + "END:VEVENT\r\n"
    raw = ("From: a@example.com\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\n"
           f"BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\n{body}END:VCALENDAR\r\n").encode()
    tracemalloc.start()
    try:
        out = rewrite_message(parse_message(raw), EN)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert URL.encode() in out
    assert peak < 20 * len(raw)  # split whole, the lines took about 27 times its size


def test_many_calendar_parts_keep_the_lines_of_one_at_most():
    """A message of many distinct calendar parts, each small enough to keep its split lines,
    keeps them for the one the rewrite edits only: its parse peaks at a few times its size."""
    import tracemalloc

    head = "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:u\r\nDTSTART:20310101T100000Z\r\nEND:VEVENT\r\n"
    parts = [b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=BB\r\n\r\n"]
    for number in range(16):
        text = head + "A:\r\n" * 12_000 + f"X-N:{number}\r\nEND:VCALENDAR\r\n"
        parts.append(b"--BB\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\n" + text.encode())
    raw = b"".join(parts) + b"--BB--\r\n"
    tracemalloc.start()
    try:
        parsed = parse_message(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert parsed.calendar is not None and parsed.calendar.lines
    assert peak < 20 * len(raw)  # every part's lines kept: about 50 times its size


def test_blank_lines_are_not_written():
    """Blank lines (a part's trailing newline) are dropped, so copies compare equal."""
    out = rewrite_calendar_text(CALENDAR + "\r\n\r\n", EN)
    assert "\r\n\r\n" not in out and out.endswith("END:VCALENDAR\r\n")


def test_text_values_are_escaped_when_written():
    """A location with comma, semicolon and backslash is written with TEXT escaping."""
    text = CALENDAR.replace("Room 5 @TrueConf", "A\\, B\\; C\\\\ @TrueConf")
    assert _logical(rewrite_calendar_text(text, EN), "LOCATION") == [
        f"LOCATION;LANGUAGE=en-US:A\\, B\\; C\\\\ {URL}"
    ]


def test_copies_that_differ_are_each_rewritten_keeping_their_own_lines():
    """Two copies of one invitation with different attendees each keep theirs and get the link."""
    second = CALENDAR.replace("mailto:bob@example.org", "mailto:carol@example.org")
    raw = (
        "From: o@example.com\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        f"--b\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\n{CALENDAR}--b\r\n"
        f"Content-Type: application/ics; name=invite.ics\r\n\r\n{second}--b--\r\n"
    ).encode()
    out = rewrite_message(parse_message(raw), EN)
    first_out, second_out = (
        read_calendar(out, leaf)[0] for leaf in calendar_leaves(out, scan_message(out).root)
    )
    assert "bob@example.org" in first_out and "carol@example.org" in second_out
    assert _logical(first_out, "CONFERENCE") == _logical(second_out, "CONFERENCE")


def test_kept_line_over_998_octets_makes_7bit_part_quoted_printable():
    """An untouched 1000+ octet line keeps the part SMTP-safe by switching to quoted-printable."""
    long_line = "X-LONG:" + "x" * 1200
    calendar = CALENDAR.replace("X-VENDOR;X-P=1:keep", long_line)
    raw = (
        "From: o@example.com\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/calendar; method=REQUEST\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
        + calendar
    ).encode()
    out = rewrite_message(parse_message(raw), EN)
    root = scan_message(out).root
    assert root.cte == "quoted-printable"
    assert max(len(line) for line in out.split(b"\r\n")) <= 76
    assert long_line in read_calendar(out, root)[0]


@pytest.mark.parametrize(
    ("name", "places"),
    [
        ("thunderbird128.eml", ["ALTREP", "DESCRIPTION", "text/plain"]),
        ("zimbra.eml", ["X-ALT-DESC", "DESCRIPTION", "text/plain", "text/html"]),
        ("outlook_ru.eml", ["X-ALT-DESC", "LOCATION", "text/plain", "text/html"]),
        ("sogo.eml", ["LOCATION", "DESCRIPTION", "text/html"]),
        ("evolution.eml", ["LOCATION", "DESCRIPTION"]),
        ("notes.eml", ["LOCATION", "DESCRIPTION", "text/plain", "text/html"]),
    ],
)
def test_link_is_where_each_producers_users_look(name, places):
    """The link lands in the places each producer's users see (see docs/compatibility.md)."""
    out = rewrite_message(parse_message(_load(name)), EN)
    assert link_places(out, URL) >= set(places)
