"""The decision table end to end: the real daemon, the TrueConf stand-in and a sink, on loopback."""

from __future__ import annotations

import asyncio
import email
import email.policy
from dataclasses import replace
from datetime import timedelta

import pytest

from mailhook.relay import wire_form
from tests.integration.conftest import send
from tests.support import reliability
from tests.support.daemon import (
    api_calls,
    calendars_in,
    invitations,
    text_bodies,
    wait_notices,
)
from tests.support.invites import FUTURE, Event, exchange, plain_mail, thunderbird
from tests.support.trace import untraced

EVENT = Event()


async def test_request_creates_conference_and_writes_link(daemon, standin, sink):
    """A new invitation with TrueConf in LOCATION gets a conference and its link everywhere."""
    code, text = await send(daemon, thunderbird(EVENT), rcpts=("bob@example.com", "zoe@example.net"))
    assert code == 250 and "SINK" in text  # the next hop's own reply is passed back
    [created] = api_calls(standin, "POST")
    body = created.json
    assert body["owner"] == "alice"
    assert body["topic"] == "Quarterly planning"
    assert [i["id"] for i in body["invitations"]] == ["alice", "bob"]  # zoe has no account
    assert body["schedule"] == {"type": 1, "start_time": int(FUTURE.timestamp()), "duration": 3600}
    assert body["type"] == 0
    [conference] = standin.conferences.values()
    url = conference["url"]
    [delivered] = invitations(sink)
    assert delivered.rcpt_tos == ("bob@example.com", "zoe@example.net")
    cals = calendars_in(delivered.content)
    assert len(cals) == 2 and cals[0].to_ical() == cals[1].to_ical()
    vevent = cals[0].walk("VEVENT")[0]
    assert url in str(vevent["LOCATION"])
    assert url in str(vevent["DESCRIPTION"])
    assert str(vevent["CONFERENCE"]) == url
    assert str(vevent["UID"]) == EVENT.uid and int(vevent["SEQUENCE"]) == 0
    assert all(url in body for body in text_bodies(delivered.content))


async def test_organizer_gets_a_notice_without_calendar(daemon, standin, sink):
    """The organizer is mailed the link and who got it in TrueConf, in text and HTML with a
    button, with no calendar part."""
    await send(daemon, thunderbird(EVENT))
    [notice] = await wait_notices(sink, 1)
    url = next(iter(standin.conferences.values()))["url"]
    assert notice.rcpt_tos == ("alice@example.com",)
    assert notice.mail_from in ("", "<>")  # the null sender, as for any automatic notice
    message = email.message_from_bytes(notice.content, policy=email.policy.default)
    assert [p.get_content_type() for p in message.walk()] == [
        "multipart/alternative", "text/plain", "text/html"]
    for body in text_bodies(notice.content):
        assert url in body and "Bob" in body and "Zoe" in body
        assert "Quarterly planning" in body
    page = message.get_body(("html",)).get_content()
    assert f'<a href="{url}" target="_blank" style="display:inline-block;' in page  # the button
    assert "Quarterly planning" in message["Subject"]


async def test_retry_and_copies_make_no_api_call(daemon, standin, sink):
    """An MTA retry, a per-attendee copy and a recipient split reuse the conference silently."""
    raw = thunderbird(EVENT)
    await send(daemon, raw, rcpts=("bob@example.com",))
    await send(daemon, raw, rcpts=("bob@example.com",))
    await send(daemon, raw, rcpts=("zoe@example.net",))
    assert len(api_calls(standin, "POST")) == 1
    assert not api_calls(standin, "PUT")
    delivered = invitations(sink)
    assert len(delivered) == 3
    assert untraced(delivered[0].content) == untraced(delivered[1].content) == untraced(
        delivered[2].content)
    assert len(await wait_notices(sink, 1)) == 1


