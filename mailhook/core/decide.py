"""The decision table: what to do with a message, given what is stored about its event.

Pure functions over immutable values; the clock is passed in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum

from mailhook.core.model import (
    ConferenceSpec,
    EventComponent,
    EventState,
    Invitee,
    ParsedMessage,
    StoredEvent,
)
from mailhook.core.series import Occurrence

TOPIC_LIMIT = 240
MIN_DURATION = 60
MAX_DURATION = 86399
_NOT_INVITED_ROLES = {"NON-PARTICIPANT"}


class Action(StrEnum):
    """What the pipeline does with a message."""

    PASS = "pass"  # noqa: S105 - forward byte-identical, change nothing
    CREATE = "create"  # create the conference, rewrite
    SYNC = "sync"  # the conference exists: update it if needed, rewrite with the same link
    REWRITE = "rewrite"  # an older version of the event: rewrite with the stored link, no API call
    RESCHEDULE = "reschedule"  # an occurrence was cancelled: move the conference, forward unchanged
    DELETE = "delete"  # delete the conference, forward unchanged
    UNINVITE = "uninvite"  # remove cancelled attendees from the conference, forward unchanged


@dataclass(frozen=True, slots=True)
class Policy:
    """The parts of the settings the decision needs."""

    local_domains: tuple[str, ...]
    trigger: str = "keyword"  # "keyword" or "always"
    keywords: tuple[str, ...] = ("TrueConf",)
    all_on_screen_limit: int = 36
    max_participants: int = 250
    calendar_senders: tuple[str, ...] = ()  # envelope senders that send for any local organizer
    # (organizer, delegates it trusts): exact lower-case addresses or "*@domain" patterns.
    delegates: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class Invitation:
    """An organizer's REQUEST or CANCEL that mailhook may act on."""

    method: str
    organizer: str
    uid: str
    master: EventComponent | None  # the VEVENT without RECURRENCE-ID, if the object has one
    events: tuple[EventComponent, ...]

    @property
    def lead(self) -> EventComponent:
        """The event the conference is made from: the master, else (a changed occurrence of
        a series mailhook never saw) the first occurrence the message holds."""
        return self.master if self.master is not None else self.events[0]


@dataclass(frozen=True, slots=True)
class Decision:
    """The action and the reason for it, in words for the log and ``explain``."""

    action: Action
    reason: str
    invitation: Invitation | None = None


def passes(reason: str) -> Decision:
    """A decision to forward the message untouched."""
    return Decision(Action.PASS, reason)


def classify(parsed: ParsedMessage, mail_from: str, policy: Policy) -> Invitation | Decision:
    """Find the organizer's invitation in a message, or say why there is none to act on."""
    if parsed.skip_reason:
        return passes(parsed.skip_reason)
    method = parsed.method
    if method not in ("REQUEST", "CANCEL"):
        return passes(f"method {method or 'missing'} is not acted on")
    assert parsed.calendar is not None
    events = parsed.calendar.events
    uids = {event.uid for event in events}
    if len(uids) != 1:
        return passes("the calendar object holds more than one UID")
    master = next((event for event in events if event.recurrence_id is None), None)
    organizer = next((event.organizer for event in events if event.organizer), "")
    if not organizer:
        return passes("the event has no ORGANIZER")
    if domain_of(organizer) not in policy.local_domains:
        return passes(f"organizer {organizer} is not in a local domain")
    if not _speaks_for_organizer(mail_from.lower(), organizer, events, policy):
        return passes(_not_the_organizer(mail_from, organizer, sent_by(events)))
    return Invitation(method, organizer, events[0].uid, master, events)


