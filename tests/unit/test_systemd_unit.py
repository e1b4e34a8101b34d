"""The shipped systemd unit: notify type, credentials, hardening, and what systemd says of it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "mailhook.service"
MAX_EXPOSURE = 2.0

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed")


def settings() -> dict[str, list[str]]:
    """The unit's assignments, key -> values in order."""
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def exposure() -> float:
    """The overall exposure `systemd-analyze security` gives the unit file."""
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


def test_unit_runs_as_a_notify_service_with_its_own_state_and_credentials():
    """Type=notify with a watchdog, a dynamic user, state and config dirs, the secret as a credential."""
    unit = settings()
    assert unit["Type"] == ["notify"] and unit["WatchdogSec"]
    assert unit["DynamicUser"] == ["yes"]
    assert unit["StateDirectory"] == ["mailhook"] and unit["ConfigurationDirectory"] == ["mailhook"]
    assert unit["RuntimeDirectory"] == ["mailhook"]  # the milter's unix socket lives there
    assert unit["LoadCredential"] == ["trueconf-secret:/etc/mailhook/trueconf-secret"]
    assert "MAILHOOK_TRUECONF__CLIENT_SECRET_FILE=%d/trueconf-secret" in unit["Environment"]
    assert "check-config" in unit["ExecStartPre"][0]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    for key in ("ProtectSystem", "NoNewPrivileges", "PrivateTmp", "PrivateDevices",
                "RestrictAddressFamilies", "SystemCallFilter"):
        assert key in unit, key


def test_unit_logs_under_the_mail_facility_as_mailhook():
    """The journal files mailhook's lines under the mail facility, as "mailhook", beside
    Postfix's; docs/systemd.md says how to read them."""
    unit = settings()
    assert unit["SyslogFacility"] == ["mail"] and unit["SyslogIdentifier"] == ["mailhook"]
    guide = (ROOT / "docs" / "systemd.md").read_text()
    assert "journalctl -p err -u mailhook" in guide and "SyslogFacility=mail" in guide


def test_every_command_uses_the_store_the_service_uses():
    """The shipped config's store.path is absolute and in the unit's StateDirectory, and the
    unit does not override it, so commands run outside the service open the same store."""
    import tomllib

    store = Path(tomllib.loads((ROOT / "config" / "mailhook.toml").read_text())["store"]["path"])
    unit = settings()
    assert store.is_absolute()
    assert store.parent == Path("/var/lib") / unit["StateDirectory"][0]
    assert not any("MAILHOOK_STORE" in value for value in unit.get("Environment", []))


def test_unit_raises_the_open_files_limit_above_what_max_connections_needs():
    """LimitNOFILE leaves room for the default smtp.max_connections, two files each."""
    from mailhook.config import SmtpSettings
    from mailhook.daemon import FILES_PER_CONNECTION, FILES_RESERVED

    [limit] = settings()["LimitNOFILE"]
    needed = SmtpSettings().max_connections * FILES_PER_CONNECTION + FILES_RESERVED
    assert int(limit) >= 4 * needed
    assert f"LimitNOFILE={limit}" in (ROOT / "docs" / "systemd.md").read_text()


@needs_analyze
def test_systemd_rates_the_unit_exposure_at_most_2():
    """`systemd-analyze security` rates the unit's exposure 2.0 or below, as the docs state."""
    level = exposure()
    assert level <= MAX_EXPOSURE
    assert f"exposure level {level}" in (ROOT / "docs" / "systemd.md").read_text()


@needs_analyze
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    """`systemd-analyze verify` finds nothing wrong (with ExecStart pointed at this install)."""
    mailhook = Path(sys.executable).with_name("mailhook")
    if not mailhook.exists():
        pytest.skip("the mailhook console script is not installed next to this Python")
    unit = tmp_path / "mailhook.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/mailhook", str(mailhook)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "mailhook.service" not in result.stderr, result.stderr
