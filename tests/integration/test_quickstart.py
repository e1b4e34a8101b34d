"""The README's quick start, run as written in a fresh copy of the repository: the stand-in, the
sink and mailhook started by its commands, the example invitation sent by its script."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PORTS = (8090, 10026, 10025)  # the stand-in, the sink, mailhook, as the quick start uses them


def shell_blocks(markdown: str) -> list[str]:
    """The ```sh blocks of a Markdown text."""
    return re.findall(r"^```sh\n(.*?)^```", markdown, re.DOTALL | re.MULTILINE)


def quick_start() -> tuple[list[str], str]:
    """The servers' command lines and the script that sends the invitation and looks for it."""
    blocks = shell_blocks((ROOT / "README.md").read_text())
    [servers] = [block for block in blocks if "mailhook standin" in block]
    [script] = [block for block in blocks if "smtplib" in block]
    return servers.strip().splitlines(), script


def port_taken(port: int) -> bool:
    """Does something listen on this loopback port already?"""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def wait_for(port: int, processes: list[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    """Wait until the port answers (or one of the processes died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [p for p in processes if p.poll() is not None]
        assert not dead, [p.args for p in dead]
        if port_taken(port):
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture
def fresh_copy(tmp_path: Path) -> Path:
    """The repository's files as a clone has them (no var/, no store), using this venv."""
    copy = tmp_path / "mailhook"
    tracked = subprocess.run(["git", "ls-files", "config"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    for name in tracked or ["config/mailhook.toml", "config/standin-users.json",
                            "config/example-invitation.eml"]:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, copy / name)
    (copy / ".venv").symlink_to(Path(sys.prefix))
    return copy


def test_readme_quick_start_works_as_written(fresh_copy):
    """The quick start's three servers start, the invitation reaches the sink with its join
    link, and the store is where the quick start says (not the system's)."""
    if taken := [port for port in PORTS if port_taken(port)]:
        pytest.skip(f"the quick start's ports are in use here: {taken}")
    servers, script = quick_start()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("MAILHOOK_CONFIG", None)
    processes = [subprocess.Popen(["bash", "-c", line], cwd=fresh_copy, env=env,
                                  start_new_session=True, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for line in servers]
    try:
        for port in PORTS:
            wait_for(port, processes)
        result = subprocess.run(["bash", "-ec", script], cwd=fresh_copy, env=env,
                                capture_output=True, text=True, timeout=60)
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait(timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    found = result.stdout.split()
    assert found and all(name.startswith("var/sink/") for name in found)
    assert (fresh_copy / "var" / "mailhook.sqlite3").exists()
