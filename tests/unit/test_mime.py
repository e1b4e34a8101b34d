"""Tests for the MIME scanner and parse_message on hand-written fixture messages."""

from __future__ import annotations

import base64
import re
import time
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailhook.core.calendar import MAX_ATTENDEES
from mailhook.core.mime import (
    BodyDecodeError,
    MimePart,
    calendar_leaves,
    decode_body,
    decode_text,
    may_contain_calendar,
    parse_message,
    readable_leaves,
    scan_message,
    valid_charset,
)
from mailhook.core.mimetree import (
    _boundary_bytes,
    _child_spans,
    _param_text,
    _plain_filename,
    _plain_params,
    parse_headers,
)

FIXTURES = sorted((Path(__file__).resolve().parents[1] / "fixtures" / "messages").glob("*.eml"))


def _cal_message(body: str, *, eol: str = "\r\n", header: str = "") -> bytes:
    head = (
        "From: Organizer <org@example.com>\nTo: a@example.org\nSubject: t\nMessage-ID: <t@example.com>\n"
        f"MIME-Version: 1.0\nContent-Type: text/calendar; charset=utf-8; method=REQUEST\n{header}\n"
    )
    return (head + body).replace("\r\n", "\n").replace("\n", eol).encode("utf-8")


def _event(extra: str = "", start: str = "DTSTART:20260701T100000Z") -> str:
    return (
        "BEGIN:VCALENDAR\nVERSION:2.0\nMETHOD:REQUEST\nBEGIN:VEVENT\nUID:u1@example.com\n"
        f"{start}\nDTSTAMP:20260601T000000Z\nORGANIZER:mailto:org@example.com\n{extra}"
        "END:VEVENT\nEND:VCALENDAR\n"
    )


# --- scanner ----------------------------------------------------------------------------------


def test_scanner_spans_cover_original_bytes_with_crlf(message_bytes):
    """Every leaf's header and body spans slice the original bytes at the right places."""
    raw = message_bytes("google.eml")
    root = scan_message(raw).root
    calendar = root.children[0].children[2]
    assert calendar.content_type == "text/calendar"
    assert raw[calendar.header_start : calendar.header_end].startswith(
        b"Content-Type: text/calendar"
    )
    assert raw[calendar.body_start : calendar.body_end].startswith(b"BEGIN:VCALENDAR")
    assert raw[calendar.body_end : calendar.body_end + 4] == b"\r\n--"
    assert calendar.eol == b"\r\n"


def test_scanner_handles_bare_lf_messages(message_bytes):
    """A bare-LF single-part message is one leaf whose body starts after the blank line."""
    raw = message_bytes("bare_calendar.eml")
    root = scan_message(raw).root
    assert root.children == () and root.eol == b"\n"
    assert raw[root.body_start :].startswith(b"BEGIN:VCALENDAR\n")


def test_scanner_keeps_preamble_and_epilogue_outside_parts():
    """Preamble and epilogue bytes belong to no child part."""
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\npreamble\r\n--b\r\n"
        b"Content-Type: text/plain\r\n\r\nhello\r\n--b--\r\nepilogue\r\n"
    )
    root = scan_message(raw).root
    (child,) = root.children
    assert raw[child.body_start : child.body_end] == b"hello"
    assert b"preamble" not in raw[child.header_start : child.body_end]


def test_scanner_accepts_missing_closing_boundary():
    """Without a closing delimiter the last part runs to the end of the message."""
    raw = b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\none\n--b\nContent-Type: text/html\n\ntwo\n"
    root = scan_message(raw).root
    assert [raw[c.body_start : c.body_end] for c in root.children] == [b"one", b"two\n"]


def _spans_by_pattern(raw: bytes, boundary: bytes, start: int, end: int) -> list[tuple[int, int]]:
    """The delimiter rules as one regular expression: the reference _child_spans must match."""
    delimiter = re.compile(
        rb"(?:\r?\n|^)--" + re.escape(boundary) + rb"(--)?[ \t]*(?=\r?\n|$)", re.MULTILINE
    )
    spans: list[tuple[int, int]] = []
    open_start: int | None = None
    for match in delimiter.finditer(raw, start, end):
        if open_start is not None:
            spans.append((open_start, match.start()))
        if match.group(1):
            return spans
        after = match.end()
        after += 2 if raw.startswith(b"\r\n", after, end) else raw.startswith(b"\n", after, end)
        open_start = after
    if open_start is not None:
        spans.append((open_start, end))
    return spans


