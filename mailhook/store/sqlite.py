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
import json
import logging
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Callable, TypeVar

import sqlite_utils

from mailhook.core.model import PendingDelete
from mailhook.errors import StoreUnavailable
from mailhook.locks import EventLocks, KeyedLocks, lock_path
from mailhook.store import schema
from mailhook.store.base import CLAIM_BATCH, CachedUsers, EventState, StoredEvent
from mailhook.store.rows import (
    PRUNE_SQL,
    cached_users,
    event_from_row,
    pending_from_row,
    to_row,
    upsert_sql,
)

T = TypeVar("T")
log = logging.getLogger("mailhook.store")


# Each entry moves the schema one version up (see schema.py); never edit one once released.
MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = tuple(
    step.sqlite for step in schema.MIGRATIONS
)


def migrate(db: sqlite_utils.Database) -> int:
    """Bring the schema to the newest version; return that version.

    The steps run in one transaction that holds SQLite's write lock from its start, so two
    processes opening the store together never both migrate it: the second waits, then finds
    the work done.
    """
    if _version(db) == len(MIGRATIONS):
        return len(MIGRATIONS)
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        version = _version(db)
        for step in MIGRATIONS[version:]:
            step(db)
        db.conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
    except BaseException:
        db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")
    return len(MIGRATIONS)


def _version(db: sqlite_utils.Database) -> int:
    return int(db.conn.execute("PRAGMA user_version").fetchone()[0])


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

    def __init__(self, path: str, synchronous: str = "full") -> None:
        self._path = path
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
        self._locks: EventLocks | KeyedLocks | None = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"{self._path}: {exc}") from exc

    def _open(self) -> sqlite_utils.Database:
        if self._lost:
            raise StoreUnavailable(self._lost)
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
        row = to_row(event)
        self._open().conn.execute(upsert_sql(tuple(row)), list(row.values()))

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
        row = {**dataclasses.asdict(pending), "claimed_by": "", "claimed_until": 0.0}
        self._open()["pending_deletes"].upsert(row, pk="conference_id")

    async def due_deletes(self, now: float) -> list[PendingDelete]:
        return await self._run(self._due_deletes, now)

    def _due_deletes(self, now: float) -> list[PendingDelete]:
        rows = self._checked()["pending_deletes"].rows_where("retry_at <= ?", [now], order_by="retry_at")
        return [pending_from_row(row) for row in rows]

    async def pending_deletes(self) -> list[PendingDelete]:
        return await self._run(self._pending_deletes)

    def _pending_deletes(self) -> list[PendingDelete]:
        rows = self._checked()["pending_deletes"].rows_where(order_by="retry_at")
        return [pending_from_row(row) for row in rows]

    # --- coordination ---------------------------------------------------------------------

    def event_lock(self, organizer: str, uid: str) -> AbstractAsyncContextManager[None]:
        return self._event_locks().hold((organizer, uid))

    def _event_locks(self) -> EventLocks | KeyedLocks:
        """The lock file beside the store, shared with every process that uses it (in-process
        locks for a store in memory, or when the file cannot be had)."""
        if self._locks is None:
            self._locks = KeyedLocks()
            if self._path != ":memory:":
                try:
                    Path(self._path).parent.mkdir(parents=True, exist_ok=True)
                    self._locks = EventLocks.for_path(lock_path(self._path))
                except OSError as exc:
                    log.warning("cannot open the lock file %s (%s); locking within this process "
                                "only", lock_path(self._path), exc.strerror or exc)
        return self._locks

    async def claim_due_reschedules(self, now: float, owner: str, lease: float,
                                    limit: int = CLAIM_BATCH) -> list[StoredEvent]:
        where = "state = ? and occurrence_end > 0 and occurrence_end <= ?"
        rows = await self._run(self._write_returning, self._claim, "events", where,
                               [str(EventState.ACTIVE), now], "occurrence_end", now, owner, lease, limit)
        return [event_from_row(row) for row in rows]

    async def claim_due_updates(self, now: float, owner: str, lease: float,
                                    limit: int = CLAIM_BATCH) -> list[StoredEvent]:
        where = "pending_update = 1 and state = ? and retry_at <= ?"
        rows = await self._run(self._write_returning, self._claim, "events", where,
                               [str(EventState.ACTIVE), now], "retry_at", now, owner, lease, limit)
        return [event_from_row(row) for row in rows]

    async def claim_due_deletes(self, now: float, owner: str, lease: float,
                                    limit: int = CLAIM_BATCH) -> list[PendingDelete]:
        rows = await self._run(self._write_returning, self._claim, "pending_deletes",
                               "retry_at <= ?", [now], "retry_at", now, owner, lease, limit)
        return [pending_from_row(row) for row in rows]

    def _write_returning(self, fn: Callable[..., list[dict[str, Any]]], *args: Any
                         ) -> list[dict[str, Any]]:
        found: list[list[dict[str, Any]]] = []
        self._write(lambda: found.append(fn(*args)))
        return found[0]

    def _claim(self, table: str, where: str, params: list[Any], order: str, now: float,
               owner: str, lease: float, limit: int) -> list[dict[str, Any]]:
        # One statement: SQLite runs writers one at a time, so two claims never take one row.
        cursor = self._open().conn.execute(
            f"update {table} set claimed_by = ?, claimed_until = ? where rowid in ("
            f"select rowid from {table} where {where} and claimed_until <= ? "
            f"order by {order} limit {int(limit)}) returning *",
            [owner, now + lease, *params, now],
        )
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    # --- the users directory cache ----------------------------------------------------------

    async def load_users(self, server: str) -> CachedUsers | None:
        return await self._run(self._load_users, server)

    def _load_users(self, server: str) -> CachedUsers | None:
        row = self._checked().execute(
            "select fetched_at, users from users_cache where server = ?", [server]).fetchone()
        return cached_users(row[0], row[1]) if row else None

    async def save_users(self, server: str, users: CachedUsers) -> None:
        await self._run(self._write, self._save_users, server, users)

    def _save_users(self, server: str, users: CachedUsers) -> None:
        self._open().conn.execute(
            "insert into users_cache (server, fetched_at, users) values (?, ?, ?) on conflict "
            "(server) do update set fetched_at = excluded.fetched_at, users = excluded.users",
            [server, users.fetched_at, json.dumps(users.users)],
        )

    # --- upkeep -----------------------------------------------------------------------------

    async def prune_deleted(self, before: float) -> int:
        counted: list[int] = []
        await self._run(self._write, lambda: counted.append(self._prune_deleted(before)))
        return counted[0]

    def _prune_deleted(self, before: float) -> int:
        cursor = self._open().conn.execute(PRUNE_SQL.replace("%s", "?"),
                                           [str(EventState.DELETED), before])
        return int(cursor.rowcount)

    async def backup(self, target: str) -> None:
        """Copy the store to ``target`` while it is in use: one consistent snapshot."""
        await self._run(self._backup, target)

    def _backup(self, target: str) -> None:
        copy = sqlite3.connect(target)
        try:
            self._checked().conn.backup(copy)
        finally:
            copy.close()

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
