"""Who may act on an organizer's event: the envelope sender, and SENT-BY only where the site
trusts it (``policy.delegates``). Through the real daemon, the TrueConf stand-in and a sink."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from mailhook.testing.sink import Sink
from mailhook.testing.standin import StandIn
from tests.integration.conftest import send
from tests.support import reliability
from tests.support.invites import FUTURE, Event, thunderbird
from tests.support.trace import untraced

ALICE = Event()  # alice@example.com's conference; every attendee knows its UID
MALLORY = "mallory@example.com"


def sent_by(raw: bytes, delegate: str) -> bytes:
    """The message with SENT-BY=``delegate`` on its ORGANIZER, as a delegate's client writes it."""
    return raw.replace(b"ORGANIZER;CN=Alice Example:",
                       b'ORGANIZER;CN=Alice Example;SENT-BY="mailto:' + delegate.encode() + b'":')


def forged_update() -> bytes:
    """Alice's event re-timed, re-titled and re-invited, signed SENT-BY mallory."""
    update = replace(ALICE, summary="Moved by Mallory", start=FUTURE + timedelta(days=2),
                     attendees=(*ALICE.attendees, "carol@example.org"), sequence=1)
    return sent_by(thunderbird(update, message_id="<forged-1@example.com>"), MALLORY)


def forged_cancel() -> bytes:
    """A whole-event CANCEL of Alice's event, signed SENT-BY mallory."""
    cancel = replace(ALICE, method="CANCEL", status="CANCELLED", sequence=2)
    return sent_by(thunderbird(cancel, message_id="<forged-2@example.com>"), MALLORY)


def changes(standin: StandIn) -> list:
    """Calls that change or delete a conference."""
    return [r for r in standin.requests if "/conferences/" in r.path
            and r.method in ("PUT", "PATCH", "DELETE")]


def delivered(sink: Sink, message_id: bytes) -> list[bytes]:
    """What the sink got of one message (by its Message-ID), notices aside."""
    return [untraced(m.content) for m in sink.messages
            if b"Message-ID: " + message_id in m.content]


async def test_forged_sent_by_update_changes_nothing(daemon, standin, sink):
    """Mallory's update of Alice's event, SENT-BY herself, goes out unchanged and calls nothing."""
    assert (await send(daemon, thunderbird(ALICE)))[0] == 250
    [conference] = standin.conferences.values()
    forged = forged_update()
    reliability.hostile("SENT-BY forged by another local user (update)")
    code, _ = await send(daemon, forged, sender=MALLORY)
    assert code == 250
    assert changes(standin) == []
    assert delivered(sink, b"<forged-1@example.com>") == [forged]  # no link handed to Mallory
    assert conference["url"].encode() not in forged
    assert next(iter(standin.conferences.values()))["topic"] == "Quarterly planning"


async def test_forged_sent_by_cancel_deletes_nothing(daemon, standin, sink):
    """Mallory's CANCEL of Alice's event, SENT-BY herself, leaves the conference in place."""
    assert (await send(daemon, thunderbird(ALICE)))[0] == 250
    cancel = forged_cancel()
    reliability.hostile("SENT-BY forged by another local user (cancel)")
    assert (await send(daemon, cancel, sender=MALLORY))[0] == 250
    assert changes(standin) == [] and len(standin.conferences) == 1
    assert delivered(sink, b"<forged-2@example.com>") == [cancel]
    # Alice's own update still finds her conference.
    own = thunderbird(replace(ALICE, summary="Still mine", sequence=3))
    assert (await send(daemon, own))[0] == 250
    assert next(iter(standin.conferences.values()))["topic"] == "Still mine"


async def test_configured_delegate_updates_and_cancels(start_daemon, standin, sink):
    """A delegate named for the organizer in policy.delegates updates and cancels the event."""
    daemon = await start_daemon(policy={"delegates": {"Alice@Example.com": [MALLORY.upper()]}})
    assert (await send(daemon, thunderbird(ALICE)))[0] == 250
    [conference] = standin.conferences.values()
    assert (await send(daemon, forged_update(), sender=MALLORY))[0] == 250
    [put] = [r for r in changes(standin) if r.method == "PUT"]
    assert put.json["topic"] == "Moved by Mallory"
    assert put.json["schedule"]["start_time"] == int((FUTURE + timedelta(days=2)).timestamp())
    [update] = delivered(sink, b"<forged-1@example.com>")
    assert conference["url"].encode() in update
    assert (await send(daemon, forged_cancel(), sender=MALLORY))[0] == 250
    assert standin.conferences == {}


async def test_domain_wildcard_trusts_every_local_user(start_daemon, standin, sink):
    """"*@example.com" = ["*@example.com"] lets any user of the domain act for any organizer."""
    daemon = await start_daemon(policy={"delegates": {"*@example.com": ["*@example.com"]}})
    assert (await send(daemon, thunderbird(ALICE)))[0] == 250
    assert (await send(daemon, forged_update(), sender=MALLORY))[0] == 250
    assert next(iter(standin.conferences.values()))["topic"] == "Moved by Mallory"
    outsider = sent_by(thunderbird(replace(ALICE, summary="Outsider", sequence=5)),
                       "eve@example.net")
    reliability.hostile("SENT-BY from outside the trusted domain")
    assert (await send(daemon, outsider, sender="eve@example.net"))[0] == 250
    assert next(iter(standin.conferences.values()))["topic"] == "Moved by Mallory"


async def test_sent_by_must_match_the_envelope_sender(start_daemon, standin, sink):
    """A trusted delegate named in SENT-BY does not let a different envelope sender in."""
    daemon = await start_daemon(
        policy={"delegates": {"alice@example.com": ["assistant@example.com"]}})
    assert (await send(daemon, thunderbird(ALICE)))[0] == 250
    borrowed = sent_by(thunderbird(replace(ALICE, summary="Borrowed", sequence=1)),
                       "assistant@example.com")
    reliability.hostile("SENT-BY naming a trusted delegate, sent by someone else")
    assert (await send(daemon, borrowed, sender=MALLORY))[0] == 250
    assert changes(standin) == []
    assert (await send(daemon, borrowed, sender="assistant@example.com"))[0] == 250
    assert next(iter(standin.conferences.values()))["topic"] == "Borrowed"
