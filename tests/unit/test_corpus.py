"""Runs parse_message and rewrite_message over the public corpus in ../shared/corpus/public."""

from __future__ import annotations

import email
from pathlib import Path

import pytest
from icalendar import Calendar

from mailhook.core.mime import calendar_leaves, parse_message, read_calendar, scan_message
from mailhook.core.model import LinkInsertion
from mailhook.core.rewrite import rewrite_message

pytestmark = pytest.mark.corpus

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "public"
URL = "https://video.example.com/c/corpus-0001"
ITIP = ("REQUEST", "CANCEL")


def _corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix.lower() != ".md")


def _as_message(path: Path) -> bytes:
    """A message for the file: .ics files are wrapped in a minimal text/calendar message."""
    data = path.read_bytes()
    if path.suffix.lower() != ".ics":
        return data
    head = (
        b"From: Organizer <organizer@example.com>\r\nTo: attendee@example.org\r\n"
        b"Subject: corpus\r\nMessage-ID: <corpus@example.com>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/calendar; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    )
    return head + data


def _check_rewritten(out: bytes) -> None:
    reparsed = parse_message(out)
    assert reparsed.skip_reason == ""
    root = scan_message(out).root
    texts = {
        read_calendar(out, leaf)[0].replace("\r\n", "\n") for leaf in calendar_leaves(out, root)
    }
    assert len(texts) == 1, "calendar copies differ after the rewrite"
    # A UTF-8 BOM before the headers hides them from the stdlib parser; skip it for this check.
    message = email.message_from_bytes(out.removeprefix(b"\xef\xbb\xbf"))
    decoded = [
        part.get_payload(decode=True)
        for part in message.walk()
        if part.get_content_type() in ("text/calendar", "application/ics")
        or (part.get_filename() or "").lower().endswith(".ics")
    ]
    assert decoded
    for payload in decoded:
        calendar = Calendar.from_ical(payload)
        for event in calendar.walk("VEVENT"):
            assert str(event["CONFERENCE"]) == URL
            assert URL in str(event["DESCRIPTION"])


def test_corpus_parses_and_rewrites():
    """Every corpus file parses without raising; every REQUEST/CANCEL rewrites cleanly."""
    files = _corpus_files()
    if not files:
        pytest.skip(
            "../shared/corpus/public not present: corpus tests need the shared folder beside the repo"
        )
    parsed = rewritten = passed = 0
    failures: list[str] = []
    for path in files:
        message = parse_message(_as_message(path))
        parsed += 1
        if message.skip_reason or message.method not in ITIP:
            passed += 1
            continue
        try:
            _check_rewritten(rewrite_message(message, LinkInsertion(URL, language="ru")))
            rewritten += 1
        except Exception as exc:  # noqa: BLE001 - collect every failing file for the report
            failures.append(f"{path.relative_to(CORPUS)}: {exc!r}")
    print(f"corpus: {parsed} parsed, {rewritten} rewritten, {passed} passed through")
    assert not failures, "\n".join(failures)
    assert rewritten >= 40
