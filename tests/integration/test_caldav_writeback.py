"""The link in the organizer's own calendar: the real daemon writes it back into the event on a
real CalDAV server (Radicale, started here), keeps everything else, takes it out on cancel,
never overwrites a concurrent edit, and never holds mail for the server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import caldav
import pytest
from icalendar import Calendar

from mailhook.caldav_writeback import CalendarHome, StoredEvent, write_back
from mailhook.core.model import LinkInsertion
from mailhook.core.organizer_event import with_link
from tests.integration.conftest import send
from tests.support.invites import Event, calendar, thunderbird
from tests.support.radicale import SERVICE_PASSWORD, SERVICE_USER, Radicale

# Without a bare comma: Radicale (vobject) cuts an unescaped TEXT value at one.
EVENT = Event(description="Agenda: numbers and plans.")
EVENT_PATH = "/alice/calendar/quarterly.ics"
LINK_PROPERTIES = {"CONFERENCE", "LOCATION", "DESCRIPTION"}
URL = "https://video.example.com/c/0123456789"


@pytest.fixture
def radicale(tmp_path: Path) -> Iterator[Radicale]:
    """Radicale with alice's calendar in it."""
    with Radicale(tmp_path / "radicale") as server:
        server.make_calendar("alice")
        yield server


def stored_copy(event: Event) -> str:
    """The organizer's event as a calendar client stores it: the invitation without METHOD."""
    return calendar(event).replace(f"METHOD:{event.method}\r\n", "")


def caldav_section(server: Radicale, **extra: Any) -> dict[str, Any]:
    return {"enabled": True, "url": server.url, "username": SERVICE_USER,
            "password_file": str(server.password_file), "calendar_home": "/{user}/",
            "retries": 1, **extra}


def written(daemon: Any, result: str) -> float:
    value = daemon.metrics.registry.get_sample_value(
        "mailhook_caldav_writebacks_total", {"result": result})
    return value or 0.0


async def wait_written(daemon: Any, result: str, count: int = 1) -> None:
    """Wait (up to 30 s) until ``count`` write-backs ended with ``result``."""
    for _ in range(600):
        if written(daemon, result) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no write-back ended with {result!r}")


def vevent(text: str) -> Any:
    return Calendar.from_ical(text).walk("VEVENT")[0]


def other_properties(text: str) -> dict[str, list[bytes]]:
    """Every property of the event but the link's, as written."""
    event = vevent(text)
    found: dict[str, list[bytes]] = {}
    for name, value in event.property_items(recursive=False):
        if name not in LINK_PROPERTIES:
            found.setdefault(name, []).append(event.content_line(name, value).encode())
    return found


async def test_the_link_is_written_into_the_organizers_event(start_daemon, standin, radicale):
    """After the invitation went out, the organizer's event on the server has CONFERENCE and
    the link in LOCATION and DESCRIPTION, and nothing else of it changed."""
    before = stored_copy(EVENT)
    radicale.put(EVENT_PATH, before)
    daemon = await start_daemon(caldav=caldav_section(radicale))
    assert (await send(daemon, thunderbird(EVENT)))[0] == 250
    await wait_written(daemon, "ok")
    [conference] = standin.conferences.values()
    after = vevent(radicale.get(EVENT_PATH)[0])
    assert str(after["CONFERENCE"]) == conference["url"]
    assert str(after["LOCATION"]) == conference["url"]  # the keyword replaced by the link
    assert str(after["DESCRIPTION"]).startswith("Agenda: numbers and plans.\n\n~~~")
    assert conference["url"] in str(after["DESCRIPTION"])
    assert other_properties(radicale.get(EVENT_PATH)[0]) == other_properties(before)


async def test_an_update_moves_nothing_else(start_daemon, standin, radicale):
    """An update whose link is already in the organizer's event leaves the event as the
    organizer's client wrote it (no write at all); a copy of an event the client rewrote
    without the block gets the block back and keeps the client's new time."""
    radicale.put(EVENT_PATH, stored_copy(EVENT))
    daemon = await start_daemon(caldav=caldav_section(radicale))
    await send(daemon, thunderbird(EVENT))
    await wait_written(daemon, "ok")
    moved = replace(EVENT, sequence=1, start=EVENT.start + EVENT.duration)
    [conference] = standin.conferences.values()
    by_client, etag = radicale.get(EVENT_PATH)
    by_client = by_client.replace(calendar(EVENT).split("DTSTART:")[1][:16],
                                  calendar(moved).split("DTSTART:")[1][:16])
    etag = radicale.put(EVENT_PATH, by_client)
    assert (await send(daemon, thunderbird(moved, message_id="<m2@example.com>")))[0] == 250
    await wait_written(daemon, "unchanged")
    assert radicale.get(EVENT_PATH)[1] == etag  # not written
    text = radicale.get(EVENT_PATH)[0]
    assert conference["url"] in str(vevent(text)["CONFERENCE"])