def _bodies(raw: bytes, boundary: bytes = b"b") -> list[bytes]:
    return [raw[start:end] for start, end in _child_spans(raw, boundary, 0, len(raw))]


@pytest.mark.parametrize(
    ("raw", "bodies"),
    [
        (b"--b\r\none\r\n--b\r\ntwo\r\n--b--\r\n", [b"one", b"two"]),  # CRLF
        (b"--b\none\n--b\ntwo\n--b--\n", [b"one", b"two"]),  # LF only
        (b"--b \t\r\none\r\n--b\t\r\ntwo\r\n--b-- \r\nepilogue", [b"one", b"two"]),  # padding
        (b"preamble\r\n--b\r\none\r\n--b--", [b"one"]),  # preamble; closing at the very end
        (b"--b\r\none\r\n--b--\r\n--b\r\nepilogue", [b"one"]),  # nothing after the close
        (b"--b\none\n--b\ntwo", [b"one", b"two"]),  # no closing delimiter
        (b"--b\none\n--bb\n--b x\n x--b\n--b--", [b"one\n--bb\n--b x\n x--b"]),  # lookalikes
        (b"--b\none\r\r\n--b--\n", [b"one\r"]),  # the CR of a CRCRLF stays in the part
        (b"--b\r\n--b\r\n--b--", [b"", b""]),  # empty parts
        (b"--b\rone\n--b--", []),  # a bare CR does not end a delimiter line
        (b"x--b\none\n--b--", []),  # a delimiter only counts at the start of a line
    ],
)
def test_child_spans_delimiter_lines(raw, bodies):
    """Delimiter lines are found with every leniency: line ends, padding, missing close."""
    assert _bodies(raw) == bodies
    assert _child_spans(raw, b"b", 0, len(raw)) == _spans_by_pattern(raw, b"b", 0, len(raw))


def test_child_spans_respect_the_body_span():
    """Only the body's own bytes are searched, and its first line starts a line."""
    raw = b"X: y\n\n--b\none\n--b--\n--b\nafter\n"
    start = raw.index(b"--b")
    closing = raw.index(b"--b--")
    assert _child_spans(raw, b"b", start, closing + 5) == [(start + 4, start + 7)]
    # cut inside the closing delimiter, "--b" is an ordinary one opening an empty last part
    assert _child_spans(raw, b"b", start, closing + 3) == [(start + 4, start + 7), (17, 17)]
    # from inside the first delimiter line: the next one closes a multipart with no part open
    assert _child_spans(raw, b"b", start + 1, len(raw)) == []
    assert _child_spans(raw, b"b", 0, start + 2) == []


@settings(max_examples=500, deadline=None)
@given(
    pieces=st.lists(
        st.sampled_from(
            [b"\r", b"\n", b"\r\n", b"-", b"--", b"b", b"x", b" ", b"\t", b"\n--b", b"\r\n--b",
             b"--b--", b"\n---b", b"b\nb"]
        ),
        max_size=24,
    ),
    boundary=st.sampled_from([b"b", b"-b", b"b-", b"bb", b"b\nb", b"b b"]),
    data=st.data(),
)
def test_child_spans_agree_with_the_delimiter_pattern(pieces, boundary, data):
    """On any bytes and any span, the spans are those the delimiter pattern gives."""
    raw = b"".join(pieces)
    start = data.draw(st.integers(0, len(raw)))
    end = data.draw(st.integers(0, len(raw)))
    assert _child_spans(raw, boundary, start, end) == _spans_by_pattern(raw, boundary, start, end)


def _header_state(block: bytes) -> dict[str, object]:
    message = parse_headers(block, "text/plain")
    state = dict(vars(message))
    state["defects"] = [type(defect) for defect in message.defects]
    return state


def _parser_state(block: bytes) -> dict[str, object]:
    message = BytesHeaderParser(policy=compat32).parsebytes(block)
    message.set_default_type("text/plain")
    state = dict(vars(message))
    state["defects"] = [type(defect) for defect in message.defects]
    return state


