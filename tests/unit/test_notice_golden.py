"""Golden files of the organizer notice: the whole notice, byte for byte, in each language.

Any change in what the notice says or how it is written shows up in review as a diff of
tests/golden/notice/. The inputs are fixed (facts, Date, Message-ID), so the bytes are too.
After an intended change, regenerate with
``MAILHOOK_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_notice_golden.py``
and read the diff (the bodies are quoted-printable or base64: decode them to read).
"""

from __future__ import annotations

import email
import email.policy
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailhook.core.notice import NoticeFacts, build_notice

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "notice"
UPDATE = os.environ.get("MAILHOOK_UPDATE_GOLDEN") == "1"
NOW = datetime(2030, 1, 1, 9, 30, tzinfo=UTC)
MESSAGE_ID = "<notice.golden@example.com>"
URL = "https://video.example.com/c/4000000001"
TOPICS = {"en": "Quarterly planning", "ru": "Планирование на квартал"}


def facts(language: str) -> NoticeFacts:
    """A weekly meeting in Moscow: one attendee with a TrueConf account, one guest."""
    return NoticeFacts(
        organizer="alice@example.com",
        topic=TOPICS[language],
        start=1900000000,  # 2030-03-17 20:46 in Moscow
        duration=3600,
        utc_offset_minutes=180,
        url=URL,
        in_accounts=("Bob Baker",),
        by_link=("zoe@example.net",),
        zone="Europe/Moscow",
        recurring=True,
    )


def notice(language: str) -> bytes:
    """The notice for the fixed facts, at a fixed time, with a fixed Message-ID."""
    return build_notice(facts(language), "noreply@example.com", language, NOW, MESSAGE_ID)


@pytest.mark.parametrize("language", ["en", "ru"])
def test_notice_matches_golden_file(language):
    """The notice is byte-identical to its checked-in golden file."""
    golden = GOLDEN / f"{language}.eml"
    if UPDATE:
        golden.parent.mkdir(exist_ok=True)
        golden.write_bytes(notice(language))
    assert golden.is_file(), f"no golden file {golden.name}; run with MAILHOOK_UPDATE_GOLDEN=1"
    assert notice(language) == golden.read_bytes(), f"{golden.name} differs; review it"


@pytest.mark.parametrize("language", ["en", "ru"])
def test_golden_notice_reads_as_intended(language):
    """Each golden file reads back as the notice it should be: headers, parts, the facts."""
    message = email.message_from_bytes((GOLDEN / f"{language}.eml").read_bytes(),
                                       policy=email.policy.default)
    assert message["Message-ID"] == MESSAGE_ID and message["Date"].datetime == NOW
    assert message["Subject"].endswith(TOPICS[language])
    plain = message.get_body(("plain",)).get_content()
    page = message.get_body(("html",)).get_content()
    for body in (plain, page):
        assert TOPICS[language] in body and URL in body
        assert "2030-03-17 20:46\u201321:46 (Europe/Moscow, UTC+03:00)" in body
        assert "Bob Baker" in body and "zoe@example.net" in body
    assert f'<html lang="{language}">' in page


def test_every_golden_notice_has_a_language():
    """No golden notice is left over from a language that was removed."""
    assert {path.name for path in GOLDEN.glob("*")} == {"en.eml", "ru.eml"}
