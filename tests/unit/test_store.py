"""The SQLite store: round trips, migrations, WAL, parent folders, failures never silent."""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import replace

import pytest
import sqlite_utils

from mailhook.core.model import EventState, StoredEvent
from mailhook.errors import StoreUnavailable
from mailhook.store.sqlite import MIGRATIONS, SqliteStore, migrate, prepare
from tests.support.stored import EVENT


async def test_round_trip_and_replace(tmp_path):
    """What is put comes back equal; a second put replaces it; the folder is created."""
    store = SqliteStore(str(tmp_path / "deep" / "dir" / "m.sqlite3"))
    try:
        assert await store.get("alice@example.com", "uid-1") is None
        await store.put(EVENT)
        assert await store.get("alice@example.com", "uid-1") == EVENT
        await store.put(replace(EVENT, state=EventState.DELETED))
        assert (await store.get("alice@example.com", "uid-1")).state is EventState.DELETED
        assert len(await store.list_events()) == 1
        await store.ping()
    finally:
        await store.close()


async def test_state_survives_reopen_and_uses_wal(tmp_path):
    """A reopened store has the same events, and the file is in WAL mode."""
    path = str(tmp_path / "m.sqlite3")
    store = SqliteStore(path)
    await store.put(EVENT)
    await store.close()
    again = SqliteStore(path)
    try:
        assert await again.get("alice@example.com", "uid-1") == EVENT
    finally:
        await again.close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_migrations_are_applied_once():
    """migrate() brings a new database to the newest version and is idempotent."""
    db = sqlite_utils.Database(memory=True)
    assert migrate(db) == len(MIGRATIONS)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert migrate(db) == len(MIGRATIONS)
    assert "events" in db.table_names()


async def test_lookups_on_the_callers_thread_see_every_write(tmp_path):
    """The lookup connection reads what the store thread wrote, right after the write."""
    import threading

    store = SqliteStore(str(tmp_path / "m.sqlite3"))
    try:
        await store.open()
        threads = set()
        original = store._get

        def on_store_thread(organizer, uid):
            threads.add(threading.get_ident())
            return original(organizer, uid)

        store._get = on_store_thread  # type: ignore[method-assign]
        for sequence in range(5):
            await store.put(replace(EVENT, sequence=sequence))
            assert (await store.get("alice@example.com", "uid-1")).sequence == sequence
        assert threads == set()  # every lookup ran here, none waited for the store thread
    finally:
        await store.close()


async def test_a_busy_database_sends_the_lookup_to_the_store_thread(tmp_path):
    """A lookup connection told "database is locked" (WAL readers see that only in rare moments
    such as recovery) does not fail the message: the store thread, with its busy timeout, asks."""

    class Busy:
        def execute(self, *args):
            raise sqlite3.OperationalError("database is locked")

        def close(self):
            pass

    store = SqliteStore(str(tmp_path / "m.sqlite3"))
    try:
        await store.put(EVENT)
        store._reader = Busy()  # type: ignore[assignment]
        assert await store.get("alice@example.com", "uid-1") == EVENT
    finally:
        await store.close()


async def test_synchronous_setting_reaches_sqlite(tmp_path):
    for setting, expected in (("full", 2), ("normal", 1)):
        store = SqliteStore(str(tmp_path / f"{setting}.sqlite3"), setting)
        try:
            await store.open()
            value = await store._run(lambda: store._open().execute("PRAGMA synchronous").fetchone()[0])
            assert value == expected
        finally:
            await store.close()


async def test_page_caches_hold_a_large_stores_indexes(tmp_path):
    """Both connections get caches big enough for the indexes of ~100 000 events."""
    from mailhook.store.sqlite import READER_CACHE_KIB, WRITER_CACHE_KIB

    store = SqliteStore(str(tmp_path / "m.sqlite3"))
    try:
        await store.get("alice@example.com", "uid-1")  # opens the writer, then the reader
        await store.get("alice@example.com", "uid-1")
        writer = await store._run(lambda: store._open().execute("PRAGMA cache_size").fetchone()[0])
        assert writer == -WRITER_CACHE_KIB and WRITER_CACHE_KIB >= 16 * 1024
        assert store._reader is not None
        assert store._reader.execute("PRAGMA cache_size").fetchone()[0] == -READER_CACHE_KIB
        assert READER_CACHE_KIB >= 8 * 1024
    finally:
        await store.close()


