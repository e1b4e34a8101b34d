"""Postponed work checks, through the real API client and the stand-in, whose the conference
with its id is now."""

from __future__ import annotations

import pytest

from mailhook.core.decide import event_tag
from mailhook.core.model import ConferenceSpec
from mailhook.errors import TrueConfUnavailable
from mailhook.postponed_check import Owner, owner_of
from mailhook.testing.standin import StandIn
from mailhook.trueconf.client import TrueConfClient


def spec_for(organizer: str, uid: str) -> ConferenceSpec:
    return ConferenceSpec("Sync", "alice", (), 1900000000, 3600, False, 36,
                          event_tag(organizer, uid))


@pytest.mark.parametrize("version", ["v3.11", "v4"])
async def test_owner_of_a_conference_by_its_tag(version: str) -> None:
    """The event's own conference is the event's; one with the same id made for another event
    (the stand-in restarted, counting ids from the start again) is another meeting's; a
    conference TrueConf no longer has is gone."""
    with StandIn(client_id="mailhook", client_secret="s") as first:
        port = int(first.url.rsplit(":", 1)[1])
        async with TrueConfClient(first.url, "mailhook", "s", api_version=version) as client:
            made = await client.create_conference(spec_for("alice@example.com", "one"))
            assert await owner_of(client, made.id, "alice@example.com", "one",
                                  "deletion") is Owner.EVENT
    with StandIn(client_id="mailhook", client_secret="s", port=port) as restarted:
        async with TrueConfClient(restarted.url, "mailhook", "s", api_version=version) as client:
            assert await owner_of(client, made.id, "alice@example.com", "one",
                                  "deletion") is Owner.GONE
            other = await client.create_conference(spec_for("bob@example.com", "two"))
            assert other.id == made.id  # the id was given anew
            assert await owner_of(client, made.id, "alice@example.com", "one",
                                  "deletion") is Owner.OTHER
            restarted.fail_next(1, 503)
            with pytest.raises(TrueConfUnavailable):
                await owner_of(client, made.id, "alice@example.com", "one", "deletion")
