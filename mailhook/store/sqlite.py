"""The SQLite backend: one file, WAL, migrations by ``PRAGMA user_version``.

Every database call runs on one dedicated worker thread, so the event loop never blocks on
disk and the single connection is never shared between threads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

import sqlite_utils

from mailhook.core.model import ConferenceSpec, Invitee, PendingDelete
from mailhook.store.base import EventState, StoredEvent

T = TypeVar("T")


def _create_events(db: sqlite_utils.Database) -> None:
    db["events"].create(
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
    db["events"].create_index(["conference_id"])


def _add_occurrence_end(db: sqlite_utils.Database) -> None:
    db["events"].add_column("occurrence_end", float)
    db["events"].create_index(["state", "occurrence_end"])


def _add_retries(db: sqlite_utils.Database) -> None:
    for column, kind in (("pending_update", int), ("retry_at", float), ("attempts", int),
                         ("retry_since", float)):
        db["events"].add_column(column, kind)
    db["events"].create_index(["pending_update", "retry_at"])
    db["pending_deletes"].create(
        {"conference_id": str, "organizer": str, "uid": str, "attempts": int, "retry_at": float,
         "last_error": str},
        pk="conference_id",
    )
    db["pending_deletes"].create_index(["retry_at"])


# Each entry moves the schema one version up; never edit an entry once released.
MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (
    _create_events,
    _add_occurrence_end,
    _add_retries,
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
    it; "" when done, else what went wrong."""
    if path == ":memory:":
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
    except (OSError, sqlite3.Error) as exc:
        return f"{path}: {exc}"
    return ""


# Page caches (KiB; filled only as pages are used). Every write updates the table and its
# indexes at places spread over the file; with SQLite's default 2 MiB a store of 100 000 events
# would read index pages back from the OS for most writes.
WRITER_CACHE_KIB = 16 * 1024
READER_CACHE_KIB = 8 * 1024


class SqliteStore:
    """Events in a SQLite file through sqlite-utils."""

    def __init__(self, path: str, synchronous: str = "full") -> None:
        self._path = path
        self._synchronous = "NORMAL" if synchronous == "normal" else "FULL"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailhook-store")
        self._db: sqlite_utils.Database | None = None
        # Lookups run on the caller's thread through a connection of their own: in WAL mode a
        # reader never waits for a writer, and a message needs its event before anything else.
        self._reader: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def _open(self) -> sqlite_utils.Database:
        if self._db is None:
            if self._path != ":memory:":
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            db = sqlite_utils.Database(conn)
            if self._path != ":memory:":
                db.enable_wal()
            db.execute("PRAGMA busy_timeout = 5000")
            db.execute(f"PRAGMA synchronous = {self._synchronous}")
            db.execute(f"PRAGMA cache_size = {-WRITER_CACHE_KIB}")
            migrate(db)
            self._db = db
        return self._db

    async def open(self) -> None:
        """Create the file and schema now rather than on first use."""
        await self._run(self._open)

    async def get(self, organizer: str, uid: str) -> StoredEvent | None:
        reader = self._reader
        if reader is None and self._db is not None and self._path != ":memory:":
            try:
                reader = self._reader = _reader(self._path)
            except sqlite3.Error:
                reader = None  # lookups keep going through the store thread
        if reader is not None:
            try:
                return _get(reader, organizer, uid)
            except sqlite3.OperationalError:
                pass  # busy for a moment (a checkpoint, recovery): wait on the store thread
        return await self._run(self._get, organizer, uid)

    def _get(self, organizer: str, uid: str) -> StoredEvent | None:
        return _get(self._open().conn, organizer, uid)

    async def put(self, event: StoredEvent) -> None:
        await self._run(self._put, event)

    def _put(self, event: StoredEvent) -> None:
        # Plain SQL: the table helpers look the schema up on every call, which costs more
        # than the write itself on the invitation path.
        row = _to_row(event)
        self._open().conn.execute(_upsert_sql(tuple(row)), list(row.values()))

    async def list_events(self) -> list[StoredEvent]:
        return await self._run(self._list)

    def _list(self) -> list[StoredEvent]:
        return [event_from_row(row) for row in self._open()["events"].rows_where(order_by="updated_at desc")]

    async def due(self, now: float) -> list[StoredEvent]:
        return await self._run(self._due, now)

    def _due(self, now: float) -> list[StoredEvent]:
        rows = self._open()["events"].rows_where(
            "state = ? and occurrence_end > 0 and occurrence_end <= ?",
            [str(EventState.ACTIVE), now],
            order_by="occurrence_end",
        )
        return [event_from_row(row) for row in rows]

    async def due_updates(self, now: float) -> list[StoredEvent]:
        return await self._run(self._due_updates, now)

    def _due_updates(self, now: float) -> list[StoredEvent]:
        rows = self._open()["events"].rows_where(
            "pending_update = 1 and state = ? and retry_at <= ?", [str(EventState.ACTIVE), now]
        )
        return [event_from_row(row) for row in rows]

    async def put_pending_delete(self, pending: PendingDelete) -> None:
        await self._run(self._put_pending_delete, pending)

    def _put_pending_delete(self, pending: PendingDelete) -> None:
        self._open()["pending_deletes"].upsert(dataclasses.asdict(pending), pk="conference_id")

    async def due_deletes(self, now: float) -> list[PendingDelete]:
        return await self._run(self._due_deletes, now)

    def _due_deletes(self, now: float) -> list[PendingDelete]:
        rows = self._open()["pending_deletes"].rows_where("retry_at <= ?", [now], order_by="retry_at")
        return [PendingDelete(**row) for row in rows]

    async def finish_delete(self, conference_id: str) -> None:
        await self._run(self._finish_delete, conference_id)

    def _finish_delete(self, conference_id: str) -> None:
        self._open().execute("delete from pending_deletes where conference_id = ?", [conference_id])

    async def count_by_state(self) -> dict[str, int]:
        return await self._run(self._count_by_state)

    def _count_by_state(self) -> dict[str, int]:
        rows = self._open().execute("select state, count(*) from events group by state").fetchall()
        return {str(state): int(count) for state, count in rows}

    async def count_pending(self) -> int:
        return await self._run(self._count_pending)

    def _count_pending(self) -> int:
        db = self._open()
        deletes = db.execute("select count(*) from pending_deletes").fetchone()[0]
        updates = db.execute("select count(*) from events where pending_update = 1").fetchone()[0]
        return int(deletes) + int(updates)

    async def ping(self) -> None:
        await self._run(lambda: self._open().execute("select 1").fetchone())

    async def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            reader.close()
        if self._db is not None:
            db, self._db = self._db, None
            await self._run(db.conn.close)
        self._executor.shutdown(wait=True)


def _reader(path: str) -> sqlite3.Connection:
    """A read-only connection that never waits: a busy database raises at once."""
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 0")
    conn.execute(f"PRAGMA cache_size = {-READER_CACHE_KIB}")
    return conn


def _get(conn: sqlite3.Connection, organizer: str, uid: str) -> StoredEvent | None:
    cursor = conn.execute("select * from events where organizer = ? and uid = ?", [organizer, uid])
    row = cursor.fetchone()
    if row is None:
        return None
    return event_from_row(dict(zip((c[0] for c in cursor.description), row)))


@functools.cache
def _upsert_sql(columns: tuple[str, ...]) -> str:
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in ("organizer", "uid"))
    return (
        f"insert into events ({', '.join(columns)}) values ({', '.join('?' for _ in columns)}) "
        f"on conflict (organizer, uid) do update set {updates}"
    )


def _to_row(event: StoredEvent) -> dict[str, Any]:
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
