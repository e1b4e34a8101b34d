"""Property: whatever text an invitation holds, the notices built from it keep their own headers
and body, read back by the stdlib parser."""

from __future__ import annotations

import base64
import email
import email.policy
import html
import re
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from mailhook.core.notice import (
    NoticeFacts,
    build_action_notice,
    build_notice,
    header_text,
    one_line,
)
from tests.support import reliability

NOW = datetime(2030, 1, 1, tzinfo=UTC)
# The organizer notice is multipart/alternative; the action notice one text/plain part.
HEADERS = ["Auto-Submitted", "Content-Type", "Date", "From", "MIME-Version", "Message-ID",
           "Subject", "To"]
ACTION_HEADERS = sorted([*HEADERS, "Content-Transfer-Encoding"])
PART_HEADERS = ["Content-Transfer-Encoding", "Content-Type"]
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# The pieces hostile text is made of: encoded-word syntax, line breaks, quotes, 8-bit, length.
PIECES = ["=?utf-8?q?", "=?utf-8?b?", "=?iso-8859-1?q?", "=?x-unknown?q?", "?=", "=?", "?", "=",
          "=0D", "=0A", "=00", "_", "\r", "\n", "\x00", "\x85", "\u2028", "\t", " ", "Bcc:",
          "Content-Type: text/html", '"', "\\", "@", "<", ">", "(", ")", ",", ";", ":", "я",
          "\ud800", "x" * 120]


def encoded(text: str, kind: str) -> str:
    """``text`` as one encoded word of the given kind ("b" or "q")."""
    data = text.encode("utf-8", "surrogatepass")
    body = base64.b64encode(data).decode() if kind == "b" else "".join(f"={b:02X}" for b in data)
    return f"=?utf-8?{kind}?{body}?="


@st.composite
def hostile_text(draw: st.DrawFn) -> str:
    """Text built from the pieces, wrapped in up to five layers of encoded words."""
    text = "".join(draw(st.lists(st.sampled_from(PIECES), max_size=30)))
    for kind in draw(st.lists(st.sampled_from("bq"), max_size=5)):
        text = encoded(text, kind)
    return text


@settings(max_examples=300, deadline=None)
@given(topic=hostile_text(), name=hostile_text(), local=hostile_text(), refusal=hostile_text())
def test_notices_keep_their_headers_whatever_the_text(topic, name, local, refusal):
    """No topic, attendee name, organizer address or refusal adds a header or a line break."""
    reliability.hostile("generated notice text")
    organizer = f"{local}@example.com"
    facts = NoticeFacts(organizer, topic, 1900000000, 3600, 0, "https://video.example.com/c/1",
                        (name,), (name,))
    notices = (build_notice(facts, "noreply@example.com", "en", NOW),
               build_action_notice(organizer, topic, 0, "noreply@example.com", "ru", NOW, refusal))
    for raw in notices:
        assert b"\r" not in raw.replace(b"\r\n", b"") and b"\n" not in raw.replace(b"\r\n", b"")
        assert max(len(line) for line in raw.split(b"\r\n")) <= 998
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert message["To"] in (organizer, "undisclosed-recipients:;")
        assert not CONTROL.search(str(message["Subject"]))
        assert not CONTROL.search(str(message["To"]))
    notice, action = (email.message_from_bytes(raw, policy=email.policy.default)
                      for raw in notices)
    assert sorted(notice.keys()) == HEADERS
    assert [part.get_content_type() for part in notice.walk()] == [
        "multipart/alternative", "text/plain", "text/html"]
    assert all(sorted(part.keys()) == PART_HEADERS for part in notice.iter_parts())
    assert len(notice.get_body(("plain",)).get_content().splitlines()) == 11  # its own lines
    assert sorted(action.keys()) == ACTION_HEADERS
    assert action.get_content_type() == "text/plain"
    assert len(action.get_content().splitlines()) == 5


ZONES = [None, "Europe/Moscow", "America/St_Johns", "Nowhere/Unknown", UTC]
ANY_TEXT = st.one_of(hostile_text(), st.text(alphabet=st.characters(codec="utf-8"), max_size=250))


@settings(max_examples=300, deadline=None)
@given(topic=ANY_TEXT, names=st.lists(ANY_TEXT, max_size=4), host=ANY_TEXT,
       language=st.sampled_from(["en", "ru", "de"]), zone=st.sampled_from(ZONES),
       recurring=st.booleans(), updated=st.booleans())
def test_notice_parses_into_its_own_structure(topic, names, host, language, zone, recurring,
                                              updated):
    """Whatever the topic, names and language, the stdlib reads the notice as exactly its own
    header fields, a text and an HTML part, the topic as written and no line from the text."""
    facts = NoticeFacts("alice@example.com", topic, 1900000000, 3600, 0,
                        "https://video.example.com/c/1", tuple(names), tuple(reversed(names)),
                        updated=updated, zone=zone, recurring=recurring, hosted_by=host)
    raw = build_notice(facts, "noreply@example.com", language, NOW)
    head = raw.partition(b"\r\n\r\n")[0]
    assert head.isascii() and max(len(line) for line in head.split(b"\r\n")) <= 78
    assert b"\r" not in raw.replace(b"\r\n", b"") and b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 76 + 2  # base64 or quoted-printable
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert sorted(message.keys()) == HEADERS and not message.defects
    assert [part.get_content_type() for part in message.walk()] == [
        "multipart/alternative", "text/plain", "text/html"]
    assert all(sorted(part.keys()) == PART_HEADERS and not part.defects
               for part in message.iter_parts())
    assert message["To"] == "alice@example.com" and message["From"] == "noreply@example.com"
    written = header_text(topic)
    assert str(message["Subject"]).endswith(written) and not CONTROL.search(message["Subject"])
    lines = message.get_body(("plain",)).get_content().splitlines()
    assert len(lines) == 11 + recurring + bool(one_line(host))
    assert any(line.endswith(f": {written}") for line in lines)
    page = message.get_body(("html",)).get_content()
    assert html.escape(written) in page and page.count("<a ") == 2
