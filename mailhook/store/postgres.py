"""The PostgreSQL backend: several mailhook instances on one database.

The per-event lock is a session-level advisory lock held on a connection of its own for as
long as the event is handled: an instance that dies closes its sessions, and PostgreSQL lets
go of its locks. Due work is claimed with ``FOR UPDATE SKIP LOCKED`` and a lease (see
base.py). The connection, the pools, migrations and failure reporting are postgres_db.py's.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import AbstractAsyncContextManager
from typing import Any

from mailhook.core.model import PendingDelete
from mailhook.store.base import CLAIM_BATCH, CachedUsers, EventState, StoredEvent
from mailhook.store.postgres_db import POOL_TIMEOUT, Database, describe, migrate
from mailhook.store.rows import (
    PRUNE_SQL,
    cached_users,
    event_from_row,
    pending_from_row,
    to_row,
    upsert_sql,
)

__all__ = ["POOL_TIMEOUT", "PostgresStore", "describe", "lock_key", "migrate"]


def lock_key(organizer: str, uid: str) -> int:
    """The advisory lock number of an event: 64 bits of a hash (two events that share one
    only wait for each other)."""
    digest = hashlib.blake2b(f"{organizer}\0{uid}".encode("utf-8", "surrogatepass"),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresStore:
    """Events in a PostgreSQL database shared by every mailhook instance."""

    def __init__(self, url: str, password: str = "", pool_size: int = 10,
                 application_name: str = "mailhook") -> None:
        self._db = Database(url, password, pool_size, application_name)
        self.where = self._db.where

    async def open(self) -> None:
        """Connect and bring the schema up to date."""
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    # --- events -----------------------------------------------------------------------------

    async def get(self, organizer: str, uid: str) -> StoredEvent | None:
        rows = await self._db.rows("select * from events where organizer = %s and uid = %s",
                                [organizer, uid])
        return event_from_row(rows[0]) if rows else None

    async def put(self, event: StoredEvent) -> None:
        row = to_row(event)
        await self._db.execute(upsert_sql(tuple(row), "%s"), list(row.values()))

    async def list_events(self) -> list[StoredEvent]:
        rows = await self._db.rows("select * from events order by updated_at desc")
        return [event_from_row(row) for row in rows]

    async def due(self, now: float) -> list[StoredEvent]:
        rows = await self._db.rows(
            "select * from events where state = %s and occurrence_end > 0 and occurrence_end <= %s"
            " order by occurrence_end", [str(EventState.ACTIVE), now])
        return [event_from_row(row) for row in rows]

    async def due_updates(self, now: float) -> list[StoredEvent]:
        rows = await self._db.rows(
            "select * from events where pending_update = 1 and state = %s and retry_at <= %s",
            [str(EventState.ACTIVE), now])
        return [event_from_row(row) for row in rows]

    # --- deletions --------------------------------------------------------------------------

    async def put_pending_delete(self, pending: PendingDelete) -> None:
        await self._db.execute(
            "insert into pending_deletes (conference_id, organizer, uid, attempts, retry_at, "
            "last_error, claimed_by, claimed_until) values (%s, %s, %s, %s, %s, %s, '', 0) "
            "on conflict (conference_id) do update set organizer = excluded.organizer, "
            "uid = excluded.uid, attempts = excluded.attempts, retry_at = excluded.retry_at, "
            "last_error = excluded.last_error, claimed_by = '', claimed_until = 0",
            [pending.conference_id, pending.organizer, pending.uid, pending.attempts,
             pending.retry_at, pending.last_error])

    async def due_deletes(self, now: float) -> list[PendingDelete]:
        rows = await self._db.rows(
            "select * from pending_deletes where retry_at <= %s order by retry_at", [now])
        return [pending_from_row(row) for row in rows]

    async def pending_deletes(self) -> list[PendingDelete]:
        rows = await self._db.rows("select * from pending_deletes order by retry_at")
        return [pending_from_row(row) for row in rows]

    async def finish_delete(self, conference_id: str) -> None:
        await self._db.execute("delete from pending_deletes where conference_id = %s",
                            [conference_id])

    async def note_sent(self, organizer: str, uid: str, kind: str, now: float) -> bool:
        added = await self._db.execute(
            "insert into notices_sent (organizer, uid, kind, sent_at) values (%s, %s, %s, %s) "
            "on conflict do nothing", [organizer, uid, kind, now])
        return added == 1

    # --- coordination -----------------------------------------------------------------------

    def event_lock(self, organizer: str, uid: str) -> AbstractAsyncContextManager[None]:
        return self._db.hold(lock_key(organizer, uid))

    async def claim_due_reschedules(self, now: float, owner: str, lease: float,
                                    limit: int = CLAIM_BATCH) -> list[StoredEvent]:
        rows = await self._claim("events", "organizer, uid",
                                 "state = %s and occurrence_end > 0 and occurrence_end <= %s",
                                 [str(EventState.ACTIVE), now], "occurrence_end", now, owner, lease, limit)
        return [event_from_row(row) for row in rows]

    async def claim_due_updates(self, now: float, owner: str, lease: float,
                                    limit: int = CLAIM_BATCH) -> list[StoredEvent]:
        rows = await self._claim("events", "organizer, uid",
                                 "pending_update = 1 and state = %s and retry_at <= %s",
                                 [str(EventState.ACTIVE), now], "retry_at", now, owner, lease, limit)
        return [event_from_row(row) for row in rows]

    async def claim_due_deletes(self, now: float, owner: str, lease: float,
                                    limit: int = CLAIM_BATCH) -> list[PendingDelete]:
        rows = await self._claim("pending_deletes", "conference_id", "retry_at <= %s", [now],
                                 "retry_at", now, owner, lease, limit)
        return [pending_from_row(row) for row in rows]

    async def _claim(self, table: str, key: str, where: str, params: list[Any], order: str,
                     now: float, owner: str, lease: float, limit: int
                     ) -> list[dict[str, Any]]:
        # Rows another instance is claiming right now are skipped, not waited for. The table,
        # key, condition and order are this module's own text, never input.
        return await self._db.rows(
            f"update {table} set claimed_by = %s, claimed_until = %s where ({key}) in ("  # noqa: S608
            f"select {key} from {table} where {where} and claimed_until <= %s "
            f"order by {order} limit {int(limit)} for update skip locked) returning *",
            [owner, now + lease, *params, now])

    # --- the users directory cache ----------------------------------------------------------

    async def load_users(self, server: str) -> CachedUsers | None:
        rows = await self._db.rows("select fetched_at, users from users_cache where server = %s",
                                [server])
        return cached_users(rows[0]["fetched_at"], rows[0]["users"]) if rows else None

    async def save_users(self, server: str, users: CachedUsers) -> None:
        await self._db.execute(
            "insert into users_cache (server, fetched_at, users) values (%s, %s, %s) on conflict "
            "(server) do update set fetched_at = excluded.fetched_at, users = excluded.users",
            [server, users.fetched_at, json.dumps(users.users)])

    # --- upkeep and health ------------------------------------------------------------------

    async def prune_deleted(self, before: float) -> int:
        return await self._db.execute(PRUNE_SQL, [str(EventState.DELETED), before])

    async def count_by_state(self) -> dict[str, int]:
        rows = await self._db.rows("select state, count(*) as n from events group by state")
        return {str(row["state"]): int(row["n"]) for row in rows}

    async def count_pending(self) -> int:
        rows = await self._db.rows(
            "select (select count(*) from pending_deletes) + "
            "(select count(*) from events where pending_update = 1) as n")
        return int(rows[0]["n"])

    async def ping(self) -> None:
        await self._db.rows("select 1")

