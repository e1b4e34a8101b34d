"""The per-message log line: it names every message by its Message-ID, and a hostile header
cannot add fields or lines to it. Through the real daemon, reading the log it writes."""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from pathlib import Path

import aiosmtplib
import pytest

from mailhook import logfmt
from tests.integration.conftest import send
from tests.support import reliability
from tests.support.invites import Event, plain_mail, thunderbird
from tests.support.process import free_port

SUMMARY_KEYS = ["queue_id", "client", "message_id", "from", "rcpts", "method", "uid", "decision",
                "reason", "conference", "reply", "ms"]
# One field: key=value, the value bare or in double quotes with backslash escapes.
FIELD = re.compile(r'([a-z_]+)=("(?:[^"\\]|\\.)*"|[^\s"]+)(?: |$)')


def parse_fields(line: str) -> list[tuple[str, str]]:
    """The key=value fields of a summary line, read strictly: they must make the whole line."""
    found, position = [], 0
    while position < len(line):
        match = FIELD.match(line, position)
        assert match, f"not a field at {position}: {line[position:position + 40]!r}"
        value = match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        found.append((match.group(1), value))
        position = match.end()
    return found


def summary_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The per-message lines, as the journal gets them."""
    formatter = logfmt.Formatter()
    return [formatter.format(r) for r in caplog.records
            if r.name == "mailhook" and r.getMessage().startswith("queue_id=")]


def with_message_id(value: bytes) -> bytes:
    """An ordinary message whose Message-ID header is ``value`` (raw bytes, folded or not)."""
    return plain_mail().replace(b"Message-ID: <plain-1@example.com>", b"Message-ID: " + value)


async def test_ordinary_mail_is_logged_with_its_message_id(daemon, caplog):
    """Mail that is no invitation is named by its Message-ID in the summary line too."""
    caplog.set_level(logging.INFO, logger="mailhook")
    assert (await send(daemon, plain_mail()))[0] == 250
    [line] = summary_lines(caplog)
    fields = dict(parse_fields(line.removeprefix("INFO mailhook: ")))
    assert fields["message_id"] == "<plain-1@example.com>"
    assert fields["method"] == "-" and fields["decision"] == "pass"


HOSTILE = {
    "folded key=value look-alikes": b"<a@example.com>\r\n decision=create\r\n\tconference=666",
    "quotes and backslashes": b'<a"b@example.com> x="y\\" decision="create\\',
    "very long": b"<" + b"x" * 20000 + b"@example.com>",
    "NUL, ESC and C1 controls": b"<a@example.com>\x00\x1b[2J\xc2\x85decision=create",
    "U+2028 line separator": b"<a@example.com>\xe2\x80\xa8INFO mailhook: queue_id=FORGED",
    "vertical tab and form feed": b"<a@example.com>\x0bdecision=create\x0cms=1",
}


@pytest.mark.parametrize("name", HOSTILE)
async def test_hostile_message_id_cannot_forge_fields_or_lines(daemon, caplog, name):
    """A Message-ID with line breaks, quotes, look-alike fields or great length stays one value."""
    caplog.set_level(logging.INFO, logger="mailhook")
    reliability.hostile(f"log line forging: {name}")
    assert (await send(daemon, with_message_id(HOSTILE[name])))[0] == 250
    [line] = summary_lines(caplog)
    assert len(line.splitlines()) == 1 and "\n" not in line
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", line)
    fields = parse_fields(line.removeprefix("INFO mailhook: "))
    assert [key for key, _ in fields] == SUMMARY_KEYS
    values = dict(fields)
    assert values["decision"] == "pass" and values["conference"] == "-"
    assert values["queue_id"] == "-" and values["message_id"].startswith("<")
    assert len(values["message_id"]) <= logfmt.VALUE_LIMIT
    assert len(line) < 2000


async def test_hostile_uid_in_a_warning_stays_one_line(daemon, standin, caplog):
    """A UID with an escaped line break, quoted in a warning, cannot start a log line of its own."""
    caplog.set_level(logging.INFO)
    standin.fail_next(10, 503)
    reliability.hostile("log line forging: line break in a UID")
    forged = "evil\\nWARNING mailhook: queue_id=FORGED"
    raw = thunderbird(replace(Event(), uid=forged), message_id="<uid-1@example.com>")
    assert (await send(daemon, raw))[0] == 451
    formatter = logfmt.Formatter()
    warnings = [formatter.format(r) for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings
    for line in warnings:
        assert len(line.splitlines()) == 1, line
        assert "message_id=<uid-1@example.com>" in line


async def send_with_queue_id(daemon, raw: bytes, queue_id: str) -> int:
    """Hand one message to two recipients with XFORWARD naming its queue id, as Postfix does
    (each RCPT is tried, as Postfix does); the reply to DATA, or to the last RCPT when none was
    accepted."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=daemon.port, timeout=30, start_tls=False)
    await client.connect()
    try:
        await client.ehlo()
        await client.execute_command(b"XFORWARD", f"IDENT={queue_id} NAME=mua.example "
                                                  "ADDR=192.0.2.7".encode())
        await client.mail("alice@example.com")
        replies = [await client.execute_command(b"RCPT", f"TO:<{rcpt}>".encode())
                   for rcpt in ("bob@example.com", "zoe@example.net")]
        if not any(200 <= reply.code < 300 for reply in replies):
            return replies[-1].code
        return (await client.data(raw)).code
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code
    finally:
        client.close()


def break_store(daemon) -> None:
    """Delete the store file under the running daemon (it then holds invitations back)."""
    Path(daemon.settings.store.path).unlink()


@pytest.mark.parametrize("trouble", ["trueconf", "store", "next hop"])
async def test_deferred_message_gets_its_own_line_with_the_queue_id(start_daemon, standin, sink,
                                                                    caplog, trouble):
    """A message mailhook answers 451 because TrueConf, the store or the next hop is not
    available gets one summary line with its queue id and the 451, like a delivered one."""
    relay = {"port": free_port()} if trouble == "next hop" else {}  # nothing listens there
    daemon = await start_daemon(relay=relay)
    caplog.set_level(logging.INFO, logger="mailhook")
    if trouble == "trueconf":
        standin.fail_next(10, 503)
    elif trouble == "store":
        assert (await send(daemon, plain_mail()))[0] == 250  # the store exists, then goes
        break_store(daemon)
        caplog.clear()
    assert await send_with_queue_id(daemon, thunderbird(Event()), "4XdEfErRed") == 451
    [line] = summary_lines(caplog)
    fields = dict(parse_fields(line.removeprefix("INFO mailhook: ")))
    assert fields["queue_id"] == "4XdEfErRed" and fields["client"] == "mua.example[192.0.2.7]"
    assert fields["from"] == "alice@example.com" and fields["reply"].startswith("451 4.")
    if trouble == "next hop":
        assert fields["reason"] == "next hop unavailable" and fields["message_id"] == "-"
    else:
        assert fields["method"] == "REQUEST" and fields["message_id"].startswith("<")
