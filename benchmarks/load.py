"""The benchmark's Python SMTP client and the messages it sends.

The client is a small asyncio one written for measuring, not aiosmtplib: it costs little CPU
(the load generator shares the machine with the servers it measures) and it times each message
exactly, from MAIL FROM to the reply after the final dot.

Each of ``sessions`` workers keeps one connection open and sends its messages one after the
other on it (MAIL, RCPT, DATA; no RSET needed after a 250), the way Postfix's smtp client
reuses its connections to a content filter. A refused message is counted and the session goes on.
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

SENDER = "alice@example.com"
RECIPIENTS = ("bob@example.com", "zoe@example.net")


@dataclass(frozen=True, slots=True)
class Message:
    """One message ready to go: envelope and the DATA payload, dot-stuffed, with the final dot."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    payload: bytes

    @classmethod
    def of(cls, content: bytes, mail_from: str = SENDER,
           rcpt_tos: tuple[str, ...] = RECIPIENTS) -> Message:
        """Dot-stuff ``content`` (CRLF line ends) and add the terminating line."""
        body = content.replace(b"\r\n.", b"\r\n..")
        if body.startswith(b"."):
            body = b"." + body
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        return cls(mail_from, rcpt_tos, body + b".\r\n")

    @property
    def size(self) -> int:
        return len(self.payload)


@dataclass(slots=True)
class Run:
    """What one load run measured."""

    sent: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, accepted messages only
    failures: Counter[str] = field(default_factory=Counter)  # reply (or error) -> count
    elapsed: float = 0.0

    @property
    def accepted(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.accepted / self.elapsed if self.elapsed > 0 else 0.0

    def percentile(self, fraction: float) -> float:
        """Latency at ``fraction`` (0.5 for the median), in seconds; nan when nothing passed."""
        if not self.latencies:
            return float("nan")
        if len(self.latencies) == 1:
            return self.latencies[0]
        cut = statistics.quantiles(self.latencies, n=1000, method="inclusive")
        return cut[min(len(cut) - 1, max(0, round(fraction * 1000) - 1))]


class SmtpError(Exception):
    """The server answered something unexpected outside a message's own transaction."""


class _Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int, helo: str = "load.bench") -> _Session:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        session = cls(reader, writer)
        code, text = await session.reply()
        if code != 220:
            writer.close()
            raise SmtpError(f"greeting {code} {text}")
        code, text = await session.command(f"EHLO {helo}".encode())
        if code != 250:
            writer.close()
            raise SmtpError(f"EHLO {code} {text}")
        return session

    async def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("connection closed by the server")
            lines.append(line)
            if line[3:4] != b"-":
                break
        last = lines[-1].decode("ascii", "replace").rstrip()
        return int(last[:3]), last[4:]

    async def command(self, line: bytes) -> tuple[int, str]:
        self.writer.write(line + b"\r\n")
        return await self.reply()

    async def send(self, message: Message) -> str | None:
        """Send one message; None when accepted, else the reply that refused it."""
        code, text = await self.command(f"MAIL FROM:<{message.mail_from}>".encode())
        if code != 250:
            return f"MAIL {code} {text}"
        accepted = 0
        refusal = ""
        for rcpt in message.rcpt_tos:
            code, text = await self.command(f"RCPT TO:<{rcpt}>".encode())
            if code in (250, 251):
                accepted += 1
            else:
                refusal = f"RCPT {code} {text}"
        if not accepted:
            await self.command(b"RSET")
            return refusal
        code, text = await self.command(b"DATA")
        if code != 354:
            await self.command(b"RSET")
            return f"DATA {code} {text}"
        self.writer.write(message.payload)
        await self.writer.drain()
        code, text = await self.reply()
        return None if code == 250 else f"{code} {text}"

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.command(b"QUIT"), 5)
        except (TimeoutError, OSError, ConnectionError, ValueError):
            pass
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (OSError, ConnectionError):
            pass