@pytest.mark.parametrize(
    "block",
    [
        b"",
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n",
        b'Content-Type: multipart/mixed;\n\tboundary="x"\nX-Empty:\n',  # folded, LF, empty value
        b"Subject: =?utf-8?q?caf=C3=A9?=\r\n  more\r\nX:\xe9t\xe9\r\n",  # 8-bit bytes
        b"Content-Type: text/plain",  # no line end
        b" leading: continuation\nContent-Type: text/html\n",
        b"From alice@example.com Mon Jan 1\nContent-Type: text/html\n",
        b"Content-Type: text/html\nnot a header line\nX: y\n",
        b"Content-Type: text/html\r: no name\r\n",
        b": no name\nContent-Type: text/html\n",
        b"Bad Name: x\nContent-Type: text/html\n",
    ],
)
def test_header_blocks_read_as_the_email_parser_reads_them(block):
    """Plain header blocks are read directly, into the same Message the email parser builds."""
    assert _header_state(block) == _parser_state(block)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [b"Content-Type: text/plain", b"X-A:b", b"\r\n", b"\n", b"\r", b" ", b"\t", b":",
             b"From ", b";", b"a", b"\xe9", b"Subject:", b"\r\n ", b"\n\t", b"\x7f"]
        ),
        max_size=12,
    )
)
def test_any_header_block_reads_as_the_email_parser_reads_it(pieces):
    """Whatever the block holds, the Message is the one the email parser builds."""
    block = b"".join(pieces)
    assert _header_state(block) == _parser_state(block)


def _part(header: bytes) -> MimePart:
    return MimePart(
        path=(), header_start=0, header_end=len(header), body_start=len(header),
        body_end=len(header), headers=parse_headers(header, "text/plain"),
        content_type="text/plain", cte="", eol=b"\r\n",
    )  # fmt: skip


def test_part_parameters_read_once_keep_the_first_of_a_repeated_name():
    """Content-Type parameters: any case, the first of a repeated name, RFC 2231 values."""
    part = _part(
        b"Content-Type: text/calendar; Method=REQUEST; method=CANCEL;\r\n"
        b" name*=us-ascii'en'invite%2Eics; charset=\"utf-8\"\r\n"
    )
    assert part.param("METHOD") == "REQUEST" and part.param("method") == "REQUEST"
    assert part.param("charset") == "utf-8"
    assert part.param("name") == "invite.ics" and part.filename == "invite.ics"
    assert part.param("missing") is None
    assert _part(b"X-Other: y\r\n").param("charset") is None


# A field in the plain shape, then, half the time, one piece put somewhere into it that may
# take it out of that shape (RFC 2231 names, escapes, stray separators, non-ASCII, ...).
_PLAIN_FIELD = st.builds(
    lambda kind, params: kind + "".join("".join(param) for param in params),
    st.sampled_from(["text/calendar", "attachment", " inline ", "Multipart/Mixed"]),
    st.lists(
        st.tuples(
            st.sampled_from([";", " ; ", ";\r\n\t", "; "]),
            st.sampled_from(["name", "NAME", "filename", "FileName", "boundary", "charset"]),
            st.sampled_from(["=", " = "]),
            st.sampled_from(["a.ics", '"a b.ics"', '"a;b"', "<a.ics>", '"<q>"', '""', "",
                             '" a.ics "', "b=c", "'q'", '"\t"', "a,b"]),
        ),
        max_size=4,
    ),
)
_ODD_PIECE = st.sampled_from(
    [";", "=", '"', "\\", "*", "*0*", "'", "é", " ", "\r\n\t", "\x01", "<", ">", "x y", ":"]
)
_FIELD = st.builds(
    lambda field, odd: field if odd is None else field[: odd[0]] + odd[1] + field[odd[0] :],
    _PLAIN_FIELD,
    st.none() | st.tuples(st.integers(min_value=0, max_value=80), _ODD_PIECE),
)


def _generic_filename(headers) -> str:
    """MimePart.filename's reading through the email package alone (before decode_words)."""
    params = headers.get_params(header="content-type") or []
    name = next((_param_text(v) for k, v in params if k.lower() == "name"), None)
    return headers.get_filename() or name or ""