async def test_update_of_time_topic_participants_uses_put(start_daemon, standin, sink):
    """Rescheduling, renaming and new attendees update the same conference with PUT on v3."""
    daemon = await start_daemon(notice={"when": "always"})
    await send(daemon, thunderbird(EVENT))
    url = next(iter(standin.conferences.values()))["url"]
    moved = replace(
        EVENT,
        start=FUTURE + timedelta(days=1),
        duration=timedelta(minutes=30),
        summary="Planning, moved",
        attendees=(*EVENT.attendees, "dave.dawson@example.com"),
        sequence=1,
    )
    code, _ = await send(daemon, thunderbird(moved))
    assert code == 250
    [put] = api_calls(standin, "PUT")
    assert put.json["schedule"]["start_time"] == int((FUTURE + timedelta(days=1)).timestamp())
    assert put.json["schedule"]["duration"] == 1800
    assert put.json["topic"] == "Planning, moved"
    assert [i["id"] for i in put.json["invitations"]] == ["alice", "bob", "dave"]
    assert len(standin.conferences) == 1
    last = invitations(sink)[-1]
    assert url in str(calendars_in(last.content)[0].walk("VEVENT")[0]["DESCRIPTION"])
    # the time changed: with notice.when = "always" the organizer hears of it
    assert len(await wait_notices(sink, 2)) == 2


async def test_keyword_removed_deletes_conference(daemon, standin, sink):
    """An update that no longer names TrueConf deletes the conference and passes unchanged."""
    await send(daemon, thunderbird(EVENT))
    plain = thunderbird(replace(EVENT, location="Room 4", sequence=1))
    code, _ = await send(daemon, plain)
    assert code == 250
    assert len(api_calls(standin, "DELETE")) == 1
    assert standin.conferences == {}
    assert untraced(invitations(sink)[-1].content) == plain


async def test_organizer_cancel_deletes_and_forwards(daemon, standin, sink):
    """The organizer's CANCEL deletes the conference; the cancel goes out byte-identical."""
    await send(daemon, exchange(EVENT))
    cancel = exchange(replace(EVENT, method="CANCEL", status="CANCELLED", sequence=1))
    code, _ = await send(daemon, cancel)
    assert code == 250
    assert standin.conferences == {}
    assert untraced(invitations(sink)[-1].content) == cancel


async def test_method_comes_from_the_calendar_object(daemon, standin, sink):
    """A part labelled method=REQUEST whose object says CANCEL is handled as a cancel."""
    await send(daemon, thunderbird(EVENT))
    yahoo_like = thunderbird(replace(EVENT, method="CANCEL", header_method="REQUEST", sequence=1,
                                     status="CANCELLED"))
    await send(daemon, yahoo_like)
    assert standin.conferences == {}


async def test_request_without_header_method_is_served(daemon, standin, sink):
    """A calendar part without method= (Apple Mail) is still recognised by its METHOD."""
    code, _ = await send(daemon, thunderbird(replace(EVENT, header_method="")))
    assert code == 250
    assert len(standin.conferences) == 1


async def test_reply_and_plain_mail_pass_byte_identical(daemon, standin, sink):
    """An attendee's REPLY and ordinary mail go through untouched and call nothing."""
    await send(daemon, thunderbird(EVENT))
    reply = thunderbird(replace(EVENT, method="REPLY", attendees=("bob@example.com",)))
    plain = plain_mail()
    await send(daemon, reply, sender="bob@example.com", rcpts=("alice@example.com",))
    await send(daemon, plain)
    assert [untraced(m.content) for m in invitations(sink)[1:]] == [reply, plain]
    assert len(standin.conferences) == 1
    assert not api_calls(standin, "DELETE") and not api_calls(standin, "PUT")


async def test_cancel_of_unknown_event_passes(daemon, standin, sink):
    """A CANCEL for an event without a conference is forwarded and calls nothing."""
    cancel = thunderbird(replace(EVENT, method="CANCEL", status="CANCELLED"))
    await send(daemon, cancel)
    assert untraced(invitations(sink)[0].content) == cancel
    assert not api_calls(standin, "DELETE")


