"""The public corpus through the real daemon: every message delivered, the right decision, and
every rewrite sound (shape, headers, strict iCalendar, icalendar and vobject, the link shown).

Each sample is sent as outgoing mail of a local organizer (``trigger = "always"``, the
organizer's domain local, the organizer as envelope sender), with the clock set before the
event so that past events still count as upcoming.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailhook.core.mime import parse_message
from mailhook.testing.sink import Sink
from mailhook.testing.standin import StandIn
from tests.fixtures.checks import (
    CORPUS_MISSING,
    MESSAGES,
    as_message,
    calendar_texts,
    corpus_files,
    corpus_name,
    icalendar_problem,
    on_the_wire,
    rewrite_problems,
    vobject_problem,
)
from tests.integration.conftest import send
from tests.support.clock import Clock
from tests.support.trace import untraced

pytestmark = pytest.mark.corpus

REWRITE, PASS, DELETE = "rewrite", "pass", "delete"
# Related samples in the order their organizers sent them; the rest follow in name order.
FLOWS = [
    "releases-comm-central/single-event.eml",
    "releases-comm-central/update-minor.eml",
    "releases-comm-central/update-major.eml",
    "releases-comm-central/exception-minor.eml",
    "releases-comm-central/exception-major.eml",
    "releases-comm-central/cancel-single-event.eml",
    "releases-comm-central/repeat-event.eml",
    "releases-comm-central/repeat-update-minor.eml",
    "releases-comm-central/repeat-update-major.eml",
    "releases-comm-central/cancel-repeat-event.eml",
    "openbmc.lists.ozlabs.org.0/462ae8b06519/m",
    "openbmc.lists.ozlabs.org.0/34709e31d68a/m",
    "openbmc.lists.ozlabs.org.0/6a2dcc02bbfa/m",
    "openbmc.lists.ozlabs.org.0/aecca46b410e/m",
    "tine/calendar_request.eml",
    "tine/calendar_cancel.eml",
    "tine/google_external_invite.ics",
    "tine/google_external_invite_update1.ics",
    "tine/google_external_invite_update2.ics",
    "tine/invitation_bad_tz.ics",
    "tine/invitationICALseries.ics",
    "tine/invitationICALexception1.ics",
    "tine/outlook_invitation.ics",
    "tine/outlook_reschedule.ics",
    "zm-mailbox/bug-69862-invite.txt",
    "zm-mailbox/bug-69862-reply.txt",
]
# Whole-event CANCELs whose REQUEST is not in the corpus: the test first sends that REQUEST
# (the same object with METHOD:REQUEST), so the CANCEL has a conference to delete.
# Thunderbird's test data reuses one UID for its single-event flow and its recurring flow;
# each flow starts on an empty store, as two unrelated organizers' events would.
NEW_STORE = {"releases-comm-central/repeat-event.eml"}
PRIMED = {
    "openbmc.lists.ozlabs.org.0/95f1919a9943/m",
    "openbmc.lists.ozlabs.org.0/c94b2fe010bd/m",
}
# What becomes of each sample: REWRITE (link written), PASS (forwarded byte-identical),
# DELETE (forwarded byte-identical and its conference deleted).
EXPECTED: dict[str, str] = {
    "releases-comm-central/single-event.eml": REWRITE,
    "releases-comm-central/update-minor.eml": REWRITE,
    "releases-comm-central/update-major.eml": REWRITE,
    "releases-comm-central/exception-minor.eml": REWRITE,
    "releases-comm-central/exception-major.eml": REWRITE,
    "releases-comm-central/cancel-single-event.eml": DELETE,
    "releases-comm-central/repeat-event.eml": REWRITE,
    "releases-comm-central/repeat-update-minor.eml": REWRITE,
    "releases-comm-central/repeat-update-major.eml": REWRITE,
    "releases-comm-central/cancel-repeat-event.eml": DELETE,
    "openbmc.lists.ozlabs.org.0/462ae8b06519/m": REWRITE,
    "openbmc.lists.ozlabs.org.0/34709e31d68a/m": REWRITE,
    "openbmc.lists.ozlabs.org.0/6a2dcc02bbfa/m": REWRITE,
    "openbmc.lists.ozlabs.org.0/aecca46b410e/m": DELETE,
    "tine/calendar_request.eml": REWRITE,
    # lists other attendees than the REQUEST: only they are removed from the conference
    "tine/calendar_cancel.eml": PASS,
    "tine/google_external_invite.ics": REWRITE,
    "tine/google_external_invite_update1.ics": REWRITE,
    "tine/google_external_invite_update2.ics": REWRITE,
    "tine/invitation_bad_tz.ics": REWRITE,
    # the organizer's local part is too long for a TrueConf id: forwarded unchanged
    "tine/invitationICALseries.ics": PASS,
    "tine/invitationICALexception1.ics": PASS,
    "tine/outlook_invitation.ics": REWRITE,
    "tine/outlook_reschedule.ics": REWRITE,
    "zm-mailbox/bug-69862-invite.txt": REWRITE,
    "zm-mailbox/bug-69862-reply.txt": PASS,
    "ccs-calendarserver/dsn_failure_with_ics": PASS,
    "ccs-calendarserver/good_reply": PASS,
    "gromox/gxl-475.ics": REWRITE,
    "ical4j/calconnect.ics": REWRITE,
    "ical4j/tmeher.ics": REWRITE,
    "kopano-core/kc-138-1.eml": REWRITE,
    "kopano-core/kc-138-2.eml": REWRITE,
    "nextcloud-mail/request_google.txt": REWRITE,
    "nextcloud-mail/request_outlook_com.txt": REWRITE,
    "openbmc.lists.ozlabs.org.0/95f1919a9943/m": DELETE,
    "openbmc.lists.ozlabs.org.0/aed103411f22/m": PASS,
    "openbmc.lists.ozlabs.org.0/c94b2fe010bd/m": DELETE,
    # an occurrence of a series whose conference was deleted
    "openbmc.lists.ozlabs.org.0/e2a4a966d4df/m": PASS,
    "openbmc.lists.ozlabs.org.0/e4f51e211561/m": PASS,
    "openbmc.lists.ozlabs.org.0/f78ed22d2e9a/m": PASS,
    "postal-mime/calendar-event.eml": REWRITE,
    "python-icalendar/issue_165_missing_event.ics": PASS,
    "python-icalendar/issue_350.ics": PASS,  # no ORGANIZER
    "python-icalendar/property_params.ics": REWRITE,
    "releases-comm-central/event-with-file-attachment.eml": REWRITE,
    "releases-comm-central/invite.eml": PASS,  # no ORGANIZER
    "releases-comm-central/meet-meeting-invite.eml": REWRITE,
    "releases-comm-central/message-containing-event.eml": PASS,
    "releases-comm-central/message-non-invite.eml": PASS,
    "releases-comm-central/outlook-test-invite.eml": REWRITE,
    "releases-comm-central/teams-meeting-invite.eml": REWRITE,
    "roundcubemail-plugins-kolab/itip.ics": REWRITE,
    "roundcubemail-plugins-kolab/recurrence-id.ics": PASS,  # no ORGANIZER
    "stalwart/google_calendar.txt": PASS,
    "stalwart/rfc5546_event_recurring.txt": PASS,
    "stalwart/rfc5546_event_single.txt": PASS,
    "tine/calendarserver_external_invitation.ics": REWRITE,
    "tine/exchange2007_mail_anhang.ics": REWRITE,
    # a changed occurrence of a series mailhook never saw: it gets a conference of its own
    "tine/exchange_external_reoccuring_onlyone.ics": REWRITE,
    "tine/google_confirm.ics": PASS,
    "tine/iOSInvitation.eml": REWRITE,
    "tine/invitation.eml": REWRITE,
    "tine/invitation_reply_external_accepted.ics": PASS,
    "tine/invite_outlook.eml": REWRITE,
    "tine/join_teams_meeting.eml": REWRITE,
    "tine/lotusnotes_external_invitation.ics": REWRITE,
    "tine/mac_invitation.eml": REWRITE,
    "tine/outlookimip.eml": REWRITE,
    "tine/zoom_invite.eml": PASS,
    "zm-mailbox/Calendar_ChangeMeetingRequest_WO_Rsvp.txt": REWRITE,
    "zm-mailbox/appt14": REWRITE,
    "zm-mailbox/bug_45331.txt": REWRITE,
    "zm-mailbox/calendar-bounce": PASS,
    "zm-mailbox/invite1": PASS,  # the organizer is the only attendee
}


@dataclass
class Sample:
    """One corpus message as an organizer's outgoing mail."""

    name: str
    raw: bytes
    organizer: str
    now: datetime


