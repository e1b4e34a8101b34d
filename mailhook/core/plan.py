"""The plan for one message: read → classify → series → decide, as pure functions.

The daemon's flow and ``mailhook explain`` both call :func:`read_message` and :func:`plan`, so
what explain says is what the daemon does. The plan says what to do on TrueConf, what to write
into the message, whether to tell the organizer, and why; carrying it out is the effects'
business (``mailhook.conferences``). No I/O here; the clock is passed in as ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum

from mailhook.core.calendar import CalendarError, parse_calendar
from mailhook.core.decide import (
    Action,
    Decision,
    Invitation,
    Policy,
    clamp_duration,
    classify,
    decide,
    participant_addresses,
    topic_of,
)
from mailhook.core.mime import parse_message
from mailhook.core.model import ConferenceSpec, EventState, ParsedMessage, StoredEvent
from mailhook.core.notice import NoticeWhen, notice_kind, should_send
from mailhook.core.series import Occurrence, SeriesError, merge_series, next_occurrence

FALLBACK_TOPIC = {"en": "Video conference", "ru": "Видеоконференция"}


@dataclass(frozen=True, slots=True)
class FlowConfig:
    """The settings the plan, the effects and the flow use (built once from the config)."""

    policy: Policy
    language: str = "en"
    notices: bool = True
    notice_when: NoticeWhen = "created"  # notice.when, "never" when notice.enabled is false
    notice_sender: str = "noreply@localhost"
    fallback_owner: str = ""  # TrueConf id owning the conferences of organizers without one
    default_zone: tzinfo = UTC  # for floating times and all-day events
    delete_after_series_end: bool = False
    retry_deadline: float = 1800.0  # seconds of 451 before an invitation goes out without a link
    backoff_initial: float = 30.0
    backoff_max: float = 3600.0

    @property
    def fallback_topic(self) -> str:
        """The conference's topic when the event has no SUMMARY, in the configured language."""
        return FALLBACK_TOPIC.get(self.language, FALLBACK_TOPIC["en"])


class Step(StrEnum):
    """What the plan asks of TrueConf."""

    NOTHING = "nothing"  # no API call
    ENSURE = "ensure"  # create the conference, or bring the existing one in step with the event
    FOLLOW = "follow"  # move the conference to the series' nearest occurrence
    DELETE = "delete"  # delete the conference (retried in the background when TrueConf fails)
    UNINVITE = "uninvite"  # take the removed attendees' invitations off the conference


@dataclass(frozen=True, slots=True)
class SeriesState:
    """The event's series after this message, and the occurrence its conference follows."""

    text: str
    occurrence: Occurrence | None
    problem: str = ""  # why no occurrence could be computed, if that is the reason


NO_SERIES = SeriesState("", None)


@dataclass(frozen=True, slots=True)
class Reading:
    """A message as read: its parse, and the organizer's invitation in it or why there is none."""

    parsed: ParsedMessage
    found: Invitation | Decision

    @property
    def invitation(self) -> Invitation | None:
        return self.found if isinstance(self.found, Invitation) else None


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do about one message, and why (``decision.reason``)."""

    decision: Decision
    method: str = ""
    uid: str = ""
    stored: StoredEvent | None = None  # what was stored about the event before this message
    step: Step = Step.NOTHING
    rewrite: bool = False  # write the conference's link into the message
    link: str = ""  # the link to write when it is known already (the stored conference's)
    series: SeriesState = NO_SERIES
    occurrence: Occurrence | None = None  # the occurrence the conference is set for (ENSURE)
    participants: tuple[str, ...] = ()  # attendee addresses the conference is for (ENSURE)
    notice: bool = False  # mail the organizer the link once the conference is made or moved
    sequence: int = 0  # the SEQUENCE the stored event keeps after a DELETE

    @property
    def invitation(self) -> Invitation | None:
        return self.decision.invitation


def read_message(raw: bytes, mail_from: str, policy: Policy) -> Reading:
    """Parse the message and find the organizer's invitation in it (never raises)."""
    parsed = parse_message(raw)
    return Reading(parsed, classify(parsed, mail_from, policy))


