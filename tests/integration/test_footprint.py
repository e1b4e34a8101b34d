"""What a running daemon loads: only the parts its configuration uses."""

from __future__ import annotations

from pathlib import Path

from tests.support.process import serving


def loaded_libraries(tmp_path: Path, env: dict[str, str]) -> str:
    """The shared objects mapped by a `mailhook serve` started with ``env`` once it listens."""
    with serving(tmp_path, env) as daemon:
        return Path(f"/proc/{daemon.process.pid}/maps").read_text()


def test_the_caldav_client_is_loaded_only_for_caldav_write_back(tmp_path):
    """A daemon without [caldav] does not load the CalDAV client library and the XML parser
    it brings (about 30 MB per process); one with the write-back on loads them at start-up."""
    without = loaded_libraries(tmp_path, {})
    with_caldav = loaded_libraries(tmp_path, {"MAILHOOK_CALDAV__ENABLED": "true",
                                              "MAILHOOK_CALDAV__URL": "http://127.0.0.1:9/"})
    assert "lxml" not in without
    assert "lxml" in with_caldav