@settings(max_examples=500, deadline=None)
@given(_FIELD, _FIELD, st.booleans())
def test_plain_parameters_read_as_the_email_package_reads_them(kind, disposition, has_disposition):
    """Wherever the plain-field reader answers, its parameters, file name and boundary are the
    email package's."""
    block = f"Content-Type: {kind}\r\n"
    if has_disposition:
        block += f"Content-Disposition: {disposition}\r\n"
    headers = parse_headers(block.encode("utf-8", "surrogateescape"), "text/plain")
    for field in ("content-type", "content-disposition"):
        plain = _plain_params(headers, field)
        assert plain is None or plain == (headers.get_params(header=field) or [])
    filename = _plain_filename(headers)
    assert filename is None or filename == _generic_filename(headers)
    boundary = headers.get_boundary()
    assert _boundary_bytes(headers) == (boundary.encode("ascii", "surrogateescape")
                                        if boundary and boundary.isascii() else b"")


@pytest.mark.parametrize(
    "value",
    [
        'text/calendar; charset="utf-8"; method=REQUEST',
        'multipart/alternative;\r\n\tboundary="_000_BENCH0540579ABA18FCE320901B31E39C9EURP_"',
        'application/ics; name="invite.ics"',
        'attachment; filename="a;b <c>.ics"; size=123',
        "text/plain",
    ],
)
def test_fields_producers_write_are_read_without_the_email_package(value):
    """The parameter lists real producers write are in the plain shape."""
    headers = parse_headers(f"Content-Type: {value}\r\n".encode(), "text/plain")
    assert _plain_params(headers, "content-type") == headers.get_params(header="content-type")


def test_scanner_bounds_nesting_depth():
    """Hostile nesting stops at the depth limit instead of recursing without end."""
    raw = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i) for i in range(300)
    )
    scanned = scan_message(raw)
    assert scanned.truncated
    assert parse_message(raw + b"text/calendar").skip_reason


def test_readable_leaves_skip_attachments_and_calendar(message_bytes):
    """Readable bodies are the inline text/plain and text/html parts only."""
    raw = message_bytes("google.eml")
    root = scan_message(raw).root
    assert [p.content_type for p in readable_leaves(raw, root)] == ["text/plain", "text/html"]
    assert [p.path for p in calendar_leaves(raw, root)] == [(0, 2), (1,)]


# --- parse_message ----------------------------------------------------------------------------


def test_exchange_online_windows_zone_with_vtimezone(message_bytes):
    """A Windows TZID with a VTIMEZONE is read as its real UTC instant and offset."""
    parsed = parse_message(message_bytes("exchange_online.eml"))
    assert parsed.skip_reason == ""
    event = parsed.calendar.events[0]
    assert event.start == datetime(2026, 7, 14, 8, 0, tzinfo=UTC)
    assert event.end == datetime(2026, 7, 14, 9, 0, tzinfo=UTC)
    assert event.utc_offset_minutes == 120
    assert event.uid.startswith("040000008200E00074C5B7101A82E008") and event.uid.endswith("ABCDEF")
    assert event.attendees[0].name == "Berger, Bruno"
    assert event.attendees[1].cutype == "ROOM"
    assert parsed.from_address == "anna@example.com"
    assert parsed.message_id == "<exo-0001@example.com>"


def test_google_iana_zone_and_two_copies(message_bytes):
    """Google's inline calendar and invite.ics attachment both become calendar parts."""
    parsed = parse_message(message_bytes("google.eml"))
    assert parsed.skip_reason == ""
    assert [(p.content_type, p.header_method) for p in parsed.calendar_parts] == [
        ("text/calendar", "REQUEST"),
        ("application/ics", None),
    ]
    event = parsed.calendar.events[0]
    assert event.start == datetime(2026, 7, 15, 12, 0, tzinfo=UTC)
    assert event.utc_offset_minutes == 180
    assert event.location == "@trueconf"


def test_thunderbird_organizer_sent_by_lower_case(message_bytes):
    """ORGANIZER and its SENT-BY delegate are lower-cased and lose mailto:."""
    parsed = parse_message(message_bytes("thunderbird.eml"))
    event = parsed.calendar.events[0]
    assert (event.organizer, event.organizer_sent_by) == ("eva@example.com", "frank@example.com")
    assert event.sequence == 3
    assert event.summary == "Встреча команды"
    assert parsed.subject == "Приглашение: Встреча команды"


