"""The store failing under the running daemon: 451, never a link lost or a second conference."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import httpx

from mailhook.core.decide import event_tag
from mailhook.daemon import Daemon
from tests.integration.conftest import send
from tests.support import reliability
from tests.support.daemon import api_calls, invitations
from tests.support.invites import Event, plain_mail, thunderbird

EVENT = Event()


async def healthz(daemon: Daemon) -> httpx.Response:
    """The daemon's /healthz answer."""
    assert daemon.status_server is not None
    async with httpx.AsyncClient() as http:
        return await http.get(f"http://127.0.0.1:{daemon.status_server.port}/healthz")


def store_errors(caplog) -> list[str]:
    """What the store logged at error level."""
    return [r.getMessage() for r in caplog.records
            if r.name == "mailhook.store" and r.levelno >= logging.ERROR]


def links_by_uid(sink) -> dict[str, str]:
    """The join link each delivered invitation carries, by UID ("" when it has none)."""
    found = {}
    for message in invitations(sink):
        text = message.content.decode()
        uid = text.split("UID:", 1)[1].split("\r\n", 1)[0]
        link = text.split("/c/", 1)[1].split()[0] if "/c/" in text else ""
        found[uid] = link
    return found


async def test_full_store_answers_451_and_leaves_nothing_behind(daemon, standin, sink, caplog):
    """With the store's disk full, invitations get 451 instead of 250 without a link, no
    conference is left for them, /healthz fails, one error is logged; once there is room again
    the MTA's retries give every event exactly one conference."""
    caplog.set_level(logging.INFO)
    events = [replace(EVENT, uid=f"full-{number}@example.com") for number in range(40)]
    await daemon.store.cap_pages(1)  # the disk is full from now on
    reliability.fault("store disk full")
    replies = {e.uid: (await send(daemon, thunderbird(e)))[0] for e in events}
    held = [uid for uid, code in replies.items() if code == 451]
    assert set(replies.values()) <= {250, 451} and held  # the store did fill up
    delivered = links_by_uid(sink)
    assert set(delivered) == {uid for uid, code in replies.items() if code == 250}
    assert all(delivered.values())  # nothing went out without its link
    assert len(standin.conferences) == len(delivered)  # nothing left behind for the 451s
    health = await healthz(daemon)
    assert health.status_code == 503
    store = health.json()["checks"]["store"]
    assert not store["ok"] and "full" in store["detail"]
    [error] = store_errors(caplog)  # once, not once per message
    assert "full" in error

    await daemon.store.cap_pages(None)  # room again; the MTA retries what it kept
    for event in events:
        if event.uid in held:
            assert (await send(daemon, thunderbird(event)))[0] == 250
    delivered = links_by_uid(sink)
    assert set(delivered) == {e.uid for e in events} and all(delivered.values())
    tags = sorted(tag for c in standin.conferences.values() for tag in c["tags"])
    assert tags == sorted(event_tag(EVENT.organizer, e.uid) for e in events)  # one each
    assert (await healthz(daemon)).status_code == 200
    reliability.survived(lost=40 - len(delivered), duplicates=len(standin.conferences) > 40)


async def test_conference_whose_record_fails_is_deleted_then_made_once(daemon, standin, sink,
                                                                      caplog):
    """A conference TrueConf created but the full store could not record is deleted again and
    the message gets 451; the MTA's retry after the disk has room makes exactly one."""
    caplog.set_level(logging.INFO)
    # Two hundred attendees: the record of the created conference needs more room than the
    # note written before creating it, which still fits.
    crowd = replace(EVENT, attendees=tuple(f"person{n:03}@example.net" for n in range(200)))
    await daemon.store.cap_pages(1)
    reliability.fault("store full between creating a conference and recording it")
    assert (await send(daemon, thunderbird(crowd)))[0] == 451
    assert len(api_calls(standin, "POST")) == 1 and len(api_calls(standin, "DELETE")) == 1
    assert standin.conferences == {}
    assert invitations(sink) == []
    assert (await healthz(daemon)).status_code == 503
    assert len(store_errors(caplog)) == 1
    await daemon.store.cap_pages(None)
    assert (await send(daemon, thunderbird(crowd)))[0] == 250
    [conference] = standin.conferences.values()
    assert conference["url"] in invitations(sink)[-1].content.decode()
    reliability.survived(lost=0, duplicates=len(standin.conferences) > 1)


async def test_store_deleted_under_the_daemon_holds_invitations(start_daemon, standin, sink,
                                                                caplog):
    """A store file deleted while the daemon runs is noticed: /healthz fails, one error is
    logged, invitations get 451 (also after a restart) instead of a second conference, other
    mail flows; with the saved copy put back, the held messages go through."""
    caplog.set_level(logging.INFO)
    daemon = await start_daemon()
    path = Path(daemon.settings.store.path)
    assert (await send(daemon, thunderbird(EVENT)))[0] == 250
    [conference] = standin.conferences.values()
    path.unlink()
    reliability.fault("store file deleted under the running daemon")

    health = await healthz(daemon)
    assert health.status_code == 503 and "deleted" in health.json()["checks"]["store"]["detail"]
    update = thunderbird(replace(EVENT, summary="Moved planning", sequence=1))
    other = thunderbird(replace(EVENT, uid="other@example.com"))
    assert (await send(daemon, update))[0] == 451
    assert (await send(daemon, other))[0] == 451
    assert (await send(daemon, plain_mail()))[0] == 250
    [error] = store_errors(caplog)
    assert "deleted" in error
    assert list(standin.conferences.values()) == [conference]

    await daemon.shutdown()  # a restart does not start over with an empty store
    restarted = await start_daemon()
    cancel = thunderbird(replace(EVENT, method="CANCEL", status="CANCELLED", sequence=2))
    for held in (update, other, cancel):
        assert (await send(restarted, held))[0] == 451
    assert (await healthz(restarted)).status_code == 503
    assert not path.exists() and list(standin.conferences.values()) == [conference]
    await restarted.shutdown()

    [rescued] = path.parent.glob(f"{path.name}.rescued-*")
    rescued.rename(path)  # what the operator does, as the error said
    restored = await start_daemon()
    assert (await healthz(restored)).status_code == 200
    assert (await send(restored, update))[0] == 250
    assert conference["url"] in invitations(sink)[-1].content.decode()
    assert [c["topic"] for c in standin.conferences.values()] == ["Moved planning"]
    assert (await send(restored, cancel))[0] == 250
    assert standin.conferences == {}
    reliability.survived(lost=0, duplicates=False)
