"""The store's values and the interface every backend implements.

Several mailhook instances may share one store (PostgreSQL). They coordinate through it: the
per-event lock is held in the store, and due work (postponed deletions and updates, moves of
recurring conferences) is claimed row by row with a lease, so each piece is done once while
any instance lives, and taken over by another once the lease of an instance that died ends.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from mailhook.core.model import EventState, PendingDelete, StoredEvent

__all__ = ["CachedUsers", "EventState", "PendingDelete", "Store", "StoredEvent"]

# Due work fetched by one claim at most.
CLAIM_BATCH = 50


@dataclass(frozen=True, slots=True)
class CachedUsers:
    """TrueConf's user list as last fetched: (e-mail, TrueConf id, display name) each."""

    fetched_at: float  # epoch seconds
    users: tuple[tuple[str, str, str], ...]


class Store(Protocol):
    """Storage of events keyed by (organizer, UID)."""

    async def open(self) -> None:
        """Connect and bring the schema up to date (under the backend's lock)."""

    async def get(self, organizer: str, uid: str) -> StoredEvent | None:
        """The stored event, or None."""

    async def put(self, event: StoredEvent) -> None:
        """Insert or replace the event (ending any claim on it)."""

    async def list_events(self) -> list[StoredEvent]:
        """Every stored event, newest first."""

    def event_lock(self, organizer: str, uid: str) -> AbstractAsyncContextManager[None]:
        """Hold the event for one message or one piece of due work, against every other task,
        process and instance using this store; let go if the holder dies."""

    async def due(self, now: float) -> list[StoredEvent]:
        """Active events whose scheduled occurrence has ended by ``now`` (epoch seconds)."""

    async def due_updates(self, now: float) -> list[StoredEvent]:
        """Active events whose pending update is due for another try."""

    async def claim_due_reschedules(self, now: float, owner: str, lease: float,
                                    limit: int = CLAIM_BATCH) -> list[StoredEvent]:
        """Take up to ``limit`` of the events ``due`` at ``now`` that nobody holds a claim on,
        for ``lease`` seconds (a later ``put`` ends the claim). A claim that ran out is taken
        again: the work is checked against the store under the event's lock, so doing it
        twice costs effort, never a second effect."""

    async def claim_due_updates(self, now: float, owner: str, lease: float,
                                    limit: int = CLAIM_BATCH) -> list[StoredEvent]:
        """Take the pending updates due at ``now`` that nobody holds a claim on."""

    async def claim_due_deletes(self, now: float, owner: str, lease: float,
                                    limit: int = CLAIM_BATCH) -> list[PendingDelete]:
        """Take the deletions due at ``now`` that nobody holds a claim on (a later
        ``put_pending_delete`` or ``finish_delete`` ends the claim)."""

    async def put_pending_delete(self, pending: PendingDelete) -> None:
        """Record (or re-schedule) a deletion TrueConf has not confirmed yet."""

    async def due_deletes(self, now: float) -> list[PendingDelete]:
        """Deletions due for another try."""

    async def pending_deletes(self) -> list[PendingDelete]:
        """Every deletion TrueConf has not confirmed yet."""

    async def finish_delete(self, conference_id: str) -> None:
        """Forget a deletion TrueConf confirmed."""

    async def note_sent(self, organizer: str, uid: str, kind: str, now: float) -> bool:
        """Record that the organizer is sent the notice ``kind`` about the event (at ``now``,
        epoch seconds); True only the first time, so that a notice meant once per event
        ("no_account") is not repeated by MTA retries, per-recipient copies or updates."""

    async def load_users(self, server: str) -> CachedUsers | None:
        """The user list last fetched from the TrueConf Server at ``server``."""

    async def save_users(self, server: str, users: CachedUsers) -> None:
        """Keep the user list fetched from ``server``."""

    async def prune_deleted(self, before: float) -> int:
        """Forget events whose conference was deleted before ``before``; how many."""

    async def count_by_state(self) -> dict[str, int]:
        """How many events are in each state."""

    async def count_pending(self) -> int:
        """Deletions and updates still waiting for TrueConf."""

    async def ping(self) -> None:
        """Raise when the store cannot be used."""

    async def close(self) -> None:
        """Release the backend."""
