"""What the milter and the CalDAV write-back keep for one message or one backlog is bounded."""

from __future__ import annotations

import asyncio
import time

from kilter.protocol.messages import Macro

from mailhook import caldav_writeback
from mailhook.config import CalDAVSettings
from mailhook.core.model import LinkInsertion
from mailhook.frontends import milter
from mailhook.metrics import Metrics
from tests.support import reliability


def _connection() -> milter.MilterConnection:
    connection = milter.MilterConnection.__new__(milter.MilterConnection)
    connection.message = milter.Pending()
    return connection


def test_many_header_fields_are_counted_in_linear_time():
    """100 000 header fields are taken in well under a second (the size is a running total)."""
    reliability.hostile("100 000 header fields through the milter")
    connection = _connection()
    started = time.perf_counter()
    for number in range(100_000):
        connection._collect("X-Field", b" value %d" % number)  # noqa: SLF001
    assert time.perf_counter() - started < 1.0
    assert len(connection.message.headers) == 100_000


def test_a_message_over_the_limit_keeps_nothing(monkeypatch):
    """Past MAX_MESSAGE neither header fields nor body are kept, and the message is marked."""
    monkeypatch.setattr(milter, "MAX_MESSAGE", 1000)
    connection = _connection()
    for _ in range(20):
        connection._collect("X-Field", b" " + b"h" * 30)  # noqa: SLF001
    connection._collect_body(b"b" * 600)  # noqa: SLF001
    message = connection.message
    assert message.too_large and message.headers == [] and message.body == bytearray()
    connection._collect("X-Late", b" more")  # noqa: SLF001
    assert message.headers == []


def test_recipients_count_towards_the_limit(monkeypatch):
    """Recipients are counted with the message, so endless RCPT packets keep nothing once it
    is over MAX_MESSAGE."""
    monkeypatch.setattr(milter, "MAX_MESSAGE", 1000)
    connection = _connection()
    for number in range(200):
        connection._collect_recipient(f"user{number}@example.com")  # noqa: SLF001
    assert connection.message.too_large and connection.message.recipients == []


def test_only_the_macros_used_are_kept():
    """Macro packets naming ever new macros do not grow the connection's table: only the
    macros mailhook reads ({i} and the client's) are kept."""
    reliability.hostile("milter: macros with ever new names")
    connection = _connection()
    connection.macros = {}
    for number in range(1000):
        connection.handle(Macro(ord("M"), {f"{{x{number}}}": "v", "i": "4Xq1Jt2ZzQz9sWQ"}))
    assert connection.macros == {"i": "4Xq1Jt2ZzQz9sWQ"}


async def test_write_backs_past_the_backlog_are_dropped_and_counted(monkeypatch):
    """With MAX_PENDING write-backs waiting, a new one is dropped and counted, never queued."""
    monkeypatch.setattr(caldav_writeback, "MAX_PENDING", 0)
    metrics = Metrics()
    section = CalDAVSettings(enabled=True, url="http://127.0.0.1:9")
    writeback = caldav_writeback.CalendarWriteBack(section, LinkInsertion(url=""), metrics)
    writeback.after("alice@example.com", "uid-1", "https://video.example.com/c/1")
    await asyncio.sleep(0)
    dropped = metrics.caldav_writebacks.labels("dropped")._value.get()  # noqa: SLF001
    assert dropped == 1
    await writeback.drain(1)

