"""The organizer notice keeps its own headers and body whatever the invitation holds: text from
the invitation can never end a header line, add a header or start a body. Through the real
daemon, the TrueConf stand-in and a sink; the notice is read back with the stdlib parser."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import re
from dataclasses import replace

import pytest

from mailhook.testing.sink import Sink
from tests.integration.conftest import send
from tests.support import reliability
from tests.support.invites import Event, thunderbird
from tests.support.trace import untraced

# The organizer notice is multipart/alternative (text and HTML); the action notice is one
# text/plain part, with its Content-Transfer-Encoding in the message's own head.
NOTICE_HEADERS = ["Auto-Submitted", "Content-Type", "Date", "From", "MIME-Version", "Message-ID",
                  "Subject", "To"]
ACTION_HEADERS = sorted([*NOTICE_HEADERS, "Content-Transfer-Encoding"])
INJECTED = re.compile(r"^(content-type: text/html|bcc|x-evil|cc|reply-to)\b", re.IGNORECASE | re.MULTILINE)
EVIL = b"=?utf-8?q?Q3=0D=0AContent-Type:_text/html=0D=0A=0D=0A<p>evil</p>?="
NESTED = base64.b64encode(b"=?utf-8?q?Q3=0D=0ABcc:_victim@example.net?=").decode()


def organizer_cn(raw: bytes, cn: bytes) -> bytes:
    """The invitation with another CN on its ORGANIZER."""
    return raw.replace(b"ORGANIZER;CN=Alice Example:", b'ORGANIZER;CN="' + cn + b'":')


def attendee_cn(raw: bytes, cn: bytes) -> bytes:
    """The invitation with another CN on Bob's ATTENDEE line (his name goes into the notice)."""
    return raw.replace(b"CN=Bob;", b'CN="' + cn + b'";')


# name -> (SUMMARY, how the message is changed after it is built)
HOSTILE = {
    "encoded-word CR LF, HTML body": (EVIL.decode(), None),
    "encoded-word in an encoded word": (f"=?utf-8?b?{NESTED}?=", None),
    "iCalendar-escaped line breaks": (r"Q3\nBcc: victim@example.net\N\nX-Evil: 1", None),
    "NUL and C1 and U+2028 in SUMMARY": ("Q3\x00Bcc: victim@example.net\x85X-Evil: 1\u2028Cc: x@y",
                                         None),
    "encoded NUL and DEL": ("=?utf-8?q?Q3=00=7FBcc:_victim@example.net?=", None),
    "long SUMMARY without spaces": ("x" * 5000, None),
    "long SUMMARY in Cyrillic": ("Встреча " * 700, None),
    "encoded-word in ORGANIZER CN": (
        "Quarterly planning",
        lambda raw: organizer_cn(raw, b"=?utf-8?q?Alice=0D=0ABcc:_victim@example.net?=")),
    "encoded-word in ATTENDEE CN": (
        "Quarterly planning",
        lambda raw: attendee_cn(raw, b"=?utf-8?q?Bob=0D=0AX-Evil:_1=0D=0A=0D=0Aevil?=")),
    "RFC 6868 line break in ATTENDEE CN": (
        "Quarterly planning", lambda raw: attendee_cn(raw, b"Bob^nX-Evil: 1^n^nevil")),
    "HTML in SUMMARY and ATTENDEE CN": (
        '<script>alert(1)</script><a href="javascript:alert(2)">Q3</a>',
        lambda raw: attendee_cn(raw, b"<img src=x onerror=alert(3)>")),
}


def notices(sink: Sink) -> list:
    """Organizer notices the sink got."""
    return [m for m in sink.messages if b"Auto-Submitted: auto-generated" in m.content]


async def one_notice(sink: Sink) -> bytes:
    """The one organizer notice, once it has arrived (it is sent after the invitation)."""
    for _ in range(250):
        if notices(sink):
            break
        await asyncio.sleep(0.02)
    [notice] = notices(sink)
    return notice.content


