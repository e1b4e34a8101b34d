"""Work done apart from any message, each kind in its own loop: moving recurring events'
conferences on when their occurrence is over, and the retry queue of deletions and updates
TrueConf has not taken yet.

The daemon starts both loops and cancels them at shutdown; ``mailhook reschedule`` runs one
rescheduling pass. Each piece of work is taken under the event's lock and checked against the
store again, so a message handled meanwhile always wins.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from datetime import datetime

from mailhook.conferences import Conferences, backoff
from mailhook.core.series import next_occurrence
from mailhook.errors import PermanentError, StoreUnavailable, TemporaryError, TrueConfRejected
from mailhook.locks import EventLocks, KeyedLocks, StoreLocks
from mailhook.postponed_check import Owner
from mailhook.store.base import Store
from mailhook.store.claims import claimed
from mailhook.store.upkeep import prune

log = logging.getLogger("mailhook.background")
DEFAULT_LEASE = 45.0  # seconds (the shipped settings' lease: see mailhook.store.claims.lease)


class _Loop:
    """One kind of background work: a pass now, then one every ``interval()`` seconds."""

    name = "background"
    report = "%d piece(s) of background work done"  # the log line after a pass that did some

    def __init__(self, conferences: Callable[[], Conferences], store: Store,
                 locks: KeyedLocks | EventLocks | StoreLocks, clock: Callable[[], datetime],
                 lease: Callable[[], float] = lambda: DEFAULT_LEASE) -> None:
        # Looked up for each pass, so that a reload's new settings apply to the next one.
        self._conferences = conferences
        self._store = store
        self._locks = locks
        self._clock = clock
        # Work is claimed in the store row by row, for this long (see mailhook.store.claims), so
        # that instances sharing one store each do a piece once.
        self._lease = lease

    async def run_once(self) -> int:
        """One pass; the number of pieces of work done."""
        raise NotImplementedError

    async def run_forever(self, interval: Callable[[], float]) -> None:
        """Pass after pass until cancelled; a failing pass is logged and the next one comes."""
        while True:
            try:
                done = await self.run_once()
                if done:
                    log.info(self.report, done)
            except StoreUnavailable:
                pass  # the store logs its own trouble, once
            except Exception:
                log.exception("%s pass failed", self.name)
            await asyncio.sleep(interval())


class Rescheduler(_Loop):
    """Moves each recurring event's conference to its next occurrence once the one it is set
    for is over (and catches up after downtime: the first pass runs at start-up)."""

    name = "reschedule"
    report = "rescheduled %d conference(s) to their next occurrence"

    def __init__(self, conferences: Callable[[], Conferences], store: Store,
                 locks: KeyedLocks | EventLocks | StoreLocks, clock: Callable[[], datetime],
                 lease: Callable[[], float] = lambda: DEFAULT_LEASE,
                 keep_deleted_days: Callable[[], float] = lambda: 0.0) -> None:
        super().__init__(conferences, store, locks, clock, lease)
        self._keep_deleted_days = keep_deleted_days

    async def run_once(self) -> int:
        moved = await self._move_due()
        await prune(self._store, self._keep_deleted_days(), self._clock().timestamp())
        return moved

    async def _move_due(self) -> int:
        now = self._clock()
        conferences = self._conferences()
        moved = 0
        async for due in claimed(self._store.claim_due_reschedules, now.timestamp(),
                                 self._lease()):
            async with self._locks.hold((due.organizer, due.uid)):
                stored = await self._store.get(due.organizer, due.uid)
                if stored is None or stored != due:
                    continue  # changed by a message meanwhile; that message rescheduled it
                try:
                    # A one-off event keeps no series: when it is over, nothing follows.
                    occurrence = await asyncio.to_thread(
                        next_occurrence, stored.calendar, now, conferences.config.default_zone
                    ) if stored.calendar else None
                    moved += await conferences.follow(stored, stored.calendar, occurrence)
                except Exception as exc:  # noqa: BLE001 - logged; the event is set aside
                    # One broken event (unreadable series, conference refused or gone) must
                    # not stop every other series from moving on: stop rescheduling it.
                    log.error("uid=%s: cannot reschedule, leaving it: %s", stored.uid, exc)
                    await self._store.put(dataclasses.replace(stored, occurrence_end=0.0))
        return moved


class RetryQueue(_Loop):
    """Pushes the deletions and updates TrueConf has not taken yet, with backoff, until it
    confirms them (across restarts: the queue is in the store)."""

    name = "retry"
    report = "TrueConf took %d postponed deletion(s)/update(s)"

    async def run_once(self) -> int:
        now = self._clock().timestamp()
        conferences = self._conferences()
        done = 0
        async for pending in claimed(self._store.claim_due_deletes, now, self._lease()):
            done += await conferences.deletions.attempt(pending, postponed=True)
        async for due in claimed(self._store.claim_due_updates, now, self._lease()):
            async with self._locks.hold((due.organizer, due.uid)):
                done += await self._update(conferences, due.organizer, due.uid)
        return done

    async def _update(self, conferences: Conferences, organizer: str, uid: str) -> bool:
        """Retry one postponed update; True when TrueConf took it."""
        stored = await self._store.get(organizer, uid)
        if stored is None or not stored.pending_update or stored.spec is None:
            return False
        try:
            owner = await conferences.owner_of(stored)
            if owner is Owner.OTHER:  # logged; the other meeting is left alone
                await self._store.put(dataclasses.replace(stored, pending_update=False))
                return False
            if owner is Owner.GONE:
                raise TrueConfRejected(f"conference {stored.conference_id} is gone", status=404)
            taken = await conferences.try_update(stored.conference_id, stored.spec)
        except TemporaryError as exc:  # TrueConf could not say whose the conference is
            log.warning("conference %s: update postponed: %s", stored.conference_id, exc)
            taken = False
        except PermanentError as exc:
            log.error("conference %s refused the postponed update, dropping it: %s",
                      stored.conference_id, exc)
            await self._store.put(dataclasses.replace(stored, pending_update=False))
            return False
        if taken:
            await self._store.put(dataclasses.replace(stored, pending_update=False, attempts=0))
            return True
        attempts = stored.attempts + 1
        retry_at = self._clock().timestamp() + backoff(conferences.config, attempts + 1)
        await self._store.put(dataclasses.replace(stored, attempts=attempts, retry_at=retry_at))
        return False
