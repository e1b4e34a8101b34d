"""What the daemon puts on the wire to the next hop: only CRLF line ends, no line over 998
octets, nothing a lenient next hop could read as SMTP commands, a session that answered more
than it was asked never reused, and a slow answer to the final dot waited for."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from mailhook.core.calendar import unfold
from mailhook.core.mime import parse_message
from mailhook.relay import wire_form
from mailhook.testing.sink import Sink
from tests.fixtures.checks import (
    CORPUS_MISSING,
    MESSAGES,
    as_message,
    calendar_texts,
    corpus_files,
    corpus_name,
)
from tests.integration.conftest import send
from tests.support import reliability
from tests.support.daemon import invitations, wait_notices
from tests.support.invites import (
    Event,
    outlook_one_line_html,
    plain_mail,
    single_part,
    thunderbird,
    vcalendar,
)
from tests.support.rawsmtp import send_raw
from tests.support.trace import untraced


@pytest.fixture
def sink(request: pytest.FixtureRequest) -> Iterator[Sink]:
    """The next hop, reading lines as the test asks (``indirect`` parameter; CRLF only by
    default)."""
    with Sink(line_ends=getattr(request, "param", "crlf")) as server:
        yield server


strict = pytest.mark.parametrize("sink", ["strict"], indirect=True)
lenient = pytest.mark.parametrize("sink", ["lenient"], indirect=True)


# --- every known message, to a next hop that refuses anything but the wire form --------------


class Clock:
    """The daemon's clock, set per message to a day before its event."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _organizer_and_time(raw: bytes) -> tuple[str, datetime]:
    parsed = parse_message(raw)
    events = parsed.calendar.events if parsed.calendar else ()
    organizer = next((e.organizer for e in events if "@" in e.organizer), parsed.from_address)
    starts = [e.start for e in events if e.start is not None]
    now = min(starts) - timedelta(days=1) if starts else datetime(2030, 1, 1, tzinfo=UTC)
    return organizer or "organizer@example.com", now


async def _through_strict_next_hop(start_daemon, sink: Sink, samples: list[tuple[str, bytes]]):
    """Send each sample's bytes as they are (bare LFs included); list what went wrong."""
    clock = Clock()
    senders = {name: _organizer_and_time(raw) for name, raw in samples}
    domains = sorted({sender.rpartition("@")[2] for sender, _ in senders.values()})
    daemon = await start_daemon(
        clock=clock,
        policy={"trigger": "always", "local_domains": domains},
        trueconf={"user_mapping": "local_part"},
        notice={"enabled": False},
    )
    failures = []
    for name, raw in samples:
        sender, clock.now = senders[name]
        code, text = await send_raw(daemon.port, raw, sender=sender,
                                    rcpts=("attendee@wire.example",))
        if code != 250:
            failures.append(f"{name}: {code} {text}")
    failures += [f"refused by the strict next hop: {reply}" for reply, _ in sink.handler.refused]
    return failures


def _fixtures() -> list[tuple[str, bytes]]:
    samples = [(path.name, path.read_bytes()) for path in sorted(MESSAGES.glob("*.eml"))]
    return samples + [("outlook one-line HTML", outlook_one_line_html(Event()))]


@strict
async def test_every_fixture_reaches_a_strict_next_hop(start_daemon, sink):
    """Every fixture message (the golden inputs among them), sent with its own line ends,
    reaches a next hop that refuses bare LF, bare CR and lines over 998 octets."""
    samples = _fixtures()
    lf_only = sum(b"\r\n" not in raw for _, raw in samples)
    reliability.hostile("messages with bare LF line ends", lf_only)
    assert await _through_strict_next_hop(start_daemon, sink, samples) == []
    assert len(sink.messages) == len(samples)


@strict
@pytest.mark.corpus
async def test_every_corpus_message_reaches_a_strict_next_hop(start_daemon, sink):
    """Every corpus message, sent with its own line ends, reaches a strict next hop."""
    paths = corpus_files()
    if not paths:
        pytest.skip(CORPUS_MISSING)
    samples = [(corpus_name(path), as_message(path)) for path in paths]
    assert await _through_strict_next_hop(start_daemon, sink, samples) == []
    assert len(sink.messages) == len(samples)


@strict
async def test_notices_reach_a_strict_next_hop(daemon, standin, sink):
    """The organizer notice mailhook writes itself is in wire form too."""
    code, _ = await send(daemon, thunderbird(Event()))
    assert code == 250
    assert len(await wait_notices(sink, 1)) == 1 and sink.handler.refused == []


@strict
async def test_long_lines_are_folded_on_their_way(daemon, sink):
    """Lines over 998 octets arrive folded as Postfix folds them (CRLF and a space after 998
    octets), so a strict next hop takes the message; unfolding gives the original back."""
    reliability.hostile("lines of 3 000 octets in header and body")
    raw = plain_mail(body="b" * 3000 + "\r\n").replace(
        b"Subject: lunch", b"Subject: " + b"s" * 3000, 1)
    code, text = await send_raw(daemon.port, raw)
    assert code == 250, text
    [delivered] = invitations(sink)
    content = untraced(delivered.content)
    assert content == wire_form(raw)
    assert max(map(len, content.split(b"\r\n"))) == 998
    assert content.replace(b"\r\n ", b"") == raw


