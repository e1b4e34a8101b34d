"""SIGKILL at each step of handling an invitation, then the MTA's retry: one conference, delivered."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mailhook.testing.sink import Sink
from mailhook.testing.standin import StandIn
from tests.integration.conftest import USERS
from tests.support import reliability
from tests.support.invites import Event, thunderbird
from tests.support.process import ROOT, SECRET, free_port, wait_for_port, write_config

RAW = thunderbird(Event())


def start(config: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """A daemon process on the config."""
    return subprocess.Popen(
        [sys.executable, "-m", "mailhook", "serve", "--config", str(config)],
        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )


def submit(port: int, outcome: dict[str, object]) -> None:
    """Send the invitation like an MTA would; record the result or the failure."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            outcome["refused"] = client.sendmail("alice@example.com", ["bob@example.com"], RAW)
    except (smtplib.SMTPException, OSError) as exc:
        outcome["error"] = exc


def wait_until(condition, timeout: float = 20.0) -> None:
    """Poll until the condition holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("point", ["before-create", "after-create", "before-relay", "during-relay"])
def test_sigkill_then_retry_gives_one_conference(tmp_path, point):
    """Killing the daemon at this step and retrying ends with one conference and the mail delivered."""
    with StandIn(users=USERS, client_id="mailhook", client_secret=SECRET) as standin, Sink() as sink:
        port = free_port()
        config = write_config(tmp_path, standin.url, sink.port, port)
        paused = tmp_path / "paused"
        env = {"MAILHOOK_PAUSE_AT": point, "MAILHOOK_PAUSE_FILE": str(paused)}
        if point == "during-relay":
            env = {}
            sink.handler.script.data_delay = 3.0
        first = start(config, env)
        try:
            wait_for_port(port, first)
            outcome: dict[str, object] = {}
            sender = threading.Thread(target=submit, args=(port, outcome))
            sender.start()
            if point == "during-relay":
                wait_until(lambda: sink.handler.data_started >= 1)
            else:
                wait_until(paused.exists)
            first.send_signal(signal.SIGKILL)
            reliability.fault(f"SIGKILL {point}")
            first.wait(timeout=10)
            sender.join(timeout=30)
            assert "error" in outcome  # the client never got a 250: the MTA keeps the message
        finally:
            if first.poll() is None:
                first.kill()
        sink.handler.script.data_delay = 0
        second = start(config, {})
        try:
            wait_for_port(port, second)
            retry: dict[str, object] = {}
            submit(port, retry)
            assert retry.get("refused") == {}, retry
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=30)
        assert len(standin.conferences) == 1
        [conference] = standin.conferences.values()
        delivered = [m for m in sink.messages if b"Auto-Submitted" not in m.content]
        assert delivered and conference["url"].encode() in delivered[-1].content
        reliability.survived(lost=0 if delivered else 1, duplicates=len(standin.conferences) > 1)
