"""What the daemon did, read from the TrueConf stand-in's requests and the sink's messages."""

from __future__ import annotations

import asyncio
import email
import email.policy

from icalendar import Calendar

from mailhook.testing.sink import Sink
from mailhook.testing.standin import StandIn


def api_calls(standin: StandIn, method: str, part: str = "/conferences") -> list:
    """Requests of one HTTP method to the conferences API."""
    return [r for r in standin.requests if r.method == method and part in r.path and "/api/" in r.path]


def calendars_in(raw: bytes) -> list[Calendar]:
    """Every calendar object of a message, parsed by icalendar."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    found = []
    for part in message.walk():
        if part.get_content_type() in ("text/calendar", "application/ics"):
            found.append(Calendar.from_ical(part.get_payload(decode=True)))
    return found


def text_bodies(raw: bytes) -> list[str]:
    """Every text/plain and text/html body, decoded."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    return [
        part.get_content()
        for part in message.walk()
        if part.get_content_type() in ("text/plain", "text/html") and not part.is_attachment()
    ]


def invitations(sink: Sink) -> list:
    """Messages the sink got, other than organizer notices."""
    return [m for m in sink.messages if b"Auto-Submitted: auto-generated" not in m.content]


def notices(sink: Sink) -> list:
    """Organizer notices the sink got."""
    return [m for m in sink.messages if b"Auto-Submitted: auto-generated" in m.content]

async def wait_notices(sink: Sink, count: int) -> list:
    """Wait (briefly) for organizer notices, which are sent after the invitation."""
    for _ in range(100):
        if len(notices(sink)) >= count:
            break
        await asyncio.sleep(0.02)
    return notices(sink)
