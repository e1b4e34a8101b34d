"""The benchmark script still runs: its quick mode, end to end, printing both tables."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
SCENARIOS = ("CPU besides the TrueConf call", "CPU in all",
             "Outlook invitations (distinct) vs pooled relay, 20 sessions",
             "ordinary 4 KB vs pooled relay, 20 sessions", "messages per CPU second",
             "ordinary 4 KB, 20 sessions", "against attendees", "against size",
             "ordinary 100 KB, 20 sessions", "invitation, API 0 ms, 20 sessions",
             "invitation, API 200 ms, 50 sessions", "MB message, ordinary", "1000 idle connections",
             "stored events: invitation msg/s", "stored events: CPU per invitation")


def test_quick_benchmark_prints_every_target() -> None:
    """`benchmarks/run.py --quick` exits 0 and prints a ratio and PASS/FAIL for every target."""
    process = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # the script stops the servers it started
        out, err = process.communicate(timeout=30)
        raise AssertionError(f"benchmark did not finish:\n{err[-3000:]}") from None
    assert process.returncode == 0, err[-3000:]
    assert "| scenario" in out and "| workload" in out
    assert "min / med / max" in out and "pooled relay" in out
    for scenario in SCENARIOS:
        row = next((line for line in out.splitlines()
                    if scenario in line and ("| >= " in line or "| <= " in line)), None)
        assert row is not None, f"no target row for {scenario!r}:\n{out}"
        assert re.search(r"\| \d+\.\d\d +\| [<>]= \d\.\d\d +\| (PASS|FAIL|info) +\|$", row), row
    assert re.search(r"\d+ of \d+ targets hold", out)