def assert_well_formed(raw: bytes) -> None:
    """Only CRLF line ends, no line over 998 octets (RFC 5322 section 2.1.1)."""
    assert b"\r" not in raw.replace(b"\r\n", b"") and b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\x00" not in raw
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def assert_own_headers(raw: bytes, action: bool = False) -> email.message.EmailMessage:
    """Exactly the notice's own header fields, each once; no injected field anywhere in the head;
    exactly its own parts (text and HTML; one text part for the action notice)."""
    # The trace field on top is the relay's, put on every message mailhook sends on.
    message = email.message_from_bytes(untraced(raw), policy=email.policy.default)
    assert sorted(message.keys()) == (ACTION_HEADERS if action else NOTICE_HEADERS)
    assert not message.defects
    assert message["From"] == "noreply@example.com"
    assert message["To"] == "alice@example.com"
    parts = ["text/plain"] if action else ["multipart/alternative", "text/plain", "text/html"]
    assert [part.get_content_type() for part in message.walk()] == parts
    assert not any(part.defects for part in message.walk())
    head = raw.partition(b"\r\n\r\n")[0].decode("ascii")
    assert not INJECTED.search(head)
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", str(message["Subject"]))
    return message


def text_of(message: email.message.EmailMessage) -> str:
    """The notice's text part."""
    return message.get_body(("plain",)).get_content()


@pytest.mark.parametrize("name", HOSTILE)
async def test_notice_keeps_its_own_headers_and_body(daemon, standin, sink, name):
    """A hostile SUMMARY or CN ends up as text on one line, never as a header or a part."""
    summary, change = HOSTILE[name]
    raw = thunderbird(replace(Event(), summary=summary))
    raw = change(raw) if change else raw
    reliability.hostile(f"notice header injection: {name}")
    assert (await send(daemon, raw))[0] == 250
    notice = await one_notice(sink)
    assert_well_formed(notice)
    message = assert_own_headers(notice)
    url = next(iter(standin.conferences.values()))["url"]
    lines = text_of(message).splitlines()
    assert lines[0] == "Your invitation now carries a TrueConf video conference."
    assert [line.split(":")[0] for line in lines if line] == [
        lines[0], "Topic", "Time", "Link", "In their TrueConf accounts", "Joining by the link",
        "-- ", "This message was sent automatically; there is no need to reply."]
    assert f"Link: {url}" in lines
    assert not INJECTED.search(text_of(message))
    page = message.get_body(("html",)).get_content()
    assert not re.search(r"<(p>evil|script|img|a href=\"javascript)", page)
    assert page.count("<a ") == 2 and page.count(f'href="{url}"') == 2  # the button, the link


async def test_evil_summary_reads_as_one_line_of_text(daemon, standin, sink):
    """The encoded words of the SUMMARY are read and put on one line, in Subject and body alike."""
    await send(daemon, thunderbird(replace(Event(), summary=EVIL.decode())))
    message = email.message_from_bytes(await one_notice(sink), policy=email.policy.default)
    topic = "Q3 Content-Type: text/html <p>evil</p>"
    assert message["Subject"] == f"TrueConf conference: {topic}"
    assert f"Topic: {topic}" in text_of(message).splitlines()
    page = message.get_body(("html",)).get_content()
    assert "Q3 Content-Type: text/html &lt;p&gt;evil&lt;/p&gt;" in page


async def test_action_notice_keeps_its_own_headers(start_daemon, standin, sink):
    """The "action required" notice, sent when TrueConf is down past the deadline, is as safe."""
    daemon = await start_daemon(retry={"deadline": 0})
    standin.fail_next(10, 503)
    reliability.hostile("action notice header injection")
    raw = thunderbird(replace(Event(), summary=EVIL.decode()))
    assert (await send(daemon, raw))[0] == 250
    notice = await one_notice(sink)
    assert_well_formed(notice)
    message = assert_own_headers(notice, action=True)
    assert message["Subject"].startswith("Action required: no TrueConf conference for Q3 ")
    assert message.get_content().startswith("Your invitation \u201cQ3 Content-Type: text/html")
