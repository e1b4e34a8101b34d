"""`mailhook conferences reconcile` against the TrueConf stand-in: leaked and gone conferences
found, reported, and with --fix deleted and cleared."""

from __future__ import annotations

import asyncio
import signal

import pytest

from mailhook.core.decide import event_tag
from mailhook.core.model import ConferenceSpec, EventState, StoredEvent
from mailhook.reconcile import MAILHOOK_TAG, compare
from mailhook.testing.sink import Sink
from mailhook.testing.standin import StandIn
from mailhook.trueconf.client import TrueConfClient
from mailhook.trueconf.payload import ListedConference
from tests.integration.conftest import USERS
from tests.support.invites import Event, thunderbird
from tests.support.process import (
    SECRET,
    free_port,
    mailhook,
    serve,
    submit,
    wait_for_port,
    write_config,
)


def spec(tag: str) -> ConferenceSpec:
    """A conference owned by alice, with this tag."""
    return ConferenceSpec(topic="Lost meeting", owner="alice", invitees=(), start=2_000_000_000,
                          duration=3600, role_based=False, max_participants=36, tag=tag)


async def on_trueconf(standin: StandIn, create: list[str], delete: list[str]) -> list[str]:
    """Create conferences with these tags and delete these ids, as someone else would."""
    async with TrueConfClient(standin.url, "mailhook", SECRET) as client:
        made = [(await client.create_conference(spec(tag))).id for tag in create]
        for conference_id in delete:
            await client.delete_conference(conference_id)
    return made


@pytest.mark.parametrize("version", ["v3.11", "v4"])
def test_reconcile_reports_then_fixes_leaked_and_gone(tmp_path, version):
    """A tagged conference no event uses is leaked, an event whose conference was deleted on
    TrueConf is gone; reconcile reports both (exit 1), --fix deletes the one and clears the
    other, and then the two agree (exit 0). Other conferences are never touched."""
    with StandIn(users=USERS, client_id="mailhook", client_secret=SECRET,
                 page_size_cap=2) as standin, Sink() as sink:
        port = free_port()
        config = write_config(tmp_path, standin.url, sink.port, port)
        env = {"MAILHOOK_TRUECONF__API_VERSION": version}
        process = serve(config)
        try:
            wait_for_port(port, process)
            for uid in ("weekly@example.com", "standup@example.com", "review@example.com"):
                submit(port, thunderbird(Event(uid=uid, summary=uid)))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        by_topic = {c["topic"]: cid for cid, c in standin.conferences.items()}
        gone_id = by_topic["standup@example.com"]
        leaked_id, foreign_id = asyncio.run(on_trueconf(
            standin, [event_tag("alice@example.com", "lost@example.com"), "crm_4711"], [gone_id]))

        report = mailhook("conferences", "reconcile", "--config", str(config), env=env)
        assert report.returncode == 1, report.stderr
        assert len(standin.conferences) == 4  # reporting changes nothing
        fixed = mailhook("conferences", "reconcile", "--fix", "--config", str(config), env=env)
        after = mailhook("conferences", "reconcile", "--config", str(config), env=env)
        listing = mailhook("conferences", "list", "--all", "--config", str(config))

    lines = report.stdout.splitlines()
    assert [line.split()[:3] for line in lines[:2]] == [["leaked", "conference", leaked_id],
                                                       ["gone", "standup@example.com",
                                                        "(alice@example.com):"]]
    assert gone_id in lines[1] and "1 leaked, 1 gone" in lines[2] and "--fix" in lines[2]
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert f"deleted leaked conference {leaked_id}" in fixed.stdout
    assert "cleared standup@example.com (alice@example.com)" in fixed.stdout
    assert set(standin.conferences) == {by_topic["weekly@example.com"],
                                        by_topic["review@example.com"], foreign_id}
    assert after.returncode == 0 and "the store and TrueConf agree" in after.stdout
    [standup] = [line for line in listing.stdout.splitlines() if "standup@" in line]
    assert standup.split()[2] == "deleted"


def test_reconcile_refuses_without_a_store(tmp_path):
    """With no store to compare with, reconcile says so and deletes nothing (every tagged
    conference would look leaked)."""
    with StandIn(users=USERS, client_id="mailhook", client_secret=SECRET) as standin:
        [made] = asyncio.run(on_trueconf(standin, [event_tag("a@example.com", "u")], []))
        config = write_config(tmp_path, standin.url, free_port(), 0)
        result = mailhook("conferences", "reconcile", "--fix", "--config", str(config))
        assert list(standin.conferences) == [made]
    assert result.returncode == 1 and "no store at" in result.stderr


def stored(uid: str, state: EventState, conference_id: str = "") -> StoredEvent:
    """A stored event of alice's."""
    return StoredEvent(organizer="alice@example.com", uid=uid, state=state,
                       tag=event_tag("alice@example.com", uid), conference_id=conference_id)


def listed(conference_id: str, uid: str) -> ListedConference:
    """A listed conference tagged for alice's event ``uid``."""
    return ListedConference(id=conference_id, tags=(event_tag("alice@example.com", uid),))


def test_conferences_mailhook_is_finishing_are_neither_leaked_nor_gone():
    """A conference being created (its event "creating") or waiting for its deletion in the
    retry queue is mailhook's own work in progress; deleted events are never gone."""
    events = [stored("active", EventState.ACTIVE, "1"), stored("making", EventState.CREATING),
              stored("dropped", EventState.DELETED, "3")]
    conferences = [listed("1", "active"), listed("2", "making"), listed("3", "dropped"),
                   listed("4", "leaked"), ListedConference(id="5", tags=("someone-else",))]
    found = compare(events, ["3"], conferences)
    assert [c.id for c in found.leaked] == ["4"] and found.gone == ()
    assert [e.uid for e in compare(events, [], conferences[1:]).gone] == ["active"]
    assert MAILHOOK_TAG.fullmatch(event_tag("x@example.com", "any-uid"))