async def test_cancel_takes_the_link_out(start_daemon, standin, radicale):
    """The organizer's CANCEL deletes the conference, and its CONFERENCE, the link in
    LOCATION and the DESCRIPTION block come out of the organizer's event (which a client
    keeps as cancelled); everything else stays."""
    radicale.put(EVENT_PATH, stored_copy(EVENT))
    daemon = await start_daemon(caldav=caldav_section(radicale))
    await send(daemon, thunderbird(EVENT))
    await wait_written(daemon, "ok")
    cancelled = replace(EVENT, method="CANCEL", status="CANCELLED", sequence=1)
    by_client = radicale.get(EVENT_PATH)[0].replace("STATUS:CONFIRMED", "STATUS:CANCELLED")
    radicale.put(EVENT_PATH, by_client)
    assert (await send(daemon, thunderbird(cancelled, message_id="<c@example.com>")))[0] == 250
    await wait_written(daemon, "ok", 2)
    assert standin.conferences == {}
    text = radicale.get(EVENT_PATH)[0]
    after = vevent(text)
    assert "CONFERENCE" not in after and "LOCATION" not in after
    assert str(after["DESCRIPTION"]) == "Agenda: numbers and plans."
    assert other_properties(text) == other_properties(by_client)


class EditedBetween(CalendarHome):
    """A home whose event someone else edits right after mailhook read it, ``times`` times."""

    def __init__(self, client: Any, url: str, server: Radicale, times: int) -> None:
        super().__init__(client, url)
        self.server, self.times, self.edits = server, times, 0

    def find(self, uid: str) -> StoredEvent | None:
        stored = super().find(uid)
        if self.edits < self.times:
            self.edits += 1
            text = self.server.get(EVENT_PATH)[0]
            self.server.put(EVENT_PATH, text.replace("SUMMARY:", f"SUMMARY:v{self.edits} "))
        return stored


def home_on(server: Radicale, times: int) -> EditedBetween:
    client = caldav.DAVClient(url=server.url, username=SERVICE_USER, password=SERVICE_PASSWORD)
    return EditedBetween(client, server.url + "/alice/", server, times)


def test_a_concurrent_edit_is_read_again_and_kept(radicale):
    """When the event changed on the server between mailhook's read and its write, the PUT
    is refused (If-Match) and the link is written into the new version: the edit stays."""
    radicale.put(EVENT_PATH, stored_copy(EVENT))
    edit = lambda text: with_link(text, LinkInsertion(url=URL))  # noqa: E731
    assert write_back(home_on(radicale, times=1), EVENT.uid, edit, attempts=3) == "ok"
    after = vevent(radicale.get(EVENT_PATH)[0])
    assert str(after["SUMMARY"]) == "v1 Quarterly planning"
    assert str(after["CONFERENCE"]) == URL


def test_an_event_that_keeps_changing_is_left_alone(radicale):
    """When every write meets a newer version, mailhook gives up ("conflict") and the last
    edit on the server stands, without the link."""
    radicale.put(EVENT_PATH, stored_copy(EVENT))
    edit = lambda text: with_link(text, LinkInsertion(url=URL))  # noqa: E731
    assert write_back(home_on(radicale, times=3), EVENT.uid, edit, attempts=3) == "conflict"
    after = vevent(radicale.get(EVENT_PATH)[0])
    assert str(after["SUMMARY"]) == "v3 v2 v1 Quarterly planning"
    assert "CONFERENCE" not in after


def test_an_event_in_no_calendar_is_not_found(radicale):
    """A UID that no calendar under the organizer's home holds gives "not_found"."""
    edit = lambda text: with_link(text, LinkInsertion(url=URL))  # noqa: E731
    assert write_back(home_on(radicale, times=0), "nobody@example.com", edit, 3) == "not_found"


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A port that takes connections and never answers (a hung CalDAV server)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


async def test_a_server_down_never_holds_the_mail(start_daemon, standin, radicale, silent_server):
    """With the CalDAV server hung, the invitation still gets 250 before the write-back ends;
    the write-back fails after its tries and is counted as an error."""
    section = caldav_section(radicale, url=silent_server, timeout=2, retries=0)
    daemon = await start_daemon(caldav=section)
    assert (await send(daemon, thunderbird(EVENT)))[0] == 250
    assert written(daemon, "error") == 0  # the reply did not wait for the server
    await wait_written(daemon, "error")
    assert SERVICE_PASSWORD not in (radicale.folder / "radicale.log").read_text()