def _other_event(number: int) -> StoredEvent:
    return replace(EVENT, uid=f"uid-{number}", calendar="X" * 2000)


async def test_failed_write_is_raised_and_reported_until_one_works(tmp_path, caplog):
    """A write the disk cannot take raises StoreUnavailable, the store pings as failing and the
    error is logged once; the first write that works again clears it."""
    store = SqliteStore(str(tmp_path / "m.sqlite3"))
    try:
        await store.put(EVENT)
        await store.cap_pages(1)  # the disk is full from here on
        with pytest.raises(StoreUnavailable, match="full"):
            for number in range(100):
                await store.put(_other_event(number))
        with pytest.raises(StoreUnavailable, match="full"):
            await store.put(_other_event(1000))
        with pytest.raises(StoreUnavailable, match="the last write to the store failed"):
            await store.ping()
        assert await store.get("alice@example.com", "uid-1") == EVENT  # reads still work
        await store.cap_pages(None)
        await store.put(_other_event(1000))
        await store.ping()
    finally:
        await store.close()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "disk is full" in errors[0].getMessage()
    assert any("works again" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_file_gone_under_the_store_is_refused_and_rescued(tmp_path, caplog, how):
    """When the file is deleted or replaced while open, reads, writes and pings fail (logged once
    at error level) and what the store held is saved beside it."""
    path = tmp_path / "m.sqlite3"
    store = SqliteStore(str(path))
    try:
        await store.put(EVENT)
        path.unlink()
        if how == "replaced":
            sqlite3.connect(path).execute("create table other (x)").connection.close()
        with pytest.raises(StoreUnavailable, match=how):
            await store.put(replace(EVENT, sequence=4))
        with pytest.raises(StoreUnavailable, match=how):
            await store.get("alice@example.com", "uid-1")
        with pytest.raises(StoreUnavailable, match=how):
            await store.ping()
    finally:
        await store.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and how in errors[0]
    [rescued] = tmp_path.glob("m.sqlite3.rescued-*")
    assert str(rescued) in errors[0]
    copy = SqliteStore(str(rescued))
    try:
        assert await copy.get("alice@example.com", "uid-1") == EVENT
    finally:
        await copy.close()


async def test_missing_store_is_not_started_again_empty(tmp_path, caplog):
    """A store file that disappeared while mailhook was stopped is reported, not recreated empty,
    until the note beside it is deleted on purpose."""
    path = tmp_path / "m.sqlite3"
    store = SqliteStore(str(path))
    await store.put(EVENT)
    await store.close()
    for leftover in tmp_path.glob("m.sqlite3*"):
        if not leftover.name.endswith(".created"):
            leftover.unlink()
    again = SqliteStore(str(path))
    try:
        await again.open()  # does not raise: the daemon starts and holds invitations
        with pytest.raises(StoreUnavailable, match="missing"):
            await again.get("alice@example.com", "uid-1")
        with pytest.raises(StoreUnavailable, match="missing"):
            await again.put(EVENT)
        with pytest.raises(StoreUnavailable, match="missing"):
            await again.ping()
    finally:
        await again.close()
    assert prepare(str(path)) == ""
    assert not path.exists()
    assert any("missing" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    (tmp_path / "m.sqlite3.created").unlink()
    fresh = SqliteStore(str(path))
    try:
        assert await fresh.get("alice@example.com", "uid-1") is None
        await fresh.ping()
    finally:
        await fresh.close()


async def test_note_sent_is_true_only_the_first_time(tmp_path):
    """A once-per-event notice is recorded: the first note says so, later ones (also after a
    reopen) do not, and another kind or event counts apart."""
    path = str(tmp_path / "s.sqlite3")
    store = SqliteStore(path)
    assert await store.note_sent("a@example.com", "uid-1", "no_account", 1.0) is True
    assert await store.note_sent("a@example.com", "uid-1", "no_account", 2.0) is False
    assert await store.note_sent("a@example.com", "uid-2", "no_account", 2.0) is True
    assert await store.note_sent("a@example.com", "uid-1", "other", 2.0) is True
    await store.close()
    reopened = SqliteStore(path)
    assert await reopened.note_sent("a@example.com", "uid-1", "no_account", 3.0) is False
    await reopened.close()
