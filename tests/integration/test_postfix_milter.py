"""End to end with a real Postfix and mailhook as its milter: SMTP submission and sendmail
both go through mailhook, which writes the link and hands the message back to Postfix."""

from __future__ import annotations

import email
import signal
import smtplib
import subprocess
import time
from pathlib import Path

import pytest

from mailhook.testing.standin import StandIn
from tests.integration.conftest import USERS
from tests.support import postfix, reliability
from tests.support.invites import Event, thunderbird
from tests.support.postfix import MAILBOXES, PLAIN, postfix_ready  # noqa: F401
from tests.support.process import SECRET, free_port, wait_for_port

pytestmark = pytest.mark.slow


def serve_milter(tmp_path: Path, standin: StandIn, milter_port: int,
                 submission_port: int) -> subprocess.Popen[str]:
    """Start `mailhook serve` as a milter only (organizer notices go to Postfix's submission)."""
    return postfix.serve_mailhook(tmp_path, standin.url, SECRET, postfix.milter_front(milter_port),
                                  submission_port)


def calendar_text(raw: bytes) -> str:
    message = email.message_from_bytes(raw)
    [part, *_] = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
    return part.get_payload(decode=True).decode()


def test_postfix_milter_rewrites_invitations_and_keeps_them_while_trueconf_is_down(
        tmp_path, postfix_ready):  # noqa: F811
    """Invitations through smtpd_milters and non_smtpd_milters arrive with the link, ordinary
    mail's body arrives unchanged, and with TrueConf down an invitation waits in Postfix's
    queue (not bounced, not lost) until TrueConf is back."""
    milter_port, submission_port = free_port(), free_port()
    instance = postfix.MilterPostfixInstance(milter_port, submission_port, MAILBOXES)
    with StandIn(users=USERS, client_id="mailhook", client_secret=SECRET) as standin:
        process = serve_milter(tmp_path, standin, milter_port, submission_port)
        try:
            wait_for_port(milter_port, process)
            instance.start()
            instance.sendmail("alice@example.com", ["bob@example.com"], thunderbird(Event()))
            [local] = instance.delivered("bob")
            with smtplib.SMTP("127.0.0.1", submission_port, timeout=30) as client:
                client.sendmail("alice@example.com", ["zoe@example.net"], thunderbird(Event(
                    uid="over-smtp@example.com")))
                client.sendmail("carol@example.org", ["bob@example.com"], PLAIN)
            [over_smtp] = instance.delivered("zoe")
            # Two deliveries within one second may list in either order: pick by Message-ID.
            [plain] = [m for m in instance.delivered("bob", count=2)
                       if b"Message-ID: <lunch-1@example.org>" in m]
            # TrueConf down: the third invitation is kept back with a temporary failure.
            reliability.fault("TrueConf down behind Postfix's milter")
            standin.fail_next(10_000, 503)
            instance.sendmail("alice@example.com", ["zoe@example.net"], thunderbird(Event(
                uid="while-down@example.com")))
            deadline = time.monotonic() + 60
            while instance.waiting() == 0 or ("milter-reject" not in instance.log() and time.monotonic() < deadline):
                time.sleep(0.2)
            deferred = instance.waiting()
            assert len(list((instance.maildir / "zoe" / "new").glob("*"))) == 1
            standin.fail_next(0)
            instance.postqueue("-f")
            later = instance.delivered("zoe", count=2, timeout=90)
            maillog = instance.log()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
            instance.stop()
        urls = [conference["url"] for conference in standin.conferences.values()]
    assert len(urls) == 3
    assert any(url in calendar_text(local) for url in urls)
    assert any(url in calendar_text(over_smtp) for url in urls)
    assert deferred == 1, maillog
    assert any(url in calendar_text(message) for message in later for url in urls[2:])
    assert plain.endswith(b"\n\nNoon?\n")  # ordinary mail's body is untouched
    log = (tmp_path / "mailhook.log").read_text()
    assert SECRET not in log
    # Ordinary mail is answered at the end of its header section, with Postfix's queue id.
    [plain_line] = [line for line in log.splitlines() if "message_id=<lunch-1@example.org>" in line]
    assert 'reason="no calendar"' in plain_line and "queue_id=-" not in plain_line, plain_line
    # Kept in Postfix's queue while TrueConf was down, delivered once with its own link after.
    reliability.survived(lost=0, duplicates=len(set(urls)) != len(urls))
