"""End to end with a real Postfix: sendmail → Postfix → mailhook → Postfix → mailbox."""

from __future__ import annotations

import email
import re
import signal
import smtplib
import subprocess
import time
from pathlib import Path

import pytest

from mailhook.testing.standin import StandIn
from tests.integration.conftest import USERS
from tests.support import postfix
from tests.support.invites import Event, thunderbird
from tests.support.process import SECRET, free_port, wait_for_port

pytestmark = pytest.mark.slow
MAILBOXES, PLAIN = postfix.MAILBOXES, postfix.PLAIN
postfix_ready = postfix.postfix_ready



def serve(tmp_path: Path, standin: StandIn, listen_port: int, relay_port: int) -> subprocess.Popen[str]:
    """Start `mailhook serve` as Postfix's content filter, logging to a file."""
    front = f'[smtp]\nlisten_port = {listen_port}\nhostname = "filter.mailhook.test"\n'
    return postfix.serve_mailhook(tmp_path, standin.url, SECRET, front, relay_port)


def test_postfix_delivers_rewritten_invitation(tmp_path, postfix_ready):
    """Postfix routes a submitted invitation through mailhook and delivers it with the join link."""
    filter_port, reinject_port, submission_port = free_port(), free_port(), free_port()
    instance = postfix.PostfixInstance(filter_port, reinject_port, submission_port, MAILBOXES)
    with StandIn(users=USERS, client_id="mailhook", client_secret=SECRET) as standin:
        process = serve(tmp_path, standin, filter_port, reinject_port)
        try:
            wait_for_port(filter_port, process)
            instance.start()
            started = time.monotonic()
            instance.sendmail("alice@example.com", MAILBOXES[1:], thunderbird(Event()))
            [bob] = instance.delivered("bob")
            [zoe] = instance.delivered("zoe")
            [notice] = instance.delivered("alice")
            elapsed = time.monotonic() - started
            # The same way over SMTP submission, where Postfix sends XFORWARD with the client.
            with smtplib.SMTP("127.0.0.1", submission_port, timeout=30) as client:
                client.sendmail("carol@example.org", ["bob@example.com"], PLAIN)
            # Two deliveries within one second may list in either order: pick by Message-ID.
            [plain] = [m for m in instance.delivered("bob", count=2)
                       if b"Message-ID: <lunch-1@example.org>" in m]
            maillog = instance.log()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
            instance.stop()
        [conference] = standin.conferences.values()
    url = conference["url"]
    for delivered in (bob, zoe):
        message = email.message_from_bytes(delivered)
        calendars = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
        assert calendars and url in calendars[0].get_payload(decode=True).decode()
    assert url.encode() in notice
    assert elapsed < 30
    assert plain.endswith(b"\n\nNoon?\n")  # not an invitation: its body passes unchanged
    summary = (tmp_path / "mailhook.log").read_text()
    assert SECRET not in summary
    # The summary line names Postfix's queue id of each message (from the Received header
    # for sendmail's, from XFORWARD for SMTP submission) and, over SMTP, the original client.
    [local_id] = re.findall(r"postfix/pickup\[\d+\]: (\w+): uid=", maillog)
    [smtp_id] = re.findall(r"postfix/submission/smtpd\[\d+\]: (\w+): client=", maillog)
    assert re.search(rf"queue_id={local_id} .*decision=create", summary)
    assert re.search(rf"queue_id={smtp_id} client=localhost\[127\.0\.0\.1\] .*decision=pass",
                     summary)
    # mailhook passes XFORWARD on: the re-injection smtpd logs the original queue id and client.
    assert f"orig_queue_id={smtp_id}" in maillog and "orig_client=localhost[127.0.0.1]" in maillog
