"""What the milter and the CalDAV write-back keep for one message or one backlog is bounded."""

from __future__ import annotations

import asyncio
import time

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

