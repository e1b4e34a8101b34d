"""Events, deletions and the users cache as table rows: the same for every backend."""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

from mailhook.core.model import ConferenceSpec, EventState, Invitee, PendingDelete, StoredEvent
from mailhook.store.base import CachedUsers


@functools.cache
def upsert_sql(columns: tuple[str, ...], marker: str = "?") -> str:
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in ("organizer", "uid"))
    return (
        # the columns are the store's own field names, never input
        f"insert into events ({', '.join(columns)}) values ({', '.join(marker for _ in columns)}) "  # noqa: S608
        f"on conflict (organizer, uid) do update set {updates}"
    )


def to_row(event: StoredEvent) -> dict[str, Any]:
    # Field by field: asdict would deep-copy the spec, which is serialised below anyway.
    row = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    row["state"] = str(event.state)
    row["spec"] = json.dumps(dataclasses.asdict(event.spec)) if event.spec else ""
    row["attendees"] = json.dumps(list(event.attendees))
    row["pending_update"] = int(event.pending_update)
    # A write of the event ends any claim on it: whoever took it is done with it.
    row["claimed_by"], row["claimed_until"] = "", 0.0
    return row


def pending_row(pending: PendingDelete) -> dict[str, Any]:
    # A write of the deletion ends any claim on it, as for events.
    return {**dataclasses.asdict(pending), "claimed_by": "", "claimed_until": 0.0}


def pending_from_row(row: dict[str, Any]) -> PendingDelete:
    return PendingDelete(
        conference_id=row["conference_id"],
        organizer=row["organizer"] or "",
        uid=row["uid"] or "",
        attempts=row["attempts"] or 0,
        retry_at=row["retry_at"] or 0.0,
        last_error=row["last_error"] or "",
    )


def cached_users(fetched_at: float | None, text: str) -> CachedUsers:
    return CachedUsers(fetched_at or 0.0, tuple(tuple(user) for user in json.loads(text)))


# Events deleted long ago, unless their deletion is still waiting for TrueConf.
PRUNE_SQL = (
    "delete from events where state = %s and updated_at < %s and not exists ("
    "select 1 from pending_deletes p where p.organizer = events.organizer "
    "and p.uid = events.uid)"
)


def event_from_row(row: dict[str, Any]) -> StoredEvent:
    return StoredEvent(
        organizer=row["organizer"],
        uid=row["uid"],
        state=EventState(row["state"]),
        tag=row["tag"],
        conference_id=row["conference_id"] or "",
        url=row["url"] or "",
        spec=_spec_from_json(row["spec"]),
        attendees=tuple(json.loads(row["attendees"] or "[]")),
        sequence=row["sequence"] or 0,
        calendar=row["calendar"] or "",
        first_seen=row["first_seen"] or 0.0,
        updated_at=row["updated_at"] or 0.0,
        occurrence_end=row.get("occurrence_end") or 0.0,
        pending_update=bool(row.get("pending_update")),
        retry_at=row.get("retry_at") or 0.0,
        attempts=row.get("attempts") or 0,
        retry_since=row.get("retry_since") or 0.0,
    )


def _spec_from_json(text: str | None) -> ConferenceSpec | None:
    if not text:
        return None
    data = json.loads(text)
    data["invitees"] = tuple(Invitee(**item) for item in data["invitees"])
    return ConferenceSpec(**data)
