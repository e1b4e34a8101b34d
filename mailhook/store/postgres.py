"""The PostgreSQL backend: several mailhook instances on one database.

Queries go through a pool of autocommit connections (psycopg 3, async). The per-event lock is a
session-level advisory lock held on a connection of a second pool for as long as the event is
handled: an instance that dies closes its sessions, and PostgreSQL lets go of its locks. Due
work is claimed with ``FOR UPDATE SKIP LOCKED`` and a lease (see base.py). Schema migrations
run at start-up under an advisory lock, so instances starting together migrate once.

Every failure is raised as :class:`StoreUnavailable` (the message gets 451), and each change of
the database's condition is logged once. The password is never part of a message: it is passed
to libpq apart from the URL, and the URL is shown without one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from mailhook.core.model import PendingDelete
from mailhook.errors import StoreUnavailable
from mailhook.locks import KeyedLocks
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

log = logging.getLogger("mailhook.store")

CONNECT_TIMEOUT = 5  # seconds for libpq to reach the server
# Seconds a query waits for a free (or new) connection before the message gets 451.
POOL_TIMEOUT = 10.0
# Seconds a message waits for a connection to hold its event's lock on (one per event being
# handled at once), then gets 451; waiting for the lock itself is not bounded here.
LOCK_POOL_TIMEOUT = 10.0
# Connections that may hold event locks at once: events handled at the same time.
LOCK_CONNECTIONS = 64
# The advisory lock taken while the schema is migrated (any fixed number; this is "mailhook").
SCHEMA_LOCK = int.from_bytes(b"mailhook", "big") & 0x7FFF_FFFF_FFFF_FFFF
# Errors that mean the database cannot be used now.
FAILURES = (psycopg.Error, PoolTimeout, OSError)


def lock_key(organizer: str, uid: str) -> int:
    """The advisory lock number of an event: 64 bits of a hash (two events that share one
    only wait for each other)."""
    digest = hashlib.blake2b(f"{organizer}\0{uid}".encode("utf-8", "surrogatepass"),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def describe(url: str) -> str:
    """The database named for people: user, host, port and database, never a password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql (unreadable url)"
    user = f"{params['user']}@" if params.get("user") else ""
    host = params.get("host") or "localhost"
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{user}{host}{port}/{params.get('dbname', '')}"


