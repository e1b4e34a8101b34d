"""The milter benchmark still runs: its quick mode against a private Postfix, printing its table."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest

from tests.support.postfix import postfix_ready  # noqa: F401
from tests.support.process import ROOT

pytestmark = pytest.mark.slow


def test_quick_milter_benchmark_prints_the_comparison(postfix_ready) -> None:  # noqa: F811
    """`benchmarks/milter_bench.py --quick` exits 0 and prints both workloads with a ratio, and
    PASS/FAIL for the ordinary-mail target."""
    process = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "milter_bench.py"),
                                "--quick"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)  # the script stops the Postfix instances it started
        out, err = process.communicate(timeout=60)
        raise AssertionError(f"milter benchmark did not finish:\n{err[-3000:]}") from None
    assert process.returncode == 0, err[-3000:]
    assert "| workload" in out
    ordinary = next(line for line in out.splitlines() if line.startswith("| ordinary 4 KB"))
    assert re.search(r"\| +\d+\.\d\d \| >= 0\.80 +\| (PASS|FAIL) +\|$", ordinary), ordinary
    invitation = next(line for line in out.splitlines() if line.startswith("| invitation"))
    assert re.search(r"\| +\d+\.\d\d \| ", invitation), invitation
    mailhook_cpu = next(line for line in out.splitlines() if line.startswith("| mailhook"))
    assert re.search(r"\| +\d+\.\d\d \| +\d+\.\d\d \| +\d+\.\d\d \|$", mailhook_cpu), mailhook_cpu
    assert sum(line.startswith("| Postfix, ") for line in out.splitlines()) == 3
    assert any(line.startswith("| ordinary, null milter") for line in out.splitlines())
