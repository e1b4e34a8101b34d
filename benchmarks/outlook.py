"""Invitations in the shape Outlook and Exchange send, for the benchmark.

What makes the shape (as in the Outlook/Exchange samples of the public corpus):
multipart/alternative with a quoted-printable text/plain, a quoted-printable text/html (Word's
HTML, most of the message's size) and a base64 text/calendar; ``method=REQUEST``; a VTIMEZONE
block for "W. Europe Standard Time" whose STANDARD and DAYLIGHT parts carry yearly RRULEs;
DTSTART/DTEND with that TZID; Exchange's UID form (hex, folded); X-MICROSOFT-CDO-* properties
and a VALARM. The organizer alice@example.com is the envelope sender; LOCATION asks for
TrueConf; each message has a UID of its own, so each one creates a conference.
"""

from __future__ import annotations

import base64
import hashlib
import quopri

ORGANIZER = "alice@example.com"
#: Attendees: some with a TrueConf account on the stand-in (example.com), some outside.
ATTENDEE_POOL = ("bob@example.com", "zoe@example.net", "carol@example.com", "dave@partner.example")

VTIMEZONE = (
    "BEGIN:VTIMEZONE",
    "TZID:W. Europe Standard Time",
    "BEGIN:STANDARD",
    "DTSTART:16010101T030000",
    "TZOFFSETFROM:+0200",
    "TZOFFSETTO:+0100",
    "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10",
    "END:STANDARD",
    "BEGIN:DAYLIGHT",
    "DTSTART:16010101T020000",
    "TZOFFSETFROM:+0100",
    "TZOFFSETTO:+0200",
    "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=3",
    "END:DAYLIGHT",
    "END:VTIMEZONE",
)


def attendees(count: int) -> tuple[str, ...]:
    """``count`` attendee addresses: the pool first, then numbered ones in both domains."""
    pool = list(ATTENDEE_POOL[:count])
    pool += [f"user{n}@example.{'com' if n % 2 else 'net'}" for n in range(len(pool), count)]
    return tuple(pool)


def _fold(line: str) -> list[str]:
    """Fold at 75 octets the way Exchange does (ASCII content here)."""
    parts = [line[:75]]
    parts += [" " + line[i:i + 74] for i in range(75, len(line), 74)]
    return parts


def _uid(run: str, number: int) -> str:
    """Exchange's UID form: a fixed prefix and a per-event hex tail."""
    tail = hashlib.sha1(f"{run}-{number}".encode()).hexdigest().upper()
    return "040000008200E00074C5B7101A82E00800000000" + tail


def calendar(number: int, run: str, guests: tuple[str, ...]) -> str:
    """The iCalendar object of one REQUEST (CRLF line ends, folded)."""
    day = 10 + number % 18
    hour = 8 + number % 9
    lines = ["BEGIN:VCALENDAR", "METHOD:REQUEST", "PRODID:Microsoft Exchange Server 2010",
             "VERSION:2.0", *VTIMEZONE, "BEGIN:VEVENT",
             "ORGANIZER;CN=Alice Example:mailto:" + ORGANIZER]
    for guest in guests:
        name = guest.split("@")[0].capitalize()
        lines += _fold(f"ATTENDEE;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=TRUE;CN={name}:mailto:{guest}")
    lines += _fold(f"DESCRIPTION;LANGUAGE=en-US:Agenda for review {number}:\\n- figures\\, "
                   "plans\\n- owners and dates\\n\\nJoin by TrueConf.\\n")
    lines += [
        f"UID:{_uid(run, number)}",
        f"SUMMARY;LANGUAGE=en-US:Review {number}",
        f"DTSTART;TZID=W. Europe Standard Time:203103{day:02d}T{hour:02d}0000",
        f"DTEND;TZID=W. Europe Standard Time:203103{day:02d}T{hour + 1:02d}0000",
        "CLASS:PUBLIC", "PRIORITY:5", "DTSTAMP:20310301T090000Z", "TRANSP:OPAQUE",
        "STATUS:CONFIRMED", "SEQUENCE:0", "LOCATION;LANGUAGE=en-US:TrueConf",
        "X-MICROSOFT-CDO-APPT-SEQUENCE:0", "X-MICROSOFT-CDO-OWNERAPPTID:2119573318",
        "X-MICROSOFT-CDO-BUSYSTATUS:TENTATIVE", "X-MICROSOFT-CDO-INTENDEDSTATUS:BUSY",
        "X-MICROSOFT-CDO-ALLDAYEVENT:FALSE", "X-MICROSOFT-CDO-IMPORTANCE:1",
        "X-MICROSOFT-CDO-INSTTYPE:0", "X-MICROSOFT-DONOTFORWARDMEETING:FALSE",
        "X-MICROSOFT-DISALLOW-COUNTER:FALSE",
        "BEGIN:VALARM", "DESCRIPTION:REMINDER", "TRIGGER;RELATED=START:-PT15M",
        "ACTION:DISPLAY", "END:VALARM", "END:VEVENT", "END:VCALENDAR",
    ]
    return "\r\n".join(lines) + "\r\n"


