"""Golden files: the rewritten form of every producer-shaped fixture, checked in byte for byte.

Any change in what mailhook writes shows up in review as a diff of tests/golden/. After an
intended change, regenerate with ``MAILHOOK_UPDATE_GOLDEN=1 .venv/bin/python -m pytest
tests/unit/test_golden.py`` and read the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailhook.core.mime import parse_message
from mailhook.core.model import LinkInsertion
from mailhook.core.rewrite import rewrite_message
from tests.fixtures.checks import MESSAGES, rewrite_problems, strict_problems, vobject_problem

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
URL = "https://video.example.com/c/4000000001"
UPDATE = os.environ.get("MAILHOOK_UPDATE_GOLDEN") == "1"


def _invitations() -> list[Path]:
    found = []
    for path in sorted(MESSAGES.glob("*.eml")):
        parsed = parse_message(path.read_bytes())
        if not parsed.skip_reason and parsed.method in ("REQUEST", "CANCEL"):
            found.append(path)
    return found


CASES = [(path, "en") for path in _invitations()] + [(MESSAGES / "outlook_ru.eml", "ru")]


def golden_path(fixture: Path, language: str) -> Path:
    """tests/golden/<fixture>.eml for English, <fixture>.<language>.eml otherwise."""
    suffix = ".eml" if language == "en" else f".{language}.eml"
    return GOLDEN / (fixture.stem + suffix)


def _rewritten(fixture: Path, language: str) -> bytes:
    return rewrite_message(
        parse_message(fixture.read_bytes()), LinkInsertion(URL, language=language)
    )


@pytest.mark.parametrize(("fixture", "language"), CASES, ids=lambda v: getattr(v, "stem", v))
def test_rewrite_matches_golden_file(fixture, language):
    """The rewrite of each fixture is byte-identical to its checked-in golden file."""
    out = _rewritten(fixture, language)
    golden = golden_path(fixture, language)
    if UPDATE:
        golden.parent.mkdir(exist_ok=True)
        golden.write_bytes(out)
    assert golden.is_file(), f"no golden file {golden.name}; run with MAILHOOK_UPDATE_GOLDEN=1"
    assert out == golden.read_bytes(), f"{golden.name} differs; review and regenerate if intended"


@pytest.mark.parametrize(("fixture", "language"), CASES, ids=lambda v: getattr(v, "stem", v))
def test_golden_file_is_a_sound_rewrite(fixture, language):
    """Each golden file is a sound rewrite: shape, headers, strict iCalendar, parsers, links."""
    golden = golden_path(fixture, language)
    if not golden.is_file():
        pytest.fail(f"no golden file {golden.name}")
    assert rewrite_problems(fixture.read_bytes(), golden.read_bytes(), URL) == []


def test_every_golden_file_has_a_fixture():
    """No golden file is left over from a fixture that was removed or renamed."""
    expected = {golden_path(fixture, language).name for fixture, language in CASES}
    assert {path.name for path in GOLDEN.glob("*.eml")} == expected


def test_golden_cases_cover_both_languages_and_many_producers():
    """The golden set spans the producer shapes and includes a Russian rewrite."""
    assert len(CASES) >= 20
    assert any(language == "ru" for _fixture, language in CASES)


# --- the checks behind the corpus and golden tests catch damage -------------------------------

THUNDERBIRD = MESSAGES / "thunderbird128.eml"


def _damaged(old: bytes, new: bytes) -> list[str]:
    original = THUNDERBIRD.read_bytes()
    golden = golden_path(THUNDERBIRD, "en").read_bytes()
    assert old in golden
    return rewrite_problems(original, golden.replace(old, new), URL)


@pytest.mark.parametrize(
    ("old", "new", "finding"),
    [
        (b"SUMMARY:Release planning", b"SUMMARY:Release plans", "outside the rewritten properties"),
        (b"text/plain; charset=UTF-8", b"text/plain; charset=latin-1", "charset"),
        (b"Content-type: text/plain; charset=UTF-8\r\n",
         b"Content-type: text/plain; charset=UTF-8\r\nContent-Length: 9\r\n", "Content-Length"),
        (b"\r\nCONFERENCE;", b"\r\nX-CONFERENCE;", "CONFERENCE"),
        (b"transfer-encoding: 8BIT", b"transfer-encoding: 7bit", "transfer encoding"),
    ],
)  # fmt: skip
def test_checks_report_damage(old, new, finding):
    """A damaged rewrite is reported: identity lines, part headers, links, line ends, encodings."""
    problems = _damaged(old, new)
    assert any(finding in problem for problem in problems), problems


def test_checks_report_long_written_lines_and_parser_failures():
    """Written lines over 75 octets, LF line ends and objects vobject cannot read are reported."""
    before = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    after = before.replace("UID:x\r\n", "UID:x\r\nDESCRIPTION:" + "y" * 80 + "\r\n")
    assert any("75 octets" in p for p in strict_problems(before, after))
    assert any("CRLF" in p for p in strict_problems(before, after.replace("\r\n", "\n")))
    assert vobject_problem(
        "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART:2031023\r\nEND:VCALENDAR\r\n"
    )
