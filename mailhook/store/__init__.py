"""What mailhook remembers about each event, behind one interface.

Backends implement :class:`Store`; :func:`open_store` picks one from the settings.
"""

from __future__ import annotations

from mailhook.store.base import EventState, Store, StoredEvent
from mailhook.store.sqlite import SqliteStore

__all__ = ["EventState", "SqliteStore", "Store", "StoredEvent", "open_store"]


def open_store(path: str) -> Store:
    """Open the configured store (SQLite is the only backend so far)."""
    return SqliteStore(path)