async def drive(host: str, port: int, messages: Sequence[Message], sessions: int,
                until: float | None = None) -> Run:
    """Send the messages over ``sessions`` concurrent connections; measure each one.

    With ``until`` (seconds), no new message is begun after that long; the run's time is then
    up to the last reply, like without it.
    """
    run = Run()
    cursor = iter(range(len(messages)))
    deadline = math.inf if until is None else time.perf_counter() + until

    async def worker() -> None:
        session: _Session | None = None
        for index in cursor:
            if time.perf_counter() >= deadline:
                break
            message = messages[index]
            run.sent += 1
            try:
                if session is None:
                    session = await _Session.open(host, port)
                started = time.perf_counter()
                refusal = await session.send(message)
                finished = time.perf_counter()
            except (OSError, ConnectionError, SmtpError, ValueError) as exc:
                run.failures[f"{type(exc).__name__}: {exc}"[:120]] += 1
                if session is not None:
                    session.writer.close()
                session = None
                continue
            if refusal is None:
                run.latencies.append(finished - started)
            else:
                run.failures[refusal[:120]] += 1
        if session is not None:
            await session.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, min(sessions, len(messages))))))
    run.elapsed = time.perf_counter() - started
    return run


async def hold_idle(host: str, port: int, count: int) -> list[asyncio.StreamWriter]:
    """Open ``count`` connections that greet and EHLO, then stay silent; return them."""
    writers: list[asyncio.StreamWriter] = []
    batch = 100  # do not flood the listen backlog
    for first in range(0, count, batch):
        opened = await asyncio.gather(
            *(_Session.open(host, port) for _ in range(min(batch, count - first)))
        )
        writers.extend(session.writer for session in opened)
    return writers


# --- messages ---------------------------------------------------------------------------------


