"""One storage test suite, run against every backend: SQLite and PostgreSQL.

The PostgreSQL runs use a server the suite starts itself (tests/support/postgres.py); they skip,
saying why, where no PostgreSQL binaries are installed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mailhook.core.model import EventState, PendingDelete, StoredEvent
from mailhook.errors import StoreUnavailable
from mailhook.store import CachedUsers, SqliteStore, Store, schema
from mailhook.store.postgres import PostgresStore
from tests.support.stored import EVENT

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_800_000_000.0


class Backend:
    """Makes stores of one kind on one database (several store objects, as several instances
    would have)."""

    def __init__(self, kind: str, location: str, password: str = "") -> None:
        self.kind = kind
        self.location = location  # a file path, or a PostgreSQL URI
        self.password = password
        self._made: list[Store] = []

    def store(self) -> Store:
        made: Store
        if self.kind == "sqlite":
            made = SqliteStore(self.location)
        else:
            made = PostgresStore(self.location, self.password)
        self._made.append(made)
        return made

    async def close(self) -> None:
        for store in self._made:
            await store.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Stores of each backend in turn, on a new database."""
    if request.param == "sqlite":
        made = Backend("sqlite", str(tmp_path / "m.sqlite3"))
    else:
        server = request.getfixturevalue("postgres_server")
        made = Backend("postgres", server.new_database(), server.password)
    yield made
    await made.close()


@pytest.fixture
async def store(backend: Backend) -> Store:
    """One opened store of the backend under test."""
    opened = backend.store()
    await opened.open()
    return opened


def _event(number: int, **changes: Any) -> StoredEvent:
    return replace(EVENT, uid=f"uid-{number}", conference_id=str(100 + number), **changes)


# --- what every backend keeps --------------------------------------------------------------


async def test_round_trip_and_replace(store: Store) -> None:
    """What is put comes back equal; a second put replaces it; pings pass."""
    assert await store.get("alice@example.com", "uid-1") is None
    await store.put(EVENT)
    assert await store.get("alice@example.com", "uid-1") == EVENT
    await store.put(replace(EVENT, state=EventState.DELETED, pending_update=True, retry_at=5.0))
    again = await store.get("alice@example.com", "uid-1")
    assert again == replace(EVENT, state=EventState.DELETED, pending_update=True, retry_at=5.0)
    assert [e.uid for e in await store.list_events()] == ["uid-1"]
    await store.ping()


async def test_events_survive_a_new_store_object(backend: Backend) -> None:
    """A store opened again (a restart, or another instance) sees what the first one wrote."""
    first = backend.store()
    await first.put(EVENT)
    await first.close()
    second = backend.store()
    assert await second.get("alice@example.com", "uid-1") == EVENT


async def test_list_is_newest_first_and_counts_by_state(store: Store) -> None:
    """Events are listed newest first and counted by state."""
    await store.put(_event(1, updated_at=1.0))
    await store.put(_event(2, updated_at=3.0, state=EventState.DELETED))
    await store.put(_event(3, updated_at=2.0, state=EventState.CREATING))
    assert [e.uid for e in await store.list_events()] == ["uid-2", "uid-3", "uid-1"]
    assert await store.count_by_state() == {"active": 1, "deleted": 1, "creating": 1}


async def test_due_occurrences_and_updates(store: Store) -> None:
    """Only active events whose occurrence ended, or whose pending update is due, are due."""
    await store.put(_event(1, occurrence_end=NOW - 10))
    await store.put(_event(2, occurrence_end=NOW + 10))
    await store.put(_event(3, occurrence_end=NOW - 10, state=EventState.DELETED))
    await store.put(_event(4, occurrence_end=0.0))
    await store.put(_event(5, pending_update=True, retry_at=NOW - 1))
    await store.put(_event(6, pending_update=True, retry_at=NOW + 60))
    assert [e.uid for e in await store.due(NOW)] == ["uid-1"]
    assert [e.uid for e in await store.due_updates(NOW)] == ["uid-5"]
    assert await store.count_pending() == 2


async def test_pending_deletes_until_finished(store: Store) -> None:
    """A pending deletion is due at its retry time, re-scheduled by a second put, and gone once
    finished."""
    pending = PendingDelete("42", "alice@example.com", "uid-1", attempts=1, retry_at=NOW - 1,
                            last_error="503")
    await store.put_pending_delete(pending)
    await store.put_pending_delete(replace(pending, conference_id="43", retry_at=NOW + 60))
    assert await store.due_deletes(NOW) == [pending]
    assert len(await store.pending_deletes()) == 2
    await store.put_pending_delete(replace(pending, attempts=2, retry_at=NOW + 30))
    assert await store.due_deletes(NOW) == []
    assert await store.count_pending() == 2
    await store.finish_delete("42")
    await store.finish_delete("43")
    assert await store.pending_deletes() == []


