"""The mailhook command as a child process: a config file for it, a free port, running it and
waiting until it listens, handing it one message, reading its memory."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mailhook.testing.sink import Sink
from mailhook.testing.standin import StandIn

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-value-never-shown"


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_config(tmp_path: Path, standin_url: str, relay_port: int, listen_port: int) -> Path:
    """A complete config file for a daemon process."""
    path = tmp_path / "mailhook.toml"
    path.write_text(
        f"""
[smtp]
listen_port = {listen_port}
[relay]
port = {relay_port}
[trueconf]
server_url = "{standin_url}"
client_id = "mailhook"
client_secret = "{SECRET}"
[policy]
local_domains = ["example.com"]
[store]
path = "{tmp_path / 'state.sqlite3'}"
"""
    )
    return path


def mailhook(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the mailhook command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "mailhook", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env={**os.environ, **(env or {})},
    )


def wait_for_port(port: int, process: subprocess.Popen[str], timeout: float = 15) -> None:
    """Wait until something listens on the port (or the process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def serve(config, env=None) -> subprocess.Popen[str]:
    """`mailhook serve` as a child process."""
    return subprocess.Popen([sys.executable, "-m", "mailhook", "serve", "--config", str(config)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def submit(port: int, raw: bytes) -> None:
    """Hand one message to the daemon."""
    import smtplib

    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail("alice@example.com", ["bob@example.com"], raw)


@dataclass
class Serving:
    """A running `mailhook serve` and what it talks to."""

    config: Path
    port: int  # its SMTP listener
    process: subprocess.Popen[str]
    standin: StandIn
    sink: Sink

    def stop(self) -> None:
        """Stop the daemon as systemd does (SIGTERM); the stand-in and the sink stay up."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)


@contextmanager
def serving(tmp_path: Path, env: dict[str, str] | None = None,
            ready_port: int | None = None) -> Iterator[Serving]:
    """`mailhook serve` on a complete config, with a TrueConf stand-in and a next hop of its
    own, once it listens on ``ready_port`` (its SMTP port unless given); stopped at the end
    unless ``stop()`` was called first."""
    users = json.loads((ROOT / "config" / "standin-users.json").read_text())
    port = free_port()
    with StandIn(users=users, client_id="mailhook", client_secret=SECRET) as standin, \
            Sink() as sink:
        config = write_config(tmp_path, standin.url, sink.port, port)
        process = serve(config, env={**os.environ, **(env or {})})
        running = Serving(config, port, process, standin, sink)
        try:
            wait_for_port(ready_port or port, process)
            yield running
        finally:
            running.stop()


def rss_mb(pid: int) -> float:
    """A process's resident memory (VmRSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")
