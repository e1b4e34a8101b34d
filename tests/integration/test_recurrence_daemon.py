"""Recurring events end to end: the daemon, the TrueConf stand-in and a sink, clock passed in."""

from __future__ import annotations

import pytest

from mailhook.reschedule import reschedule_once
from tests.integration.conftest import send, settings_for
from tests.support.daemon import api_calls, invitations
from tests.support.recurring import UID, WEEKLY, Clock, at, epoch, request, scheduled
from tests.support.trace import untraced


def instance(recurrence_id: str, start: str, end: str, *extra: str) -> str:
    """An overridden instance of the weekly series (Berlin local times)."""
    lines = [f"UID:{UID}", "SEQUENCE:1", "ORGANIZER:mailto:alice@example.com",
             "ATTENDEE:mailto:bob@example.com", "SUMMARY:Stand-up", "LOCATION:TrueConf",
             f"RECURRENCE-ID;TZID=Europe/Berlin:{recurrence_id}",
             f"DTSTART;TZID=Europe/Berlin:{start}", f"DTEND;TZID=Europe/Berlin:{end}", *extra]
    return "\n".join(lines)


@pytest.fixture
def clock() -> Clock:
    """Wednesday 2 January 2030, noon UTC."""
    return Clock("2030-01-02 12:00")


async def test_series_is_scheduled_at_nearest_occurrence(start_daemon, standin, sink, clock):
    """A weekly series that began months ago gets a conference at its next occurrence."""
    daemon = await start_daemon(clock=clock)
    code, _ = await send(daemon, request(WEEKLY))
    assert code == 250
    assert scheduled(standin) == (epoch("2030-01-07 09:00"), 3600)
    assert "/c/" in invitations(sink)[0].content.decode()


async def test_occurrence_in_progress_is_kept(start_daemon, standin, sink, clock):
    """During an occurrence the conference stays scheduled for it, so the link works."""
    clock.set("2030-01-07 09:30")
    daemon = await start_daemon(clock=clock)
    await send(daemon, request(WEEKLY))
    assert scheduled(standin)[0] == epoch("2030-01-07 09:00")


async def test_conference_moves_on_when_occurrence_ends(start_daemon, standin, sink, clock):
    """After an occurrence ends, the reschedule pass moves the conference to the next one."""
    daemon = await start_daemon(clock=clock)
    await send(daemon, request(WEEKLY))
    [conference] = standin.conferences.values()
    assert await daemon.app.rescheduler.run_once() == 0  # nothing has ended yet
    clock.set("2030-01-07 10:01")
    assert await daemon.app.rescheduler.run_once() == 1
    assert scheduled(standin)[0] == epoch("2030-01-14 09:00")
    [after] = standin.conferences.values()
    assert after["url"] == conference["url"] and after["id"] == conference["id"]
    assert await daemon.app.rescheduler.run_once() == 0


async def test_restart_between_occurrences_catches_up(start_daemon, standin, sink, clock, tmp_path):
    """A daemon started after several occurrences passed moves the conference to the next one."""
    first = await start_daemon(clock=clock)
    await send(first, request(WEEKLY))
    await first.shutdown()
    clock.set("2030-01-22 08:00")
    second = await start_daemon(clock=clock)
    assert await second.app.rescheduler.run_once() == 1
    assert scheduled(standin)[0] == epoch("2030-01-28 09:00")


async def test_reschedule_command_does_one_pass(start_daemon, standin, sink, clock, tmp_path):
    """reschedule_once (mailhook reschedule) moves due conferences using the store and TrueConf."""
    daemon = await start_daemon(clock=clock)
    await send(daemon, request(WEEKLY))
    moved = await reschedule_once(settings_for(standin, sink, tmp_path), now=at("2030-01-08 00:00"))
    assert moved == 1
    assert scheduled(standin)[0] == epoch("2030-01-14 09:00")


@pytest.mark.parametrize(("policy", "remaining"), [("keep", 1), ("delete", 0)])
async def test_series_end(start_daemon, standin, sink, clock, policy, remaining):
    """When the series has no occurrence left the conference is kept, or deleted if configured."""
    daemon = await start_daemon(clock=clock, recurrence={"after_series_end": policy})
    await send(daemon, request(WEEKLY.replace("BYDAY=MO", "BYDAY=MO;UNTIL=20300108T000000Z")))
    clock.set("2030-01-07 10:01")
    await daemon.app.rescheduler.run_once()
    assert len(standin.conferences) == remaining
    if remaining:
        assert scheduled(standin)[0] == epoch("2030-01-07 09:00")


