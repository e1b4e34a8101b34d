"""The organizer's notices through the real daemon: ``notice.when``, the time in the event's
own zone, series, and organizers without a TrueConf account (``trueconf.fallback_owner``)."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest

from mailhook.app import open_store
from mailhook.explain import explain
from mailhook.testing.standin import StandIn
from tests.integration.conftest import USERS, send, settings_for
from tests.support.daemon import api_calls, invitations, notices, wait_notices
from tests.support.invites import FUTURE, Event, thunderbird
from tests.support.trace import untraced

EVENT = Event()
# An organizer of a local domain without a TrueConf account (not in the stand-in's users).
NO_ACCOUNT = replace(Event(), organizer="zed@example.com",
                     uid="5f3c1d7e-2222-4a2b-9c3d-000000000016@example.com")
SERVICE = {"id": "meetings", "email": "meetings@example.com", "display_name": "Meetings"}


@pytest.fixture
def standin() -> Iterator[StandIn]:
    """The stand-in with the example users and a service account for fallback_owner."""
    with StandIn(users=[*USERS, SERVICE], client_id="mailhook",
                 client_secret="s3cret-value") as server:
        yield server


def plain_text(raw: bytes) -> str:
    """The text/plain part of a notice, decoded."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return part.get_content()


def subject(raw: bytes) -> str:
    return str(email.message_from_bytes(raw, policy=email.policy.default)["Subject"])


async def settled(sink, count: int) -> list:
    """The notices once ``count`` have come, and a moment more for any unexpected one."""
    found = await wait_notices(sink, count)
    await asyncio.sleep(0.5)
    return notices(sink) if len(notices(sink)) > count else found


MOVED = replace(EVENT, start=FUTURE + timedelta(days=1), sequence=1)


@pytest.mark.parametrize(("when", "expected"), [("created", 1), ("always", 2), ("never", 0)])
async def test_notice_when_decides_which_requests_are_told(start_daemon, sink, when, expected):
    """notice.when: "created" tells of the new conference only, "always" of the moved one too,
    "never" of neither."""
    daemon = await start_daemon(notice={"when": when})
    assert (await send(daemon, thunderbird(EVENT)))[0] == 250
    assert (await send(daemon, thunderbird(MOVED)))[0] == 250
    found = await settled(sink, expected)
    assert len(found) == expected
    if expected:
        assert subject(found[0].content).startswith("TrueConf conference: ")
    if expected == 2:
        assert subject(found[1].content).startswith("TrueConf conference updated: ")


async def test_copy_of_the_same_invitation_sends_no_second_notice(start_daemon, sink):
    """A second copy of an unchanged invitation is not a change: no notice, even with "always"."""
    daemon = await start_daemon(notice={"when": "always"})
    await send(daemon, thunderbird(EVENT))
    await send(daemon, thunderbird(EVENT, message_id="<copy@example.com>"))
    assert len(await settled(sink, 1)) == 1


async def test_never_also_silences_action_required(start_daemon, standin, sink):
    """With notice.when = "never" an invitation TrueConf refused goes out without any notice."""
    daemon = await start_daemon(notice={"when": "never"})
    standin.fail_next(1, status=400, path_prefix="/api/")
    assert (await send(daemon, thunderbird(EVENT)))[0] == 250
    assert len(invitations(sink)) == 1
    assert await settled(sink, 0) == []


def zoned(raw: bytes) -> bytes:
    """The invitation with DTSTART/DTEND in Europe/Moscow instead of UTC (same instants)."""
    return (raw.replace(b"DTSTART:20310310T090000Z", b"DTSTART;TZID=Europe/Moscow:20310310T120000")
            .replace(b"DTEND:20310310T100000Z", b"DTEND;TZID=Europe/Moscow:20310310T130000"))


async def test_notice_shows_the_time_in_the_events_zone(daemon, sink):
    """The notice gives the time in DTSTART's own zone, named."""
    raw = zoned(thunderbird(EVENT))
    assert b"TZID=Europe/Moscow" in raw
    assert (await send(daemon, raw))[0] == 250
    [notice] = await wait_notices(sink, 1)
    assert "2031-03-10 12:00\u201313:00 (Europe/Moscow, UTC+03:00)" in plain_text(notice.content)


