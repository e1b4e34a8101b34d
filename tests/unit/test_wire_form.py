"""What mailhook writes is in SMTP's wire form: CRLF line ends only, lines of at most 998
octets, quoted-printable and base64 with CRLF breaks, iCalendar folded at 75 octets, and no
bare CR that could become a line (or a property) at the next hop."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailhook.core.calendar import unfold
from mailhook.core.mime import decode_body, parse_message, scan_message
from mailhook.core.model import LinkInsertion
from mailhook.core.rewrite import rewrite_calendar_text, rewrite_message
from mailhook.core.wire import SMALL_MESSAGE, data_pieces
from mailhook.relay import MAX_LINE_OCTETS, dot_stuff, dot_stuffed, wire_form
from tests.fixtures.checks import (
    CORPUS_MISSING,
    MESSAGES,
    as_message,
    calendar_texts,
    corpus_files,
    corpus_name,
    on_the_wire,
)
from tests.support import reliability
from tests.support.invites import Event, exchange, outlook_one_line_html, single_part, vcalendar

URL = "https://video.example.com/c/4000000001"
LINK = LinkInsertion(URL)
BARE_LF = re.compile(rb"(?<!\r)\n")
BARE_CR = re.compile(rb"\r(?!\n)")


def wire_problems(data: bytes) -> list[str]:
    """Everything that keeps ``data`` from going on the wire as it is."""
    problems = []
    if BARE_LF.search(data):
        problems.append(f"bare LF at {BARE_LF.search(data).start()}")  # type: ignore[union-attr]
    if BARE_CR.search(data):
        problems.append(f"bare CR at {BARE_CR.search(data).start()}")  # type: ignore[union-attr]
    longest = max(map(len, data.split(b"\r\n")))
    if longest > MAX_LINE_OCTETS:
        problems.append(f"a line of {longest} octets")
    return problems


def unstuffed(payload: bytes) -> bytes:
    """The message a next hop reads from a DATA payload (dot removed, leading dots undoubled)."""
    assert payload.endswith(b"\r\n.\r\n") or payload == b".\r\n"
    lines = payload[:-3].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


# --- the relay's writer -----------------------------------------------------------------------


def test_bare_line_ends_become_crlf_so_every_line_is_dot_stuffed():
    """A bare LF or CR goes out as CRLF, and a dot after it is doubled: the smuggling payload
    "<LF>.<CR><LF>MAIL FROM..." stays message text at every next hop."""
    smuggled = (b"hello\n.\r\nMAIL FROM:<ceo@example.com>\r\nRCPT TO:<victim@example.net>\r\n"
                b"DATA\r\nforged\r\n")
    reliability.hostile("bare LF before a lone dot (SMTP smuggling)")
    payload = dot_stuff(smuggled)
    assert payload == (b"hello\r\n..\r\nMAIL FROM:<ceo@example.com>\r\n"
                       b"RCPT TO:<victim@example.net>\r\nDATA\r\nforged\r\n.\r\n")
    reliability.hostile("bare CR before a lone dot")
    assert dot_stuff(b"a\r.\rb\r\r\nc") == b"a\r\n..\r\nb\r\n\r\nc\r\n.\r\n"


def test_mail_already_in_wire_form_is_not_copied():
    """Ordinary mail (CRLF, short lines) is sent from its own buffer: the fast path."""
    message = b"Subject: x\r\n\r\n" + b"line of text\r\n" * 10_000
    assert wire_form(message) is message
    pieces = list(dot_stuffed(message))
    assert isinstance(pieces[0], memoryview) and pieces[0].obj is message


def test_a_small_message_goes_to_the_next_hop_in_one_piece_with_its_trace_field():
    """Up to SMALL_MESSAGE octets, DATA is one write (one send); a larger message still goes
    piece by piece from its own buffer; both are the trace field and the dot-stuffed message."""
    trace = b"Received: by mailhook.test (mailhook); Mon, 3 Mar 2031 10:00:00 +0000\r\n"
    small = b"Subject: x\r\n\r\n.dot\r\n" + b"line\r\n" * 100
    assert list(data_pieces(trace, small)) == [trace + dot_stuff(small)]
    large = b"Subject: x\r\n\r\n" + b"line of text\r\n" * (SMALL_MESSAGE // 10)
    pieces = list(data_pieces(trace, large))
    assert pieces[0] == trace and len(pieces) > 2
    assert isinstance(pieces[1], memoryview) and pieces[1].obj is large
    assert b"".join(pieces) == trace + dot_stuff(large)


def test_long_lines_are_folded_as_postfix_folds_them():
    """A line over 998 octets goes out as 998-octet pieces, each continuation after CRLF and a
    space (a header field stays one field); shorter lines are untouched."""
    header = b"X-Long: " + b"h" * 2500
    body = b"b" * 998 + b"\r\n" + b"c" * 999
    reliability.hostile("lines over 998 octets")
    out = wire_form(header + b"\r\n\r\n" + body + b"\r\n")
    assert wire_problems(out) == []
    lines = out.split(b"\r\n")
    assert lines[0] == header[:998] and lines[1] == b" " + header[998:1995]
    assert lines[2] == b" " + header[1995:]
    assert lines[4] == b"b" * 998  # exactly at the limit: as it was
    assert lines[5:7] == [b"c" * 998, b" c"]
    assert out.replace(b"\r\n ", b"") == header + b"\r\n\r\n" + body + b"\r\n"


@given(st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"x" * 500, b" "]),
                max_size=40))
def test_any_message_goes_out_in_wire_form(pieces):
    """Whatever the bytes, the DATA payload has only CRLF line ends and no line over 998 octets
    (999 with a doubled dot), and the next hop reads the message back with its line ends as
    CRLF and its long lines folded."""
    content = b"".join(pieces)
    payload = dot_stuff(content)
    assert not BARE_LF.search(payload) and not BARE_CR.search(payload)
    assert max(len(line) - line.startswith(b"..") for line in payload.split(b"\r\n")) <= 998
    read = unstuffed(payload)
    normalised = re.sub(rb"\r\n|\r|\n", b"\r\n", content)
    if normalised and not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    assert read.replace(b"\r\n ", b"") == normalised.replace(b"\r\n ", b"")


# --- the rewrite's encoders -------------------------------------------------------------------


def _part_bodies(raw: bytes) -> dict[str, bytes]:
    """The raw body of each leaf part, by content type."""
    root = scan_message(raw).root
    return {part.content_type: raw[part.body_start:part.body_end] for part in root.walk()
            if not part.children}


def test_quoted_printable_soft_breaks_are_crlf_for_a_one_line_html_body():
    """An Outlook-shaped invitation whose HTML body is one 3 000-octet line is re-encoded with
    "=<CR><LF>" soft breaks, never "=<LF>", and lines of at most 76 octets."""
    raw = outlook_one_line_html(Event())
    out = rewrite_message(parse_message(raw), LINK)
    html = _part_bodies(out)["text/html"]
    assert wire_problems(out) == []
    assert b"=\r\n" in html and all(len(line) <= 76 for line in html.split(b"\r\n"))
    root = scan_message(out).root
    [html_part] = [p for p in root.walk() if p.content_type == "text/html"]
    assert URL.encode() in decode_body(out, html_part)


def test_quoted_printable_writes_a_bare_cr_as_an_escape():
    """A bare CR in a body mailhook re-encodes as quoted-printable is written "=0D", not raw."""
    reliability.hostile("bare CR in a quoted-printable HTML body")
    raw = exchange(Event()).replace(b"<p>Let's meet.</p>", b"<p>Let's\rmeet.</p>")
    out = rewrite_message(parse_message(raw), LINK)
    assert wire_problems(out) == []
    assert b"Let's=0Dmeet." in _part_bodies(out)["text/html"]


def test_an_8bit_body_with_a_bare_cr_is_rewritten_as_quoted_printable():
    """A text body with a bare CR would put it raw on the wire: it is re-encoded instead."""
    reliability.hostile("bare CR in an 8bit text body")
    raw = outlook_one_line_html(Event()).replace(
        b'"us-ascii"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nLet\'s go',
        b'"us-ascii"\r\nContent-Transfer-Encoding: 8bit\r\n\r\nLet\'s\rgo', 1)
    out = rewrite_message(parse_message(raw), LINK)
    assert wire_problems(out) == []
    assert b"Let's=0Dgo" in _part_bodies(out)["text/plain"]


def test_base64_is_rewritten_in_crlf_lines_of_76():
    """A base64 calendar part is re-encoded in lines of 76 characters ending in CRLF."""
    out = rewrite_message(parse_message(exchange(Event())), LINK)
    body = _part_bodies(out)["text/calendar"]
    lines = body.rstrip(b"\r\n").split(b"\r\n")
    assert not BARE_LF.search(body) and all(len(line) <= 76 for line in lines)
    assert URL in base64.b64decode(body).decode().replace("\r\n ", "")


def test_calendar_writer_folds_at_75_octets_with_crlf():
    """The lines mailhook writes into a calendar object end in CRLF and hold at most 75
    octets, also for a long multi-byte DESCRIPTION."""
    ics = vcalendar("REQUEST", "UID:u1\r\nDTSTART:20310310T090000Z\r\nLOCATION:TrueConf\r\n"
                    "DESCRIPTION:" + "Повестка дня, " * 30)
    out = rewrite_calendar_text(ics, LINK)
    assert not re.search(r"(?<!\r)\n|\r(?!\n)", out)
    written = [line for line in out.split("\r\n") if line not in ics.split("\r\n")]
    assert written and all(len(line.encode()) <= 75 for line in written)


@pytest.mark.parametrize("value", ["Q3\rX-INJECTED:1", "Q3\r\rX-INJECTED:1"])
def test_a_bare_cr_in_a_property_never_becomes_a_new_property(value):
    """A bare CR inside SUMMARY or DESCRIPTION is written as the TEXT escape for a line break:
    no X-INJECTED property line appears and no raw CR is written."""
    reliability.hostile("bare CR inside an iCalendar property value")
    ics = vcalendar("REQUEST", f"UID:u1\r\nDTSTART:20310310T090000Z\r\nSUMMARY:{value}\r\n"
                    "LOCATION:TrueConf\r\nDESCRIPTION:first\rsecond")
    out = rewrite_calendar_text(ics, LINK)
    assert not re.search(r"\r(?!\n)", out)
    names = [line.name for line in unfold(out)]
    assert "X-INJECTED" not in names and names.count("SUMMARY") == 1
    assert r"SUMMARY:Q3\nX-INJECTED:1" in out or r"SUMMARY:Q3\n\nX-INJECTED:1" in out
    assert r"DESCRIPTION:first\nsecond" in out.replace("\r\n ", "")


def test_a_calendar_with_only_cr_line_ends_is_still_read_line_by_line():
    """An object whose lines all end in a bare CR (old Mac software) keeps its lines."""
    ics = vcalendar("REQUEST", "UID:u1\r\nDTSTART:20310310T090000Z\r\nLOCATION:TrueConf")
    out = rewrite_calendar_text(ics.replace("\r\n", "\r"), LINK)
    assert "\r\nUID:u1\r\n" in out and "CONFERENCE" in out


def test_a_bare_cr_in_a_message_calendar_never_reaches_the_output():
    """Through the whole message rewrite, the bare CR in SUMMARY goes nowhere raw."""
    ics = vcalendar("REQUEST", "UID:u1\r\nORGANIZER:mailto:alice@example.com\r\n"
                    "ATTENDEE:mailto:bob@example.com\r\nDTSTART:20310310T090000Z\r\n"
                    "SUMMARY:Q3\rX-INJECTED:1\r\nLOCATION:TrueConf")
    out = rewrite_message(parse_message(single_part(ics, "REQUEST")), LINK)
    assert wire_problems(out) == []
    [text] = calendar_texts(out)
    assert "X-INJECTED" not in [line.name for line in unfold(text)]


# --- every known message ----------------------------------------------------------------------


def _invitations(paths: list) -> list[tuple[str, bytes]]:
    found = []
    for path in paths:
        raw = on_the_wire(as_message(path))
        parsed = parse_message(raw)
        if not parsed.skip_reason and parsed.method in ("REQUEST", "CANCEL") and parsed.calendar:
            found.append((path.name, raw))
    return found


def _rewrite_wire_problems(samples: list[tuple[str, bytes]]) -> list[str]:
    problems = []
    for name, raw in samples:
        if wire_problems(raw):
            continue  # lines over 998 octets arrived: the relay folds those
        out = rewrite_message(parse_message(raw), LINK)
        problems += [f"{name}: {problem}" for problem in wire_problems(out)]
    return problems


def test_every_fixture_rewrite_stays_in_wire_form():
    """Each fixture invitation in wire form is still in wire form after the rewrite."""
    samples = _invitations(sorted(MESSAGES.glob("*.eml")))
    samples.append(("outlook one-line HTML", outlook_one_line_html(Event())))
    assert len(samples) >= 20
    assert _rewrite_wire_problems(samples) == []


@pytest.mark.corpus
def test_every_corpus_rewrite_stays_in_wire_form():
    """Each corpus invitation in wire form is still in wire form after the rewrite."""
    paths = corpus_files()
    if not paths:
        pytest.skip(CORPUS_MISSING)
    samples = [(corpus_name(path), raw) for path in paths
               for _name, raw in _invitations([path])]
    assert samples
    assert _rewrite_wire_problems(samples) == []