async def test_attendee_removal_cancel_keeps_conference(daemon, standin, sink):
    """A CANCEL that only uninvites some attendees removes their invitations, keeps the conference."""
    await send(daemon, thunderbird(EVENT))
    uninvite = thunderbird(replace(EVENT, method="CANCEL", status="", attendees=("bob@example.com",)))
    await send(daemon, uninvite)
    assert len(standin.conferences) == 1
    [put] = api_calls(standin, "PUT")
    assert [i["id"] for i in put.json["invitations"]] == ["alice"]


async def test_only_local_organizers_sending_as_themselves(daemon, standin, sink):
    """Organizers outside local domains, or mail whose envelope sender is someone else, pass."""
    foreign = thunderbird(replace(EVENT, organizer="zed@elsewhere.example"))
    await send(daemon, foreign, sender="zed@elsewhere.example")
    spoofed = thunderbird(EVENT)
    await send(daemon, spoofed, sender="mallory@example.com")
    assert standin.conferences == {}
    assert [untraced(m.content) for m in invitations(sink)] == [foreign, spoofed]


async def test_past_event_and_no_keyword_pass(daemon, standin, sink):
    """An event entirely in the past, or without the keyword, gets no conference."""
    await send(daemon, thunderbird(replace(EVENT, start=FUTURE.replace(year=2001))))
    await send(daemon, thunderbird(replace(EVENT, uid="other@example.com", location="Room 4")))
    assert standin.conferences == {}
    assert len(invitations(sink)) == 2


async def test_keyword_variants_trigger(daemon, standin, sink):
    """"@trueconf" and "Видеоконференция TrueConf" both ask for a conference."""
    await send(daemon, thunderbird(replace(EVENT, uid="a@example.com", location="@trueconf")))
    await send(daemon, thunderbird(replace(EVENT, uid="b@example.com",
                                           location="Видеоконференция TrueConf")))
    assert len(standin.conferences) == 2
    for message in invitations(sink):
        location = str(calendars_in(message.content)[0].walk("VEVENT")[0]["LOCATION"])
        assert "/c/" in location and "trueconf" not in location.lower().replace(standin.url, "")


async def test_twenty_parallel_copies_make_one_conference(daemon, standin, sink):
    """Twenty copies of one invitation on parallel connections create exactly one conference."""
    raw = thunderbird(EVENT)
    replies = await asyncio.gather(*(send(daemon, raw) for _ in range(20)))
    assert all(code == 250 for code, _ in replies)
    assert len(api_calls(standin, "POST")) == 1
    assert len(standin.conferences) == 1
    # (the trace fields' times may differ by a second)
    contents = {untraced(m.content) for m in invitations(sink)}
    assert len(invitations(sink)) == 20 and len(contents) == 1


async def test_api_v4_creates_and_patches(start_daemon, standin, sink):
    """On API v4 the conference is created with the v4 shape and updated with PATCH."""
    daemon = await start_daemon(trueconf={"api_version": "v4"})
    await send(daemon, thunderbird(EVENT))
    [created] = api_calls(standin, "POST")
    assert created.path == "/api/v4/conferences"
    assert created.json["mode"] == "PxP"
    assert created.json["schedule"]["type"] == "once"
    await send(daemon, thunderbird(replace(EVENT, summary="Renamed", sequence=1)))
    [patch] = api_calls(standin, "PATCH")
    assert patch.json["topic"] == "Renamed"
    assert not api_calls(standin, "PUT")
    url = next(iter(standin.conferences.values()))["url"]
    assert url in invitations(sink)[-1].content.decode()


async def test_large_meeting_uses_role_based_mode(daemon, standin, sink):
    """More attendees than the all-on-screen limit gives a role-based conference."""
    crowd = tuple(f"person{i}@example.org" for i in range(40))
    await send(daemon, thunderbird(replace(EVENT, attendees=crowd)))
    [created] = api_calls(standin, "POST")
    assert created.json["type"] == 3
    assert created.json["max_participants"] >= 41