async def test_notice_of_a_series_says_the_conference_moves_on(daemon, sink):
    """A weekly meeting's notice names the occurrence the conference is set for."""
    weekly = replace(EVENT, extra=("RRULE:FREQ=WEEKLY;COUNT=5",))
    assert (await send(daemon, thunderbird(weekly)))[0] == 250
    [notice] = await wait_notices(sink, 1)
    text = plain_text(notice.content)
    assert "Recurring meeting: the conference is set for the occurrence of 2031-03-10" in text


async def test_fallback_owner_hosts_the_conference_of_an_organizer_without_account(
        start_daemon, standin, sink):
    """With trueconf.fallback_owner the conference is made under it, attendees with accounts
    are invited, the invitation carries the link and the notice names the host account."""
    daemon = await start_daemon(trueconf={"fallback_owner": "meetings"})
    code, _ = await send(daemon, thunderbird(NO_ACCOUNT), sender="zed@example.com")
    assert code == 250
    [created] = api_calls(standin, "POST")
    assert created.json["owner"] == "meetings"
    assert [i["id"] for i in created.json["invitations"]] == ["meetings", "bob"]
    url = next(iter(standin.conferences.values()))["url"]
    assert url.encode() in invitations(sink)[0].content
    [notice] = await wait_notices(sink, 1)
    text = plain_text(notice.content)
    assert "the conference belongs to the TrueConf account meetings" in text
    assert url in text


async def test_organizer_without_account_is_told_once_per_event(start_daemon, standin, sink):
    """Without fallback_owner no conference is made, the invitation goes out unchanged, and
    the organizer gets one notice for the event, not one per copy or update."""
    daemon = await start_daemon(notice={"when": "always"})
    first = thunderbird(NO_ACCOUNT)
    copy = thunderbird(NO_ACCOUNT, message_id="<copy@example.com>")
    update = thunderbird(replace(NO_ACCOUNT, sequence=1, summary="Moved planning"))
    for raw in (first, copy, update):
        assert (await send(daemon, raw, sender="zed@example.com"))[0] == 250
    assert standin.conferences == {}
    assert [untraced(m.content) for m in invitations(sink)] == [first, copy, update]
    [notice] = await settled(sink, 1)
    assert subject(notice.content) == "No TrueConf conference for Quarterly planning"
    text = plain_text(notice.content)
    assert "zed@example.com has no TrueConf account" in text
    assert "Auto-Submitted: auto-generated" in notice.content.decode()


async def test_no_account_notice_in_the_configured_language(start_daemon, sink):
    """The no-account notice is written in policy.language."""
    daemon = await start_daemon(policy={"local_domains": ["example.com"], "language": "ru"})
    assert (await send(daemon, thunderbird(NO_ACCOUNT), sender="zed@example.com"))[0] == 250
    [notice] = await wait_notices(sink, 1)
    assert subject(notice.content) == "Нет конференции TrueConf для Quarterly planning"
    assert "нет учётной записи TrueConf" in plain_text(notice.content)


@pytest.mark.parametrize(("fallback", "expected"), [
    ("meetings", "made under trueconf.fallback_owner meetings"),
    ("", "no conference is made, the invitation goes out unchanged"),
])
async def test_explain_names_the_case_for_organizers_without_account(
        standin, sink, tmp_path, fallback, expected):
    """`mailhook explain` says what happens when the organizer has no TrueConf account."""
    settings = settings_for(standin, sink, tmp_path, trueconf={"fallback_owner": fallback})
    store = open_store(settings)
    try:
        lines = await explain(thunderbird(NO_ACCOUNT), settings, "zed@example.com", store,
                              FUTURE - timedelta(days=1))
    finally:
        await store.close()
    owner = next(line for line in lines if line.startswith("owner: "))
    assert expected in owner