@pytest.fixture
def standin() -> Iterator[StandIn]:
    """A stand-in without a user list: every owner id is accepted."""
    with StandIn(users=None, client_id="mailhook", client_secret="s3cret-value") as server:
        yield server


def _samples() -> list[Sample]:
    files = {corpus_name(path): path for path in corpus_files()}
    order = [name for name in FLOWS if name in files] + sorted(set(files) - set(FLOWS))
    return [_sample(name, files[name]) for name in order]


def _sample(name: str, path: Path) -> Sample:
    parsed = parse_message(as_message(path))
    events = parsed.calendar.events if parsed.calendar else ()
    organizer = next((e.organizer for e in events if "@" in e.organizer), parsed.from_address)
    organizer = organizer or "organizer@example.com"
    starts = [e.start for e in events if e.start is not None]
    now = min(starts) - timedelta(days=1) if starts else datetime(2000, 1, 1, tzinfo=UTC)
    raw = on_the_wire(as_message(path, sender=organizer))
    return Sample(name, raw if raw.endswith(b"\r\n") else raw + b"\r\n", organizer, now)


def _as_request(raw: bytes) -> bytes:
    """A bare REQUEST carrying the calendar object of a CANCEL (for priming)."""
    text = calendar_texts(raw)[0]
    text = re.sub(r"(?m)^METHOD:CANCEL\r?$", "METHOD:REQUEST", text)
    text = re.sub(r"(?m)^STATUS:CANCELLED\r?\n", "", text)
    head = "MIME-Version: 1.0\r\nContent-Type: text/calendar; charset=utf-8; method=REQUEST\r\n\r\n"
    return (head + text).encode("utf-8")