def ordinary(size: int, number: int = 0) -> bytes:
    """A plain text message of about ``size`` bytes, no calendar in it."""
    head = (
        f"From: Alice Example <{SENDER}>\r\nTo: bob@example.com, zoe@example.net\r\n"
        f"Subject: quarterly numbers {number}\r\nMessage-ID: <plain-{number}@example.com>\r\n"
        "Date: Mon, 03 Mar 2031 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode()
    line = b"The figures for the quarter are attached below; please check them.   \r\n"
    body = line * max(1, (size - len(head)) // len(line) + 1)
    return head + body[: max(0, size - len(head))]


def with_attachment(size: int, number: int = 0) -> bytes:
    """A multipart message whose base64 attachment brings it to about ``size`` bytes."""
    raw = os.urandom(max(1, size * 3 // 4 - 1024))
    encoded = base64.encodebytes(raw).replace(b"\n", b"\r\n")
    head = (
        f"From: Alice Example <{SENDER}>\r\nTo: bob@example.com\r\n"
        f"Subject: the archive {number}\r\nMessage-ID: <archive-{number}@example.com>\r\n"
        "Date: Mon, 03 Mar 2031 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHere it is.\r\n"
        "--b1\r\nContent-Type: application/zip; name=archive.zip\r\n"
        "Content-Disposition: attachment; filename=archive.zip\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode()
    return head + encoded + b"--b1--\r\n"


def invitation(number: int, run: str = "r", pad_to: int = 4096, attachment: bytes = b"") -> bytes:
    """A Thunderbird-style REQUEST asking for TrueConf, with a UID of its own; about ``pad_to`` bytes.

    Organizer alice@example.com (the envelope sender), attendees bob@example.com (a TrueConf
    account) and zoe@example.net (joins by link); a one-hour meeting in 2031.
    """
    uid = f"bench-{run}-{number:07d}@example.com"
    ics = "\r\n".join([
        "BEGIN:VCALENDAR",
        "PRODID:-//Mozilla.org/NONSGML Mozilla Calendar V1.1//EN",
        "VERSION:2.0",
        "METHOD:REQUEST",
        "BEGIN:VEVENT",
        "CREATED:20300101T000000Z",
        "DTSTAMP:20300301T000000Z",
        f"UID:{uid}",
        f"SUMMARY:Planning {number}",
        "ORGANIZER;CN=Alice Example:mailto:alice@example.com",
        "ATTENDEE;RSVP=TRUE;CN=Bob;PARTSTAT=NEEDS-ACTION;ROLE=REQ-PARTICIPANT:mailto:bob@example.com",
        "ATTENDEE;RSVP=TRUE;CN=Zoe;PARTSTAT=NEEDS-ACTION;ROLE=REQ-PARTICIPANT:mailto:zoe@example.net",
        f"DTSTART:20310310T{9 + number % 8:02d}0000Z",
        f"DTEND:20310310T{10 + number % 8:02d}0000Z",
        "SEQUENCE:0",
        "STATUS:CONFIRMED",
        "LOCATION:TrueConf",
        "DESCRIPTION:Agenda: numbers\\, plans.",
        "END:VEVENT",
        "END:VCALENDAR",
    ])
    head = [
        "From: Alice Example <alice@example.com>",
        "To: bob@example.com, zoe@example.net",
        f"Subject: Invitation: Planning {number}",
        f"Message-ID: <invite-{run}-{number}@example.com>",
        "Date: Mon, 03 Mar 2031 10:00:00 +0000",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="outer"',
        "",
        "--outer",
        'Content-Type: multipart/alternative; boundary="inner"',
        "",
        "--inner",
        "Content-Type: text/plain; charset=UTF-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        f"You have been invited to Planning {number}.",
    ]
    tail = [
        "",
        "--inner",
        "Content-Type: text/calendar; method=REQUEST; charset=UTF-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        ics,
        "",
        "--inner--",
        "",
    ]
    if attachment:
        tail += [
            "--outer",
            "Content-Type: application/zip; name=minutes.zip",
            "Content-Disposition: attachment; filename=minutes.zip",
            "Content-Transfer-Encoding: base64",
            "",
            base64.encodebytes(attachment).decode().replace("\n", "\r\n").rstrip("\r\n"),
        ]
    tail += [
        "--outer",
        "Content-Type: application/ics; name=invite.ics",
        "Content-Disposition: attachment; filename=invite.ics",
        "Content-Transfer-Encoding: 8bit",
        "",
        ics,
        "",
        "--outer--",
        "",
    ]
    text = "\r\n".join(head + tail).encode()
    filler = b"Notes from last time: figures, plans, owners.\r\n"
    missing = pad_to - len(text)
    padding = filler * (missing // len(filler)) if missing > 0 else b""
    return "\r\n".join(head).encode() + b"\r\n" + padding + "\r\n".join(tail).encode()


async def interleave(host: str, ports: Sequence[int], messages: Sequence[Message]) -> list[Run]:
    """One session to each port; each message goes to every port in turn (rotating the order).

    The paths are timed under the same conditions moment by moment, so a change in the
    machine's speed during the run shows in all of them alike and not in their differences.
    """
    runs = [Run() for _ in ports]
    sessions: list[_Session | None] = [None] * len(ports)
    started = time.perf_counter()
    for number, message in enumerate(messages):
        for turn in range(len(ports)):
            which = (number + turn) % len(ports)
            run = runs[which]
            run.sent += 1
            try:
                if sessions[which] is None:
                    sessions[which] = await _Session.open(host, ports[which])
                session = sessions[which]
                assert session is not None
                began = time.perf_counter()
                refusal = await session.send(message)
                finished = time.perf_counter()
            except (OSError, ConnectionError, SmtpError, ValueError) as exc:
                run.failures[f"{type(exc).__name__}: {exc}"[:120]] += 1
                sessions[which] = None
                continue
            if refusal is None:
                run.latencies.append(finished - began)
            else:
                run.failures[refusal[:120]] += 1
    for run in runs:
        run.elapsed = time.perf_counter() - started
    for session in sessions:
        if session is not None:
            await session.close()
    return runs
