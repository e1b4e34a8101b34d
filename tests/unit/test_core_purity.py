"""The core is pure: it imports no adapter and no library that does I/O."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = sorted(p.stem for p in (ROOT / "mailhook" / "core").glob("*.py") if p.stem != "__init__")
FORBIDDEN = ("httpx", "sqlite3", "sqlite_utils", "aiosmtpd", "aiosmtplib", "mailhook.store.sqlite",
             "mailhook.trueconf", "mailhook.relay", "mailhook.frontends", "mailhook.flow",
             "mailhook.handling", "mailhook.conferences", "mailhook.background", "mailhook.app",
             "mailhook.daemon")


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_io(module):
    """Importing a core module loads none of the I/O libraries or adapters."""
    code = (
        f"import sys, mailhook.core.{module}\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
