"""The store's values and the interface every backend implements."""

from __future__ import annotations

from typing import Protocol

from mailhook.core.model import EventState, StoredEvent

__all__ = ["EventState", "Store", "StoredEvent"]


class Store(Protocol):
    """Storage of events keyed by (organizer, UID)."""

    async def get(self, organizer: str, uid: str) -> StoredEvent | None:
        """The stored event, or None."""

    async def put(self, event: StoredEvent) -> None:
        """Insert or replace the event."""

    async def list_events(self) -> list[StoredEvent]:
        """Every stored event, newest first."""

    async def due(self, now: float) -> list[StoredEvent]:
        """Active events whose scheduled occurrence has ended by ``now`` (epoch seconds)."""

    async def ping(self) -> None:
        """Raise when the store cannot be used."""

    async def close(self) -> None:
        """Release the backend."""
