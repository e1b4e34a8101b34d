"""Invitation messages for tests, in the shape Thunderbird and Exchange send them."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

FUTURE = datetime(2031, 3, 10, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Event:
    """What an organizer's client would put into the invitation."""

    uid: str = "5f3c1d7e-1111-4a2b-9c3d-000000000001@example.com"
    organizer: str = "alice@example.com"
    attendees: tuple[str, ...] = ("bob@example.com", "zoe@example.net")
    summary: str = "Quarterly planning"
    location: str = "TrueConf"
    start: datetime = FUTURE
    duration: timedelta = timedelta(hours=1)
    method: str = "REQUEST"
    header_method: str | None = None  # defaults to method
    sequence: int = 0
    status: str = "CONFIRMED"
    description: str = "Agenda: numbers, plans."
    extra: tuple[str, ...] = field(default=())  # extra VEVENT lines


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def calendar(event: Event) -> str:
    """The iCalendar object, CRLF line endings."""
    lines = [
        "BEGIN:VCALENDAR",
        "PRODID:-//Mozilla.org/NONSGML Mozilla Calendar V1.1//EN",
        "VERSION:2.0",
        f"METHOD:{event.method}",
        "BEGIN:VEVENT",
        f"CREATED:{_stamp(FUTURE - timedelta(days=400))}",
        f"DTSTAMP:{_stamp(FUTURE - timedelta(days=300))}",
        f"UID:{event.uid}",
        f"SUMMARY:{event.summary}",
        f"ORGANIZER;CN=Alice Example:mailto:{event.organizer}",
    ]
    for address in event.attendees:
        name = address.split("@")[0].title()
        lines.append(
            f"ATTENDEE;RSVP=TRUE;CN={name};PARTSTAT=NEEDS-ACTION;ROLE=REQ-PARTICIPANT:mailto:{address}"
        )
    lines += [
        f"DTSTART:{_stamp(event.start)}",
        f"DTEND:{_stamp(event.start + event.duration)}",
        f"SEQUENCE:{event.sequence}",
        f"STATUS:{event.status}",
    ]
    if event.location:
        lines.append(f"LOCATION:{event.location}")
    if event.description:
        lines.append(f"DESCRIPTION:{event.description}")
    lines += [*event.extra, "END:VEVENT", "END:VCALENDAR"]
    return "\r\n".join(lines) + "\r\n"


def thunderbird(event: Event, message_id: str = "<invite-1@example.com>") -> bytes:
    """mixed[alt[text/plain, text/calendar], application/ics attachment], 8bit, like Thunderbird."""
    ics = calendar(event)
    header_method = event.header_method if event.header_method is not None else event.method
    method_param = f"; method={header_method}" if header_method else ""
    parts = [
        f"From: Alice Example <{event.organizer}>",
        "To: " + ", ".join(event.attendees),
        f"Subject: Invitation: {event.summary}",
        f"Message-ID: {message_id}",
        "Date: Mon, 03 Mar 2031 10:00:00 +0000",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="Boundary_(ID_outer)"',
        "",
        "--Boundary_(ID_outer)",
        'Content-Type: multipart/alternative; boundary="Boundary_(ID_inner)"',
        "",
        "--Boundary_(ID_inner)",
        "Content-Type: text/plain; charset=UTF-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        f"You have been invited to {event.summary}.",
        "",
        "--Boundary_(ID_inner)",
        f"Content-Type: text/calendar{method_param}; charset=UTF-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        ics.rstrip("\r\n"),
        "",
        "--Boundary_(ID_inner)--",
        "",
        "--Boundary_(ID_outer)",
        "Content-Type: application/ics; name=invite.ics",
        "Content-Disposition: attachment; filename=invite.ics",
        "Content-Transfer-Encoding: 8bit",
        "",
        ics.rstrip("\r\n"),
        "",
        "--Boundary_(ID_outer)--",
        "",
    ]
    return "\r\n".join(parts).encode("utf-8")


