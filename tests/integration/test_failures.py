"""The failure policy with faults injected into TrueConf: nothing lost, nothing left behind."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from dataclasses import replace

import httpx
import pytest

from mailhook.app import wall_clock
from mailhook.core.decide import Policy
from mailhook.core.envelope import Inbound
from mailhook.core.model import EventState
from mailhook.core.plan import FlowConfig
from mailhook.handling import Handling
from mailhook.store import SqliteStore
from mailhook.trueconf.client import TrueConfClient
from mailhook.trueconf.directory import LocalPartDirectory
from tests.integration.conftest import send
from tests.support import reliability
from tests.support.clock import Clock
from tests.support.daemon import api_calls, invitations, wait_notices
from tests.support.invites import Event, thunderbird
from tests.support.trace import untraced

EVENT = Event()
LATER = 10 * 3600  # seconds: a retry pass "ten hours later"


@pytest.fixture
def clock() -> Clock:
    """The daemon's clock, at the real time until a test moves it."""
    return Clock()


@pytest.fixture
async def daemon(start_daemon, clock):
    """The daemon on its default test settings, on the test's clock."""
    return await start_daemon(clock=clock)


async def retry_later(daemon, clock: Clock) -> int:
    """Ten hours on, one pass of the retry queue; the number of postponed changes done."""
    clock.advance(LATER)
    return await daemon.app.retries.run_once()


async def test_cancel_goes_out_at_once_and_deletion_is_retried(daemon, standin, sink, clock):
    """With TrueConf down, a cancel is forwarded at once and the deletion happens once it is back."""
    await send(daemon, thunderbird(EVENT))
    standin.fail_next(1000, 503)
    reliability.fault("trueconf 503 during cancel")
    cancel = thunderbird(replace(EVENT, method="CANCEL", status="CANCELLED", sequence=1))
    code, _ = await send(daemon, cancel)
    assert code == 250
    assert untraced(invitations(sink)[-1].content) == cancel
    assert len(standin.conferences) == 1
    assert await daemon.store.count_pending() == 1
    await daemon.refresh_store_metrics()
    assert b"mailhook_pending_retries 1.0" in daemon.metrics.exposition()
    assert await retry_later(daemon, clock) == 0  # still down: postponed again
    standin.fail_next(0)
    assert await retry_later(daemon, clock) == 1
    assert standin.conferences == {}
    assert await daemon.store.count_pending() == 0
    reliability.survived(lost=0, duplicates=len(standin.conferences) > 1)


async def test_removed_keyword_deletes_later_when_trueconf_down(start_daemon, standin, sink,
                                                                clock):
    """Removing the keyword while TrueConf times out forwards the update and deletes later."""
    daemon = await start_daemon(clock=clock, trueconf={"timeout": 0.5})
    await send(daemon, thunderbird(EVENT))
    standin.set_latency(1.5)  # longer than the client's timeout
    reliability.fault("trueconf timeout during keyword removal")
    update = thunderbird(replace(EVENT, location="Room 4", sequence=1))
    code, _ = await send(daemon, update)
    assert code == 250 and untraced(invitations(sink)[-1].content) == update
    standin.set_latency(0)
    assert await retry_later(daemon, clock) == 1
    assert standin.conferences == {}
    reliability.survived(lost=0, duplicates=False)


async def test_update_goes_out_with_link_and_is_pushed_later(daemon, standin, sink, clock):
    """A reschedule while TrueConf fails is delivered with the link; TrueConf gets it later."""
    await send(daemon, thunderbird(EVENT))
    [conference] = standin.conferences.values()
    standin.fail_next(1000, 500)
    reliability.fault("trueconf 500 during update")
    moved = replace(EVENT, summary="Moved planning", sequence=1)
    code, _ = await send(daemon, thunderbird(moved))
    assert code == 250
    assert conference["url"] in invitations(sink)[-1].content.decode()
    assert next(iter(standin.conferences.values()))["topic"] == "Quarterly planning"
    standin.fail_next(0)
    assert await retry_later(daemon, clock) == 1
    assert next(iter(standin.conferences.values()))["topic"] == "Moved planning"
    assert await daemon.store.count_pending() == 0
    reliability.survived(lost=0, duplicates=len(standin.conferences) > 1)


