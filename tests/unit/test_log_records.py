"""Log records made once mailhook's logging is set up skip what its lines never show."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from mailhook import logfmt


@pytest.fixture
def logging_set_up(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    for flag in ("logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, flag, getattr(logging, flag))
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    logfmt.setup("info")
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)


def test_records_name_no_thread_and_no_process(logging_set_up: io.StringIO) -> None:
    """The summary line's record does not look up thread or process names; the line is as before."""
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    keep = Keep()
    logging.getLogger().addHandler(keep)
    try:
        logging.getLogger("mailhook.flow").info("decision=pass")
    finally:
        logging.getLogger().removeHandler(keep)
    assert (seen[0].threadName, seen[0].processName, seen[0].process) == (None, None, None)
    assert logging_set_up.getvalue() == "INFO mailhook.flow: decision=pass\n"
