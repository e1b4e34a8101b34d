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


def build_store(section: StoreSettings, application_name: str = "mailhook") -> Store:
    """The configured store, not opened yet: PostgreSQL when ``url`` is set, else SQLite."""
    if section.url:
        from mailhook.store.postgres import PostgresStore

        return PostgresStore(section.url, section.password(), pool_size=section.pool_size,
                             application_name=application_name)
    return SqliteStore(section.path, section.synchronous)
