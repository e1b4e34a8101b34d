"""Runs parse_message and rewrite_message over the public corpus in ../shared/corpus/public."""

from __future__ import annotations

import pytest

from mailhook.core.mime import parse_message
from mailhook.core.model import LinkInsertion
from mailhook.core.rewrite import rewrite_message
from tests.fixtures.checks import (
    CORPUS_MISSING,
    as_message,
    calendar_texts,
    corpus_files,
    corpus_name,
    rewrite_problems,
    vobject_problem,
)

pytestmark = pytest.mark.corpus

URL = "https://video.example.com/c/corpus-0001"
ITIP = ("REQUEST", "CANCEL")
# Samples that are not iTIP at all, or must never be touched, and why.
NOT_REWRITTEN = {
    "ccs-calendarserver/dsn_failure_with_ics": "report",
    "zm-mailbox/calendar-bounce": "report",
    "python-icalendar/issue_165_missing_event.ics": "no event",
    "stalwart/google_calendar.txt": "no calendar",
    "stalwart/rfc5546_event_recurring.txt": "no calendar",
    "stalwart/rfc5546_event_single.txt": "no calendar",
}
NOT_ITIP = {
    "ccs-calendarserver/good_reply": "REPLY",
    "zm-mailbox/bug-69862-reply.txt": "REPLY",
    "tine/google_confirm.ics": "REPLY",
    "tine/invitation_reply_external_accepted.ics": "REPLY",
    "releases-comm-central/message-containing-event.eml": "PUBLISH",
    "releases-comm-central/message-non-invite.eml": "PUBLISH",
    "openbmc.lists.ozlabs.org.0/aed103411f22/m": "PUBLISH",
    "tine/zoom_invite.eml": "",
}
# The sample itself is not valid iCalendar for vobject (20140230 is no date).
INVALID_BEFORE = {"roundcubemail-plugins-kolab/recurrence-id.ics"}


def _files():
    files = corpus_files()
    if not files:
        pytest.skip(CORPUS_MISSING)
    return files


def test_corpus_parses_and_rewrites_soundly():
    """Every REQUEST/CANCEL in the corpus rewrites soundly and is read by both iCalendar parsers."""
    rewritten = passed = both_parsers = 0
    failures: list[str] = []
    for path in _files():
        name = corpus_name(path)
        raw = as_message(path)
        message = parse_message(raw)
        if message.skip_reason or message.method not in ITIP:
            passed += 1
            continue
        try:
            out = rewrite_message(message, LinkInsertion(URL, language="ru"))
        except Exception as exc:  # noqa: BLE001 - collect every failing file for the report
            failures.append(f"{name}: {exc!r}")
            continue
        rewritten += 1
        failures += [f"{name}: {problem}" for problem in rewrite_problems(raw, out, URL)]
        if all(not vobject_problem(text) for text in calendar_texts(out)):
            both_parsers += 1
        elif name not in INVALID_BEFORE:
            failures.append(f"{name}: vobject cannot read the rewrite")
    print(
        f"corpus: {rewritten + passed} read, {rewritten} rewritten, {passed} not iTIP "
        f"REQUEST/CANCEL, {both_parsers} rewrites valid in icalendar and vobject"
    )
    assert not failures, "\n".join(failures)
    assert rewritten >= 55 and both_parsers == rewritten - len(INVALID_BEFORE)


def test_corpus_skips_and_methods_are_the_expected_ones():
    """Reports, objects without UID and non-iTIP samples are recognised as such."""
    by_name = {corpus_name(path): path for path in _files()}
    for name, reason in NOT_REWRITTEN.items():
        assert parse_message(as_message(by_name[name])).skip_reason == reason, name
    for name, method in NOT_ITIP.items():
        parsed = parse_message(as_message(by_name[name]))
        assert (parsed.skip_reason, parsed.method) == ("", method), name


def test_corpus_copies_that_disagree_are_each_rewritten():
    """tine's two calendar copies differ in attendees; each keeps its own and gains the link."""
    by_name = {corpus_name(path): path for path in _files()}
    raw = as_message(by_name["tine/calendar_request.eml"])
    before = calendar_texts(raw)
    out = rewrite_message(parse_message(raw), LinkInsertion(URL))
    after = calendar_texts(out)
    assert "Löw" not in before[0] and "Löw" in before[1]
    assert "Löw" not in after[0] and "Löw" in after[1]
    assert all(URL in text.replace("\r\n ", "") for text in after)