def _qp(text: str) -> str:
    return quopri.encodestring(text.replace("\r\n", "\n").encode()).decode().replace("\n", "\r\n")


def _html(number: int, pad: int) -> str:
    """Word's HTML for the body; ``pad`` bytes of paragraphs bring the message to its size."""
    paragraph = ('<p class="MsoNormal"><span style="font-size:11.0pt;font-family:&quot;Calibri'
                 '&quot;,sans-serif">Notes from last time: figures, plans, owners.</span></p>\n')
    body = paragraph * max(0, pad // len(paragraph))
    return (
        '<html xmlns:o="urn:schemas-microsoft-com:office:office" '
        'xmlns="http://www.w3.org/TR/REC-html40">\n<head>\n'
        '<meta http-equiv="Content-Type" content="text/html; charset=utf-8">\n'
        '<meta name="Generator" content="Microsoft Word 15 (filtered medium)">\n'
        "<style><!--\np.MsoNormal, li.MsoNormal, div.MsoNormal\n\t{margin:0cm;\n"
        '\tfont-size:11.0pt;\n\tfont-family:"Calibri",sans-serif;}\n--></style>\n</head>\n'
        '<body lang="EN-US" link="#0563C1" vlink="#954F72">\n<div class="WordSection1">\n'
        f'<p class="MsoNormal">Agenda for review {number}: figures, plans, owners and dates.</p>\n'
        f"{body}</div>\n</body>\n</html>\n"
    )


def invitation(number: int, run: str = "r", *, guests: int = 3, pad_to: int = 4096) -> bytes:
    """One Outlook-shaped REQUEST with a UID of its own, about ``pad_to`` bytes or more."""
    invited = attendees(guests)
    ics = calendar(number, run, invited)
    head = "\r\n".join([
        "From: Alice Example <alice@example.com>",
        "To: " + ", ".join(invited),
        f"Subject: Review {number}",
        "Thread-Topic: Review",
        "Thread-Index: AdfdgAAehFDfsPyXTommZqRYgeMqiQ==",
        "Date: Mon, 03 Mar 2031 09:00:00 +0000",
        f"Message-ID: <outlook-{run}-{number}@EXAMPLE.PROD.OUTLOOK.COM>",
        "Accept-Language: en-US",
        "Content-Language: en-US",
        "Content-Type: multipart/alternative;",
        '\tboundary="_000_BENCH0540579ABA18FCE320901B31E39C9EURP_"',
        "MIME-Version: 1.0",
        "",
    ])
    boundary = "--_000_BENCH0540579ABA18FCE320901B31E39C9EURP_"
    plain = _qp(f"Agenda for review {number}:\r\n- figures, plans\r\n- owners and dates\r\n\r\n"
                "Join by TrueConf.\r\n")
    calendar_part = base64.encodebytes(ics.encode()).decode().replace("\n", "\r\n")

    def build(pad: int) -> str:
        return "\r\n".join([
            head, boundary,
            'Content-Type: text/plain; charset="utf-8"',
            "Content-Transfer-Encoding: quoted-printable", "", plain,
            boundary,
            'Content-Type: text/html; charset="utf-8"',
            "Content-Transfer-Encoding: quoted-printable", "", _qp(_html(number, pad)),
            boundary,
            'Content-Type: text/calendar; charset="utf-8"; method=REQUEST',
            "Content-Transfer-Encoding: base64", "", calendar_part,
            boundary + "--", "",
        ])

    message = build(0)
    if len(message) < pad_to:
        message = build(pad_to - len(message))
    return message.encode()
