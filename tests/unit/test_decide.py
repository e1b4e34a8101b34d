"""The decision table and the conference spec, as pure functions."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from mailhook.core.decide import (
    Action,
    Decision,
    Invitation,
    Policy,
    build_spec,
    clamp_duration,
    classify,
    decide,
    event_tag,
    follow,
    has_trigger,
    participant_addresses,
    topic_of,
    trusts_delegate,
)
from mailhook.core.model import (
    Attendee,
    CalendarObject,
    CalendarPart,
    ConferenceSpec,
    EventComponent,
    EventState,
    Invitee,
    ParsedMessage,
    StoredEvent,
)
from mailhook.core.series import Occurrence
from tests.support import reliability

NOW = datetime(2030, 1, 1, tzinfo=UTC)
START = NOW + timedelta(days=10)
POLICY = Policy(local_domains=("example.com",))
MASTER = EventComponent(
    uid="uid-1",
    summary="Sync",
    location="TrueConf",
    start=START,
    end=START + timedelta(hours=1),
    organizer="alice@example.com",
    attendees=(Attendee("bob@example.com", "Bob"), Attendee("carol@example.org", "Carol")),
)
OCCURRENCE = Occurrence(START, START + timedelta(hours=1), 180)
SPEC = ConferenceSpec("Sync", "alice", (Invitee("bob"),), 0, 3600, False, 36, "t")
STORED = StoredEvent(
    organizer="alice@example.com",
    uid="uid-1",
    state=EventState.ACTIVE,
    tag="t",
    conference_id="42",
    url="https://video.example.com/c/42",
    spec=SPEC,
    attendees=("bob@example.com", "carol@example.org"),
)


def message(*events: EventComponent, method: str = "REQUEST", header: str | None = None) -> ParsedMessage:
    """A parsed message holding one calendar object."""
    return ParsedMessage(
        raw=b"",
        calendar=CalendarObject(method=method, events=events),
        calendar_parts=(CalendarPart((0,), "text/calendar", header),),
    )


def invitation(master: EventComponent = MASTER, method: str = "REQUEST") -> Invitation:
    """Classify a message with one VEVENT, asserting it is an invitation."""
    found = classify(message(master, method=method), "alice@example.com", POLICY)
    assert isinstance(found, Invitation)
    return found


def test_new_request_with_keyword_creates():
    """A new REQUEST whose LOCATION names TrueConf creates a conference."""
    assert decide(invitation(), None, POLICY, OCCURRENCE).action is Action.CREATE


def test_request_without_keyword_passes():
    """Without the keyword there is nothing to do."""
    decision = decide(invitation(replace(MASTER, location="Room 1")), None, POLICY, OCCURRENCE)
    assert decision.action is Action.PASS


def test_always_trigger_needs_an_attendee():
    """trigger=always serves any REQUEST with an attendee, none without."""
    always = replace(POLICY, trigger="always")
    assert has_trigger(replace(MASTER, location=""), always)
    assert not has_trigger(replace(MASTER, location="", attendees=()), always)


def test_keyword_match_is_case_insensitive_anywhere():
    """"@trueconf" and "Видеоконференция TrueConf" both trigger."""
    assert has_trigger(replace(MASTER, location="@trueconf"), POLICY)
    assert has_trigger(replace(MASTER, location="Видеоконференция TRUECONF"), POLICY)
    assert not has_trigger(replace(MASTER, location="Teams"), POLICY)


def test_event_without_upcoming_occurrence_passes():
    """An event with no occurrence left (entirely in the past) gets no conference."""
    assert decide(invitation(), None, POLICY, None).action is Action.PASS


def test_stored_event_syncs():
    """An update of an event with a conference syncs it (the pipeline skips unchanged specs)."""
    assert decide(invitation(), STORED, POLICY, OCCURRENCE).action is Action.SYNC


def test_link_keeps_conference_when_keyword_gone():
    """The link alone in LOCATION keeps the conference."""
    linked = replace(MASTER, location=STORED.url)
    assert decide(invitation(linked), STORED, POLICY, OCCURRENCE).action is Action.SYNC


def test_keyword_and_link_gone_deletes():
    """An update with neither keyword nor link deletes the conference."""
    plain = replace(MASTER, location="Room 1")
    assert decide(invitation(plain), STORED, POLICY, OCCURRENCE).action is Action.DELETE


def test_deleted_event_counts_as_new():
    """After deletion, asking again creates a new conference."""
    gone = replace(STORED, state=EventState.DELETED)
    assert decide(invitation(), gone, POLICY, OCCURRENCE).action is Action.CREATE


def test_cancel_whole_event_deletes():
    """An organizer CANCEL with STATUS:CANCELLED deletes the conference."""
    cancel = invitation(replace(MASTER, status="CANCELLED"), method="CANCEL")
    assert decide(cancel, STORED, POLICY, OCCURRENCE).action is Action.DELETE


def test_cancel_of_some_attendees_uninvites():
    """A CANCEL naming only some attendees, without STATUS:CANCELLED, removes just them."""
    partial = replace(MASTER, attendees=(Attendee("bob@example.com"),))
    decision = decide(invitation(partial, method="CANCEL"), STORED, POLICY, OCCURRENCE)
    assert decision.action is Action.UNINVITE


def test_cancel_without_conference_passes():
    """A CANCEL for an unknown event passes."""
    cancel = invitation(replace(MASTER, status="CANCELLED"), method="CANCEL")
    assert decide(cancel, None, POLICY, OCCURRENCE).action is Action.PASS


def test_occurrence_update_follows_the_series():
    """A REQUEST for one occurrence of an event with a conference syncs the series conference."""
    occurrence = replace(MASTER, recurrence_id="20300111T090000Z")
    found = classify(message(occurrence), "alice@example.com", POLICY)
    assert isinstance(found, Invitation) and found.master is None
    assert decide(found, STORED, POLICY, OCCURRENCE).action is Action.SYNC
    # Not stored: a series mailhook never saw; the occurrence gets a conference of its own.
    assert decide(found, None, POLICY, OCCURRENCE).action is Action.CREATE
    assert decide(found, None, POLICY, None).action is Action.PASS


def test_occurrence_update_after_the_conference_was_deleted_passes():
    """A changed occurrence arriving after the event's conference was deleted (the series
    cancelled) makes no new conference: it is a straggler, not a series never seen."""
    occurrence = replace(MASTER, recurrence_id="20300111T090000Z", sequence=4)
    found = classify(message(occurrence), "alice@example.com", POLICY)
    assert isinstance(found, Invitation)
    deleted = replace(STORED, state=EventState.DELETED)
    decision = decide(found, deleted, POLICY, OCCURRENCE)
    assert decision.action is Action.PASS and "deleted" in decision.reason


def test_occurrence_cancel_reschedules():
    """A CANCEL of single occurrences moves the series conference instead of deleting it."""
    occurrence = replace(MASTER, recurrence_id="20300111T090000Z", status="CANCELLED")
    found = classify(message(occurrence, method="CANCEL"), "alice@example.com", POLICY)
    assert isinstance(found, Invitation)
    assert decide(found, STORED, POLICY, OCCURRENCE).action is Action.RESCHEDULE


def test_method_comes_from_object_not_header():
    """The object's METHOD wins over the part's method= parameter."""
    parsed = message(MASTER, method="CANCEL", header="REQUEST")
    assert parsed.method == "CANCEL"
    assert message(MASTER, method="", header="request").method == "REQUEST"


def test_other_methods_pass():
    """REPLY, PUBLISH, COUNTER and others are never acted on."""
    for method in ("REPLY", "PUBLISH", "COUNTER", "REFRESH", "DECLINECOUNTER", ""):
        found = classify(message(MASTER, method=method), "alice@example.com", POLICY)
        assert isinstance(found, Decision) and found.action is Action.PASS


def test_foreign_organizer_and_wrong_sender_pass():
    """Only local organizers sending as themselves are served when no delegate is configured."""
    foreign = replace(MASTER, organizer="zed@other.example")
    assert isinstance(classify(message(foreign), "zed@other.example", POLICY), Decision)
    assert isinstance(classify(message(MASTER), "mallory@example.com", POLICY), Decision)
    assert isinstance(classify(message(MASTER), "", POLICY), Decision)
    assert isinstance(classify(message(MASTER), "Alice@Example.com", POLICY), Invitation)


def test_sent_by_alone_is_not_trusted():
    """A local SENT-BY matching the envelope sender passes unless policy.delegates names it."""
    forged = replace(MASTER, organizer_sent_by="mallory@example.com")
    reliability.hostile("SENT-BY naming the sender itself, no delegate configured")
    found = classify(message(forged), "mallory@example.com", POLICY)
    assert isinstance(found, Decision) and found.action is Action.PASS
    assert "SENT-BY" in found.reason
    assert "not a trusted delegate of alice@example.com" in found.reason
    assert "policy.delegates" in found.reason


def test_configured_delegate_is_trusted_for_its_organizer_only():
    """policy.delegates trusts the named delegate for the named organizer, case-insensitively."""
    policy = replace(POLICY, delegates=(("alice@example.com", ("assistant@example.com",)),))
    delegated = replace(MASTER, organizer_sent_by="assistant@example.com")
    assert isinstance(classify(message(delegated), "Assistant@Example.com", policy), Invitation)
    for_bob = replace(delegated, organizer="bob@example.com")
    assert isinstance(classify(message(for_bob), "assistant@example.com", policy), Decision)
    other = replace(MASTER, organizer_sent_by="mallory@example.com")
    assert isinstance(classify(message(other), "mallory@example.com", policy), Decision)


def test_sent_by_must_be_the_envelope_sender():
    """A trusted delegate's name in SENT-BY does not let another envelope sender act."""
    policy = replace(POLICY, delegates=(("*@example.com", ("*@example.com",)),))
    borrowed = replace(MASTER, organizer_sent_by="assistant@example.com")
    found = classify(message(borrowed), "mallory@example.com", policy)
    assert isinstance(found, Decision) and "SENT-BY assistant@example.com" in found.reason
    assert isinstance(classify(message(MASTER), "mallory@example.com", policy), Decision)