def test_apple_attachment_without_method_all_day(message_bytes):
    """Apple's calendar attachment has no method= and an all-day DATE start."""
    parsed = parse_message(message_bytes("apple_mail.eml"))
    assert parsed.calendar_parts[0].header_method is None
    assert parsed.method == "REQUEST"
    event = parsed.calendar.events[0]
    assert event.all_day
    assert event.start == datetime(2026, 7, 18, tzinfo=UTC)
    assert event.end == datetime(2026, 7, 20, tzinfo=UTC)


def test_exchange_cdo_latin1_without_charset(message_bytes):
    """An 8bit calendar with Latin-1 bytes and no charset is decoded as cp1252."""
    parsed = parse_message(message_bytes("exchange_cdo.eml"))
    event = parsed.calendar.events[0]
    assert event.location == "Besprechungsraum Köln / TrueConf"
    assert event.attendees[0].name == "Jürgen"
    assert event.start == datetime(2026, 1, 21, 8, 0, tzinfo=UTC)
    assert event.utc_offset_minutes == 60


def test_outlook_windows_zone_without_vtimezone(message_bytes):
    """'Russian Standard Time' without a VTIMEZONE resolves through icalendar's Windows map."""
    event = parse_message(message_bytes("outlook2007.eml")).calendar.events[0]
    assert event.start == datetime(2026, 7, 22, 9, 0, tzinfo=UTC)
    assert event.utc_offset_minutes == 180
    assert event.uid.endswith("010000000ABCDEF0123456789")


def test_bare_calendar_iana_zone_duration_and_rrule(message_bytes):
    """An IANA TZID without VTIMEZONE, DURATION and RRULE are read from an LF-only object."""
    parsed = parse_message(message_bytes("bare_calendar.eml"))
    assert parsed.calendar_parts[0].path == ()
    event = parsed.calendar.events[0]
    assert event.start == datetime(2026, 7, 6, 13, 0, tzinfo=UTC)
    assert event.end == datetime(2026, 7, 6, 13, 45, tzinfo=UTC)
    assert event.rrule == ("FREQ=WEEKLY;BYDAY=MO;COUNT=10",)


def test_method_comes_from_object_not_header(message_bytes):
    """Yahoo's header says REQUEST but the object's METHOD:CANCEL wins."""
    parsed = parse_message(message_bytes("yahoo_cancel.eml"))
    assert parsed.calendar.method == "CANCEL"
    assert parsed.method == "CANCEL"
    assert [p.header_method for p in parsed.calendar_parts] == [None, "REQUEST"]
    assert parsed.calendar.events[0].recurrence_id == "20260710T073000Z"


def test_reply_is_parsed_not_skipped(message_bytes):
    """A REPLY is parsed; the caller decides what to do with its method."""
    parsed = parse_message(message_bytes("reply.eml"))
    assert parsed.skip_reason == "" and parsed.method == "REPLY"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("signed.eml", "signed"),
        ("dsn.eml", "report"),
        ("tnef.eml", "tnef"),
        ("forwarded.eml", "no calendar"),
        ("plain.eml", "no calendar"),
    ],
)
def test_skip_reasons(message_bytes, name, reason):
    """Signed, report, TNEF, forwarded and plain messages are skipped with a reason."""
    assert parse_message(message_bytes(name)).skip_reason == reason


def test_plain_message_still_reports_identity(message_bytes):
    """The fast path still fills Message-ID, Subject and From for logging."""
    parsed = parse_message(message_bytes("plain.eml"))
    assert (parsed.message_id, parsed.subject, parsed.from_address) == (
        "<plain-0013@example.com>",
        "Report",
        "uma@example.com",
    )


def test_broken_base64_calendar_is_unparsable():
    """A calendar part with broken base64 is skipped, not a crash."""
    raw = _cal_message("QkVHSU46VkNBTEVOREFS=====x", header="Content-Transfer-Encoding: BASE64\n")
    assert parse_message(raw).skip_reason == "unparsable calendar"


@given(st.lists(st.sampled_from([b"QkVH", b"SU46", b"=", b"==", b"\r\n", b"\n", b" ", b"\t", b"!",
                                  b"\xff", b"\x00", b"-", b"_", b"A", b"Zg", b"+/"]), max_size=20))
