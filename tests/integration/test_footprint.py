"""What a running daemon loads: only the parts its configuration uses."""

from __future__ import annotations

import os
from pathlib import Path

from mailhook.testing.sink import Sink
from mailhook.testing.standin import StandIn
from tests.integration.conftest import USERS
from tests.support.process import SECRET, free_port, serve, wait_for_port, write_config


def loaded_libraries(tmp_path: Path, env: dict[str, str]) -> str:
    """The shared objects mapped by a `mailhook serve` started with ``env`` once it listens."""
    port = free_port()
    with StandIn(users=USERS, client_id="mailhook", client_secret=SECRET) as standin, \
            Sink() as sink:
        config = write_config(tmp_path, standin.url, sink.port, port)
        daemon = serve(config, env={**os.environ, **env})
        try:
            wait_for_port(port, daemon)
            return Path(f"/proc/{daemon.pid}/maps").read_text()
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)


def test_the_caldav_client_is_loaded_only_for_caldav_write_back(tmp_path):
    """A daemon without [caldav] does not load the CalDAV client library and the XML parser
    it brings (about 30 MB per process); one with the write-back on loads them at start-up."""
    without = loaded_libraries(tmp_path, {})
    with_caldav = loaded_libraries(tmp_path, {"MAILHOOK_CALDAV__ENABLED": "true",
                                              "MAILHOOK_CALDAV__URL": "http://127.0.0.1:9/"})
    assert "lxml" not in without
    assert "lxml" in with_caldav
