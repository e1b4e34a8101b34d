"""``mailhook store copy | backup | prune``.

Copying moves a site between backends (SQLite to PostgreSQL as it grows to several hosts, or
back) without losing track of a conference; it goes through the store interface, so any backend
can be either side. Each function prints for a person at a terminal and returns the exit status.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from mailhook.config import Settings
from mailhook.store import Store, build_store
from mailhook.store.upkeep import prune

Print = Callable[[str], None]


async def copy_store(source: Settings, target: Settings, out: Print, err: Print) -> int:
    """Copy every event, pending deletion and the kept user list from one store to another.

    Rows already in the target are replaced by the source's, so running it again is harmless;
    rows only in the target are kept.
    """
    if _same_store(source, target):
        err("mailhook: the two configs name the same store; nothing to copy")
        return 1
    origin, destination = build_store(source.store), build_store(target.store)
    try:
        await origin.open()
        await destination.open()
        events, deletes, users = await _copy(origin, destination, source.trueconf.server_url)
    finally:
        await origin.close()
        await destination.close()
    out(f"copied {events} event(s), {deletes} pending deletion(s) and "
        f"{'the' if users else 'no'} TrueConf user list from {where(source)} to {where(target)}")
    return 0


async def _copy(origin: Store, destination: Store, server: str) -> tuple[int, int, bool]:
    events = await origin.list_events()
    for event in events:
        await destination.put(event)
    deletes = await origin.pending_deletes()
    for pending in deletes:
        await destination.put_pending_delete(pending)
    users = await origin.load_users(server)
    if users is not None:
        await destination.save_users(server, users)
    return len(events), len(deletes), users is not None


def where(settings: Settings) -> str:
    """The store named for people, never with a password."""
    if settings.store.url:
        from mailhook.store.postgres import describe

        return describe(settings.store.url)
    return settings.store.path


def _same_store(one: Settings, other: Settings) -> bool:
    if one.store.url or other.store.url:
        return where(one) == where(other)
    return Path(one.store.path).resolve() == Path(other.store.path).resolve()


async def backup(settings: Settings, target: str, out: Print, err: Print) -> int:
    """Write a consistent copy of the SQLite store to ``target`` while mailhook runs."""
    from mailhook.store.sqlite import SqliteStore
    from mailhook.store.sqlite_schema import missing

    if settings.store.url:
        err("mailhook: store backup is for the SQLite store; back up PostgreSQL with its own "
            "tools (pg_dump, or the replication and backups the database already has)")
        return 1
    if Path(target).exists():
        err(f"mailhook: {target} exists; name a new file")
        return 1
    if gone := missing(settings.store.path):
        err(f"mailhook: {gone}")
        return 1
    if not Path(settings.store.path).exists():
        err(f"mailhook: {settings.store.path} does not exist yet; nothing to back up")
        return 1
    store = SqliteStore(settings.store.path, settings.store.synchronous)
    try:
        await store.backup(target)
    finally:
        await store.close()
    out(f"backed up {settings.store.path} to {target}")
    return 0


async def prune_command(settings: Settings, out: Print) -> int:
    """``mailhook store prune``: one pruning pass now."""
    store = build_store(settings.store)
    try:
        await store.open()
        pruned = await prune(store, settings.store.keep_deleted_days, time.time())
    finally:
        await store.close()
    out(f"forgot {pruned} event(s) deleted over {settings.store.keep_deleted_days:g} day(s) ago")
    return 0