def passed(reading: Reading, decision: Decision) -> Plan:
    """A plan that forwards the message as it came."""
    invitation = decision.invitation or reading.invitation
    uid = invitation.uid if invitation else first_uid(reading.parsed)
    return Plan(decision, method=reading.parsed.method, uid=uid)


def needs_series(reading: Reading, stored: StoredEvent | None, config: FlowConfig) -> bool:
    """Whether planning takes the series' full way (merge, expand): CPU work worth a thread."""
    invitation = reading.invitation
    if invitation is None:
        return False
    return one_off(reading.parsed, invitation, stored, config) is None


def plan(reading: Reading, stored: StoredEvent | None, config: FlowConfig, now: datetime) -> Plan:
    """The plan for a message, given what is stored about its event and the time ``now``."""
    invitation = reading.invitation
    if invitation is None:
        assert isinstance(reading.found, Decision)
        return passed(reading, reading.found)
    series = series_after(reading.parsed, invitation, stored, config, now)
    decision = decide(invitation, stored, config.policy, series.occurrence)
    if decision.action is Action.PASS and series.problem:
        decision = replace(decision, reason=series.problem)
    base = replace(passed(reading, decision), stored=stored, series=series)
    return _steps(base, invitation, stored, config)


def _steps(base: Plan, invitation: Invitation, stored: StoredEvent | None,
           config: FlowConfig) -> Plan:
    """Turn the decision into what to do on TrueConf and in the message."""
    action = base.decision.action
    if action is Action.REWRITE and stored is not None:
        return replace(base, rewrite=True, link=stored.url)
    if action is Action.CREATE or (action is Action.SYNC and invitation.master is not None):
        return _ensure(base, invitation, stored, config)
    if action in (Action.SYNC, Action.RESCHEDULE) and stored is not None:
        # Without a known series (a one-off event) an instance message changes nothing.
        movable = not base.series.problem and bool(stored.calendar)
        return replace(base, step=Step.FOLLOW if movable else Step.NOTHING,
                       rewrite=action is Action.SYNC, link=stored.url)
    if action is Action.DELETE and stored is not None:
        sequence = invitation.master.sequence if invitation.master else stored.sequence
        return replace(base, step=Step.DELETE, sequence=max(sequence, stored.sequence))
    if action is Action.UNINVITE and stored is not None:
        return replace(base, step=Step.UNINVITE)
    return base


def _ensure(base: Plan, invitation: Invitation, stored: StoredEvent | None,
            config: FlowConfig) -> Plan:
    occurrence = base.series.occurrence or stored_occurrence(stored)
    if occurrence is None:
        return base  # nothing to schedule: the message goes on as it came
    people = participants(invitation, stored)
    return replace(base, step=Step.ENSURE, rewrite=True, occurrence=occurrence,
                   participants=people,
                   notice=_notice_wanted(config, invitation, stored, occurrence, people))


def _notice_wanted(config: FlowConfig, invitation: Invitation, stored: StoredEvent | None,
                   occurrence: Occurrence, people: tuple[str, ...]) -> bool:
    """Whether the organizer is mailed the link: what the REQUEST does to the conference
    (``notice_kind``, the same the handling asks), and ``notice.when``."""
    if not config.notices:
        return False
    previous = stored.spec if stored and stored.state is EventState.ACTIVE else None
    wanted = ConferenceSpec(
        topic=topic_of(invitation.lead, config.fallback_topic), owner="", invitees=(),
        start=int(occurrence.start.timestamp()), duration=clamp_duration(occurrence.duration),
        role_based=False, max_participants=0, tag="")
    kind = notice_kind(previous, wanted, stored.attendees if previous and stored else (), people)
    return kind is not None and should_send(config.notice_when, kind)