def test_domain_wildcards_on_either_side():
    """"*@domain" stands for any address of the domain, as organizer or as delegate."""
    policy = replace(POLICY, local_domains=("example.com", "branch.example"),
                     delegates=(("*@example.com", ("*@example.com", "boss@branch.example")),))
    for delegate in ("anyone@example.com", "boss@branch.example"):
        event = replace(MASTER, organizer_sent_by=delegate)
        assert isinstance(classify(message(event), delegate, policy), Invitation), delegate
    for delegate in ("clerk@branch.example", "eve@sub.example.com", "eve@example.com.evil"):
        event = replace(MASTER, organizer_sent_by=delegate)
        assert isinstance(classify(message(event), delegate, policy), Decision), delegate
    branch = replace(MASTER, organizer="head@branch.example",
                     organizer_sent_by="anyone@example.com")
    assert isinstance(classify(message(branch), "anyone@example.com", policy), Decision)
    assert trusts_delegate(policy, "x@example.com", "y@EXAMPLE.com")
    assert not trusts_delegate(policy, "x@example.com", "example.com")


def test_skip_reason_passes():
    """A message the parser set aside passes with that reason."""
    parsed = ParsedMessage(raw=b"", skip_reason="signed")
    found = classify(parsed, "alice@example.com", POLICY)
    assert isinstance(found, Decision) and found.reason == "signed"