def test_base64_bodies_decode_as_with_a_pattern_dropping_foreign_bytes(pieces):
    """Bytes outside the base64 alphabet are dropped before a strict decode, whatever they are."""
    body = b"".join(pieces)
    part = MimePart(path=(), header_start=0, header_end=0, body_start=0, body_end=len(body),
                    headers=parse_headers(b"", "text/plain"), content_type="text/calendar",
                    cte="base64", eol=b"\r\n")  # fmt: skip
    try:
        expected: bytes | None = base64.b64decode(re.sub(rb"[^A-Za-z0-9+/=]", b"", body), validate=True)
    except ValueError:
        expected = None
    try:
        assert decode_body(body, part) == expected
    except BodyDecodeError:
        assert expected is None


def test_calendar_without_uid_is_skipped():
    """An object whose VEVENTs have no UID is not an invitation to consider."""
    raw = _cal_message(_event().replace("UID:u1@example.com\n", ""))
    assert parse_message(raw).skip_reason == "no event"


def test_octet_stream_ics_with_encoded_name_is_found():
    """An application/octet-stream .ics whose name is RFC 2047-encoded is still a candidate."""
    raw = (
        "From: o@example.com\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\n"
        'Content-Type: application/octet-stream; name="=?utf-8?B?aW52aXRlLmljcw==?="\n\n'
        + _event()
        + "--b--\n"
    ).encode()
    assert may_contain_calendar(raw)
    assert parse_message(raw).skip_reason == ""


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_fast_path_agrees_with_parse(path):
    """may_contain_calendar is never False for a message parse_message treats as an invitation."""
    raw = path.read_bytes()
    if parse_message(raw).skip_reason == "":
        assert may_contain_calendar(raw)


def test_fast_path_rejects_plain_text():
    """A message without any calendar marker takes the cheap path."""
    assert not may_contain_calendar(b"Subject: hi\r\n\r\nJust text, see attached.pdf\r\n")


def test_many_events_are_bounded():
    """An object with 100 000 VEVENTs is refused quickly instead of read in full."""
    events = "".join(
        f"BEGIN:VEVENT\nUID:{i}\nDTSTART:20260701T100000Z\nEND:VEVENT\n" for i in range(100_000)
    )
    raw = _cal_message(f"BEGIN:VCALENDAR\nMETHOD:REQUEST\n{events}END:VCALENDAR\n")
    started = time.perf_counter()
    parsed = parse_message(raw)
    assert parsed.skip_reason == "calendar too large"
    assert time.perf_counter() - started < 10


def test_many_attendees_are_capped():
    """10 000 attendees are read only up to the cap, quickly."""
    attendees = "".join(f"ATTENDEE:mailto:a{i}@example.org\n" for i in range(10_000))
    started = time.perf_counter()
    parsed = parse_message(_cal_message(_event(attendees)))
    assert len(parsed.calendar.events[0].attendees) == MAX_ATTENDEES
    assert time.perf_counter() - started < 10


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_parse_message_never_raises_on_random_bytes(data):
    """Arbitrary bytes produce a ParsedMessage, never an exception."""
    parsed = parse_message(b"Content-Type: text/calendar\r\n\r\n" + data)
    assert isinstance(parsed.skip_reason, str)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(FIXTURES), st.integers(min_value=0), st.integers(min_value=1, max_value=50))
def test_parse_message_never_raises_on_truncated_fixtures(path, cut, length):
    """Fixtures with a slice cut out still parse without raising."""
    raw = path.read_bytes()
    cut %= max(1, len(raw))
    parsed = parse_message(raw[:cut] + raw[cut + length :])
    assert isinstance(parsed.skip_reason, str)


