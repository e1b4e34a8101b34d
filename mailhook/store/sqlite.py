"""The SQLite backend: one file, WAL, migrations by ``PRAGMA user_version`` (see schema.py).

Every database call runs on one dedicated worker thread, so the event loop never blocks on
disk and the single connection is never shared between threads.

A store that stops working is never passed over in silence: every failure is raised as
:class:`StoreUnavailable` (the message gets 451), the file is checked before each use to be the
one that was opened (a deleted or replaced file would otherwise swallow every write), and each
change of the store's condition is logged once, at error level while it is failing.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from mailhook.core.model import PendingDelete
from mailhook.errors import StoreUnavailable
from mailhook.locks import EventLocks, KeyedLocks
from mailhook.store.base import EventState, StoredEvent
from mailhook.store.rows import pending_from_row, pending_row
from mailhook.store.sqlite_file import StoreFile
from mailhook.store.sqlite_schema import (
    MIGRATIONS,
    event_from_row,
    mark_created,
    migrate,
    missing,
    prepare,
    to_row,
    upsert_sql,
)
from mailhook.store.sqlite_work import SharedWork

# The schema's functions are used from here too (tests, the worker processes' start-up).
__all__ = ["MIGRATIONS", "READER_CACHE_KIB", "WRITER_CACHE_KIB", "SqliteStore", "event_from_row",
           "migrate", "prepare"]

T = TypeVar("T")
log = logging.getLogger("mailhook.store")


# Page caches (KiB; filled only as pages are used). Every write updates the table and its
# indexes at places spread over the file; with SQLite's default 2 MiB a store of 100 000 events
# would read index pages back from the OS for most writes.
WRITER_CACHE_KIB = 16 * 1024
READER_CACHE_KIB = 8 * 1024


class SqliteStore(SharedWork):
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
        self._file = StoreFile(path)  # its condition; only the store thread changes it
        self._locks: EventLocks | KeyedLocks | None = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"{self._path}: {exc}") from exc

    def _open(self) -> sqlite_utils.Database:
        if self._file.lost:
            raise StoreUnavailable(self._file.lost)
        if self._db is None and self._read_only:
            self._db = _read_only(self._path)
        if self._db is None:
            if self._path != ":memory:":
                if gone := missing(self._path):
                    self._file.lose(gone, None)
                    raise StoreUnavailable(gone)
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            db = _prepared(self._path, self._synchronous)
            if self._path != ":memory:":
                self._file.opened()
                mark_created(self._path)
            self._db = db
        return self._db

    def _checked(self) -> sqlite_utils.Database:
        """The database, after making sure its file is still the store's."""
        db = self._open()
        self._file.check(db.conn)
        if self._file.lost:
            raise StoreUnavailable(self._file.lost)
        return db

    def _write(self, fn: Callable[..., None], *args: Any) -> None:
        """Run one write on the store thread, into the store's own file, and note the outcome."""
        if self._read_only:
            raise StoreUnavailable(f"{self._path}: opened read-only")
        self._checked()
        try:
            fn(*args)
        except sqlite3.Error as exc:
            self._file.wrote(exc)
            raise
        self._file.wrote(None)

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
            if not self._file.lost:
                raise

    async def get(self, organizer: str, uid: str) -> StoredEvent | None:
        if self._file.lost:
            raise StoreUnavailable(self._file.lost)
        if self._read_only:
            return await self._run(self._get, organizer, uid)
        reader = self._reader
        if not self._file.same():
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
        self._open().table("pending_deletes").upsert(pending_row(pending), pk="conference_id")

    async def due_deletes(self, now: float) -> list[PendingDelete]:
        return await self._run(self._due_deletes, now)

    def _due_deletes(self, now: float) -> list[PendingDelete]:
        rows = self._checked()["pending_deletes"].rows_where("retry_at <= ?", [now], order_by="retry_at")
        return [pending_from_row(row) for row in rows]

    async def finish_delete(self, conference_id: str) -> None:
        await self._run(self._write, self._finish_delete, conference_id)

    def _finish_delete(self, conference_id: str) -> None:
        self._open().execute("delete from pending_deletes where conference_id = ?", [conference_id])

    async def note_sent(self, organizer: str, uid: str, kind: str, now: float) -> bool:
        first: list[bool] = []
        row = (organizer, uid, kind, now)
        await self._run(self._write, lambda: first.append(_note_sent(self._open(), row)))
        return bool(first and first[0])

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
        problem = self._file.failing or self._file.unwritable
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


def _read_only(path: str) -> sqlite_utils.Database:
    """The store for a tool that only looks: the file opened read-only, or an empty store in
    memory when none was made yet (one that went missing is StoreUnavailable)."""
    if gone := missing(path):
        raise StoreUnavailable(gone)
    if path == ":memory:" or not Path(path).exists():
        db = sqlite_utils.Database(sqlite3.connect(":memory:", check_same_thread=False))
        migrate(db)
        return db
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    return sqlite_utils.Database(conn)


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


def _note_sent(db: sqlite_utils.Database, row: tuple[str, str, str, float]) -> bool:
    """Record a notice sent once per event; True when it was not recorded before."""
    cursor = db.execute("insert or ignore into notices_sent (organizer, uid, kind, sent_at) "
                        "values (?, ?, ?, ?)", list(row))
    return cursor.rowcount == 1



def _prepared(path: str, synchronous: str) -> sqlite_utils.Database:
    """The writer's connection, in WAL mode and on the newest schema. Processes opening a new
    store at the same moment can find it locked while another switches it to WAL (SQLite
    answers that at once, without waiting): each tries again for a few seconds."""
    deadline = time.monotonic() + 5
    while True:
        try:
            return _connected(path, synchronous)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _connected(path: str, synchronous: str) -> sqlite_utils.Database:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5)
    db = sqlite_utils.Database(conn)
    try:
        db.execute("PRAGMA busy_timeout = 5000")
        if path != ":memory:":
            db.enable_wal()
        db.execute(f"PRAGMA synchronous = {synchronous}")
        db.execute(f"PRAGMA cache_size = {-WRITER_CACHE_KIB}")
        migrate(db)
    except BaseException:
        conn.close()
        raise
    return db
