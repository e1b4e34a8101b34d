"""The store's schema: one version history shared by every backend.

Each step moves the schema one version up and is written once per backend: for SQLite with
sqlite-utils, for PostgreSQL as SQL statements. Both end with the same tables and columns (a
test compares them). A released step is never edited: a change is a new step at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sqlite_utils


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema, for each backend."""

    what: str
    sqlite: Callable[[sqlite_utils.Database], None]
    postgres: tuple[str, ...]


def _create_events(db: sqlite_utils.Database) -> None:
    db.table("events").create(
        {
            "organizer": str,
            "uid": str,
            "state": str,
            "tag": str,
            "conference_id": str,
            "url": str,
            "spec": str,
            "attendees": str,
            "sequence": int,
            "calendar": str,
            "first_seen": float,
            "updated_at": float,
        },
        pk=("organizer", "uid"),
        not_null={"organizer", "uid", "state", "tag"},
    )
    db.table("events").create_index(["conference_id"])


def _add_occurrence_end(db: sqlite_utils.Database) -> None:
    db.table("events").add_column("occurrence_end", float)
    db.table("events").create_index(["state", "occurrence_end"])


def _add_retries(db: sqlite_utils.Database) -> None:
    for column, kind in (("pending_update", int), ("retry_at", float), ("attempts", int),
                         ("retry_since", float)):
        db.table("events").add_column(column, kind)
    db.table("events").create_index(["pending_update", "retry_at"])
    db.table("pending_deletes").create(
        {"conference_id": str, "organizer": str, "uid": str, "attempts": int, "retry_at": float,
         "last_error": str},
        pk="conference_id",
    )
    db.table("pending_deletes").create_index(["retry_at"])


def _add_notices_sent(db: sqlite_utils.Database) -> None:
    # Notices that go out once per event whatever messages follow (kinds in Store.note_sent).
    db.table("notices_sent").create(
        {"organizer": str, "uid": str, "kind": str, "sent_at": float},
        pk=("organizer", "uid", "kind"),
    )


def _add_claims_and_users(db: sqlite_utils.Database) -> None:
    for table in ("events", "pending_deletes"):
        db.table(table).add_column("claimed_by", str, not_null_default="")
        db.table(table).add_column("claimed_until", float, not_null_default=0.0)
    db.table("events").create_index(["state", "updated_at"])
    db.table("users_cache").create(
        {"server": str, "fetched_at": float, "users": str}, pk="server", not_null={"users"}
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "events by (organizer, UID)",
        _create_events,
        (
            """create table events (
                organizer text not null, uid text not null, state text not null,
                tag text not null, conference_id text, url text, spec text, attendees text,
                sequence bigint, calendar text, first_seen double precision,
                updated_at double precision, primary key (organizer, uid))""",
            "create index idx_events_conference_id on events (conference_id)",
        ),
    ),
    Migration(
        "when the scheduled occurrence ends",
        _add_occurrence_end,
        (
            "alter table events add column occurrence_end double precision",
            "create index idx_events_state_occurrence_end on events (state, occurrence_end)",
        ),
    ),
    Migration(
        "postponed updates and deletions",
        _add_retries,
        (
            "alter table events add column pending_update integer",
            "alter table events add column retry_at double precision",
            "alter table events add column attempts integer",
            "alter table events add column retry_since double precision",
            "create index idx_events_pending_update_retry_at on events (pending_update, retry_at)",
            """create table pending_deletes (
                conference_id text primary key, organizer text, uid text, attempts bigint,
                retry_at double precision, last_error text)""",
            "create index idx_pending_deletes_retry_at on pending_deletes (retry_at)",
        ),
    ),
    Migration(
        "notices sent once per event",
        _add_notices_sent,
        (
            """create table notices_sent (
                organizer text, uid text, kind text, sent_at double precision,
                primary key (organizer, uid, kind))""",
        ),
    ),
    Migration(
        "claims on due work, the users directory cache",
        _add_claims_and_users,
        (
            "alter table events add column claimed_by text not null default ''",
            "alter table events add column claimed_until double precision not null default 0",
            "alter table pending_deletes add column claimed_by text not null default ''",
            ("alter table pending_deletes add column claimed_until double precision "
             "not null default 0"),
            "create index idx_events_state_updated_at on events (state, updated_at)",
            """create table users_cache (
                server text primary key, fetched_at double precision, users text not null)""",
        ),
    ),
)

VERSION = len(MIGRATIONS)