def exchange(event: Event, message_id: str = "<exchange-1@example.com>") -> bytes:
    """alt[text/plain QP, text/html QP, text/calendar base64], like Exchange Online."""
    ics = base64.encodebytes(calendar(event).encode("utf-8")).decode().replace("\n", "\r\n")
    header_method = event.header_method if event.header_method is not None else event.method
    parts = [
        f"From: Alice Example <{event.organizer}>",
        "To: " + ", ".join(event.attendees),
        f"Subject: {event.summary}",
        f"Message-ID: {message_id}",
        "Date: Mon, 03 Mar 2031 10:00:00 +0000",
        "MIME-Version: 1.0",
        'Content-Type: multipart/alternative; boundary="_000_exchange_"',
        "",
        "--_000_exchange_",
        'Content-Type: text/plain; charset="iso-8859-1"',
        "Content-Transfer-Encoding: quoted-printable",
        "",
        "Let's meet.",
        "",
        "--_000_exchange_",
        'Content-Type: text/html; charset="iso-8859-1"',
        "Content-Transfer-Encoding: quoted-printable",
        "",
        "<html><body><p>Let's meet.</p></body></html>",
        "",
        "--_000_exchange_",
        f'Content-Type: text/calendar; charset="utf-8"; method={header_method}',
        "Content-Transfer-Encoding: base64",
        "",
        ics.rstrip("\r\n"),
        "",
        "--_000_exchange_--",
        "",
    ]
    return "\r\n".join(parts).encode("ascii")


def plain_mail(body: str = "Hello.\r\n", sender: str = "alice@example.com") -> bytes:
    """An ordinary message with no calendar in it."""
    return (
        f"From: {sender}\r\nTo: bob@example.com\r\nSubject: lunch\r\n"
        "Message-ID: <plain-1@example.com>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body
    ).encode("utf-8")


def vcalendar(method: str, *vevents: str, timezones: str = "") -> str:
    """A calendar object around the given VEVENT bodies (lines without BEGIN/END:VEVENT)."""
    blocks = "".join(f"BEGIN:VEVENT\r\n{body.strip()}\r\nEND:VEVENT\r\n" for body in vevents)
    blocks = blocks.replace("\r\n", "\n").replace("\n", "\r\n")
    return (
        "BEGIN:VCALENDAR\r\nPRODID:-//Example Corp.//Calendar 1.0//EN\r\nVERSION:2.0\r\n"
        f"METHOD:{method}\r\n{timezones}{blocks}END:VCALENDAR\r\n"
    )


def single_part(ics: str, method: str, organizer: str = "alice@example.com",
                message_id: str = "<single@example.com>") -> bytes:
    """A bare text/calendar message, as Evolution and CalDAV servers send them."""
    head = (
        f"From: {organizer}\r\nTo: bob@example.com\r\nSubject: Meeting\r\n"
        f"Message-ID: {message_id}\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/calendar; charset=UTF-8; method={method}\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    )
    return (head + ics).encode("utf-8")


def outlook_one_line_html(event: Event, html_octets: int = 3000,
                          message_id: str = "<outlook-1@example.com>") -> bytes:
    """alt[text/plain QP, text/html QP, text/calendar base64], like Outlook, with an HTML body
    written on one line of about ``html_octets`` octets: its quoted-printable form ends in a
    soft line break, so the decoded HTML has no line end at all."""
    paragraph = "<p class=MsoNormal><span lang=EN-US>Let's go through the plan.</span></p>"
    html = "<html><body>" + paragraph * (html_octets // len(paragraph)) + "</body></html>"
    html_qp = binascii.b2a_qp(html.encode("ascii")).decode("ascii").replace("=\n", "=\r\n")
    ics = base64.encodebytes(calendar(event).encode("utf-8")).decode().replace("\n", "\r\n")
    parts = [
        f"From: Alice Example <{event.organizer}>",
        "To: " + ", ".join(event.attendees),
        f"Subject: {event.summary}",
        f"Message-ID: {message_id}",
        "Date: Mon, 03 Mar 2031 10:00:00 +0000",
        "MIME-Version: 1.0",
        'Content-Type: multipart/alternative; boundary="_000_outlook_"',
        "",
        "--_000_outlook_",
        'Content-Type: text/plain; charset="us-ascii"',
        "Content-Transfer-Encoding: quoted-printable",
        "",
        "Let's go through the plan.",
        "",
        "--_000_outlook_",
        'Content-Type: text/html; charset="us-ascii"',
        "Content-Transfer-Encoding: quoted-printable",
        "",
        html_qp + "=",
        "",
        "--_000_outlook_",
        f'Content-Type: text/calendar; charset="utf-8"; method={event.method}',
        "Content-Transfer-Encoding: base64",
        "",
        ics.rstrip("\r\n"),
        "",
        "--_000_outlook_--",
        "",
    ]
    return "\r\n".join(parts).encode("ascii")