async def test_deleted_on_trueconf_counts_as_done(daemon, standin, sink):
    """A cancel for a conference already gone from TrueConf (404) leaves nothing pending."""
    await send(daemon, thunderbird(EVENT))
    [conference_id] = standin.conferences
    standin_delete = httpx.delete(f"{standin.url}/api/v3.11/conferences/{conference_id}",
                                  headers=_bearer(standin))
    assert standin_delete.status_code == 200
    code, _ = await send(daemon, thunderbird(replace(EVENT, method="CANCEL", status="CANCELLED")))
    assert code == 250
    assert await daemon.store.count_pending() == 0


def _bearer(standin) -> dict[str, str]:
    token = httpx.post(f"{standin.url}/oauth2/v1/token", data={
        "grant_type": "client_credentials", "client_id": "mailhook", "client_secret": "s3cret-value"})
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


async def test_create_gives_451_until_deadline_then_goes_out_with_notice(start_daemon, standin, sink,
                                                                         clock):
    """A new invitation gets 451 while TrueConf is down; after the deadline it goes out unchanged
    and the organizer is told what to do."""
    daemon = await start_daemon(clock=clock, retry={"deadline": 600})
    standin.fail_next(1000, 503)
    reliability.fault("trueconf down for a new invitation")
    raw = thunderbird(EVENT)
    assert (await send(daemon, raw))[0] == 451
    assert (await send(daemon, raw))[0] == 451
    assert invitations(sink) == []
    clock.advance(601)
    assert (await send(daemon, raw))[0] == 250
    assert untraced(invitations(sink)[0].content) == raw
    [notice] = await wait_notices(sink, 1)
    message = email.message_from_bytes(notice.content, policy=email.policy.default)
    assert "Action required" in message["Subject"] and notice.rcpt_tos == ("alice@example.com",)
    assert "without a TrueConf" in message.get_content().replace("WITHOUT", "without")
    standin.fail_next(0)
    update = thunderbird(replace(EVENT, sequence=1))
    assert (await send(daemon, update))[0] == 250  # TrueConf is back: the update brings the link
    assert len(standin.conferences) == 1
    assert "/c/" in invitations(sink)[-1].content.decode()
    reliability.survived(lost=0, duplicates=len(standin.conferences) > 1)


async def test_unreachable_trueconf_gives_451(start_daemon, standin, sink):
    """With nothing listening at TrueConf's address the MTA is asked to retry."""
    daemon = await start_daemon(trueconf={"server_url": "http://127.0.0.1:9"})
    reliability.fault("trueconf unreachable")
    assert (await send(daemon, thunderbird(EVENT)))[0] == 451
    assert invitations(sink) == []
    reliability.survived(lost=0, duplicates=False)  # 451: the MTA keeps the message


async def test_pending_work_survives_restart(start_daemon, standin, sink, clock):
    """A deletion postponed before a restart is carried out by the restarted daemon."""
    first = await start_daemon(clock=clock)
    await send(first, thunderbird(EVENT))
    standin.fail_next(1000, 503)
    reliability.fault("trueconf 503 across a restart")
    await send(first, thunderbird(replace(EVENT, method="CANCEL", status="CANCELLED")))
    await first.shutdown()
    standin.fail_next(0)
    second = await start_daemon(clock=clock)
    assert await retry_later(second, clock) == 1
    assert standin.conferences == {}
    reliability.survived(lost=0, duplicates=False)


async def test_other_organizer_cannot_touch_a_conference(daemon, standin, sink):
    """A cancel with the same UID from another organizer leaves the conference alone."""
    await send(daemon, thunderbird(EVENT))
    forged = thunderbird(replace(EVENT, organizer="mallory@example.com", method="CANCEL",
                                 status="CANCELLED"))
    await send(daemon, forged, sender="mallory@example.com")
    assert len(standin.conferences) == 1
    assert not api_calls(standin, "DELETE")
    assert untraced(invitations(sink)[-1].content) == forged


async def test_next_hop_failure_reuses_the_conference(daemon, standin, sink):
    """A conference created for a message the next hop refused is reused on the MTA's retry."""
    sink.handler.script.data.append("451 4.3.0 try later")
    reliability.fault("next hop 451 after the conference was created")
    raw = thunderbird(EVENT)
    assert (await send(daemon, raw))[0] == 451
    assert (await send(daemon, raw))[0] == 250
    assert len(api_calls(standin, "POST")) == 1 and len(standin.conferences) == 1
    reliability.survived(lost=0, duplicates=len(standin.conferences) > 1)


