"""Memory given back: after a large message the idle daemon does not keep it."""

from __future__ import annotations

import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

from mailhook.testing.sink import Sink
from mailhook.testing.standin import StandIn
from tests.integration.conftest import USERS
from tests.support.invites import plain_mail
from tests.support.process import ROOT, SECRET, free_port, wait_for_port, write_config

MESSAGE_MB = 50
IDLE_RSS_LIMIT_MB = 150  # generous: the daemon idles at about 60 MB before any mail


def rss_mb(pid: int) -> float:
    """The process's resident memory (VmRSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_idle_daemon_gives_back_a_large_messages_memory(tmp_path):
    """After a 50 MB ordinary message is relayed, the idle daemon's RSS falls under 150 MB."""
    line = b"x" * 76 + b"\r\n"
    raw = plain_mail((line * (MESSAGE_MB * 1024 * 1024 // len(line))).decode())
    port = free_port()
    with StandIn(users=USERS, client_id="mailhook", client_secret=SECRET) as standin, \
            Sink() as sink:
        config = write_config(tmp_path, standin.url, sink.port, port)
        process = subprocess.Popen(
            [sys.executable, "-m", "mailhook", "serve", "--config", str(config)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for_port(port, process)
            with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
                assert client.sendmail("alice@example.com", ["bob@example.com"], raw) == {}
            assert len(sink.messages) == 1
            deadline = time.monotonic() + 20
            while rss_mb(process.pid) >= IDLE_RSS_LIMIT_MB and time.monotonic() < deadline:
                time.sleep(0.5)
            assert rss_mb(process.pid) < IDLE_RSS_LIMIT_MB
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