async def test_local_part_mapping(start_daemon, standin, sink):
    """With user_mapping=local_part, local addresses map to TrueConf ids by their local part."""
    daemon = await start_daemon(trueconf={"user_mapping": "local_part"})
    await send(daemon, thunderbird(replace(EVENT, attendees=("bob@example.com", "x@example.org"))))
    [created] = api_calls(standin, "POST")
    assert [i["id"] for i in created.json["invitations"]] == ["alice", "bob"]
    assert not api_calls(standin, "GET", "/users")


async def test_trueconf_down_gives_451_then_retry_succeeds(daemon, standin, sink):
    """TrueConf failing gets 451 and nothing is delivered; the MTA's retry then goes through."""
    standin.fail_next(10, 503)
    reliability.fault("trueconf 503 on create")
    code, _ = await send(daemon, thunderbird(EVENT))
    assert code == 451
    assert invitations(sink) == []
    standin.reset()
    code, _ = await send(daemon, thunderbird(EVENT))
    assert code == 250
    assert len(standin.conferences) == 1
    reliability.survived(lost=0, duplicates=len(standin.conferences) > 1)


async def test_next_hop_refusals_reach_the_client(daemon, standin, sink):
    """A recipient the next hop refuses is refused to the client; a 4xx becomes 451."""
    sink.handler.script.rcpt["nobody@example.com"] = "550 5.1.1 No such user"
    sink.handler.script.rcpt["later@example.com"] = "452 4.2.2 Mailbox full"
    code, text = await send(daemon, plain_mail(), rcpts=("nobody@example.com",))
    assert code == 550 and "No such user" in text
    code, _ = await send(daemon, plain_mail(), rcpts=("later@example.com",))
    assert code == 451
    sink.handler.script.data.append("554 5.6.0 Rejected content")
    code, text = await send(daemon, plain_mail())
    assert code == 554 and "Rejected content" in text
    sink.handler.script.data.append("421 4.3.2 Busy")
    code, _ = await send(daemon, plain_mail())
    assert code == 451
    assert invitations(sink) == []
    for kind in ("next hop 550 at RCPT", "next hop 452 at RCPT", "next hop 554 at DATA",
                 "next hop 421 at DATA"):
        reliability.fault(kind)
        reliability.survived(lost=0, duplicates=False)  # every refusal reached the client


async def test_next_hop_down_gives_451(start_daemon, standin, sink):
    """With nothing listening at the next hop, the client is told to retry."""
    daemon = await start_daemon(relay={"port": 1})
    reliability.fault("next hop down")
    code, _ = await send(daemon, plain_mail())
    assert code == 451
    reliability.survived(lost=0, duplicates=False)  # 451: the MTA keeps the message


async def test_long_lines_pass_folded(daemon, standin, sink):
    """Lines far over 1000 octets, as real MTAs send them, are accepted and go on folded the
    way Postfix folds them (CRLF and a space after 998 octets), otherwise unchanged."""
    raw = plain_mail("x" * 5000 + "\r\n" + "y" * 70000 + "\r\n")
    code, _ = await send(daemon, raw)
    assert code == 250
    delivered = untraced(invitations(sink)[0].content)
    assert delivered == wire_form(raw) and delivered.replace(b"\r\n ", b"") == raw


async def test_oversized_message_gets_552(start_daemon, standin, sink):
    """A message over smtp.max_message_size is refused with 552 and nothing is relayed."""
    daemon = await start_daemon(smtp={"max_message_size": 4096})
    code, _ = await send(daemon, plain_mail("z" * 10000 + "\r\n"))
    assert code == 552
    assert invitations(sink) == []


@pytest.mark.parametrize("builder", [thunderbird, exchange])
async def test_rewritten_message_keeps_other_parts(daemon, standin, sink, builder):
    """Headers and MIME shape survive the rewrite; only bodies gain the link."""
    raw = builder(EVENT)
    await send(daemon, raw)
    out = untraced(invitations(sink)[0].content)
    head_in, _, _ = raw.partition(b"\r\n\r\n")
    head_out, _, _ = out.partition(b"\r\n\r\n")
    assert head_in == head_out
    shape = lambda m: [p.get_content_type() for p in email.message_from_bytes(m).walk()]  # noqa: E731
    assert shape(raw) == shape(out)