async def test_moved_instance_moves_the_conference(start_daemon, standin, sink, clock):
    """A REQUEST moving the nearest occurrence re-times the conference and carries the link."""
    daemon = await start_daemon(clock=clock)
    await send(daemon, request(WEEKLY))
    url = next(iter(standin.conferences.values()))["url"]
    moved = request(instance("20300107T100000", "20300108T150000", "20300108T153000"))
    code, _ = await send(daemon, moved)
    assert code == 250
    assert scheduled(standin) == (epoch("2030-01-08 14:00"), 1800)
    assert url in invitations(sink)[-1].content.decode()
    assert len(api_calls(standin, "POST")) == 1


async def test_cancelled_nearest_occurrence_moves_to_next(start_daemon, standin, sink, clock):
    """Cancelling the occurrence the conference is scheduled for moves it to the next one."""
    daemon = await start_daemon(clock=clock)
    await send(daemon, request(WEEKLY))
    cancel = request(instance("20300107T100000", "20300107T100000", "20300107T110000",
                              "STATUS:CANCELLED"), method="CANCEL")
    code, _ = await send(daemon, cancel)
    assert code == 250
    assert scheduled(standin)[0] == epoch("2030-01-14 09:00")
    assert untraced(invitations(sink)[-1].content) == cancel
    assert len(standin.conferences) == 1


async def test_google_style_cancelled_override_in_request(start_daemon, standin, sink, clock):
    """A REQUEST carrying the master and a STATUS:CANCELLED instance skips that instance."""
    daemon = await start_daemon(clock=clock)
    await send(daemon, request(WEEKLY, instance("20300107T100000", "20300107T100000",
                                                "20300107T110000", "STATUS:CANCELLED")))
    assert scheduled(standin)[0] == epoch("2030-01-14 09:00")


async def test_outlook_update_burst_acts_on_one_conference(start_daemon, standin, sink, clock):
    """A series update followed by one message per exception, all at once, keeps one conference."""
    daemon = await start_daemon(clock=clock)
    await send(daemon, request(WEEKLY))
    burst = [
        request(WEEKLY.replace("Stand-up", "Team stand-up").replace("SEQUENCE:0", "SEQUENCE:1")),
        request(instance("20300107T100000", "20300107T130000", "20300107T140000")),
        request(instance("20300114T100000", "20300115T100000", "20300115T110000")),
    ]
    for message in burst:
        assert (await send(daemon, message))[0] == 250
    assert len(standin.conferences) == 1 and len(api_calls(standin, "POST")) == 1
    [conference] = standin.conferences.values()
    assert conference["topic"] == "Team stand-up"
    assert scheduled(standin)[0] == epoch("2030-01-07 12:00")


async def test_outlook_cancel_burst_deletes_once(start_daemon, standin, sink, clock):
    """A series cancel followed by cancels of its exceptions deletes the conference once."""
    daemon = await start_daemon(clock=clock)
    await send(daemon, request(WEEKLY, instance("20300107T100000", "20300107T130000",
                                                "20300107T140000")))
    cancels = [
        request(WEEKLY.replace("SEQUENCE:0", "SEQUENCE:2") + "\nSTATUS:CANCELLED", method="CANCEL"),
        request(instance("20300107T100000", "20300107T130000", "20300107T140000",
                         "STATUS:CANCELLED"), method="CANCEL"),
    ]
    for message in cancels:
        assert (await send(daemon, message))[0] == 250
    assert standin.conferences == {}
    assert len(api_calls(standin, "DELETE")) == 1
    assert [untraced(m.content) for m in invitations(sink)[1:]] == cancels


async def test_google_this_and_following_split(start_daemon, standin, sink, clock):
    """The old series truncated by UNTIL and the new series under a new UID each get theirs."""
    daemon = await start_daemon(clock=clock)
    await send(daemon, request(WEEKLY))
    truncated = WEEKLY.replace("BYDAY=MO", "BYDAY=MO;UNTIL=20300113T225959Z").replace(
        "SEQUENCE:0", "SEQUENCE:1")
    following = (WEEKLY.replace(UID, "series-1_R20300114T090000@example.com")
                 .replace("20291001T", "20300114T").replace("Stand-up", "Stand-up v2"))
    await send(daemon, request(truncated))
    await send(daemon, request(following))
    topics = sorted((c["topic"], c["schedule"]["start_time"]) for c in standin.conferences.values())
    assert topics == [("Stand-up", epoch("2030-01-07 09:00")), ("Stand-up v2", epoch("2030-01-14 09:00"))]