async def test_users_cache_per_server(store: Store) -> None:
    """The user list is kept per TrueConf server, and a second save replaces the first."""
    assert await store.load_users("https://tc.example.com") is None
    users = CachedUsers(NOW, (("bob@example.com", "bob", "Bob B"), ("eve@example.com", "eve", "")))
    await store.save_users("https://tc.example.com", users)
    assert await store.load_users("https://tc.example.com") == users
    assert await store.load_users("https://other.example.com") is None
    newer = CachedUsers(NOW + 5, (("bob@example.com", "bob2", "Bob"),))
    await store.save_users("https://tc.example.com", newer)
    assert await store.load_users("https://tc.example.com") == newer


async def test_prune_forgets_only_long_deleted_events(store: Store) -> None:
    """Pruning removes events deleted before the cut-off, except those whose deletion TrueConf
    has not confirmed; active and recently deleted ones stay."""
    await store.put(_event(1, state=EventState.DELETED, updated_at=NOW - 1000))
    await store.put(_event(2, state=EventState.DELETED, updated_at=NOW - 10))
    await store.put(_event(3, updated_at=NOW - 1000))
    await store.put(_event(4, state=EventState.DELETED, updated_at=NOW - 1000))
    await store.put_pending_delete(PendingDelete("104", "alice@example.com", "uid-4"))
    assert await store.prune_deleted(NOW - 100) == 1
    assert sorted(e.uid for e in await store.list_events()) == ["uid-2", "uid-3", "uid-4"]


# --- several instances on one store ----------------------------------------------------------


async def test_two_stores_claim_disjoint_work(backend: Backend) -> None:
    """Two store objects on one database, claiming at once, never take the same row."""
    first, second = backend.store(), backend.store()
    await first.open()
    await second.open()
    for number in range(30):
        await first.put(_event(number, pending_update=True, retry_at=NOW - 1,
                               occurrence_end=NOW - 1))
        await first.put_pending_delete(PendingDelete(f"c{number}", "alice@example.com",
                                                     f"uid-{number}", retry_at=NOW - 1))
    for claim in ("claim_due_deletes", "claim_due_updates"):
        a, b = await asyncio.gather(getattr(first, claim)(NOW, "a", 60.0),
                                    getattr(second, claim)(NOW, "b", 60.0))
        keys = [_key(item) for item in (*a, *b)]
        a_more = await getattr(first, claim)(NOW, "a", 60.0)
        b_more = await getattr(second, claim)(NOW, "b", 60.0)
        keys += [_key(item) for item in (*a_more, *b_more)]
        assert len(keys) == len(set(keys)) == 30, claim
        assert await getattr(first, claim)(NOW, "a", 60.0) == []  # all claimed now


async def test_reschedules_are_claimed_once(backend: Backend) -> None:
    """An event due for rescheduling is handed to one claimant; a put of it ends the claim."""
    first, second = backend.store(), backend.store()
    await first.put(_event(1, occurrence_end=NOW - 1))
    [claimed] = await first.claim_due_reschedules(NOW, "a", 60.0)
    assert claimed == _event(1, occurrence_end=NOW - 1)
    assert await second.claim_due_reschedules(NOW, "b", 60.0) == []
    await first.put(replace(claimed, updated_at=NOW))  # the holder wrote it: claim over
    assert [e.uid for e in await second.claim_due_reschedules(NOW, "b", 60.0)] == ["uid-1"]


async def test_work_of_a_dead_claimant_is_taken_after_its_lease(backend: Backend) -> None:
    """Work claimed by an instance that then stopped is claimed again by another once the
    lease has run out, and not before."""
    dead, alive = backend.store(), backend.store()
    await dead.put_pending_delete(PendingDelete("42", "alice@example.com", "uid-1", retry_at=NOW))
    await dead.put(_event(1, pending_update=True, retry_at=NOW))
    assert len(await dead.claim_due_deletes(NOW, "dead", 120.0)) == 1
    assert len(await dead.claim_due_updates(NOW, "dead", 120.0)) == 1
    await dead.close()
    assert await alive.claim_due_deletes(NOW + 60, "alive", 120.0) == []
    assert await alive.claim_due_updates(NOW + 60, "alive", 120.0) == []
    [taken] = await alive.claim_due_deletes(NOW + 121, "alive", 120.0)
    assert taken.conference_id == "42"
    assert [e.uid for e in await alive.claim_due_updates(NOW + 121, "alive", 120.0)] == ["uid-1"]