async def test_invitation_refused_for_good_leaves_no_conference(daemon, standin, sink):
    """A conference created for an invitation the next hop then refuses with 5xx is deleted and
    the store keeps no live conference for the event; a later send gets a new one."""
    sink.handler.script.data.append("554 5.7.1 Message refused")
    reliability.fault("next hop 554 at DATA after the conference was created")
    raw = thunderbird(EVENT)
    assert (await send(daemon, raw))[0] == 554
    assert len(api_calls(standin, "POST")) == 1 and standin.conferences == {}
    stored = await daemon.store.get(EVENT.organizer, EVENT.uid)
    assert stored is not None and stored.state is EventState.DELETED
    assert await daemon.store.count_pending() == 0
    assert (await send(daemon, raw))[0] == 250  # the organizer sends it again
    [conference] = standin.conferences.values()
    assert conference["url"] in invitations(sink)[-1].content.decode()
    reliability.survived(lost=0, duplicates=len(standin.conferences) > 1)


async def test_refusal_for_good_after_a_temporary_one_leaves_no_conference(daemon, standin, sink):
    """A 4xx keeps the conference for the MTA's retry; a 5xx to that retry deletes it."""
    sink.handler.script.data.extend(["451 4.3.0 try later", "550 5.7.1 Refused after all"])
    reliability.fault("next hop 451, then 550 to the retry")
    raw = thunderbird(EVENT)
    assert (await send(daemon, raw))[0] == 451
    assert len(standin.conferences) == 1
    assert (await send(daemon, raw))[0] == 550
    assert standin.conferences == {} and len(api_calls(standin, "POST")) == 1
    reliability.survived(lost=0, duplicates=False)


async def test_conference_another_copy_carries_is_kept_when_one_copy_is_refused(daemon, standin):
    """Of two copies of one invitation, the one refused for good does not take the conference
    away from the other while that one is on its way; when both are refused it is deleted."""
    raw = thunderbird(EVENT)
    handling = daemon.app.flow.handling
    made = await handling.process(Inbound("alice@example.com", ("bob@example.com",), raw))
    copy = await handling.process(Inbound("alice@example.com", ("zoe@example.net",), raw))
    assert made.url and copy.url == made.url
    await handling.settle(made, accepted=False, refused=True)
    assert len(standin.conferences) == 1
    await handling.settle(copy, accepted=False, refused=True)
    assert standin.conferences == {}


async def test_unsafe_join_link_leaves_no_conference(daemon, standin, sink):
    """A conference whose returned link mailhook refuses (javascript:) is deleted again; the
    invitation goes out unchanged and the store keeps no live conference for the event."""
    standin.set_join_url("javascript:alert({id})")
    reliability.fault("TrueConf returns a javascript: join link")
    raw = thunderbird(EVENT)
    assert (await send(daemon, raw))[0] == 250
    assert untraced(invitations(sink)[0].content) == raw
    assert len(api_calls(standin, "POST")) == 1 and standin.conferences == {}
    stored = await daemon.store.get(EVENT.organizer, EVENT.uid)
    assert stored is None or (stored.state is not EventState.ACTIVE and not stored.conference_id)
    assert await daemon.store.count_pending() == 0
    reliability.survived(lost=0, duplicates=False)


async def test_non_http_link_from_trueconf_is_never_written(tmp_path):
    """A javascript: URL coming back from the API is refused; the invitation goes out unchanged."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        return httpx.Response(200, json={"conference": {"id": "1", "url": "javascript:alert(1)"}})

    client = TrueConfClient("https://video.example.com", "id", "secret",
                            transport=httpx.MockTransport(answer))
    store = SqliteStore(str(tmp_path / "s.sqlite3"))
    handling = Handling.on(FlowConfig(Policy(("example.com",))), store, client,
                           LocalPartDirectory(("example.com",)), wall_clock)
    raw = thunderbird(EVENT)
    outcome = await handling.process(Inbound("alice@example.com", ("bob@example.com",), raw))
    await store.close()
    reliability.bad_input("javascript: join link")
    assert outcome.content == raw
    assert b"javascript" not in outcome.content


@pytest.mark.parametrize("count", [20])
async def test_burst_of_different_invitations_is_parallel(daemon, standin, sink, count):
    """Different invitations wait on TrueConf side by side, not one after the other."""
    standin.set_latency(0.3)
    events = [replace(EVENT, uid=f"burst-{i}@example.com") for i in range(count)]
    started = time.monotonic()
    replies = await asyncio.gather(*(send(daemon, thunderbird(e)) for e in events))
    elapsed = time.monotonic() - started
    assert all(code == 250 for code, _ in replies)
    assert len(standin.conferences) == count
    # One by one would take at least count x 0.3 s for the creates alone.
    assert elapsed < count * 0.3 / 2


async def test_stale_request_after_cancel_creates_nothing(daemon, standin, sink):
    """An older REQUEST retried after the organizer's CANCEL does not bring the conference back."""
    raw = thunderbird(EVENT)
    await send(daemon, raw)
    await send(daemon, thunderbird(replace(EVENT, method="CANCEL", status="CANCELLED", sequence=1)))
    assert standin.conferences == {}
    assert (await send(daemon, raw))[0] == 250
    assert standin.conferences == {}
    assert untraced(invitations(sink)[-1].content) == raw