def _speaks_for_organizer(
    sender: str, organizer: str, events: tuple[EventComponent, ...], policy: Policy
) -> bool:
    """May this envelope sender act on the organizer's event?

    mailhook trusts the envelope sender (the MTA ties it to the submitting login): the organizer
    itself, a calendar server the site names, or a SENT-BY delegate the site trusts for this
    organizer. SENT-BY alone proves nothing: anyone can write it.
    """
    if not sender:
        return False
    if sender == organizer or sender in policy.calendar_senders:
        return True
    return sender == sent_by(events) and trusts_delegate(policy, organizer, sender)


def sent_by(events: tuple[EventComponent, ...]) -> str:
    """The SENT-BY address of the event's ORGANIZER, "" when it names none."""
    return next((e.organizer_sent_by for e in events if e.organizer_sent_by), "")


def trusts_delegate(policy: Policy, organizer: str, delegate: str) -> bool:
    """Does ``policy.delegates`` let ``delegate`` send the organizer's invitations?"""
    return any(
        _matches(organizer, who) and any(_matches(delegate, allowed) for allowed in delegates)
        for who, delegates in policy.delegates
    )


def _matches(address: str, pattern: str) -> bool:
    """An address against an exact address or "*@domain" (any address of that domain)."""
    if "@" not in address:
        return False
    if pattern.startswith("*@"):
        return domain_of(address) == pattern[2:]
    return address.lower() == pattern


def _not_the_organizer(mail_from: str, organizer: str, delegate: str) -> str:
    """Why an envelope sender may not act for the organizer, naming an untrusted SENT-BY."""
    shown = mail_from or "<>"
    if delegate and delegate == mail_from.lower():
        return (f"envelope sender {shown} is the SENT-BY of the ORGANIZER but not a trusted "
                f"delegate of {organizer} (policy.delegates)")
    if delegate:
        return f"envelope sender {shown} is not the organizer (nor its SENT-BY {delegate})"
    return f"envelope sender {shown} is not the organizer"


def decide(
    invitation: Invitation,
    stored: StoredEvent | None,
    policy: Policy,
    occurrence: Occurrence | None,
) -> Decision:
    """Apply the decision table (DESIGN section 4) to one invitation.

    ``occurrence`` is the nearest occurrence of the event that has not ended, computed from the
    series as it stands after this message (None when there is none).
    """
    live = stored if stored and stored.state is not EventState.DELETED else None
    if invitation.method == "CANCEL":
        return _decide_cancel(invitation, live)
    master = invitation.master
    if master is not None and stored is not None and master.sequence < stored.sequence:
        # An MTA retry or a late copy of a version the organizer has since replaced.
        if live is not None and live.url:
            return Decision(Action.REWRITE, "older than the version already handled", invitation)
        return passes("older than the version already handled")
    if master is None and stored is not None and live is None:
        # The event's conference was deleted (cancelled, or the keyword removed): a changed
        # occurrence arriving afterwards is a straggler, not a new series to serve.
        return passes("occurrence update of an event whose conference was deleted")
    return _decide_request(invitation, live, policy, occurrence)


def _decide_request(
    invitation: Invitation,
    stored: StoredEvent | None,
    policy: Policy,
    occurrence: Occurrence | None,
) -> Decision:
    master = invitation.master
    if master is None:
        if stored is not None:
            return Decision(Action.SYNC, "occurrence update of an event with a conference", invitation)
        if has_trigger(invitation.lead, policy) and occurrence is not None:
            # A series created before mailhook, or whose first REQUEST passed while it was
            # down: this occurrence gets the conference, which the series' REQUEST takes over.
            return Decision(Action.CREATE, "a changed occurrence of a series not seen before "
                            "asks for a conference", invitation)
        return passes("occurrence update of an event without a conference")
    triggered = has_trigger(master, policy)
    if stored is None:
        if not triggered:
            return passes("the event does not ask for a TrueConf conference")
        if occurrence is None:
            return passes("the event has no upcoming occurrence")
        return Decision(Action.CREATE, "new event asks for a conference", invitation)
    if not triggered and not mentions_link(master, stored.url):
        return Decision(Action.DELETE, "the update no longer asks for a conference", invitation)
    return Decision(Action.SYNC, "update of an event with a conference", invitation)


