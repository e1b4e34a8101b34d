"""What mailhook remembers about each event, behind one interface.

Backends implement :class:`Store`; SQLite is the one there is so far.
"""

from __future__ import annotations

from mailhook.store.base import EventState, Store, StoredEvent
from mailhook.store.sqlite import SqliteStore

__all__ = ["EventState", "SqliteStore", "Store", "StoredEvent"]