def _key(item: StoredEvent | PendingDelete) -> str:
    return item.conference_id if isinstance(item, PendingDelete) else item.uid


async def test_event_lock_excludes_another_store(backend: Backend) -> None:
    """While one store object holds an event, another waits for it; other events are free."""
    first, second = backend.store(), backend.store()
    order: list[str] = []
    async with first.event_lock("alice@example.com", "uid-1"):
        waiting = asyncio.create_task(_hold(second, "uid-1", order))
        async with second.event_lock("alice@example.com", "uid-2"):
            order.append("other event")
        await asyncio.sleep(0.3)
        assert not waiting.done()
        order.append("first done")
    await asyncio.wait_for(waiting, 30)
    assert order == ["other event", "first done", "second"]


async def _hold(store: Store, uid: str, order: list[str]) -> None:
    async with store.event_lock("alice@example.com", uid):
        order.append("second")


HOLDER = """
import asyncio, os, sys, time
from mailhook.store import SqliteStore
from mailhook.store.postgres import PostgresStore

async def main(kind, location):
    store = SqliteStore(location) if kind == "sqlite" else PostgresStore(
        location, os.environ["PGTEST_PASSWORD"])
    async with store.event_lock("alice@example.com", "uid-1"):
        print("held", flush=True)
        await asyncio.sleep(600)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_event_lock_of_a_killed_process_is_released(backend: Backend) -> None:
    """An event held by a process that is killed (SIGKILL) can be taken by another at once."""
    env = {**os.environ, "PGTEST_PASSWORD": backend.password, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HOLDER), backend.kind,
                               backend.location], stdout=subprocess.PIPE, env=env, cwd=ROOT)
    try:
        line = await asyncio.to_thread(holder.stdout.readline)  # type: ignore[union-attr]
        assert line.strip() == b"held"
        other = backend.store()
        taking = asyncio.create_task(_hold(other, "uid-1", []))
        await asyncio.sleep(0.3)
        assert not taking.done()
        holder.send_signal(signal.SIGKILL)
        await asyncio.wait_for(taking, 30)
    finally:
        holder.kill()
        holder.wait()


# --- schema ------------------------------------------------------------------------------------


async def test_stores_opening_together_migrate_once(backend: Backend) -> None:
    """Several store objects opening a new database at the same moment all end up on the
    newest schema, and the migration ran once."""
    stores = [backend.store() for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    await asyncio.gather(*(s.put(_event(n)) for n, s in enumerate(stores)))
    assert len(await stores[0].list_events()) == 4
    if backend.kind == "postgres":
        import psycopg

        async with await psycopg.AsyncConnection.connect(backend.location,
                                                         password=backend.password) as conn:
            rows = await (await conn.execute("select version from mailhook_schema")).fetchall()
        assert sorted(r[0] for r in rows) == list(range(1, schema.VERSION + 1))
    else:
        version = sqlite3.connect(backend.location).execute("PRAGMA user_version").fetchone()[0]
        assert version == schema.VERSION


async def test_both_backends_have_one_schema(tmp_path: Path, postgres_server: Any) -> None:
    """After migration SQLite and PostgreSQL have the same tables with the same columns."""
    sqlite_store = SqliteStore(str(tmp_path / "m.sqlite3"))
    await sqlite_store.open()
    await sqlite_store.close()
    conn = sqlite3.connect(tmp_path / "m.sqlite3")
    tables = [r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")]
    in_sqlite = {t: sorted(r[1] for r in conn.execute(f"pragma table_info({t})")) for t in tables}
    url = postgres_server.new_database()
    pg_store = PostgresStore(url, postgres_server.password)
    await pg_store.open()
    await pg_store.close()
    import psycopg

    with psycopg.connect(url, password=postgres_server.password) as pg:
        rows = pg.execute("select table_name, column_name from information_schema.columns "
                          "where table_schema = current_schema()").fetchall()
    in_postgres: dict[str, list[str]] = {}
    for table, column in rows:
        if table != "mailhook_schema":
            in_postgres.setdefault(table, []).append(column)
    assert {t: sorted(c) for t, c in in_postgres.items()} == in_sqlite


# --- failures ----------------------------------------------------------------------------------


async def test_unreachable_database_is_unavailable_without_the_password(postgres_server: Any,
                                                                        caplog: Any) -> None:
    """A database that refuses the password, or is not there, raises StoreUnavailable naming
    the database, and neither the error nor the log shows the password."""
    wrong = "Wr0ng-pa55word-xyz"
    refused = PostgresStore(postgres_server.new_database(), wrong)
    gone = PostgresStore(f"postgresql://mailhook@127.0.0.1:{_closed_port()}/x", wrong)
    for store in (refused, gone):
        try:
            with pytest.raises(StoreUnavailable) as raised:
                await store.open()
            assert "postgresql://mailhook@127.0.0.1" in str(raised.value)
            assert wrong not in str(raised.value)
        finally:
            await store.close()
    assert wrong not in caplog.text


def _closed_port() -> int:
    from tests.support.postgres import free_port

    return free_port()


@pytest.mark.parametrize("make", [lambda tmp: SqliteStore(str(tmp / "x.sqlite3"))])
async def test_sqlite_store_backup_is_a_consistent_copy(tmp_path: Path,
                                                        make: Callable[[Path], SqliteStore]) -> None:
    """A backup taken while the store is open is a store with the same events."""
    store = make(tmp_path)
    try:
        for number in range(20):
            await store.put(_event(number))
        await store.backup(str(tmp_path / "copy.sqlite3"))
    finally:
        await store.close()
    copy = SqliteStore(str(tmp_path / "copy.sqlite3"))
    try:
        assert len(await copy.list_events()) == 20
    finally:
        await copy.close()


# --- the users directory kept in the store ------------------------------------------------------


class Users:
    """TrueConf's users API as the directory sees it; ``down`` makes it fail."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    async def list_users(self) -> list[Any]:
        from mailhook.errors import TrueConfUnavailable
        from mailhook.trueconf.payload import TrueConfUser

        self.calls += 1
        if self.down:
            raise TrueConfUnavailable("TrueConf is down")
        return [TrueConfUser(id="bob", email="bob@example.com", display_name="Bob B")]