# --- lenient reading of producer shapes -------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "method", "start", "summary"),
    [
        # LF-only lines, IANA TZID without VTIMEZONE
        ("bare_calendar.eml", "REQUEST", datetime(2026, 7, 6, 13, 0, tzinfo=UTC), None),
        # TAB folding, a UTF-8 BOM before BEGIN:VCALENDAR, windows-1251 bodies
        ("outlook_ru.eml", "REQUEST", datetime(2031, 3, 25, 8, 0, tzinfo=UTC), "План на квартал"),
        # 86-octet and 1000+ octet unfolded lines
        ("zimbra.eml", "REQUEST", datetime(2031, 3, 20, 8, 0, tzinfo=UTC), "Regional review"),
        # escaped comma in the VTIMEZONE TZID, Latin-1 bytes in an 8bit part without charset,
        # Content-Transfer-Encoding written "8Bit" and "Base64"
        (
            "exchange2003_tijuana.eml", "REQUEST",
            datetime(2031, 3, 22, 15, 30, tzinfo=UTC), "Revisión trimestral",
        ),  # fmt: skip
        # CTE "Quoted-Printable" on the calendar part
        ("ios.eml", "REQUEST", datetime(2031, 3, 17, 14, 30, tzinfo=UTC), "Design review"),
        # ks_c_5601-1987 bodies, CTE "BASE64"
        ("exchange_korean.eml", "REQUEST", datetime(2031, 3, 24, 1, 0, tzinfo=UTC), "주간 회의"),
        # method=request in lower case, ORGANIZER as a principal with EMAIL
        ("calendarserver.eml", "REQUEST", datetime(2031, 3, 26, 13, 0, tzinfo=UTC), "Interview"),
        # METHOD missing inside (the header's method= counts), TZID="FLE" without VTIMEZONE
        ("notes.eml", "REQUEST", datetime(2031, 3, 21, 8, 0, tzinfo=UTC), "Vuosisuunnittelu"),
        # KOI8-R text body, calendar as an attachment inside multipart/alternative
        ("roundcube.eml", "REQUEST", datetime(2031, 3, 13, 12, 0, tzinfo=UTC), "Планёрка"),
        # libical's "/freeassociation.sourceforge.net/..." TZID with its VTIMEZONE, single part
        ("evolution.eml", "REQUEST", datetime(2031, 3, 15, 9, 0, tzinfo=UTC), "Совещание"),
    ],
)
def test_producer_quirks_are_read(message_bytes, name, method, start, summary):
    """Each producer quirk is read: the method, the true UTC start and the decoded summary."""
    parsed = parse_message(message_bytes(name))
    assert parsed.skip_reason == ""
    assert parsed.method == method
    event = parsed.calendar.events[0]
    assert event.start == start
    if summary is not None:
        assert event.summary == summary


def test_lower_case_method_parameter_and_principal_organizer(message_bytes):
    """CalendarServer's method=request is kept as found; its organizer is the EMAIL address."""
    parsed = parse_message(message_bytes("calendarserver.eml"))
    assert [p.header_method for p in parsed.calendar_parts] == ["request"]
    assert parsed.calendar.events[0].organizer == "adam@example.com"


def test_notes_copies_in_calendar_part_and_text_plain_attachment(message_bytes):
    """Notes' text/calendar and its .ics sent as text/plain attachment are both calendar copies."""
    parsed = parse_message(message_bytes("notes.eml"))
    assert parsed.calendar.method == ""
    assert [p.content_type for p in parsed.calendar_parts] == ["text/calendar", "text/plain"]


def test_zoom_calendar_without_any_method_is_not_itip(message_bytes):
    """Zoom's attachment has neither method= nor METHOD: it is no iTIP message."""
    parsed = parse_message(message_bytes("zoom.eml"))
    assert parsed.skip_reason == "" and parsed.method == ""


def test_double_semicolon_method_parameter():
    """Zoom webinar mail's 'method=REQUEST;; charset=UTF-8' still yields the method."""
    raw = _cal_message(_event()).replace(
        b"charset=utf-8; method=REQUEST", b"method=REQUEST;; charset=UTF-8"
    )
    parsed = parse_message(raw)
    assert parsed.calendar_parts[0].header_method == "REQUEST"


def test_ks_c_5601_label_decodes_microsofts_superset():
    """ks_c_5601-1987 is read as cp949, so syllables outside EUC-KR decode too."""
    text, codec = decode_text("주간 똥".encode("cp949"), "ks_c_5601-1987")
    assert (text, codec) == ("주간 똥", "cp949")
    assert valid_charset('"KS_C_5601-1987"') == "cp949"


def test_copies_differing_only_in_properties_are_an_invitation():
    """Two copies with one UID but different attendees are read (each is rewritten on its own)."""
    first = _event("ATTENDEE:mailto:a@example.org\n")
    second = _event("ATTENDEE:mailto:b@example.org\n")
    parsed = parse_message(_two_copies(first, second))
    assert parsed.skip_reason == ""
    assert parsed.calendar.events[0].attendees[0].address == "a@example.org"


