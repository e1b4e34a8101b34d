"""A stored event for the store tests, the same on every backend."""

from __future__ import annotations

from mailhook.core.model import ConferenceSpec, EventState, Invitee, StoredEvent

SPEC = ConferenceSpec("Sync", "alice", (Invitee("bob", "Bob B"),), 1900000000, 3600, False, 36,
                      "tag1")
EVENT = StoredEvent(
    organizer="alice@example.com",
    uid="uid-1",
    state=EventState.ACTIVE,
    tag="tag1",
    conference_id="42",
    url="https://video.example.com/c/42",
    spec=SPEC,
    attendees=("bob@example.com",),
    sequence=3,
    calendar="BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n",
    first_seen=10.0,
    updated_at=20.0,
)