@strict
async def test_a_bare_cr_in_a_property_does_not_become_a_property(daemon, standin, sink):
    """An invitation whose SUMMARY holds a bare CR before "X-INJECTED:1" is rewritten and
    delivered without a raw CR and without an X-INJECTED property."""
    reliability.hostile("bare CR inside SUMMARY, through the daemon")
    ics = vcalendar("REQUEST", "UID:cr-1@example.com\r\nORGANIZER:mailto:alice@example.com\r\n"
                    "ATTENDEE:mailto:bob@example.com\r\nDTSTAMP:20310101T000000Z\r\n"
                    "DTSTART:20310310T090000Z\r\nDTEND:20310310T100000Z\r\n"
                    "SUMMARY:Q3\rX-INJECTED:1\r\nLOCATION:TrueConf")
    code, text = await send_raw(daemon.port, single_part(ics, "REQUEST"))
    assert code == 250, text
    [delivered] = invitations(sink)
    [calendar] = calendar_texts(delivered.content)
    names = [line.name for line in unfold(calendar)]
    assert "CONFERENCE" in names and "X-INJECTED" not in names


# --- SMTP smuggling and sessions out of step --------------------------------------------------

SMUGGLING = (
    b"From: mallory@example.com\r\nTo: bob@example.com\r\nSubject: hello\r\n\r\n"
    b"hello\n.\r\nMAIL FROM:<ceo@example.com>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n"
    b"From: ceo@example.com\r\nSubject: wire the money\r\n\r\nurgent\r\n"
)


@lenient
async def test_smuggled_commands_stay_message_text_at_a_lenient_next_hop(daemon, sink):
    """A bare LF before a lone dot does not end the data at a next hop that takes a bare LF as
    a line end: it gets one message with the would-be commands as text, no forged message, and
    the next message (new connection) is delivered and answered with its own queue id."""
    reliability.hostile("SMTP smuggling: <LF>.<CR><LF> then MAIL/RCPT/DATA")
    code, text = await send_raw(daemon.port, SMUGGLING, sender="mallory@example.com")
    assert code == 250 and "SINK1" in text, text
    code, text = await send(daemon, plain_mail(body="second message\r\n"))
    assert code == 250, text
    received = sink.handler.wait_for(2)
    assert [m.mail_from for m in received] == ["mallory@example.com", "alice@example.com"]
    first, second = received
    assert b"MAIL FROM:<ceo@example.com>\r\n" in first.content
    assert b"wire the money" in first.content
    assert b"second message" in second.content and "SINK2" in text


async def _wait_until(condition, seconds: float = 10.0) -> None:
    for _ in range(int(seconds * 100)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


@pytest.mark.parametrize("delay", [0.0, 0.1], ids=["same-write", "while-idle"])
async def test_a_session_that_answered_unasked_is_not_reused(daemon, sink, delay):
    """After the next hop sends a reply nobody asked for (with the message's reply, or while
    the session is idle), the session is closed: the next message gets a new session, is
    delivered, and is answered with its own reply."""
    reliability.fault("next hop sends an unasked reply")
    sink.handler.script.extra_reply = "250 2.0.0 Ok: queued as FORGED"
    sink.handler.script.extra_reply_delay = delay
    code, text = await send(daemon, plain_mail(body="first\r\n"))
    assert code == 250 and "SINK1" in text, text
    await _wait_until(lambda: sink.handler.extra_replies_sent == 1)
    await asyncio.sleep(0.1)  # let the daemon's loop take the bytes in
    code, text = await send(daemon, plain_mail(body="second\r\n"))
    delivered = [m.content for m in sink.messages]
    reliability.survived(lost=2 - len(delivered), duplicates=False)
    assert code == 250 and "SINK2" in text, text
    assert len(delivered) == 2 and b"second" in delivered[1]
    assert sink.handler.sessions == 2


# --- a slow answer to the final dot -----------------------------------------------------------


async def test_a_slow_answer_to_the_final_dot_is_waited_for(start_daemon, sink):
    """A next hop that answers the final dot after longer than relay.timeout, but within
    relay.data_timeout, gets the message delivered once, with its 250 passed back."""
    reliability.fault("next hop slow to answer the final dot")
    daemon = await start_daemon(relay={"timeout": 1, "data_timeout": 20})
    sink.handler.script.data_delay = 2.0
    code, text = await send(daemon, plain_mail())
    reliability.survived(lost=1 - len(sink.messages), duplicates=len(sink.messages) > 1)
    assert code == 250 and "SINK1" in text, text
    assert len(sink.messages) == 1


def test_sink_modes_refuse_and_read_as_documented():
    """The strict sink refuses bare LF, bare CR and long lines; the lenient one ends DATA at
    "<LF>.<CR><LF>" (which is what makes the smuggling test meaningful)."""
    from mailhook.testing.sink import strict_refusal

    assert strict_refusal(b"a\r\nb\r\n") == ""
    assert "bare <LF>" in strict_refusal(b"a\nb\r\n")
    assert "bare <CR>" in strict_refusal(b"a\rb\r\n")
    assert "too long" in strict_refusal(b"x" * 999 + b"\r\n")
    assert strict_refusal(b"x" * 998 + b"\r\n") == ""


@lenient
async def test_a_lenient_next_hop_is_fooled_by_unnormalised_data(sink):
    """Sent as it is (no normalisation), the smuggling payload makes the lenient sink queue a
    second, forged message: the hazard the daemon's normalisation removes."""
    code, _ = await send_raw(sink.port, SMUGGLING, sender="mallory@example.com")
    assert code == 250
    forged = sink.handler.wait_for(2)
    assert [m.mail_from for m in forged] == ["mallory@example.com", "ceo@example.com"]