def test_copies_with_different_uids_are_skipped():
    """Copies that are different invitations (another UID or METHOD) are not acted on."""
    other = _event().replace("UID:u1@example.com", "UID:u2@example.com")
    assert parse_message(_two_copies(_event(), other)).skip_reason == "calendar copies differ"
    cancel = _event().replace("METHOD:REQUEST", "METHOD:CANCEL")
    assert parse_message(_two_copies(_event(), cancel)).skip_reason == "calendar copies differ"


def _two_copies(first: str, second: str) -> bytes:
    return (
        "From: o@example.com\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n"
        f"--b\nContent-Type: text/calendar; method=REQUEST\n\n{first}--b\n"
        f"Content-Type: application/ics; name=invite.ics\n\n{second}--b--\n"
    ).encode()


_FROM_PIECES = st.sampled_from(["Alice", "Example", " ", "\t", ".", ",", '"', "\\", "<", ">", "@",
                                "(", ")", ":", ";", "a.b", "x", "Ü", "=?utf-8?q?A?=", "!#$%&'*+/=?^_`{|}~-"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_FROM_PIECES, max_size=12), st.sampled_from(["", "<", "<x"]))
def test_the_from_address_agrees_with_the_email_package(pieces, prefix):
    """The From address read by the fast path for plain fields equals what getaddresses reads."""
    from email.utils import getaddresses

    from mailhook.core.mime import _from_address
    from mailhook.core.mimetree import decode_words

    value = prefix + "".join(pieces) + (" <Bob.B@Example.COM>" if len(pieces) % 2 else "")
    headers = parse_headers(f"From: {value}\r\n".encode(), "text/plain")
    decoded = decode_words(str(headers.get("from", "")))
    slow = [a for _n, a in getaddresses([decoded]) if "@" in a]
    assert _from_address(headers) == (slow[0].lower() if slow else "")


def test_a_plain_from_field_is_read_without_the_address_parser():
    """A display name and an address in angle brackets, or a bare address, is read directly."""
    from mailhook.core.mime import _PLAIN_FROM

    for value, address in (("Alice Example <Alice@Example.com>", "Alice@Example.com"),
                           ('"Example, Alice" <a.b@example.com>', "a.b@example.com"),
                           ("alice@example.com", "alice@example.com")):
        match = _PLAIN_FROM.fullmatch(value)
        assert match is not None and (match.group(1) or match.group(2)) == address
    assert _PLAIN_FROM.fullmatch("Alice (work) <a@example.com>") is None
    assert _PLAIN_FROM.fullmatch("a@example.com, b@example.com") is None


def test_every_fast_path_marker_is_looked_for_behind_its_key():
    """Each marker of the calendar test is searched for once its shorter key is found, so the
    two-step search finds exactly what a search for every marker would."""
    from mailhook.core.mime import _FAST_PATH_MARKERS, _MARKERS_BY_KEY

    behind_keys = [marker for key, markers in _MARKERS_BY_KEY for marker in markers if key in marker]
    assert sorted(behind_keys) == sorted(_FAST_PATH_MARKERS)
    for marker in _FAST_PATH_MARKERS:
        assert may_contain_calendar(b"Subject: x\r\n\r\n" + b"X" * 3000 + marker.upper() + b"X" * 100)
    assert not may_contain_calendar(b"Subject: x\r\n\r\n" + b"X" * 4000)


def test_a_field_over_the_parameter_budget_is_read_as_without_parameters():
    """A Content-Type whose parameters are over the email package's work budget counts as
    having none, whether or not its parameters are in the plain shape: here no boundary, so
    the calendar inside is not looked at (the message passes as it came)."""
    padding = "".join(f";\r\n x{number}={'a' * 100}" for number in range(100))
    event = ("BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:u1\r\n"
             "DTSTART:20310101T100000Z\r\nDTEND:20310101T110000Z\r\n"
             "ORGANIZER:mailto:a@example.com\r\nATTENDEE:mailto:b@example.com\r\n"
             "END:VEVENT\r\nEND:VCALENDAR\r\n")
    raw = ("From: a@example.com\r\nContent-Type: multipart/mixed; boundary=BB" + padding
           + "\r\n\r\n--BB\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\n" + event
           + "--BB--\r\n").encode()
    parsed = parse_message(raw)
    assert (parsed.skip_reason, parsed.calendar) == ("no calendar", None)
    within = raw.replace(padding.encode(), b"")
    assert parse_message(within).calendar is not None