async def _deliver(daemon, clock: Clock, sink: Sink, sample: Sample, raw: bytes) -> bytes | None:
    clock.set(sample.now)
    before = len(sink.messages)
    code, _text = await send(
        daemon, raw, sender=sample.organizer, rcpts=("attendee@corpus.example",)
    )
    arrived = sink.messages[before:]
    if code != 250 or len(arrived) != 1:
        return None
    return untraced(arrived[0].content)


async def test_every_corpus_message_is_delivered_and_decided_right(start_daemon, standin, sink,
                                                                   tmp_path):
    """Each corpus message is delivered once; rewrites are sound in both parsers; passes are
    byte-identical; organizer CANCELs delete their conference."""
    samples = _samples()
    if not samples:
        pytest.skip(CORPUS_MISSING)
    domains = sorted({sample.organizer.rpartition("@")[2] for sample in samples} | {"example.com"})
    counts = {"delivered": 0, REWRITE: 0, PASS: 0, DELETE: 0, "valid in both parsers": 0}
    outcomes: dict[str, str] = {}
    failures: list[str] = []
    daemon = None
    clock = Clock()
    for number, sample in enumerate(samples):
        if daemon is None or sample.name in NEW_STORE:
            daemon = await start_daemon(
                clock=clock,
                policy={"trigger": "always", "local_domains": domains},
                trueconf={"user_mapping": "local_part"},
                notice={"enabled": False},
                store={"path": str(tmp_path / f"corpus-{number}.sqlite3")},
            )
        if sample.name in PRIMED:
            await _deliver(daemon, clock, sink, sample, _as_request(sample.raw))
        deletes = sum(1 for r in standin.requests if r.method == "DELETE")
        delivered = await _deliver(daemon, clock, sink, sample, sample.raw)
        if delivered is None:
            failures.append(f"{sample.name}: not delivered exactly once")
            continue
        counts["delivered"] += 1
        if delivered == sample.raw:
            deleted = sum(1 for r in standin.requests if r.method == "DELETE") > deletes
            outcome = DELETE if deleted else PASS
        else:
            outcome = REWRITE
            failures += _rewrite_failures(sample, delivered, standin, counts)
        counts[outcome] += 1
        outcomes[sample.name] = outcome
    print("\ncorpus through the daemon: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    assert not failures, "\n".join(failures)
    assert counts["delivered"] == len(samples)
    assert counts["valid in both parsers"] == counts[REWRITE]
    wrong = {n: o for n, o in outcomes.items() if n in EXPECTED and EXPECTED[n] != o}
    assert not wrong, f"unexpected decisions: {wrong}"


def _rewrite_failures(
    sample: Sample, delivered: bytes, standin: StandIn, counts: dict
) -> list[str]:
    urls = parse_message(delivered).calendar.events[0].conference_urls
    known = {conference["url"] for conference in standin.conferences.values()}
    if len(urls) != 1 or urls[0] not in known:
        return [f"{sample.name}: CONFERENCE {urls} is not a conference TrueConf returned"]
    problems = rewrite_problems(sample.raw, delivered, urls[0])
    texts = calendar_texts(delivered)
    if all(not icalendar_problem(t) and not vobject_problem(t) for t in texts):
        counts["valid in both parsers"] += 1
    return [f"{sample.name}: {problem}" for problem in problems]


async def test_every_producer_fixture_gets_the_link_through_the_daemon(start_daemon, standin, sink):
    """Each producer-shaped fixture invitation is delivered once with a sound rewrite."""
    samples = [
        _sample(path.name, path)
        for path in sorted(MESSAGES.glob("*.eml"))
        if parse_message(path.read_bytes()).method in ("REQUEST", "CANCEL")
    ]
    domains = sorted({sample.organizer.rpartition("@")[2] for sample in samples})
    clock = Clock()
    daemon = await start_daemon(
        clock=clock,
        policy={"trigger": "always", "local_domains": domains},
        trueconf={"user_mapping": "local_part"},
        notice={"enabled": False},
    )
    counts: dict[str, int] = {"valid in both parsers": 0}
    failures: list[str] = []
    rewritten = 0
    for sample in samples:
        delivered = await _deliver(daemon, clock, sink, sample, sample.raw)
        if delivered is None or delivered == sample.raw:
            if parse_message(sample.raw).method != "CANCEL":  # no conference to cancel
                failures.append(f"{sample.name}: not delivered rewritten")
            continue
        rewritten += 1
        failures += _rewrite_failures(sample, delivered, standin, counts)
    assert not failures, "\n".join(failures)
    assert rewritten >= 20 and counts["valid in both parsers"] == rewritten
