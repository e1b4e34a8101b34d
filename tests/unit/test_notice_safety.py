"""Property: whatever text an invitation holds, the notices built from it keep their own headers
and body, read back by the stdlib parser."""

from __future__ import annotations

import base64
import email
import email.policy
import re
from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from mailhook.core.notice import NoticeFacts, build_action_notice, build_notice
from tests.support import reliability

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)
HEADERS = ["Auto-Submitted", "Content-Transfer-Encoding", "Content-Type", "Date", "From",
           "MIME-Version", "Message-ID", "Subject", "To"]
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
        assert sorted(message.keys()) == HEADERS
        assert message["To"] in (organizer, "undisclosed-recipients:;")
        assert not CONTROL.search(str(message["Subject"]))
        assert not CONTROL.search(str(message["To"]))
        assert message.get_content_type() == "text/plain"
        assert len(message.get_content().splitlines()) in (5, 11)  # the notice's own lines
