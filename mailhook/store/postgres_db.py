"""The PostgreSQL store's connection to its database: two pools of autocommit connections
(psycopg 3, async), one for queries and one for the connections that hold advisory locks;
schema migrations at start-up under an advisory lock; and failures reported as
:class:`StoreUnavailable`, each change of the database's condition logged once.

The password is never part of a message: it is passed to libpq apart from the URL, and the
database is named without one (``describe``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from mailhook.errors import StoreUnavailable
from mailhook.locks import KeyedLocks
from mailhook.store import schema

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


class Database:
    """One PostgreSQL database, shared by every mailhook instance."""

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
        self.pool_size = pool_size
        self._pool: AsyncConnectionPool | None = None
        self._lock_pool: AsyncConnectionPool | None = None
        self._local = KeyedLocks()  # one task per event in this process asks the database
        self._failing = ""  # why the last use failed; cleared by one that works
        self._opened = False
        self._opening = asyncio.Lock()
        # The store reports the database's condition itself, once per change; the pool would
        # log every reconnection attempt while it is away.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

    async def open(self) -> None:
        """Connect and bring the schema up to date (once, however many tasks ask at once)."""
        if self._opened:
            return
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
        self._pool = self._new_pool("mailhook-store", self.pool_size, POOL_TIMEOUT)
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
        for _ in range(self.pool_size + 1):
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

    async def rows(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        """The rows a statement returns."""
        return await self._query(sql, params, rows=True)  # type: ignore[no-any-return]

    async def execute(self, sql: str, params: Any = None) -> int:
        """Run a statement; the number of rows it changed."""
        return await self._query(sql, params, rows=False)  # type: ignore[no-any-return]

    @asynccontextmanager
    async def hold(self, key: int) -> AsyncIterator[None]:
        """Hold the advisory lock ``key`` on a connection of its own until the block ends (or
        the session does: an instance that dies lets go of its locks)."""
        async with self._local.hold(key):
            conn = await self._lock(key)
            try:
                yield
            finally:
                await self._unlock(conn, key)

    async def _lock(self, key: int) -> psycopg.AsyncConnection[Any]:
        """A connection holding the lock ``key`` (one dropped while idle is replaced)."""
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

