"""Immutable values shared by the pure core and the adapters."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailhook.core.contentline import ContentLine
    from mailhook.core.mimetree import ScannedMessage


@dataclass(frozen=True, slots=True)
class Attendee:
    """One ATTENDEE of an event."""

    address: str  # lower-case e-mail address, "mailto:" removed
    name: str = ""  # CN parameter
    role: str = ""  # ROLE parameter, upper-case ("REQ-PARTICIPANT", "NON-PARTICIPANT", ...)
    cutype: str = ""  # CUTYPE parameter, upper-case ("INDIVIDUAL", "ROOM", "RESOURCE", ...)
    partstat: str = ""  # PARTSTAT parameter, upper-case


@dataclass(frozen=True, slots=True)
class EventComponent:
    """One VEVENT of a calendar object, with its times converted to UTC."""

    uid: str
    recurrence_id: str | None = None  # "20261201T090000Z" (UTC) or "20261201" (date); None = master
    recurrence_range: str | None = None  # "THISANDFUTURE" or None
    sequence: int = 0
    summary: str = ""
    location: str = ""
    description: str = ""
    start: datetime | None = None  # timezone-aware, UTC
    end: datetime | None = None  # timezone-aware, UTC
    all_day: bool = False
    status: str = ""  # upper-case STATUS, "" when absent
    organizer: str = ""  # lower-case address, "" when absent
    organizer_sent_by: str = ""  # lower-case address of SENT-BY, "" when absent
    attendees: tuple[Attendee, ...] = ()
    conference_urls: tuple[str, ...] = ()  # values of CONFERENCE properties
    rrule: tuple[str, ...] = ()  # RRULE values as written, e.g. "FREQ=WEEKLY;BYDAY=MO"
    rdate: tuple[str, ...] = ()  # the event's own RDATE values as written
    exdate: tuple[str, ...] = ()  # the event's own EXDATE values as written
    # DTSTART or DTEND names neither a TZID nor UTC (a floating time, or a date): such times
    # are read in policy.default_timezone by the series code.
    floating: bool = False
    utc_offset_minutes: int = 0  # the offset of DTSTART's own zone at start, for display
    # DTSTART's own zone as resolved (UTC for a "Z" time; None for a floating time or a date),
    # so that the organizer notice shows the time where the organizer set it.
    zone: tzinfo | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class CalendarObject:
    """A decoded iCalendar object found in a message."""

    method: str  # METHOD inside the object, upper-case; "" when the object has none
    events: tuple[EventComponent, ...]  # every VEVENT, in document order
    text: str = field(repr=False, default="")  # the decoded text of the object
    # The text's content lines as the reader split them, handed on so that the rewrite of
    # the same text does not split it again; () when not kept.
    lines: tuple[ContentLine, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class CalendarPart:
    """Where a calendar object sits in the MIME tree."""

    path: tuple[int, ...]  # child indexes from the root; () for a single-part message
    content_type: str  # lower-case media type, e.g. "text/calendar"
    header_method: str | None  # the Content-Type method= parameter as found, or None


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """What the core reads from one message."""

    raw: bytes = field(repr=False)
    message_id: str = ""
    subject: str = ""
    from_address: str = ""  # lower-case address of From:
    received: str = ""  # the topmost Received header, as written (its queue id is logged)
    calendar: CalendarObject | None = None  # from the first calendar part
    calendar_parts: tuple[CalendarPart, ...] = ()
    skip_reason: str = ""  # "" when the message carries an invitation to consider
    # the MIME tree parse_message read ``raw`` into, so the rewrite need not scan it again
    scanned: ScannedMessage | None = field(default=None, compare=False, repr=False)

    @property
    def method(self) -> str:
        """The iTIP method: the object's METHOD, else the header's method= parameter."""
        if self.calendar and self.calendar.method:
            return self.calendar.method
        for part in self.calendar_parts:
            if part.header_method:
                return part.header_method.upper()
        return ""


@dataclass(frozen=True, slots=True)
class Invitee:
    """A TrueConf user invited to a conference."""

    id: str
    display_name: str = ""


@dataclass(frozen=True, slots=True)
class ConferenceSpec:
    """What a conference should look like on TrueConf, independent of API version."""

    topic: str  # one line, 1..240 characters
    owner: str  # TrueConf id of the organizer
    invitees: tuple[Invitee, ...]  # attendees with TrueConf accounts, owner not included
    start: int  # UTC epoch seconds
    duration: int  # seconds, 60..86399
    role_based: bool  # False: "all on screen"; True: role-based (selector) mode
    max_participants: int
    tag: str  # stable tag naming the (organizer, UID) pair, for lookups after a crash
    description: str = ""
    utc_offset_minutes: int = 0  # the organizer's offset, used only for display (v4)


@dataclass(frozen=True, slots=True)
class Conference:
    """A conference as TrueConf returned it."""

    id: str
    url: str  # the join link TrueConf returned; never built by mailhook
    # Its tags, as far as TrueConf said (mailhook's own one names the event): read when
    # postponed work checks whose the conference is; not part of a conference's identity.
    tags: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class LinkInsertion:
    """What the rewrite writes into an invitation."""

    url: str
    keywords: tuple[str, ...] = ("TrueConf",)  # matched case-insensitively in LOCATION
    language: str = "en"  # "en" or "ru"


class EventState(StrEnum):
    """Where an event's conference stands."""

    CREATING = "creating"  # a create was sent; TrueConf may or may not have the conference
    ACTIVE = "active"  # the conference exists and matches ``spec``
    DELETED = "deleted"  # the conference was deleted on TrueConf


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One (organizer, UID) pair and its conference."""

    organizer: str
    uid: str
    state: EventState
    tag: str
    conference_id: str = ""
    url: str = ""
    spec: ConferenceSpec | None = None
    attendees: tuple[str, ...] = ()  # every attendee address of the last REQUEST
    sequence: int = 0
    calendar: str = ""  # the series: time zones, master and every overridden instance seen
    first_seen: float = 0.0  # epoch seconds of the first message for this event
    updated_at: float = 0.0
    occurrence_end: float = 0.0  # epoch seconds when the scheduled occurrence ends; 0: nothing due
    pending_update: bool = False  # TrueConf has not yet taken ``spec``; retried in the background
    retry_at: float = 0.0  # when to retry the pending update
    attempts: int = 0  # failed attempts at the pending update
    retry_since: float = 0.0  # when TrueConf trouble began for this event's messages; 0: none


@dataclass(frozen=True, slots=True)
class PendingDelete:
    """A conference to delete on TrueConf, kept until TrueConf confirms."""

    conference_id: str
    organizer: str
    uid: str
    attempts: int = 0
    retry_at: float = 0.0
    last_error: str = ""