def participants(invitation: Invitation, stored: StoredEvent | None) -> tuple[str, ...]:
    """Who takes part. Copies of one version (same SEQUENCE) may each list only some of the
    attendees, as per-attendee copies do: they add to the list and never shrink it; a new
    version replaces it, and a CANCEL removes people."""
    lead = invitation.lead
    addresses = participant_addresses(lead)
    if stored is None or stored.state is not EventState.ACTIVE or lead.sequence != stored.sequence:
        return addresses
    return tuple(dict.fromkeys((*stored.attendees, *addresses)))


def series_after(parsed: ParsedMessage, invitation: Invitation, stored: StoredEvent | None,
                 config: FlowConfig, now: datetime) -> SeriesState:
    """The series after this message and the occurrence to follow: the one-off event's own
    times when that is all there is, else the stored series merged with the message."""
    single = one_off(parsed, invitation, stored, config)
    if single is not None:
        return SeriesState("", single if single.end > now else None)
    known = stored.calendar if stored and stored.state is not EventState.DELETED else ""
    text = parsed.calendar.text if parsed.calendar else ""
    try:
        merged = merge_series(known, text, invitation.uid, invitation.method)
        occurrence = next_occurrence(merged, now, config.default_zone)
        if occurrence is None and invitation.master is None and not _has_master(merged):
            occurrence = _own_occurrence(invitation, now)
        return SeriesState(merged, occurrence)
    except SeriesError as exc:
        return SeriesState(known, None, f"the series cannot be scheduled: {exc}")


def _has_master(series: str) -> bool:
    """Whether the series holds its master VEVENT (mailhook has seen the series' REQUEST)."""
    try:
        return any(event.recurrence_id is None for event in parse_calendar(series).events)
    except CalendarError:
        return False


def _own_occurrence(invitation: Invitation, now: datetime) -> Occurrence | None:
    """Without the series' master, the earliest changed occurrence the message holds that is
    neither cancelled nor over: the one a conference can be set for."""
    live = [Occurrence(e.start, e.end, e.utc_offset_minutes) for e in invitation.events
            if e.start is not None and e.end is not None and e.end > now
            and e.status != "CANCELLED"]
    return min(live, key=lambda o: o.start) if live else None


def one_off(parsed: ParsedMessage, invitation: Invitation, stored: StoredEvent | None,
            config: FlowConfig) -> Occurrence | None:
    """The only occurrence of a plain one-off event, without the cost of series handling.

    Most invitations are one VEVENT with a zoned start and end and no recurrence of its own
    (RRULE, RDATE, EXDATE; the RRULEs of VTIMEZONE blocks are the zone's, not the event's);
    its only occurrence is DTSTART..DTEND as read. Anything else (None) goes the full way.
    """
    master = invitation.master
    if (stored is not None and stored.calendar) or master is None or len(invitation.events) > 1:
        return None
    if master.rrule or master.rdate or master.exdate or parsed.calendar is None:
        return None
    if master.start is None or master.end is None:
        return None
    if master.floating and config.default_zone != UTC:
        return None  # floating and all-day times need the default zone, which the full way applies
    return Occurrence(master.start, master.end, master.utc_offset_minutes)


def stored_occurrence(stored: StoredEvent | None) -> Occurrence | None:
    """The occurrence the stored conference is scheduled for, if any."""
    if stored is None or stored.spec is None:
        return None
    start = datetime.fromtimestamp(stored.spec.start, UTC)
    end = start + timedelta(seconds=stored.spec.duration)
    return Occurrence(start, end, stored.spec.utc_offset_minutes)


def first_uid(parsed: ParsedMessage) -> str:
    """The first event's UID, for the log line of a message mailhook does not act on."""
    if parsed.calendar and parsed.calendar.events:
        return parsed.calendar.events[0].uid
    return ""
