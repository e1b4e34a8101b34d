"""``mailhook store copy | backup | prune`` as an admin runs them: real processes, real stores."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

from mailhook.core.model import EventState, PendingDelete, StoredEvent
from mailhook.store import CachedUsers, SqliteStore, Store
from mailhook.store.postgres import PostgresStore
from tests.support.process import mailhook

SERVER = "http://127.0.0.1:9"
USERS = CachedUsers(1_700_000_000.0, (("bob@example.com", "bob", "Bob B"),))
EVENT = StoredEvent(organizer="alice@example.com", uid="uid-1", state=EventState.ACTIVE,
                    tag="tag1", conference_id="42", url="https://video.example.com/c/42",
                    attendees=("bob@example.com",), sequence=3, first_seen=10.0, updated_at=20.0)


def config(tmp_path: Path, name: str, store: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f"""
[trueconf]
server_url = "{SERVER}"
client_id = "mailhook"
client_secret = "s3cret-value"
[policy]
local_domains = ["example.com"]
[store]
{store}
""")
    return path


def postgres_config(tmp_path: Path, server: Any, url: str) -> Path:
    password = tmp_path / "db-password"
    password.write_text(server.password + "\n")
    return config(tmp_path, "postgres", f'url = "{url}"\npassword_file = "{password}"')


async def fill(store: Store, events: int) -> None:
    for number in range(events):
        await store.put(replace(EVENT, uid=f"uid-{number}", conference_id=str(number)))
    await store.put_pending_delete(PendingDelete("7", "alice@example.com", "uid-7", attempts=2,
                                                 retry_at=5.0, last_error="503"))
    await store.save_users(SERVER, USERS)
    await store.close()


async def contents(store: Store) -> tuple[list[Any], list[Any], Any]:
    try:
        events = sorted(await store.list_events(), key=lambda e: e.uid)
        return events, await store.pending_deletes(), await store.load_users(SERVER)
    finally:
        await store.close()


def test_copy_sqlite_to_postgres_and_back(tmp_path: Path, postgres_server: Any) -> None:
    """store copy moves every event, pending deletion and the user list from SQLite to
    PostgreSQL and back; a second run changes nothing; the password is never printed."""
    sqlite_path = tmp_path / "a.sqlite3"
    asyncio.run(fill(SqliteStore(str(sqlite_path)), 25))
    url = postgres_server.new_database()
    pg = postgres_config(tmp_path, postgres_server, url)
    lite = config(tmp_path, "sqlite", f'path = "{sqlite_path}"')
    for _ in range(2):
        result = mailhook("store", "copy", "--from", str(lite), "--to", str(pg))
        assert result.returncode == 0, result.stderr
        assert "copied 25 event(s), 1 pending deletion(s) and the TrueConf user list" in result.stdout
    original = asyncio.run(contents(SqliteStore(str(sqlite_path))))
    assert asyncio.run(contents(PostgresStore(url, postgres_server.password))) == original
    back = config(tmp_path, "back", f'path = "{tmp_path / "b.sqlite3"}"')
    result = mailhook("store", "copy", "--from", str(pg), "--to", str(back))
    assert result.returncode == 0, result.stderr
    assert asyncio.run(contents(SqliteStore(str(tmp_path / "b.sqlite3")))) == original
    assert postgres_server.password not in result.stdout + result.stderr


def test_copy_refuses_the_same_store(tmp_path: Path) -> None:
    """Copying a store onto itself is refused with a clear line."""
    lite = config(tmp_path, "sqlite", f'path = "{tmp_path / "a.sqlite3"}"')
    result = mailhook("store", "copy", "--from", str(lite), "--to", str(lite))
    assert result.returncode == 1 and "same store" in result.stderr


def test_backup_is_a_consistent_copy_and_never_overwrites(tmp_path: Path) -> None:
    """store backup writes a copy with every event; it refuses an existing file and a
    PostgreSQL store."""
    sqlite_path = tmp_path / "a.sqlite3"
    asyncio.run(fill(SqliteStore(str(sqlite_path)), 5))
    lite = config(tmp_path, "sqlite", f'path = "{sqlite_path}"')
    target = tmp_path / "backup.sqlite3"
    result = mailhook("store", "backup", "--config", str(lite), str(target))
    assert result.returncode == 0, result.stderr
    assert sqlite3.connect(target).execute("select count(*) from events").fetchone()[0] == 5
    again = mailhook("store", "backup", "--config", str(lite), str(target))
    assert again.returncode == 1 and "exists" in again.stderr
    pg = config(tmp_path, "pg", 'url = "postgresql://mailhook@127.0.0.1:9/x"')
    refused = mailhook("store", "backup", "--config", str(pg), str(tmp_path / "other"))
    assert refused.returncode == 1 and "pg_dump" in refused.stderr


def test_prune_forgets_events_deleted_long_ago(tmp_path: Path) -> None:
    """store prune forgets events deleted over keep_deleted_days ago and keeps the rest."""
    sqlite_path = tmp_path / "a.sqlite3"

    async def prepare() -> None:
        store = SqliteStore(str(sqlite_path))
        await store.put(replace(EVENT, uid="old", state=EventState.DELETED, updated_at=1.0))
        await store.put(replace(EVENT, uid="active", updated_at=1.0))
        await store.close()

    asyncio.run(prepare())
    lite = config(tmp_path, "sqlite", f'path = "{sqlite_path}"\nkeep_deleted_days = 30')
    result = mailhook("store", "prune", "--config", str(lite))
    assert result.returncode == 0, result.stderr
    assert "forgot 1 event(s)" in result.stdout
    uids = [r[0] for r in sqlite3.connect(sqlite_path).execute("select uid from events")]
    assert uids == ["active"]


def test_check_config_never_shows_the_database_password(tmp_path: Path) -> None:
    """check-config prints the store's URL with a password written into it masked, and never
    the password file's contents."""
    secret = tmp_path / "db-password"
    secret.write_text("file-pa55word-xyz\n")
    pg = config(tmp_path, "pg", 'url = "postgresql://mailhook:url-pa55word-xyz@db.example.com/'
                                f'mailhook?sslmode=require"\npassword_file = "{secret}"')
    result = mailhook("check-config", "--config", str(pg))
    assert result.returncode == 0, result.stderr
    shown = result.stdout + result.stderr
    assert 'url = "postgresql://mailhook:********@db.example.com/mailhook?sslmode=require"' in shown
    assert "url-pa55word-xyz" not in shown and "file-pa55word-xyz" not in shown


async def test_the_periodic_pass_prunes_long_deleted_events(start_daemon) -> None:
    """The daemon's rescheduling pass also forgets events deleted over keep_deleted_days ago."""
    daemon = await start_daemon(store={"keep_deleted_days": 30})
    await daemon.store.put(replace(EVENT, uid="old", state=EventState.DELETED, updated_at=1.0))
    await daemon.store.put(replace(EVENT, uid="recent", state=EventState.DELETED,
                                   updated_at=daemon.app.clock().timestamp()))
    await daemon.app.rescheduler.run_once()
    assert [e.uid for e in await daemon.store.list_events()] == ["recent"]