@pytest.mark.parametrize(
    ("start", "end", "zone", "expected", "duration"),
    [
        ("DTSTART;TZID=Russian Standard Time:20300110T100000",
         "DTEND;TZID=Russian Standard Time:20300110T110000", "UTC", "2030-01-10 07:00", 3600),
        ("DTSTART;TZID=America/New_York:20300110T100000",
         "DTEND;TZID=America/New_York:20300110T103000", "UTC", "2030-01-10 15:00", 1800),
        ("DTSTART:20300110T100000", "DTEND:20300110T110000", "Asia/Yekaterinburg",
         "2030-01-10 05:00", 3600),
        ("DTSTART;VALUE=DATE:20300110", "DTEND;VALUE=DATE:20300111", "Europe/Moscow",
         "2030-01-09 21:00", 86399),
    ],
)
async def test_time_zones_through_the_daemon(start_daemon, standin, sink, clock, start, end, zone,
                                             expected, duration):
    """Windows and IANA zone names, floating times and all-day events are scheduled correctly."""
    daemon = await start_daemon(clock=clock, policy={"default_timezone": zone})
    body = (f"UID:tz@example.com\nORGANIZER:mailto:alice@example.com\n"
            f"ATTENDEE:mailto:bob@example.com\nSUMMARY:Zones\nLOCATION:TrueConf\n{start}\n{end}")
    await send(daemon, request(body))
    assert scheduled(standin) == (epoch(expected), duration)


async def test_hostile_recurrence_is_delivered_without_conference(start_daemon, standin, sink, clock):
    """FREQ=SECONDLY since 1900 is refused within bounded work and the message still goes out."""
    daemon = await start_daemon(clock=clock)
    hostile = request("UID:h@example.com\nORGANIZER:mailto:alice@example.com\n"
                      "ATTENDEE:mailto:bob@example.com\nLOCATION:TrueConf\n"
                      "DTSTART:19000101T000000Z\nDURATION:PT1S\nRRULE:FREQ=SECONDLY")
    code, _ = await send(daemon, hostile)
    assert code == 250
    assert standin.conferences == {}
    assert untraced(invitations(sink)[0].content) == hostile


async def test_serving_daemon_catches_up_at_start(start_daemon, standin, sink, clock):
    """The running daemon's own reschedule pass moves a conference whose occurrence is over."""
    import asyncio

    daemon = await start_daemon(clock=clock)
    await send(daemon, request(WEEKLY))
    clock.set("2030-01-07 10:30")
    serving = asyncio.get_running_loop().create_task(daemon.serve())
    for _ in range(200):
        if scheduled(standin)[0] == epoch("2030-01-14 09:00"):
            break
        await asyncio.sleep(0.02)
    daemon.stop()
    await serving
    assert scheduled(standin)[0] == epoch("2030-01-14 09:00")


async def test_one_broken_series_does_not_stop_the_others(start_daemon, standin, sink, clock):
    """A series whose conference is gone from TrueConf is set aside; the others still move on."""
    import httpx

    daemon = await start_daemon(clock=clock)
    await send(daemon, request(WEEKLY))
    await send(daemon, request(WEEKLY.replace(UID, "series-2@example.com")))
    first = next(c for c in standin.conferences.values())
    token = httpx.post(f"{standin.url}/oauth2/v1/token", data={
        "grant_type": "client_credentials", "client_id": "mailhook",
        "client_secret": "s3cret-value"}).json()["access_token"]
    httpx.delete(f"{standin.url}/api/v3.11/conferences/{first['id']}",
                 headers={"Authorization": f"Bearer {token}"})
    clock.set("2030-01-07 10:01")
    assert await daemon.app.rescheduler.run_once() == 1
    [remaining] = standin.conferences.values()
    assert remaining["schedule"]["start_time"] == epoch("2030-01-14 09:00")


async def test_instance_message_for_a_one_off_event_keeps_its_conference(start_daemon, standin,
                                                                         sink, clock):
    """A stray RECURRENCE-ID message for a non-recurring event neither deletes nor moves it."""
    daemon = await start_daemon(clock=clock, recurrence={"after_series_end": "delete"})
    single = WEEKLY.replace("RRULE:FREQ=WEEKLY;BYDAY=MO", "").replace("20291001T", "20300110T")
    await send(daemon, request(single))
    before = scheduled(standin)
    stray = request(instance("20300110T100000", "20300111T100000", "20300111T110000"))
    assert (await send(daemon, stray))[0] == 250
    assert scheduled(standin) == before
    assert "/c/" in invitations(sink)[-1].content.decode()
