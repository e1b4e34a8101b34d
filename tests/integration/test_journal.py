"""Log lines as the journal reads them: a syslog priority on each line only when stderr is the
journal, through the real ``mailhook serve``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.support.process import ROOT, write_config


def serve_on_a_taken_port(tmp_path: Path, journal: str | None) -> list[str]:
    """Run ``mailhook serve`` on a port something else holds (it logs and exits 1), with
    stderr going to a file; ``journal`` is JOURNAL_STREAM ("this" for the file's own)."""
    log = tmp_path / "stderr.log"
    with socket.socket() as taken, log.open("wb") as stderr:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = write_config(tmp_path, "http://127.0.0.1:9", 10026, taken.getsockname()[1])
        status = os.fstat(stderr.fileno())
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        if journal is not None:
            own = f"{status.st_dev}:{status.st_ino}"
            env["JOURNAL_STREAM"] = own if journal == "this" else journal
        result = subprocess.run([sys.executable, "-m", "mailhook", "serve", "--config", str(config),
                                 "--log-level", "debug"], stderr=stderr, stdout=subprocess.DEVNULL,
                                cwd=ROOT, env=env, timeout=60)
    assert result.returncode == 1
    return log.read_text().splitlines()


def test_lines_carry_their_priority_when_stderr_is_the_journal(tmp_path):
    """With JOURNAL_STREAM naming stderr, an error line starts <3>, info <6>, debug <7>."""
    lines = serve_on_a_taken_port(tmp_path, "this")
    assert lines and all(line[:3] in ("<3>", "<4>", "<6>", "<7>") for line in lines), lines
    [error] = [line for line in lines if "cannot listen" in line]
    assert error.startswith("<3>ERROR mailhook: cannot listen on 127.0.0.1:")
    assert any(line.startswith("<6>INFO ") for line in lines) or any(
        line.startswith("<7>DEBUG ") for line in lines)


def test_lines_stay_plain_outside_the_journal(tmp_path):
    """Without JOURNAL_STREAM, or with one naming another stream (inherited by a program whose
    stderr was redirected), lines have no priority prefix."""
    for journal in (None, "1:1"):
        lines = serve_on_a_taken_port(tmp_path, journal)
        [error] = [line for line in lines if "cannot listen" in line]
        assert error.startswith("ERROR mailhook: cannot listen on 127.0.0.1:")
        assert not any(line.startswith("<") for line in lines), lines
