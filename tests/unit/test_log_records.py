"""Log records made once mailhook's logging is set up skip what its lines never show."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


@given(st.text(alphabet=st.sampled_from('ab=" \\\t\n\x00\x7f\x85\u2028\u00e9'), max_size=8)
       | st.text(max_size=300))
def test_a_value_is_written_as_the_rules_say(value: str) -> None:
    """Controls become spaces, long values are cut, and spaces, quotes, '=' and backslashes
    (or nothing at all) get the value quoted; anything else is written as it is."""
    line = re.sub("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]", " ", value)
    if len(line) > logfmt.VALUE_LIMIT:
        line = line[: logfmt.VALUE_LIMIT - 1] + "\u2026"
    if not line or re.search(r'[ "=\\]', line):
        line = '"' + line.replace("\\", "\\\\").replace('"', '\\"') + '"'
    assert logfmt.quote(value) == line