async def test_older_update_never_undoes_a_newer_one(daemon, standin, sink):
    """A delayed SEQUENCE 1 arriving after SEQUENCE 2 keeps the conference as SEQUENCE 2 set it."""
    await send(daemon, thunderbird(EVENT))
    url = next(iter(standin.conferences.values()))["url"]
    await send(daemon, thunderbird(replace(EVENT, summary="Version two", sequence=2)))
    await send(daemon, thunderbird(replace(EVENT, summary="Version one", sequence=1)))
    [conference] = standin.conferences.values()
    assert conference["topic"] == "Version two"
    assert url in invitations(sink)[-1].content.decode()  # the late copy still has the link


async def test_per_attendee_copies_add_up(daemon, standin, sink):
    """Copies of one version each listing one attendee invite them all, never fewer."""
    await send(daemon, thunderbird(replace(EVENT, attendees=("bob@example.com",))))
    await send(daemon, thunderbird(replace(EVENT, attendees=("carol@example.org",))))
    [conference] = standin.conferences.values()
    assert [i["id"] for i in conference["invitations"]] == ["alice", "bob", "carol"]


async def test_conference_deleted_on_trueconf_is_recreated_by_an_update(daemon, standin, sink):
    """If an admin deleted the conference in TrueConf, the organizer's next update gets a new one."""
    await send(daemon, thunderbird(EVENT))
    [conference_id] = standin.conferences
    httpx.delete(f"{standin.url}/api/v3.11/conferences/{conference_id}", headers=_bearer(standin))
    await send(daemon, thunderbird(replace(EVENT, summary="Still on", sequence=1)))
    [conference] = standin.conferences.values()
    assert conference["id"] != conference_id and conference["topic"] == "Still on"
    assert conference["url"] in invitations(sink)[-1].content.decode()


async def test_refused_credentials_hold_new_invitations(start_daemon, standin, sink):
    """With a wrong client secret new invitations get 451 (an operator must fix it), not lost links."""
    daemon = await start_daemon(trueconf={"client_secret": "wrong-secret"})
    reliability.fault("TrueConf refuses the credentials")
    assert (await send(daemon, thunderbird(EVENT)))[0] == 451
    assert invitations(sink) == []
    reliability.survived(lost=0, duplicates=False)


async def test_refused_create_sends_action_notice(start_daemon, standin, sink):
    """When TrueConf refuses to create the conference the invitation goes out and the organizer
    is told why."""
    daemon = await start_daemon(trueconf={"user_mapping": "local_part"})
    stranger = replace(EVENT, organizer="nobody-on-trueconf@example.com")
    raw = thunderbird(stranger)
    assert (await send(daemon, raw, sender="nobody-on-trueconf@example.com"))[0] == 250
    assert untraced(invitations(sink)[0].content) == raw
    [notice] = await wait_notices(sink, 1)
    message = email.message_from_bytes(notice.content, policy=email.policy.default)
    assert "Action required" in message["Subject"]
    assert "refused" in message.get_content()


async def test_cancel_listing_everyone_but_the_organizer_deletes(daemon, standin, sink):
    """A CANCEL without STATUS that names every attendee except the organizer cancels the event."""
    await send(daemon, thunderbird(replace(EVENT, attendees=("alice@example.com", "bob@example.com"))))
    cancel = thunderbird(replace(EVENT, method="CANCEL", status="", attendees=("bob@example.com",),
                                 sequence=1))
    await send(daemon, cancel)
    assert standin.conferences == {}
