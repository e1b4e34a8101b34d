"""What mailhook remembers about each event, behind one interface.

Backends implement :class:`Store`: SQLite (one file, the default for one host) and PostgreSQL
(one database shared by several instances). ``build_store`` picks the configured one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailhook.store.base import CachedUsers, EventState, Store, StoredEvent
from mailhook.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from mailhook.config import StoreSettings

__all__ = ["CachedUsers", "EventState", "SqliteStore", "Store", "StoredEvent", "build_store"]


def build_store(section: StoreSettings, read_only: bool = False) -> Store:
    """The configured store, not opened yet: PostgreSQL when ``url`` is set, else SQLite.
    ``read_only`` (for tools that only look) keeps a SQLite file from being created, migrated
    or written; a database is read through the same interface as always."""
    if section.url:
        from mailhook.store.postgres import PostgresStore

        return PostgresStore(section.url, section.password(), pool_size=section.pool_size)
    return SqliteStore(section.path, section.synchronous, read_only=read_only)
