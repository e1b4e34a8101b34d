"""Memory given back: after a large message the idle daemon does not keep it."""

from __future__ import annotations

import smtplib
import time

from tests.support.invites import plain_mail
from tests.support.process import rss_mb, serving

MESSAGE_MB = 50
IDLE_RSS_LIMIT_MB = 150  # generous: the daemon idles at about 60 MB before any mail


def test_idle_daemon_gives_back_a_large_messages_memory(tmp_path):
    """After a 50 MB ordinary message is relayed, the idle daemon's RSS falls under 150 MB."""
    line = b"x" * 76 + b"\r\n"
    raw = plain_mail((line * (MESSAGE_MB * 1024 * 1024 // len(line))).decode())
    with serving(tmp_path) as daemon:
        with smtplib.SMTP("127.0.0.1", daemon.port, timeout=120) as client:
            assert client.sendmail("alice@example.com", ["bob@example.com"], raw) == {}
        assert len(daemon.sink.messages) == 1
        deadline = time.monotonic() + 20
        while rss_mb(daemon.process.pid) >= IDLE_RSS_LIMIT_MB and time.monotonic() < deadline:
            time.sleep(0.5)
        assert rss_mb(daemon.process.pid) < IDLE_RSS_LIMIT_MB
