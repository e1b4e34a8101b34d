"""The SQLite backend: one file, WAL, migrations by ``PRAGMA user_version``.

Every database call runs on one dedicated worker thread, so the event loop never blocks on
disk and the single connection is never shared between threads.

A store that stops working is never passed over in silence: every failure is raised as
:class:`StoreUnavailable` (the message gets 451), the file is checked before each use to be the
one that was opened (a deleted or replaced file would otherwise swallow every write), and each
change of the store's condition is logged once, at error level while it is failing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

import sqlite_utils

from mailhook.core.model import ConferenceSpec, Invitee, PendingDelete
from mailhook.errors import StoreUnavailable
from mailhook.store.base import EventState, StoredEvent

T = TypeVar("T")
log = logging.getLogger("mailhook.store")


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


# Page caches (KiB; filled only as pages are used). Every write updates the table and its
# indexes at places spread over the file; with SQLite's default 2 MiB a store of 100 000 events
# would read index pages back from the OS for most writes.
WRITER_CACHE_KIB = 16 * 1024
READER_CACHE_KIB = 8 * 1024


class SqliteStore:
    """Events in a SQLite file through sqlite-utils."""

    def __init__(self, path: str, synchronous: str = "full", read_only: bool = False) -> None:
        self._path = path
        # For tools that only look: the file is never created, migrated or written, and one
        # that does not exist yet reads as an empty store.
        self._read_only = read_only
        self._synchronous = "NORMAL" if synchronous == "normal" else "FULL"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailhook-store")
        self._db: sqlite_utils.Database | None = None
        # Lookups run on the caller's thread through a connection of their own: in WAL mode a
        # reader never waits for a writer, and a message needs its event before anything else.
        self._reader: sqlite3.Connection | None = None
        # The store's condition. Only the store thread changes these.
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file opened
        self._lost = ""  # why the file opened is no longer the store's: kept until a restart
        self._failing = ""  # why the last write failed; cleared by one that works
        self._unwritable = ""  # why the file will not open for writing after a restart
        self._reported = ""  # the condition last logged, so that each change is logged once

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"{self._path}: {exc}") from exc

    def _open(self) -> sqlite_utils.Database:
        if self._lost:
            raise StoreUnavailable(self._lost)
        if self._db is None and self._read_only:
            self._db = self._open_read_only()
        if self._db is None:
            if self._path != ":memory:":
                if gone := missing(self._path):
                    self._lose(gone)
                    raise StoreUnavailable(gone)
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            db = sqlite_utils.Database(conn)
            if self._path != ":memory:":
                db.enable_wal()
            db.execute("PRAGMA busy_timeout = 5000")
            db.execute(f"PRAGMA synchronous = {self._synchronous}")
            db.execute(f"PRAGMA cache_size = {-WRITER_CACHE_KIB}")
            migrate(db)
            if self._path != ":memory:":
                self._identity = _identity(os.stat(self._path))
                mark_created(self._path)
            self._db = db
        return self._db

    def _open_read_only(self) -> sqlite_utils.Database:
        if gone := missing(self._path):
            raise StoreUnavailable(gone)
        if self._path == ":memory:" or not Path(self._path).exists():
            conn = sqlite3.connect(":memory:", check_same_thread=False)  # not made yet: empty
            db = sqlite_utils.Database(conn)
            migrate(db)
            return db
        uri = Path(self._path).resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        return sqlite_utils.Database(conn)

    def _checked(self) -> sqlite_utils.Database:
        """The database, after making sure its file is still the store's."""
        db = self._open()
        self._check_file()
        if self._lost:
            raise StoreUnavailable(self._lost)
        return db

    def _check_file(self) -> None:
        """Note whether the file at the store's path is still the one opened, and writable."""
        if self._identity is None:
            return  # in memory, or not opened yet
        try:
            found = os.stat(self._path)
        except FileNotFoundError:
            found = None
        except OSError as exc:
            self._unwritable = f"cannot look at the store file {self._path}: {exc.strerror or exc}"
            self._report()
            return
        if found is None or _identity(found) != self._identity:
            what = "deleted" if found is None else "replaced by another file"
            self._lose(f"the store file {self._path} was {what} while mailhook had it open")
            return
        folder = os.path.dirname(os.path.abspath(self._path))
        writable = os.access(self._path, os.W_OK) and os.access(folder, os.W_OK | os.X_OK)
        # Writes still go through the open file, but after a restart the store would not open.
        self._unwritable = "" if writable else (
            f"the store file {self._path} or its folder is not writable by mailhook")
        self._report()

    def _lose(self, reason: str) -> None:
        """The store's file is gone: refuse from now on, and save what this process still has."""
        if self._lost:
            return
        rescued = self._rescue()
        self._lost = f"{reason}; {rescued}" if rescued else reason
        self._report()

    def _rescue(self) -> str:
        """Copy the database this process still has open beside the lost file; what was done."""
        if self._db is None:
            return ""
        target = f"{self._path}.rescued-{time.strftime('%Y%m%dT%H%M%S')}"
        try:
            Path(target).parent.mkdir(parents=True, exist_ok=True)  # the whole folder may be gone
            copy = sqlite3.connect(target)
            try:
                self._db.conn.backup(copy)
            finally:
                copy.close()
        except (OSError, sqlite3.Error) as exc:
            return f"its contents could not be saved to {target}: {exc}"
        return f"its contents were saved to {target}: put that back and restart mailhook"

    def _report(self) -> None:
        """Log the store's condition when it changed: at error level while it is failing."""
        problem = self._lost or self._failing or self._unwritable
        if problem == self._reported:
            return
        if problem:
            log.error("store: %s", problem)
        else:
            log.warning("store: %s works again", self._path)
        self._reported = problem

    def _write(self, fn: Callable[..., None], *args: Any) -> None:
        """Run one write on the store thread, into the store's own file, and note the outcome."""
        if self._read_only:
            raise StoreUnavailable(f"{self._path}: opened read-only")
        self._checked()
        try:
            fn(*args)
        except sqlite3.Error as exc:
            self._failing = f"the last write to the store failed: {exc}"
            self._report()
            raise
        if self._failing:
            self._failing = ""
            self._report()

    async def cap_pages(self, pages: int | None) -> None:
        """Let the file grow to ``pages`` pages at most (never below its size now), the way a
        full disk stops it; None lifts the cap. A fault injection point for tests."""
        limit = 2**32 if pages is None else max(int(pages), 1)
        await self._run(lambda: self._open().execute(f"PRAGMA max_page_count = {limit}"))

    async def open(self) -> None:
        """Create the file and schema now rather than on first use. A store that went missing
        is reported (not raised): mail that needs it gets 451 until an operator restores it."""
        try:
            await self._run(self._open)
        except StoreUnavailable:
            if not self._lost:
                raise

    async def get(self, organizer: str, uid: str) -> StoredEvent | None:
        if self._lost:
            raise StoreUnavailable(self._lost)
        if self._read_only:
            return await self._run(self._get, organizer, uid)
        reader = self._reader
        if not self._same_file():
            reader = None  # the store thread looks into it, and reports
        elif reader is None and self._db is not None and self._path != ":memory:":
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

    def _same_file(self) -> bool:
        """Is the file at the store's path still the one opened (a cheap look, on any thread)?"""
        try:
            return self._identity is None or _identity(os.stat(self._path)) == self._identity
        except OSError:
            return False

    def _get(self, organizer: str, uid: str) -> StoredEvent | None:
        return _get(self._checked().conn, organizer, uid)

    async def put(self, event: StoredEvent) -> None:
        await self._run(self._write, self._put, event)

    def _put(self, event: StoredEvent) -> None:
        # Plain SQL: the table helpers look the schema up on every call, which costs more
        # than the write itself on the invitation path.
        row = _to_row(event)
        self._open().conn.execute(_upsert_sql(tuple(row)), list(row.values()))

    async def list_events(self) -> list[StoredEvent]:
        return await self._run(self._list)

    def _list(self) -> list[StoredEvent]:
        return [event_from_row(row) for row in self._checked()["events"].rows_where(order_by="updated_at desc")]

    async def due(self, now: float) -> list[StoredEvent]:
        return await self._run(self._due, now)

    def _due(self, now: float) -> list[StoredEvent]:
        rows = self._checked()["events"].rows_where(
            "state = ? and occurrence_end > 0 and occurrence_end <= ?",
            [str(EventState.ACTIVE), now],
            order_by="occurrence_end",
        )
        return [event_from_row(row) for row in rows]

    async def due_updates(self, now: float) -> list[StoredEvent]:
        return await self._run(self._due_updates, now)

    def _due_updates(self, now: float) -> list[StoredEvent]:
        rows = self._checked()["events"].rows_where(
            "pending_update = 1 and state = ? and retry_at <= ?", [str(EventState.ACTIVE), now]
        )
        return [event_from_row(row) for row in rows]

    async def put_pending_delete(self, pending: PendingDelete) -> None:
        await self._run(self._write, self._put_pending_delete, pending)

    def _put_pending_delete(self, pending: PendingDelete) -> None:
        self._open()["pending_deletes"].upsert(dataclasses.asdict(pending), pk="conference_id")

    async def due_deletes(self, now: float) -> list[PendingDelete]:
        return await self._run(self._due_deletes, now)

    def _due_deletes(self, now: float) -> list[PendingDelete]:
        rows = self._checked()["pending_deletes"].rows_where("retry_at <= ?", [now], order_by="retry_at")
        return [PendingDelete(**row) for row in rows]

    async def finish_delete(self, conference_id: str) -> None:
        await self._run(self._write, self._finish_delete, conference_id)

    def _finish_delete(self, conference_id: str) -> None:
        self._open().execute("delete from pending_deletes where conference_id = ?", [conference_id])

    async def count_by_state(self) -> dict[str, int]:
        return await self._run(self._count_by_state)

    def _count_by_state(self) -> dict[str, int]:
        rows = self._checked().execute("select state, count(*) from events group by state").fetchall()
        return {str(state): int(count) for state, count in rows}

    async def count_pending(self) -> int:
        return await self._run(self._count_pending)

    def _count_pending(self) -> int:
        db = self._checked()
        deletes = db.execute("select count(*) from pending_deletes").fetchone()[0]
        updates = db.execute("select count(*) from events where pending_update = 1").fetchone()[0]
        return int(deletes) + int(updates)

    async def ping(self) -> None:
        await self._run(self._ping)

    def _ping(self) -> None:
        self._checked().execute("select 1").fetchone()
        problem = self._failing or self._unwritable
        if problem:
            raise StoreUnavailable(problem)

    async def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            reader.close()
        if self._db is not None:
            db, self._db = self._db, None
            await self._run(db.conn.close)
        self._executor.shutdown(wait=True)


def _identity(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino


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
