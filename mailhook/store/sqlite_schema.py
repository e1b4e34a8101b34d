"""The SQLite store's file format: the schema and its migrations (by ``PRAGMA user_version``),
how an event is written as a row and read back, and the note that tells a store that went
missing from one never made.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlite_utils

from mailhook.core.model import ConferenceSpec, EventState, Invitee, StoredEvent

log = logging.getLogger("mailhook.store")


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


# Each entry moves the schema one version up; never edit an entry once released.
MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (
    _create_events,
    _add_occurrence_end,
    _add_retries,
    _add_notices_sent,
)


def migrate(db: sqlite_utils.Database) -> int:
    """Bring the schema to the newest version; return that version."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
        with db.conn:
            step(db)
            db.execute(f"PRAGMA user_version = {number}")
    return len(MIGRATIONS)


def prepare(path: str) -> str:
    """Create the store and bring its schema up to date now, before several processes open
    it; "" when done, else what went wrong. A store that went missing is not made again
    empty: the daemon reports it and holds invitations (see ``missing``)."""
    if path == ":memory:" or missing(path):
        return ""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            db = sqlite_utils.Database(conn)
            db.enable_wal()
            migrate(db)
        finally:
            conn.close()
        mark_created(path)
    except (OSError, sqlite3.Error) as exc:
        return f"{path}: {exc}"
    return ""


# --- a store that went missing ------------------------------------------------------------
# An empty store in place of a lost one would forget every conference mailhook made: a CANCEL
# would leave its conference on TrueConf and an update would make a second one. So the first
# open leaves a note beside the file, and a note without its file means "lost", not "new".

CREATED_NOTE = """\
mailhook keeps the conferences it made in {name} (created here on {when}).
While this note is here and {name} is not, mailhook does not start an empty
store (it would lose track of those conferences): invitations get 451 until
{name} is put back, from a backup or from the {name}.rescued-* copy mailhook
saves when the file disappears while it runs. To start with an empty store
on purpose, delete this note too.
"""


def created_note(path: str) -> Path:
    """The note saying a store was created at ``path``."""
    return Path(f"{path}.created")


def missing(path: str) -> str:
    """Why the store at ``path`` counts as lost ("" when it is there or was never made)."""
    if Path(path).exists() or not created_note(path).exists():
        return ""
    return (f"the store file {path} is missing (see {created_note(path)}): restore it and "
            "restart mailhook")


def mark_created(path: str) -> None:
    """Leave the note beside a store that exists (once; it is kept from then on)."""
    note = created_note(path)
    if note.exists():
        return
    when = time.strftime("%Y-%m-%d %H:%M:%S %z")
    try:
        note.write_text(CREATED_NOTE.format(name=Path(path).name, when=when))
    except OSError as exc:
        log.warning("cannot write %s: %s", note, exc.strerror or exc)


@functools.cache
def upsert_sql(columns: tuple[str, ...]) -> str:
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in ("organizer", "uid"))
    return (
        # the columns are the store's own field names, never input
        f"insert into events ({', '.join(columns)}) values ({', '.join('?' for _ in columns)}) "  # noqa: S608
        f"on conflict (organizer, uid) do update set {updates}"
    )


def to_row(event: StoredEvent) -> dict[str, Any]:
    # Field by field: asdict would deep-copy the spec, which is serialised below anyway.
    row = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    row["state"] = str(event.state)
    row["spec"] = json.dumps(dataclasses.asdict(event.spec)) if event.spec else ""
    row["attendees"] = json.dumps(list(event.attendees))
    row["pending_update"] = int(event.pending_update)
    return row


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