class PostgresStore:
    """Events in a PostgreSQL database shared by every mailhook instance."""

    def __init__(self, url: str, password: str = "", pool_size: int = 10,
                 application_name: str = "mailhook") -> None:
        self.where = describe(url)
        self._url = url
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "row_factory": dict_row,
            "connect_timeout": CONNECT_TIMEOUT,
            "application_name": application_name,
        }
        if password:
            self._kwargs["password"] = password
        self._pool_size = pool_size
        self._pool: AsyncConnectionPool | None = None
        self._lock_pool: AsyncConnectionPool | None = None
        self._local = KeyedLocks()  # one task per event in this process asks the database
        self._failing = ""  # why the last use failed; cleared by one that works
        self._opened = False
        self._opening = asyncio.Lock()  # tasks that find the store unopened open it once
        # The store reports the database's condition itself, once per change; the pool would
        # log every reconnection attempt while it is away.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

    # --- set-up -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and bring the schema up to date."""
        async with self._opening:
            if not self._opened:
                await self._open()

    async def _open(self) -> None:
        # A connection of its own first: a wrong password or host is reported as libpq says
        # it, at once, rather than as a pool that found no connection in time.
        try:
            async with await psycopg.AsyncConnection.connect(self._url, **self._kwargs) as conn:
                await migrate(conn)
        except FAILURES as exc:
            raise self._unavailable(exc) from exc
        self._pool = self._new_pool("mailhook-store", self._pool_size, POOL_TIMEOUT)
        self._lock_pool = self._new_pool("mailhook-locks", LOCK_CONNECTIONS, LOCK_POOL_TIMEOUT)
        await self._pool.open(wait=False)
        await self._lock_pool.open(wait=False)
        self._opened = True
        self._works()

    def _new_pool(self, name: str, size: int, timeout: float) -> AsyncConnectionPool:
        return AsyncConnectionPool(
            self._url, kwargs=self._kwargs, min_size=1, max_size=size, open=False, name=name,
            timeout=timeout,
            # A failed connection attempt is retried with a growing delay only this long; then the
            # next query starts a new one, so a database that comes back is used at once.
            reconnect_timeout=POOL_TIMEOUT,
        )

    async def _query(self, sql: str, params: Any, rows: bool) -> Any:
        """Run one statement: its rows (``rows``) or its row count. Failures become
        StoreUnavailable.

        Pooled connections are not checked before use (that would cost a round trip per
        query); one the database dropped while it was idle (a restart) fails at once, is
        discarded, and the statement goes to another. Every statement mailhook runs gives
        the same result when run twice, so this is safe even if the first one got through.
        """
        pool = await self._opened_pool()
        for _ in range(self._pool_size + 1):
            conn = await self._connection(pool)
            try:
                cursor = await conn.execute(sql, params)
                found = (await cursor.fetchall() if cursor.description else []) if rows \
                    else cursor.rowcount
            except FAILURES as exc:
                await pool.putconn(conn)
                if conn.broken or conn.closed:
                    continue  # dropped while idle: the next connection (or a new one) runs it
                raise self._unavailable(exc) from exc
            except BaseException:
                await pool.putconn(conn)
                raise
            await pool.putconn(conn)
            self._works()
            return found
        raise self._unavailable(psycopg.OperationalError("every connection was broken"))

    async def _opened_pool(self) -> AsyncConnectionPool:
        if not self._opened:
            await self.open()
        assert self._pool is not None
        return self._pool

    async def _connection(self, pool: AsyncConnectionPool) -> psycopg.AsyncConnection[Any]:
        try:
            return await pool.getconn()
        except FAILURES as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        self._fail(exc)
        return StoreUnavailable(f"{self.where}: {_reason(exc)}")

    def _fail(self, exc: BaseException) -> None:
        problem = f"{self.where}: {_reason(exc)}"
        if not self._failing:
            log.error("store: %s", problem)
        self._failing = problem

    def _works(self) -> None:
        if self._failing:
            self._failing = ""
            log.warning("store: %s works again", self.where)

    async def _rows(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        return await self._query(sql, params, rows=True)  # type: ignore[no-any-return]

    async def _execute(self, sql: str, params: Any = None) -> int:
        return await self._query(sql, params, rows=False)  # type: ignore[no-any-return]

    # --- events -----------------------------------------------------------------------------

    async def get(self, organizer: str, uid: str) -> StoredEvent | None:
        rows = await self._rows("select * from events where organizer = %s and uid = %s",
                                [organizer, uid])
        return event_from_row(rows[0]) if rows else None

    async def put(self, event: StoredEvent) -> None:
        row = to_row(event)
        await self._execute(upsert_sql(tuple(row), "%s"), list(row.values()))

    async def list_events(self) -> list[StoredEvent]:
        rows = await self._rows("select * from events order by updated_at desc")
        return [event_from_row(row) for row in rows]

    async def due(self, now: float) -> list[StoredEvent]:
        rows = await self._rows(
            "select * from events where state = %s and occurrence_end > 0 and occurrence_end <= %s"
            " order by occurrence_end", [str(EventState.ACTIVE), now])
        return [event_from_row(row) for row in rows]

    async def due_updates(self, now: float) -> list[StoredEvent]:
        rows = await self._rows(
            "select * from events where pending_update = 1 and state = %s and retry_at <= %s",
            [str(EventState.ACTIVE), now])
        return [event_from_row(row) for row in rows]

    # --- deletions --------------------------------------------------------------------------

    async def put_pending_delete(self, pending: PendingDelete) -> None:
        await self._execute(
            "insert into pending_deletes (conference_id, organizer, uid, attempts, retry_at, "
            "last_error, claimed_by, claimed_until) values (%s, %s, %s, %s, %s, %s, '', 0) "
            "on conflict (conference_id) do update set organizer = excluded.organizer, "
            "uid = excluded.uid, attempts = excluded.attempts, retry_at = excluded.retry_at, "
            "last_error = excluded.last_error, claimed_by = '', claimed_until = 0",
            [pending.conference_id, pending.organizer, pending.uid, pending.attempts,
             pending.retry_at, pending.last_error])

    async def due_deletes(self, now: float) -> list[PendingDelete]:
        rows = await self._rows(
            "select * from pending_deletes where retry_at <= %s order by retry_at", [now])
        return [pending_from_row(row) for row in rows]

    async def pending_deletes(self) -> list[PendingDelete]:
        rows = await self._rows("select * from pending_deletes order by retry_at")
        return [pending_from_row(row) for row in rows]

    async def finish_delete(self, conference_id: str) -> None:
        await self._execute("delete from pending_deletes where conference_id = %s",
                            [conference_id])

    # --- coordination -----------------------------------------------------------------------

    def event_lock(self, organizer: str, uid: str) -> AbstractAsyncContextManager[None]:
        return self._hold(lock_key(organizer, uid))

    @asynccontextmanager
    async def _hold(self, key: int) -> AsyncIterator[None]:
        async with self._local.hold(key):
            conn = await self._lock(key)
            try:
                yield
            finally:
                await self._unlock(conn, key)

    async def _lock(self, key: int) -> psycopg.AsyncConnection[Any]:
        """A connection holding the lock ``key`` (one dropped while idle is replaced)."""
        if not self._opened:
            await self.open()
        assert self._lock_pool is not None
        for _ in range(LOCK_CONNECTIONS + 1):
            conn = await self._connection(self._lock_pool)
            try:
                await conn.execute("select pg_advisory_lock(%s)", [key])
            except BaseException as exc:
                await self._drop(conn)
                if not isinstance(exc, FAILURES):
                    raise
                if conn.broken:
                    continue
                raise self._unavailable(exc) from exc
            return conn
        raise self._unavailable(psycopg.OperationalError("every connection was broken"))

    async def _unlock(self, conn: psycopg.AsyncConnection[Any], key: int) -> None:
        try:
            await conn.execute("select pg_advisory_unlock(%s)", [key])
        except FAILURES:
            # The session is broken (the database went away): ending it lets go of the lock
            # just as well, and what was done under the lock stands.
            await self._drop(conn)
            return
        except BaseException:
            await self._drop(conn)
            raise
        assert self._lock_pool is not None
        await self._lock_pool.putconn(conn)

    async def _drop(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Close a lock connection (its locks go with it) and give it back to be replaced."""
        await asyncio.shield(conn.close())
        assert self._lock_pool is not None
        await self._lock_pool.putconn(conn)

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
        # Rows another instance is claiming right now are skipped, not waited for.
        return await self._rows(
            f"update {table} set claimed_by = %s, claimed_until = %s where ({key}) in ("
            f"select {key} from {table} where {where} and claimed_until <= %s "
            f"order by {order} limit {int(limit)} for update skip locked) returning *",
            [owner, now + lease, *params, now])

    # --- the users directory cache ----------------------------------------------------------

    async def load_users(self, server: str) -> CachedUsers | None:
        rows = await self._rows("select fetched_at, users from users_cache where server = %s",
                                [server])
        return cached_users(rows[0]["fetched_at"], rows[0]["users"]) if rows else None

    async def save_users(self, server: str, users: CachedUsers) -> None:
        await self._execute(
            "insert into users_cache (server, fetched_at, users) values (%s, %s, %s) on conflict "
            "(server) do update set fetched_at = excluded.fetched_at, users = excluded.users",
            [server, users.fetched_at, json.dumps(users.users)])

    # --- upkeep and health ------------------------------------------------------------------

    async def prune_deleted(self, before: float) -> int:
        return await self._execute(PRUNE_SQL, [str(EventState.DELETED), before])

    async def count_by_state(self) -> dict[str, int]:
        rows = await self._rows("select state, count(*) as n from events group by state")
        return {str(row["state"]): int(row["n"]) for row in rows}

    async def count_pending(self) -> int:
        rows = await self._rows(
            "select (select count(*) from pending_deletes) + "
            "(select count(*) from events where pending_update = 1) as n")
        return int(rows[0]["n"])

    async def ping(self) -> None:
        await self._rows("select 1")

    async def close(self) -> None:
        for pool in (self._lock_pool, self._pool):
            if pool is not None:
                await pool.close()
        self._pool = self._lock_pool = None
        self._opened = False


async def migrate(conn: psycopg.AsyncConnection[Any]) -> int:
    """Bring the schema to the newest version under an advisory lock; return that version."""
    await conn.execute("select pg_advisory_lock(%s)", [SCHEMA_LOCK])
    try:
        await conn.execute("create table if not exists mailhook_schema ("
                           "version integer primary key, applied_at timestamptz default now())")
        cursor = await conn.execute("select coalesce(max(version), 0) as version from mailhook_schema")
        row = await cursor.fetchone()
        version = int(row["version"]) if row else 0
        if version > schema.VERSION:
            raise StoreUnavailable(f"the database's schema is version {version}, newer than this "
                                   f"mailhook knows ({schema.VERSION}): upgrade mailhook")
        for number, step in enumerate(schema.MIGRATIONS[version:], start=version + 1):
            async with conn.transaction():
                for statement in step.postgres:
                    await conn.execute(statement)
                await conn.execute("insert into mailhook_schema (version) values (%s)", [number])
            log.info("store: schema moved to version %d (%s)", number, step.what)
    finally:
        await conn.execute("select pg_advisory_unlock(%s)", [SCHEMA_LOCK])
    return schema.VERSION


def _reason(exc: BaseException) -> str:
    """One line saying what went wrong (libpq's messages can span lines)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


__all__ = ["PostgresStore", "describe", "lock_key", "migrate"]
