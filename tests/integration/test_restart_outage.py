"""Updates while TrueConf is down right after a restart (the user list kept in the store)
and after the retry deadline: what docs/reliability.md says, through the real daemon."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tests.integration.conftest import send
from tests.support.invites import Event, thunderbird

ROOT = Path(__file__).resolve().parents[2]
EVENT = Event(uid="restart-outage@example.com", summary="Planning")
UPDATE = replace(EVENT, summary="Planning, moved", sequence=1)
CANCEL = replace(EVENT, method="CANCEL", status="CANCELLED", sequence=2)


async def created_then_restarted(start_daemon, standin, **sections):
    """A conference made for EVENT, then mailhook restarted while TrueConf is down."""
    first = await start_daemon()
    assert (await send(first, thunderbird(EVENT)))[0] == 250
    await first.shutdown()
    standin.fail_next(10_000, 503)
    return await start_daemon(**sections)


async def test_update_right_after_a_restart_goes_out_with_its_link(start_daemon, standin, sink):
    """The user list kept in the store lets an update right after a restart, with TrueConf
    down, go out at once with its link; a cancel goes out at once too."""
    daemon = await created_then_restarted(start_daemon, standin)
    [conference] = standin.conferences.values()
    assert (await send(daemon, thunderbird(UPDATE)))[0] == 250
    assert conference["url"] in sink.messages[-1].content.decode()
    assert (await send(daemon, thunderbird(CANCEL)))[0] == 250
    assert "Right after a restart" in (ROOT / "docs" / "reliability.md").read_text()


async def test_update_after_the_deadline_goes_out_with_the_old_conference(start_daemon, standin,
                                                                          sink):
    """Past retry.deadline the update goes out with the conference's link, and the conference
    keeps its old topic until a later update reaches TrueConf."""
    daemon = await created_then_restarted(start_daemon, standin, retry={"deadline": 0})
    [conference] = standin.conferences.values()
    assert (await send(daemon, thunderbird(UPDATE)))[0] == 250
    assert conference["url"] in sink.messages[-1].content.decode()
    assert [c["topic"] for c in standin.conferences.values()] == ["Planning"]
    standin.fail_next(0)
    later = replace(UPDATE, sequence=3, summary="Planning, moved again")
    assert (await send(daemon, thunderbird(later)))[0] == 250
    assert [c["topic"] for c in standin.conferences.values()] == ["Planning, moved again"]


async def test_local_part_mapping_needs_no_user_list_after_a_restart(start_daemon, standin, sink):
    """With user_mapping = "local_part" an update right after a restart goes out at once with
    its link, and the conference update is retried in the background."""
    daemon = await created_then_restarted(start_daemon, standin,
                                          trueconf={"user_mapping": "local_part"})
    assert (await send(daemon, thunderbird(UPDATE)))[0] == 250
    [conference] = standin.conferences.values()
    assert conference["url"] in sink.messages[-1].content.decode()
