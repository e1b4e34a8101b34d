"""The organizer's own event: the link written in and taken out line by line, and the check
that an edit changed only the link's properties."""

from __future__ import annotations

from icalendar import Calendar

from mailhook.config import Settings, masked
from mailhook.core.model import LinkInsertion
from mailhook.core.organizer_event import changes, with_link, without_link

URL = "https://video.example.com/c/42"
EVENT = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Example//EN\r\nBEGIN:VEVENT\r\nUID:e1@example.com\r\nDTSTAMP:20310101T000000Z\r\nDTSTART:20310310T090000Z\r\nSUMMARY:Planning\r\nLOCATION:Room 4 TrueConf\r\nDESCRIPTION:Agenda\\nitem\r\nX-ALT-DESC;FMTTYPE=text/html:<html><body>Agenda</body></html>\r\nBEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:Reminder\r\nTRIGGER:-PT5M\r\nEND:VALARM\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"


def event_of(text: str):
    return Calendar.from_ical(text).walk("VEVENT")[0]


def test_link_written_like_the_invitation_and_nothing_else():
    """CONFERENCE, the keyword in LOCATION and both description blocks get the link; the
    edit counts as a change of the link's properties only."""
    linked = with_link(EVENT, LinkInsertion(url=URL))
    event = event_of(linked)
    assert str(event["CONFERENCE"]) == URL
    assert str(event["LOCATION"]) == f"Room 4 {URL}"
    assert URL in str(event["DESCRIPTION"]) and URL in str(event["X-ALT-DESC"])
    assert str(event.walk("VALARM")[0]["DESCRIPTION"]) == "Reminder"
    assert changes(EVENT, linked).link and not changes(EVENT, linked).other


def test_link_taken_out_leaves_the_rest():
    """Taking the link out removes the TrueConf CONFERENCE, the link in LOCATION and the
    blocks; the alarm's DESCRIPTION and every other line stay."""
    unlinked = without_link(with_link(EVENT, LinkInsertion(url=URL)))
    event = event_of(unlinked)
    assert "CONFERENCE" not in event
    assert str(event["LOCATION"]) == "Room 4"
    assert str(event["DESCRIPTION"]) == "Agenda\nitem"
    assert str(event["X-ALT-DESC"]) == "<html><body>Agenda</body></html>"
    assert str(event.walk("VALARM")[0]["DESCRIPTION"]) == "Reminder"
    assert not changes(EVENT, unlinked).other


def test_another_conference_is_kept():
    """A CONFERENCE that is not TrueConf's (another service's link) stays when the link goes."""
    other = EVENT.replace("END:VEVENT", "CONFERENCE;VALUE=URI;LABEL=Phone:tel:+1555\r\nEND:VEVENT")
    unlinked = without_link(with_link(other, LinkInsertion(url=URL)))
    assert str(event_of(unlinked)["CONFERENCE"]) == "tel:+1555"


def test_any_other_change_is_seen():
    """A changed SUMMARY, alarm or time zone counts as a change beyond the link."""
    assert changes(EVENT, EVENT.replace("SUMMARY:Planning", "SUMMARY:Other")).other
    assert changes(EVENT, EVENT.replace("TRIGGER:-PT5M", "TRIGGER:-PT9M")).other
    assert not changes(EVENT, EVENT).link


def test_the_caldav_password_is_never_shown(tmp_path):
    """The effective settings (check-config) name the password file, never its content."""
    secret = tmp_path / "caldav-password"
    secret.write_text("very-secret-caldav\n")
    settings = Settings(trueconf={"server_url": "https://tc.example.com", "client_id": "m",
                                  "client_secret": "x"},
                        policy={"local_domains": ["example.com"]},
                        caldav={"enabled": True, "url": "https://dav.example.com",
                                "password_file": str(secret)})
    assert settings.caldav.password() == "very-secret-caldav"
    assert "very-secret-caldav" not in repr(masked(settings))