async def test_directory_restarted_while_trueconf_is_down_knows_the_accounts(backend: Backend
                                                                             ) -> None:
    """A directory started anew on the same store while TrueConf's users API fails still finds
    the accounts the previous one fetched, however old that list is."""
    from mailhook.trueconf.directory import UserListDirectory

    users = Users()
    first = UserListDirectory(users, ttl=600, cache=backend.store(), server="https://tc")
    assert (await first.lookup(["bob@example.com"]))["bob@example.com"].id == "bob"
    users.down = True
    later = [NOW + 86_400.0]  # a day later: the kept list is long past its TTL
    restarted = UserListDirectory(users, ttl=600, cache=backend.store(), server="https://tc",
                                  wall_clock=lambda: later[0])
    found = await restarted.lookup(["BOB@example.com", "eve@example.com"])
    assert found == {"bob@example.com": first_account()}
    assert users.calls == 2  # it did try TrueConf first


async def test_directory_uses_a_fresh_kept_list_without_asking_trueconf(backend: Backend) -> None:
    """A list the store kept within the TTL is used as is after a restart: no users API call."""
    from mailhook.trueconf.directory import UserListDirectory

    users = Users()
    await UserListDirectory(users, ttl=600, cache=backend.store(), server="https://tc").lookup([])
    restarted = UserListDirectory(users, ttl=600, cache=backend.store(), server="https://tc")
    assert "bob@example.com" in await restarted.lookup(["bob@example.com"])
    assert users.calls == 1


def first_account() -> Any:
    from mailhook.trueconf.directory import Account

    return Account("bob", "Bob B")


async def test_connections_dropped_by_a_database_restart_are_replaced(tmp_path: Path) -> None:
    """After the database restarted while the store's connections sat idle, the next queries
    and locks are served at once on new connections: none fails for the stale ones."""
    from tests.support.postgres import PostgresServer, why_not_available

    if reason := why_not_available():
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    server = PostgresServer().init().start()
    store = PostgresStore(server.new_database(), server.password)
    try:
        await asyncio.gather(*(store.put(_event(n)) for n in range(8)))  # several connections
        async with store.event_lock("alice@example.com", "uid-1"):
            pass
        await asyncio.to_thread(server.stop, "fast")
        await asyncio.to_thread(server.start)
        assert len(await store.list_events()) == 8
        await asyncio.gather(*(store.get("alice@example.com", f"uid-{n}") for n in range(8)))
        async with store.event_lock("alice@example.com", "uid-1"):
            await store.put(_event(1, sequence=9))
    finally:
        await store.close()
        server.destroy()


async def test_a_notice_is_noted_once_per_event_and_kind(backend: Backend) -> None:
    """note_sent is True the first time a notice kind is noted for an event, on whichever
    store object (instance) notes it, and False after."""
    first, second = backend.store(), backend.store()
    assert await first.note_sent("alice@example.com", "uid-1", "no_account", NOW) is True
    assert await second.note_sent("alice@example.com", "uid-1", "no_account", NOW) is False
    assert await second.note_sent("alice@example.com", "uid-1", "other", NOW) is True
    assert await first.note_sent("alice@example.com", "uid-2", "no_account", NOW) is True