def _decide_cancel(invitation: Invitation, stored: StoredEvent | None) -> Decision:
    if stored is None:
        return passes("cancel of an event without a conference")
    master = invitation.master
    if master is None:
        return Decision(Action.RESCHEDULE, "the organizer cancelled occurrences", invitation)
    if master.status == "CANCELLED":
        return Decision(Action.DELETE, "the organizer cancelled the event", invitation)
    removed = {attendee.address for attendee in master.attendees}
    # Outlook and Google list the organizer as an attendee too; that alone keeps nothing.
    remaining = set(stored.attendees) - removed - {invitation.organizer}
    if removed and remaining:
        return Decision(Action.UNINVITE, "the organizer removed some attendees", invitation)
    return Decision(Action.DELETE, "the organizer cancelled the event", invitation)


def has_trigger(event: EventComponent, policy: Policy) -> bool:
    """Does the event ask for a conference under the configured trigger?"""
    if policy.trigger == "always":
        return any(attendee.address != event.organizer for attendee in event.attendees)
    location = event.location.casefold()
    return any(keyword.casefold() in location for keyword in policy.keywords)


def mentions_link(event: EventComponent, url: str) -> bool:
    """Does the event still carry the conference link somewhere?"""
    if not url:
        return False
    return url in event.location or url in event.description or url in event.conference_urls


def domain_of(address: str) -> str:
    """The lower-case domain of an e-mail address."""
    return address.rpartition("@")[2].lower()



def event_tag(organizer: str, uid: str) -> str:
    """A stable tag naming the (organizer, UID) pair on TrueConf."""
    digest = hashlib.sha256(f"{organizer}\0{uid}".encode()).hexdigest()
    return f"mailhook_{digest[:24]}"


def topic_of(event: EventComponent, fallback: str) -> str:
    """SUMMARY on one line, cut to TrueConf's limit."""
    topic = re.sub(r"\s+", " ", event.summary).strip()
    return (topic or fallback)[:TOPIC_LIMIT].rstrip() or fallback


def clamp_duration(seconds: int) -> int:
    """An occurrence's length in seconds, clamped to what TrueConf accepts."""
    return min(max(seconds, MIN_DURATION), MAX_DURATION)


def participant_addresses(event: EventComponent) -> tuple[str, ...]:
    """Attendees who take part (not the organizer, not NON-PARTICIPANT), in order, unique."""
    seen: dict[str, None] = {}
    for attendee in event.attendees:
        if attendee.address and attendee.address != event.organizer and attendee.role not in _NOT_INVITED_ROLES:
            seen.setdefault(attendee.address, None)
    return tuple(seen)


def build_spec(
    event: EventComponent,
    occurrence: Occurrence,
    owner: str,
    invitees: tuple[Invitee, ...],
    participants: int,
    policy: Policy,
    tag: str,
    fallback_topic: str,
) -> ConferenceSpec:
    """The conference an event asks for; ``participants`` counts everyone who may join."""
    role_based = participants > policy.all_on_screen_limit
    limit = policy.max_participants if role_based else policy.all_on_screen_limit
    return ConferenceSpec(
        topic=topic_of(event, fallback_topic),
        owner=owner,
        invitees=invitees,
        start=int(occurrence.start.timestamp()),
        duration=clamp_duration(occurrence.duration),
        role_based=role_based,
        max_participants=limit,
        tag=tag,
        utc_offset_minutes=occurrence.utc_offset_minutes,
    )


def follow(spec: ConferenceSpec, occurrence: Occurrence) -> ConferenceSpec:
    """The same conference, moved to another occurrence."""
    return dataclasses.replace(
        spec,
        start=int(occurrence.start.timestamp()),
        duration=clamp_duration(occurrence.duration),
        utc_offset_minutes=occurrence.utc_offset_minutes,
    )
