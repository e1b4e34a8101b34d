"""Log lines for the journal: key=value fields, the message's context on warnings, no secrets.

The SMTP side binds what it knows about the message being handled (upstream queue id, client,
Message-ID) for the task that handles it; every record logged while it is bound, by any module,
carries those keys (``record.mailhook_context``), and warnings and errors end with them.

When stderr is the journal (systemd says so in ``JOURNAL_STREAM``), each line starts with its
syslog priority (``<3>`` for an error), which journald reads and strips: ``journalctl -p err``
then finds mailhook's errors. Anywhere else lines stay plain.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TextIO

LEVELS = ("debug", "info", "warning", "error")
# The libraries' own INFO lines (every connection, every HTTP request) drown the summary.
NOISY_LOGGERS = ("mail.log", "httpx", "httpcore")
REDACTED = "***"

# The default is never changed: a context is replaced, never updated in place.
_context: ContextVar[Mapping[str, str]] = ContextVar(
    "mailhook_log_context", default={}  # noqa: B039
)
_secrets: set[str] = set()


# Values come from the messages (Message-ID, UID, addresses): a value can neither end the line
# (C0 and C1 controls, DEL, U+2028/2029; lone surrogates are undecodable bytes) nor run on.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NEEDS_QUOTES = re.compile(r'[ "=\\]')
# Either of the two above: a value without any is written as it is (one search for most).
_NOT_AS_IS = re.compile('[\x00-\x20"=\\\\\x7f-\x9f\u2028\u2029\ud800-\udfff]')
VALUE_LIMIT = 256  # characters of one value; a longer one is cut and ends with "…"


def fields(values: Mapping[str, str]) -> str:
    """``key=value`` pairs, values quoted when they hold spaces, quotes, backslashes or '='."""
    return " ".join(f"{key}={quote(value)}" for key, value in values.items())


def quote(value: str) -> str:
    """One value, on one line, bounded, quoted when needed."""
    if value and len(value) <= VALUE_LIMIT and not _NOT_AS_IS.search(value):
        return value
    value = one_line(value)
    if len(value) > VALUE_LIMIT:
        value = value[: VALUE_LIMIT - 1] + "\u2026"
    if not value or _NEEDS_QUOTES.search(value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def one_line(text: str) -> str:
    """The text with every control character (line breaks included) a space."""
    return _UNPRINTABLE.sub(" ", text)


@contextmanager
def message_context(**values: str) -> Iterator[None]:
    """Attach these keys to warnings and errors logged by the current task until the block ends."""
    token = _context.set({**_context.get(), **{k: v for k, v in values.items() if v}})
    try:
        yield
    finally:
        _context.reset(token)


def context() -> Mapping[str, str]:
    """The keys bound for the current task."""
    return _context.get()


def redact(secret: str) -> None:
    """Never let this value reach a log line (a last line of defence behind each adapter)."""
    if len(secret) >= 4:
        _secrets.add(secret)


def journal_stream(stream: TextIO) -> bool:
    """Is this stream connected to the journal? systemd sets JOURNAL_STREAM to the device and
    inode ("8:12345") of the stream it gave the service; a program started from the service
    with its stderr redirected elsewhere inherits the variable, hence the comparison."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        status = os.fstat(stream.fileno())
        return (int(device), int(inode)) == (status.st_dev, status.st_ino)
    except (ValueError, OSError, AttributeError):
        return False


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level: 2 critical, 3 error, 4 warning, 6 info, 7 debug."""
    for floor, priority in ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
                            (logging.INFO, 6)):
        if levelno >= floor:
            return priority
    return 7


class Formatter(logging.Formatter):
    """``LEVEL logger: message``, warnings and errors followed by the message's keys; with
    ``priorities``, every line (a traceback's too) starts with ``<N>`` for the journal."""

    def __init__(self, priorities: bool = False) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self.priorities = priorities

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        # A message may quote a message's own values (a UID in a warning): it stays one line.
        # A traceback, added after this, keeps its line breaks.
        return one_line(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        bound = getattr(record, "mailhook_context", None) or {}
        if record.levelno >= logging.WARNING and bound:
            extra = {key: value for key, value in bound.items() if f"{key}=" not in line}
            if extra:
                line = f"{line} {fields(extra)}"
        for secret in _secrets:
            line = line.replace(secret, REDACTED)
        if self.priorities:
            prefix = f"<{syslog_priority(record.levelno)}>"
            line = "\n".join(prefix + part for part in line.split("\n"))
        return line


def _install_record_factory() -> None:
    # Stamped when the record is made, in the task that logs it: a handler formatting later
    # (or elsewhere) still sees the message's keys.
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_mailhook", False):
        return

    def make(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.mailhook_context = _context.get()
        return record

    make._mailhook = True  # type: ignore[attr-defined]  # noqa: SLF001 - our own marker
    logging.setLogRecordFactory(make)


_install_record_factory()


def setup(level: str) -> None:
    """Send every log line to stderr (the journal under systemd) at the given level."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_mailhook", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Formatter(priorities=journal_stream(sys.stderr)))
    handler._mailhook = True  # type: ignore[attr-defined]  # noqa: SLF001 - our own marker
    root.addHandler(handler)
    # The lines name no thread and no process: spare every record looking them up (the
    # process name alone is a tenth of the log line's cost, and there is one line a message).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    set_level(level)


def set_level(level: str) -> None:
    """Change the level (also on reload), keeping the libraries' chatter at warning or above."""
    numeric = getattr(logging, level.upper())
    logging.getLogger().setLevel(numeric)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, numeric))
