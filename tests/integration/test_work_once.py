"""Work done once per message through the daemon: the calendar marker check and the reading
of the top header block (the log line's fields come from the one parse the flow does)."""

from __future__ import annotations

import email.parser
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import CodeType

import pytest

from mailhook.core import mime, mimetree
from tests.integration.conftest import send
from tests.support.invites import Event, exchange, plain_mail, thunderbird

MESSAGES = {"plain": plain_mail(), "thunderbird": thunderbird(Event()), "exchange": exchange(Event())}


def top_block(raw: bytes) -> bytes:
    """The message's header section, without the line break that ends it."""
    return raw[:raw.index(b"\r\n\r\n")]


@contextmanager
def calls_of(code: CodeType) -> Iterator[list[int]]:
    """Count the calls of one function on this thread, however it is referred to."""
    calls: list[int] = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code is code:
            calls.append(1)

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield calls
    finally:
        sys.setprofile(previous)


@pytest.mark.parametrize("name", MESSAGES)
async def test_calendar_marker_check_runs_once(daemon, name):
    """may_contain_calendar scans each message once."""
    with calls_of(mime.may_contain_calendar.__code__) as scans:
        assert (await send(daemon, MESSAGES[name]))[0] == 250
    assert len(scans) == 1


@pytest.mark.parametrize("name", MESSAGES)
async def test_top_header_block_is_read_once(daemon, monkeypatch, caplog, name):
    """The top header block is read once (the log line's fields come from the message's one
    parse), and the log line still names the Message-ID."""
    caplog.set_level(logging.INFO, logger="mailhook")
    raw = MESSAGES[name]
    top = top_block(raw)
    reads: list[bytes] = []
    plain, parser = mimetree._plain_headers, email.parser.BytesHeaderParser.parsebytes

    def plain_counted(block: bytes):
        reads.append(block)
        return plain(block)

    def parser_counted(self, data: bytes, headersonly: bool = True):
        reads.append(bytes(data))
        return parser(self, data, headersonly)

    monkeypatch.setattr(mimetree, "_plain_headers", plain_counted)
    monkeypatch.setattr(email.parser.BytesHeaderParser, "parsebytes", parser_counted)
    assert (await send(daemon, raw))[0] == 250
    assert len([block for block in reads if block.rstrip(b"\r\n") == top]) == 1
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("queue_id=")]
    assert "message_id=<" in line