async def test_expired_token_is_renewed_once(daemon, standin, sink):
    """When TrueConf forgets the token, mailhook gets a new one and the update goes through."""
    await send(daemon, thunderbird(EVENT))
    standin.expire_tokens()
    reliability.fault("expired TrueConf token")
    code, _ = await send(daemon, thunderbird(replace(EVENT, summary="Renamed", sequence=1)))
    assert code == 250
    assert len(api_calls(standin, "PUT")) == 2  # refused once, then accepted with a new token
    tokens = [r for r in standin.requests if r.path == "/oauth2/v1/token"]
    assert len(tokens) == 2
    assert next(iter(standin.conferences.values()))["topic"] == "Renamed"
    reliability.survived(lost=0, duplicates=len(standin.conferences) > 1)
    assert all(r.headers.get("Authorization", r.headers.get("authorization", "")).startswith("Bearer ")
               for r in standin.requests if r.path.startswith("/api/"))


async def test_calendar_server_sender_is_trusted_when_configured(start_daemon, standin, sink,
                                                                 message_bytes):
    """Nextcloud mails invitations from a system address: served only when it is configured."""
    raw = message_bytes("nextcloud.eml")
    plain = await start_daemon()
    await send(plain, raw, sender="invitations-noreply@cloud.example.com")
    assert untraced(invitations(sink)[-1].content) == raw
    trusting = await start_daemon(
        policy={"calendar_senders": ["Invitations-NoReply@cloud.example.com"], "trigger": "always"},
    )
    code, _ = await send(trusting, raw, sender="invitations-noreply@cloud.example.com")
    assert code == 250
    [vevent] = calendars_in(invitations(sink)[-1].content)[0].walk("VEVENT")
    assert "/c/" in str(vevent["CONFERENCE"])
    assert next(iter(standin.conferences.values()))["owner"] == "jan"


async def test_null_sender_mail_is_relayed(daemon, standin, sink):
    """Bounces and notifications with the null sender go through and change nothing."""
    raw = plain_mail()
    code, _ = await send(daemon, raw, sender="")
    assert code == 250
    [delivered] = invitations(sink)
    assert untraced(delivered.content) == raw and delivered.mail_from in ("", "<>")
    invite = thunderbird(EVENT)
    assert (await send(daemon, invite, sender=""))[0] == 250
    assert standin.conferences == {}  # the null sender is never taken for the organizer


async def test_multi_line_refusal_reaches_the_client_intact(daemon, standin, sink):
    """A multi-line greylisting reply from the next hop is relayed as valid SMTP."""
    sink.handler.script.rcpt["grey@example.com"] = "450-4.2.0 Greylisted\r\n450 4.2.0 see http://example/grey"
    code, text = await send(daemon, plain_mail(), rcpts=("grey@example.com",))
    assert code == 451 and "Greylisted" in text


async def test_next_hop_sessions_are_reused(daemon, standin, sink):
    """Consecutive messages travel over one kept-open next-hop session, RSET between them."""
    for _ in range(5):
        assert (await send(daemon, plain_mail()))[0] == 250
    sink.handler.script.rcpt["nobody@example.com"] = "550 5.1.1 No such user"
    assert (await send(daemon, plain_mail(), rcpts=("nobody@example.com",)))[0] == 550
    assert (await send(daemon, plain_mail()))[0] == 250
    assert len(invitations(sink)) == 6
    assert sink.handler.sessions == 1


async def test_stale_pooled_session_is_replaced(start_daemon, standin, sink):
    """When the next hop has closed a kept session, the message goes over a new one."""
    daemon = await start_daemon()
    assert (await send(daemon, plain_mail()))[0] == 250
    for client, _ in daemon.next_hop._idle:
        client.close()  # as if the next hop had timed the session out
    assert (await send(daemon, plain_mail()))[0] == 250
    assert len(invitations(sink)) == 2
