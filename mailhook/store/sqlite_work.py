"""The SQLite store's part in sharing work: the per-event lock (a lock file beside the store,
for the worker processes and tools on one host), claims on due work, the kept TrueConf user
list, pruning and an online backup. ``SqliteStore`` takes these from ``SharedWork``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from mailhook.core.model import PendingDelete
from mailhook.locks import EventLocks, KeyedLocks, lock_path
from mailhook.store.base import CLAIM_BATCH, CachedUsers, EventState, StoredEvent
from mailhook.store.rows import PRUNE_SQL, cached_users, event_from_row, pending_from_row

T = TypeVar("T")
log = logging.getLogger("mailhook.store")


class SharedWork:
    """What SqliteStore provides for coordination, on its store thread (``_run``)."""

    _path: str
    _locks: EventLocks | KeyedLocks | None
    _run: Callable[..., Awaitable[Any]]
    _write: Callable[..., None]
    _open: Callable[[], sqlite_utils.Database]
    _checked: Callable[[], sqlite_utils.Database]

    async def pending_deletes(self) -> list[PendingDelete]:
        found: list[PendingDelete] = await self._run(self._pending_deletes)
        return found

    def _pending_deletes(self) -> list[PendingDelete]:
        rows = self._checked().table("pending_deletes").rows_where(order_by="retry_at")
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
        # The table, condition and order are this module's own text, never input.
        cursor = self._open().conn.execute(
            f"update {table} set claimed_by = ?, claimed_until = ? where rowid in ("  # noqa: S608
            f"select rowid from {table} where {where} and claimed_until <= ? "
            f"order by {order} limit {int(limit)}) returning *",
            [owner, now + lease, *params, now],
        )
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    # --- the users directory cache ----------------------------------------------------------

    async def load_users(self, server: str) -> CachedUsers | None:
        kept: CachedUsers | None = await self._run(self._load_users, server)
        return kept

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

