"""The store's values and the interface every backend implements."""

from __future__ import annotations

from typing import Protocol

from mailhook.core.model import EventState, PendingDelete, StoredEvent

__all__ = ["EventState", "PendingDelete", "Store", "StoredEvent"]


class Store(Protocol):
    """Storage of events keyed by (organizer, UID)."""

    async def open(self) -> None:
        """Make the store ready now (create it, bring its schema up to date) rather than on
        first use."""

    async def get(self, organizer: str, uid: str) -> StoredEvent | None:
        """The stored event, or None."""

    async def put(self, event: StoredEvent) -> None:
        """Insert or replace the event."""

    async def list_events(self) -> list[StoredEvent]:
        """Every stored event, newest first."""

    async def due(self, now: float) -> list[StoredEvent]:
        """Active events whose scheduled occurrence has ended by ``now`` (epoch seconds)."""

    async def due_updates(self, now: float) -> list[StoredEvent]:
        """Active events whose pending update is due for another try."""

    async def put_pending_delete(self, pending: PendingDelete) -> None:
        """Record (or re-schedule) a deletion TrueConf has not confirmed yet."""

    async def due_deletes(self, now: float) -> list[PendingDelete]:
        """Deletions due for another try."""

    async def finish_delete(self, conference_id: str) -> None:
        """Forget a deletion TrueConf confirmed."""

    async def note_sent(self, organizer: str, uid: str, kind: str, now: float) -> bool:
        """Record that the organizer is sent the notice ``kind`` about the event (at ``now``,
        epoch seconds); True only the first time, so that a notice meant once per event
        ("no_account") is not repeated by MTA retries, per-recipient copies or updates."""

    async def count_by_state(self) -> dict[str, int]:
        """How many events are in each state."""

    async def count_pending(self) -> int:
        """Deletions and updates still waiting for TrueConf."""

    async def ping(self) -> None:
        """Raise when the store cannot be used."""

    async def close(self) -> None:
        """Release the backend."""