def test_several_uids_pass():
    """A calendar object with more than one UID is not acted on."""
    parsed = message(MASTER, replace(MASTER, uid="uid-2"))
    assert isinstance(classify(parsed, "alice@example.com", POLICY), Decision)


def test_topic_is_one_line_and_cut():
    """SUMMARY becomes a one-line topic of at most 240 characters, never empty."""
    assert topic_of(replace(MASTER, summary="a\r\nb\tc"), "x") == "a b c"
    assert len(topic_of(replace(MASTER, summary="y" * 500), "x")) == 240
    assert topic_of(replace(MASTER, summary="  "), "Video conference") == "Video conference"


def test_duration_is_clamped():
    """Duration is the occurrence's length clamped to 60..86399 seconds."""
    assert clamp_duration(10) == 60
    assert clamp_duration(3 * 86400) == 86399
    assert clamp_duration(3600) == 3600


def test_follow_moves_only_the_time():
    """Following another occurrence changes start, duration and offset, nothing else."""
    later = Occurrence(START + timedelta(days=7), START + timedelta(days=7, minutes=30), 120)
    moved = follow(SPEC, later)
    assert (moved.start, moved.duration, moved.utc_offset_minutes) == (
        int(later.start.timestamp()), 1800, 120)
    assert replace(moved, start=SPEC.start, duration=SPEC.duration, utc_offset_minutes=0) == SPEC


def test_spec_mode_follows_participant_count():
    """Up to the limit the conference is all on screen; above it, role-based."""
    small = build_spec(MASTER, OCCURRENCE, "alice", (), 36, POLICY, "t", "x")
    large = build_spec(MASTER, OCCURRENCE, "alice", (), 37, POLICY, "t", "x")
    assert (small.role_based, small.max_participants) == (False, 36)
    assert (large.role_based, large.max_participants) == (True, 250)
    assert small.start == int(START.timestamp()) and small.utc_offset_minutes == 180


def test_participants_exclude_organizer_and_non_participants():
    """The organizer and NON-PARTICIPANT attendees are not counted; duplicates collapse."""
    event = replace(
        MASTER,
        attendees=(
            Attendee("alice@example.com"),
            Attendee("bob@example.com"),
            Attendee("bob@example.com"),
            Attendee("info@example.com", role="NON-PARTICIPANT"),
        ),
    )
    assert participant_addresses(event) == ("bob@example.com",)


def test_event_tag_is_stable_and_distinct():
    """The tag depends on organizer and UID only, and fits TrueConf's id alphabet."""
    assert event_tag("a@x", "u") == event_tag("a@x", "u")
    assert event_tag("a@x", "u") != event_tag("b@x", "u")
    assert event_tag("a@x", "u").replace("_", "").isalnum()
