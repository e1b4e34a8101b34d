"""Malformed and hostile messages through the real daemon: delivered, never a crash or a 5xx."""

from __future__ import annotations

import base64
import re
from dataclasses import replace

import pytest

from mailhook.relay import wire_form
from tests.integration.conftest import send
from tests.support import reliability
from tests.support.daemon import calendars_in, invitations
from tests.support.invites import Event, calendar, plain_mail, single_part, thunderbird
from tests.support.trace import untraced

EVENT = Event()


def wrapped(ics: str) -> bytes:
    """A single-part invitation around an iCalendar text."""
    return single_part(ics, "REQUEST")


def many_attendees(count: int) -> bytes:
    """An invitation with ``count`` attendees."""
    return thunderbird(replace(EVENT, attendees=tuple(f"p{i}@example.org" for i in range(count))))


def many_components(count: int) -> bytes:
    """A calendar object: the invitation's VEVENT, then ``count`` small components."""
    one = calendar(EVENT)
    head, _, tail = one.rpartition("END:VCALENDAR")
    extra = "".join(f"BEGIN:VTODO\r\nUID:t{i}\r\nEND:VTODO\r\n" for i in range(count))
    return wrapped(head + extra + "END:VCALENDAR\r\n")


def over_smtp(raw: bytes) -> bytes:
    """The message as SMTP carries it: CRLF line ends, ending with a line end."""
    lines = re.sub(rb"\r\n|\r|\n", b"\r\n", raw)
    return lines if lines.endswith(b"\r\n") else lines + b"\r\n"


def deep_nesting(depth: int) -> bytes:
    """An invitation nested ``depth`` multiparts deep."""
    inner = thunderbird(EVENT).split(b"\r\n\r\n", 1)[1]
    part = b'Content-Type: multipart/mixed; boundary="Boundary_(ID_outer)"\r\n\r\n' + inner
    for level in range(depth):
        part = (f'Content-Type: multipart/mixed; boundary="n{level}"\r\n\r\n--n{level}\r\n'.encode()
                + part + f"\r\n--n{level}--\r\n".encode())
    return b"From: alice@example.com\r\nSubject: deep\r\nMIME-Version: 1.0\r\n" + part


BAD = {
    "broken base64 calendar": thunderbird(EVENT).replace(
        b"Content-Transfer-Encoding: 8bit\r\n\r\nBEGIN:VCALENDAR",
        b"Content-Transfer-Encoding: base64\r\n\r\n!!!!not*base64\r\nBEGIN:VCALENDAR", 1),
    "broken quoted-printable": thunderbird(EVENT).replace(
        b"Content-Transfer-Encoding: 8bit", b"Content-Transfer-Encoding: quoted-printable", 1
    ).replace(b"You have been invited", b"=ZZ=\r\nYou have been invited", 1),
    "invalid UTF-8": thunderbird(EVENT).replace(b"Quarterly planning", b"Quarterly \xff\xfe\xc3(", 2),
    "huge header": plain_mail().replace(b"Subject: lunch", b"Subject: " + b"x" * 200_000, 1),
    "10 000 attendees": many_attendees(10_000),
    "100 000 components": many_components(100_000),
    "nesting 200 deep": deep_nesting(200),
    "no header/body separator": b"From: alice@example.com\r\nContent-Type: text/calendar",
    "empty message": b"",
    "binary junk": bytes(range(256)) * 40,
    "base64 calendar of garbage": wrapped("x").replace(b"8bit", b"base64").split(b"\r\n\r\n")[0]
    + b"\r\n\r\n" + base64.encodebytes(bytes(range(256)) * 20).replace(b"\n", b"\r\n"),
}


@pytest.mark.parametrize("name", list(BAD))
async def test_bad_input_is_delivered_and_daemon_keeps_serving(daemon, standin, sink, name):
    """Each malformed or hostile message gets 250, reaches the next hop, and the daemon goes on."""
    raw = BAD[name]
    reliability.bad_input(name)
    code, text = await send(daemon, raw)
    assert code == 250, text
    delivered = untraced(invitations(sink)[0].content)
    # Unchanged (in SMTP's wire form: long lines folded), or handled with a link.
    assert delivered == wire_form(over_smtp(raw)) or b"/c/" in delivered
    assert (await send(daemon, plain_mail()))[0] == 250
    assert len(invitations(sink)) == 2


async def test_injection_through_summary_stays_inside_the_topic(daemon, standin, sink):
    """Line breaks and iCalendar syntax in SUMMARY end up as one topic line, nowhere else."""
    evil = r"Sync\nBEGIN:VALARM\nX-INJECT:1\; ATTENDEE:mailto:eve@example.org"
    await send(daemon, thunderbird(replace(EVENT, summary=evil)))
    [conference] = standin.conferences.values()
    assert "\n" not in conference["topic"] and "\r" not in conference["topic"]
    [cal, _] = calendars_in(invitations(sink)[0].content)
    vevent = cal.walk("VEVENT")[0]
    assert not vevent.walk("VALARM")
    assert "X-INJECT" not in vevent
    assert [str(a) for a in vevent.get("ATTENDEE")] == [
        "mailto:bob@example.com", "mailto:zoe@example.net"]
    reliability.bad_input("iCalendar injection through SUMMARY")


async def test_html_in_summary_is_not_injected_into_bodies(daemon, standin, sink):
    """HTML in the event never reaches the inserted blocks: mailhook adds no markup of its own."""
    raw = thunderbird(replace(EVENT, summary="<script>alert(1)</script>"))
    await send(daemon, raw)
    delivered = invitations(sink)[0].content
    assert b"/c/" in delivered
    assert delivered.count(b"<script>") == raw.count(b"<script>")
    reliability.bad_input("HTML injection through SUMMARY")


async def test_command_flood_is_cut_off(start_daemon, standin, sink):
    """A client repeating NOOP past smtp.command_call_limit is dropped with 421."""
    import aiosmtplib

    daemon = await start_daemon(smtp={"command_call_limit": 5})
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=daemon.port, timeout=10, start_tls=False)
    await client.connect()
    codes = []
    for _ in range(8):
        try:
            codes.append((await client.noop()).code)
        except aiosmtplib.SMTPException as exc:
            codes.append(getattr(exc, "code", 421))
            break
    client.close()
    reliability.bad_input("NOOP flood")
    assert codes[:5] == [250] * 5 and codes[-1] == 421


async def test_untrusted_client_is_refused_at_connect(start_daemon, standin, sink):
    """A client outside smtp.trusted_networks gets 554 in the greeting and nothing else."""
    import aiosmtplib

    daemon = await start_daemon(smtp={"trusted_networks": ["192.0.2.0/24"]})
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=daemon.port, timeout=10, start_tls=False)
    with pytest.raises(aiosmtplib.SMTPConnectError, match="554"):
        await client.connect()
    assert invitations(sink) == []


async def test_many_messages_in_one_session_are_not_limited(start_daemon, standin, sink):
    """Mail commands are not counted against the limit: a long MTA session keeps working."""
    import aiosmtplib

    daemon = await start_daemon(smtp={"command_call_limit": 3})
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=daemon.port, timeout=10, start_tls=False)
    await client.connect()
    for _ in range(10):
        await client.sendmail("alice@example.com", ["bob@example.com"], plain_mail())
    await client.quit()
    assert len(invitations(sink)) == 10
