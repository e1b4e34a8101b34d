"""``holds_no_calendar``: the header-only test the milter answers ordinary mail with agrees
with what ``parse_message`` finds in the whole message."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailhook.core.mime import holds_no_calendar, parse_message

CALENDAR = (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\n"
            b"UID:u1\r\nDTSTART:20270105T090000Z\r\nORGANIZER:mailto:alice@example.com\r\n"
            b"LOCATION:TrueConf\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
TYPES = ["text/plain", "text/html", "TEXT/PLAIN", "text/calendar", "application/ics",
         "application/octet-stream", "text/x-vcalendar", "application/x-ics", "image/png",
         "multipart/mixed", "multipart/alternative", "multipart/signed", "message/rfc822",
         "application/pkcs7-mime", "application/ms-tnef", "text/plain/extra", "", "bogus"]
PARAMS = ["", "; charset=utf-8", "; name=invite.ics", '; name="notes.txt"',
          "; name*=utf-8''invite%2Eics", "; name==?utf-8?q?invite.ics?=", "; method=REQUEST",
          "; boundary=b1", "; name=INVITE.ICS"]
DISPOSITIONS = ["", "Content-Disposition: attachment; filename=invite.ics\r\n",
                "Content-Disposition: inline\r\n",
                "Content-Disposition: attachment; filename*=utf-8''x.ics\r\n"]
BODIES = [b"Hello.\r\n", CALENDAR, b"--b1\r\nContent-Type: text/calendar\r\n\r\n" + CALENDAR
          + b"--b1--\r\n", b"Content-Type: text/calendar\r\n\r\n" + CALENDAR,
          b"QkVHSU46VkNBTEVOREFS\r\n"]


def head(content_type: str, params: str, disposition: str) -> bytes:
    fields = "From: alice@example.com\r\nTo: bob@example.com\r\nSubject: x\r\n"
    if content_type or params:
        fields += f"MIME-Version: 1.0\r\nContent-Type: {content_type}{params}\r\n"
    return (fields + disposition + "\r\n").encode()


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(TYPES), st.sampled_from(PARAMS), st.sampled_from(DISPOSITIONS),
       st.sampled_from(BODIES), st.sampled_from(["", "Content-Transfer-Encoding: base64\r\n"]))
def test_header_only_answer_agrees_with_the_whole_message(content_type, params, disposition,
                                                          body, encoding):
    """Whenever the header section alone says "no calendar", parsing the whole message, any
    body, finds no calendar and no other reason either."""
    section = head(content_type, params, disposition + encoding)
    if holds_no_calendar(section):
        parsed = parse_message(section + body)
        assert parsed.calendar is None and parsed.skip_reason == "no calendar"


def test_single_part_calendar_shapes_are_not_answered_early():
    """A calendar type, a text or octet-stream part named .ics, multipart and S/MIME all need
    the body; plain text and HTML do not."""
    assert holds_no_calendar(head("text/plain", "; charset=utf-8", ""))
    assert holds_no_calendar(head("text/html", "", ""))
    assert holds_no_calendar(head("", "", ""))  # no Content-Type: text/plain
    for kind, params, disposition in [
        ("text/calendar", "; method=REQUEST", ""),
        ("application/ics", "", ""),
        ("text/plain", "; name=invite.ics", ""),
        ("application/octet-stream", "", DISPOSITIONS[1]),
        ("multipart/mixed", "; boundary=b1", ""),
        ("application/pkcs7-mime", "", ""),
        ("message/rfc822", "", ""),
    ]:
        assert not holds_no_calendar(head(kind, params, disposition)), kind
