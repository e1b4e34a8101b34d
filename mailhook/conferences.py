"""The effects on TrueConf: an event's conference created, updated, moved or deleted, each
with its store write, and found again by its tag after an interrupted create.

The store is written before TrueConf is asked (a create is recorded as CREATING, a deletion as
pending), so that a crash or a failure in between is recovered: by looking the conference up
by its tag, or by the retry queue (``mailhook.background``). Nothing here decides what an event
needs; that is the plan's business (``mailhook.core.plan``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from mailhook.core.blocks import is_safe_url
from mailhook.core.decide import Invitation, build_spec, event_tag, follow
from mailhook.core.model import (
    Conference,
    ConferenceSpec,
    EventState,
    Invitee,
    PendingDelete,
    StoredEvent,
)
from mailhook.core.plan import FlowConfig, Plan
from mailhook.core.series import Occurrence
from mailhook.errors import PermanentError, StoreUnavailable, TemporaryError, TrueConfRejected
from mailhook.faults import checkpoint
from mailhook.postponed_check import Owner, owner_of
from mailhook.store.base import Store
from mailhook.trueconf.directory import Account, Directory

log = logging.getLogger("mailhook.conferences")
Clock = Callable[[], datetime]


class ConferenceApi(Protocol):
    """The TrueConf operations the effects need (the API client implements these)."""

    async def create_conference(self, spec: ConferenceSpec) -> Conference: ...
    async def update_conference(self, conference_id: str, spec: ConferenceSpec) -> Conference: ...
    async def delete_conference(self, conference_id: str) -> None: ...
    async def find_conference_by_tag(self, tag: str, owner: str) -> Conference | None: ...
    async def get_conference(self, conference_id: str) -> Conference | None: ...


@dataclass(frozen=True, slots=True)
class Made:
    """The event's conference after ``Conferences.ensure``, and what it took."""

    conference: Conference
    spec: ConferenceSpec
    accounts: dict[str, Account]  # addresses with a TrueConf account
    pending: bool  # TrueConf has not taken the update yet (retried in the background)
    made: bool  # made, or adopted by its tag, for this message (not the one already held)
    hosted_by: str = ""  # trueconf.fallback_owner when it owns the conference for the organizer


@dataclass(frozen=True, slots=True)
class Trouble:
    """How long TrueConf trouble has held an event's messages back."""

    since: float  # epoch seconds when it began
    given_up: bool  # past retry.deadline: the message goes on without a new conference
    link: str  # the link of the event's stored conference ("" when there is none)


def backoff(config: FlowConfig, attempts: int) -> float:
    """Seconds to wait after the given number of failed attempts: doubling, capped."""
    delay: float = config.backoff_initial * 2.0 ** (attempts - 1)
    return min(delay, config.backoff_max)


def due_at(occurrence: Occurrence | None) -> float:
    """When the rescheduler should look at the event again (0: never)."""
    return occurrence.end.timestamp() if occurrence is not None else 0.0


class Deletions:
    """Deleting conferences: recorded first, then asked of TrueConf; a failure is retried with
    backoff (doubling, capped) until TrueConf confirms. A 404 counts as done."""

    def __init__(self, config: FlowConfig, store: Store, trueconf: ConferenceApi,
                 clock: Clock) -> None:
        self._config = config
        self._store = store
        self._trueconf = trueconf
        self._clock = clock

    async def delete(self, stored: StoredEvent) -> tuple[str, bool]:
        """Mark the event deleted and delete its conference: (the conference's id, whether
        TrueConf took the deletion now)."""
        now = self._clock().timestamp()
        if not stored.conference_id and stored.state is EventState.CREATING:
            stored = dataclasses.replace(stored, conference_id=await self._orphan_id(stored))
        pending = PendingDelete(stored.conference_id, stored.organizer, stored.uid, retry_at=now)
        if stored.conference_id:
            await self._store.put_pending_delete(pending)
        await self._store.put(dataclasses.replace(
            stored, state=EventState.DELETED, pending_update=False, updated_at=now))
        if not stored.conference_id:
            return "", True
        return stored.conference_id, await self.attempt(dataclasses.replace(pending, retry_at=0.0))

    async def attempt(self, pending: PendingDelete, postponed: bool = False) -> bool:
        """Ask TrueConf to delete; on failure put the deletion off with backoff. A
        ``postponed`` deletion first checks that the conference is still the event's (see
        mailhook.postponed_check): when not, it is dropped, and the other meeting left alone."""
        try:
            if postponed and (owner := await owner_of(
                    self._trueconf, pending.conference_id, pending.organizer, pending.uid,
                    "deletion")) is not Owner.EVENT:
                await self._store.finish_delete(pending.conference_id)
                return owner is Owner.GONE  # gone already: as good as deleted
            await self._trueconf.delete_conference(pending.conference_id)
        except (TemporaryError, PermanentError) as exc:
            attempts = pending.attempts + 1
            log.warning("conference %s: deletion postponed (attempt %d): %s",
                        pending.conference_id, attempts, exc)
            retry_at = self._clock().timestamp() + backoff(self._config, attempts)
            await self._store.put_pending_delete(dataclasses.replace(
                pending, attempts=attempts, retry_at=retry_at, last_error=str(exc)[:200]))
            return False
        await self._store.finish_delete(pending.conference_id)
        return True

    async def discard(self, conference: Conference, invitation: Invitation, *,
                      record: bool) -> None:
        """Delete a conference no invitation will carry. With ``record`` (the store works) a
        failed deletion is retried later; without, it is left to an operator, or to the MTA's
        retry, which finds it by its tag."""
        pending = PendingDelete(conference.id, invitation.organizer, invitation.uid,
                                retry_at=self._clock().timestamp())
        if record:
            await self._store.put_pending_delete(pending)
            await self.attempt(pending)
            return
        try:
            await self._trueconf.delete_conference(conference.id)
        except (TemporaryError, PermanentError) as exc:
            log.error("uid=%s: conference %s could not be recorded nor deleted: %s",
                      invitation.uid, conference.id, exc)

    async def _orphan_id(self, stored: StoredEvent) -> str:
        """The id of a conference an interrupted create may have left on TrueConf, or ""."""
        if stored.spec is None:
            return ""
        try:
            found = await self._trueconf.find_conference_by_tag(stored.tag, stored.spec.owner)
        except (TemporaryError, PermanentError) as exc:
            log.warning("uid=%s: cannot look for a conference left by an interrupted create: %s",
                        stored.uid, exc)
            return ""
        return found.id if found else ""


class Conferences:
    """An event's conference kept in step with its plan, on TrueConf and in the store."""

    def __init__(self, config: FlowConfig, store: Store, trueconf: ConferenceApi,
                 directory: Directory, clock: Clock) -> None:
        self.config = config
        self._store = store
        self._trueconf = trueconf
        self._directory = directory
        self._clock = clock
        self.deletions = Deletions(config, store, trueconf, clock)

    async def ensure(self, invitation: Invitation, planned: Plan) -> Made | None:
        """Create the conference the plan asks for, or bring the stored one in step, and record
        it as active; None when the organizer has no TrueConf account."""
        stored, occurrence = planned.stored, planned.occurrence
        assert occurrence is not None
        wanted = await self._spec(invitation, occurrence, planned.participants)
        if wanted is None:
            return None
        spec, accounts = wanted
        now = self._clock().timestamp()
        conference, pending = await self._create_or_update(invitation, stored, spec, now)
        held = stored.conference_id if stored and stored.state is EventState.ACTIVE else ""
        hosted_by = spec.owner if invitation.organizer not in accounts else ""
        made = Made(conference, spec, accounts, pending, conference.id != held, hosted_by)
        await self._record(invitation, planned, made, now)
        return made

    async def _record(self, invitation: Invitation, planned: Plan, made: Made, now: float) -> None:
        """Store the conference as the event's; a new one that cannot be kept is deleted."""
        stored, conference = planned.stored, made.conference
        if not is_safe_url(conference.url):
            if made.made:
                await self.deletions.discard(conference, invitation, record=True)
            raise TrueConfRejected("TrueConf returned a join link that is not http(s)")
        master = invitation.master
        # A conference made from a changed occurrence keeps SEQUENCE 0, so that the series'
        # own REQUEST (whose SEQUENCE counts apart from the occurrence's) takes it over.
        sequence = master.sequence if master is not None else stored.sequence if stored else 0
        active = StoredEvent(
            organizer=invitation.organizer, uid=invitation.uid, state=EventState.ACTIVE,
            tag=made.spec.tag, conference_id=conference.id, url=conference.url, spec=made.spec,
            attendees=planned.participants, sequence=sequence,
            calendar=planned.series.text,
            first_seen=stored.first_seen if stored and stored.first_seen else now,
            updated_at=now, occurrence_end=due_at(planned.series.occurrence),
            pending_update=made.pending, retry_at=self._retry_at(made.pending, now),
        )
        try:
            await self._store.put(active)
        except StoreUnavailable:
            if made.made:  # unrecorded, it would be a second conference after the MTA's retry
                await self.deletions.discard(conference, invitation, record=False)
            raise

    async def _spec(self, invitation: Invitation, occurrence: Occurrence,
                    addresses: tuple[str, ...]) -> tuple[ConferenceSpec, dict[str, Account]] | None:
        """The conference the event asks for, with the accounts found for its people; None
        when the organizer has no TrueConf account and no trueconf.fallback_owner is set."""
        master = invitation.lead
        accounts = await self._directory.lookup((invitation.organizer, *addresses))
        owner = accounts.get(invitation.organizer)
        if owner is None and self.config.fallback_owner:
            owner = Account(self.config.fallback_owner)
            log.info("organizer %s has no TrueConf account; the conference belongs to %s",
                     invitation.organizer, owner.id)
        if owner is None:
            log.warning("organizer %s has no TrueConf account; invitation forwarded unchanged",
                        invitation.organizer)
            return None
        names = {a.address: a.name for a in master.attendees}
        spec = build_spec(
            master, occurrence, owner=owner.id,
            invitees=invitees(addresses, accounts, names, owner.id),
            participants=1 + len(addresses), policy=self.config.policy,
            tag=event_tag(invitation.organizer, invitation.uid),
            fallback_topic=self.config.fallback_topic,
        )
        return spec, accounts

    async def _create_or_update(self, invitation: Invitation, stored: StoredEvent | None,
                                spec: ConferenceSpec, now: float) -> tuple[Conference, bool]:
        """The conference for ``spec``, and whether TrueConf still has to take an update."""
        if stored and stored.state is EventState.ACTIVE and stored.conference_id:
            known = Conference(stored.conference_id, stored.url)
            if stored.spec == spec and not stored.pending_update:
                return known, False
            try:
                return known, not await self.try_update(stored.conference_id, spec)
            except TrueConfRejected as exc:
                if exc.status != 404:
                    raise
                # Deleted on TrueConf behind mailhook's back: the event still asks for one.
                log.warning("conference %s is gone from TrueConf; creating a new one", known.id)
        if stored and stored.state is EventState.CREATING:
            # An earlier attempt may have created it before mailhook could record it.
            found = await self._trueconf.find_conference_by_tag(spec.tag, spec.owner)
            if found is not None:
                return await self._trueconf.update_conference(found.id, spec), False
        await self._store.put(StoredEvent(
            organizer=invitation.organizer, uid=invitation.uid, state=EventState.CREATING,
            tag=spec.tag, spec=spec,
            first_seen=stored.first_seen if stored and stored.first_seen else now,
            updated_at=now, retry_since=stored.retry_since if stored else 0.0,
        ))
        await checkpoint("before-create")
        conference = await self._trueconf.create_conference(spec)
        await checkpoint("after-create")
        return conference, False

    async def owner_of(self, stored: StoredEvent) -> Owner:
        """Whose the event's conference is now, before a postponed update (see
        mailhook.postponed_check; TrueConf's errors are raised)."""
        return await owner_of(self._trueconf, stored.conference_id, stored.organizer,
                              stored.uid, "update")

    async def try_update(self, conference_id: str, spec: ConferenceSpec) -> bool:
        """Update the conference; False when TrueConf is unavailable (it is retried later)."""
        try:
            await self._trueconf.update_conference(conference_id, spec)
        except TemporaryError as exc:
            log.warning("conference %s: update postponed: %s", conference_id, exc)
            return False
        return True

    def _retry_at(self, pending: bool, now: float) -> float:
        """When a postponed update is first retried (0 when nothing is postponed)."""
        return now + backoff(self.config, 1) if pending else 0.0

    async def follow(self, stored: StoredEvent, series_text: str,
                     occurrence: Occurrence | None) -> bool:
        """Schedule the conference for ``occurrence`` (None: the series is over); True if it
        moved (or, with recurrence.after_series_end = "delete", went)."""
        assert stored.spec is not None
        now = self._clock().timestamp()
        if occurrence is None:
            if self.config.delete_after_series_end:
                await self.deletions.delete(stored)
                return True
            await self._store.put(dataclasses.replace(
                stored, calendar=series_text, occurrence_end=0.0, updated_at=now))
            return False
        spec = follow(stored.spec, occurrence)
        changed = spec != stored.spec or stored.pending_update
        pending = changed and not await self.try_update(stored.conference_id, spec)
        await self._store.put(dataclasses.replace(
            stored, spec=spec, calendar=series_text, occurrence_end=due_at(occurrence),
            updated_at=now, pending_update=pending, retry_at=self._retry_at(pending, now)))
        return spec != stored.spec

    async def uninvite(self, invitation: Invitation, stored: StoredEvent) -> None:
        """Take the attendees a CANCEL names off the conference (the rest keep it)."""
        assert invitation.master is not None
        assert stored.spec is not None
        removed = {a.address for a in invitation.master.attendees}
        removed_ids = {account.id for account in (await self._directory.lookup(removed)).values()}
        spec = dataclasses.replace(
            stored.spec, invitees=tuple(i for i in stored.spec.invitees if i.id not in removed_ids))
        now = self._clock().timestamp()
        pending = spec != stored.spec and not await self.try_update(stored.conference_id, spec)
        await self._store.put(dataclasses.replace(
            stored, spec=spec, attendees=tuple(a for a in stored.attendees if a not in removed),
            updated_at=now, pending_update=pending, retry_at=self._retry_at(pending, now)))

    async def withdraw(self, invitation: Invitation, url: str) -> None:
        """Delete the conference made for an invitation the next hop refused for good (none
        carrying its link went out), unless a message changed the event meanwhile."""
        stored = await self._store.get(invitation.organizer, invitation.uid)
        if stored is None or stored.state is not EventState.ACTIVE or stored.url != url:
            return
        log.info("uid=%s: the next hop refused the invitation; deleting conference %s made "
                 "for it", invitation.uid, stored.conference_id)
        await self.deletions.delete(stored)

    async def trouble(self, invitation: Invitation) -> Trouble:
        """Note that TrueConf failed for the event's message now; since when it has, and
        whether that is past retry.deadline (then the note is cleared for the next time)."""
        now = self._clock().timestamp()
        stored = await self._store.get(invitation.organizer, invitation.uid)
        since = stored.retry_since if stored and stored.retry_since else now
        if stored is None:
            stored = StoredEvent(
                organizer=invitation.organizer, uid=invitation.uid, state=EventState.CREATING,
                tag=event_tag(invitation.organizer, invitation.uid), first_seen=now,
                updated_at=now)
        given_up = now - since >= self.config.retry_deadline
        await self._store.put(dataclasses.replace(
            stored, retry_since=0.0 if given_up else since, updated_at=now))
        return Trouble(since, given_up, stored.url)


def invitees(addresses: tuple[str, ...], accounts: dict[str, Account], names: dict[str, str],
             owner: str) -> tuple[Invitee, ...]:
    """The attendees with a TrueConf account other than the owner, each once, in order."""
    found: dict[str, Invitee] = {}
    for address in addresses:
        account = accounts.get(address)
        if account is not None and account.id != owner and account.id not in found:
            found[account.id] = Invitee(account.id, account.display_name or names.get(address, ""))
    return tuple(found.values())


class UnsentLinks:
    """Join links of conferences made for invitations the next hop has not accepted yet.

    Such a conference is deleted when the next hop refuses its invitation for good, but only
    while no invitation carrying its link was accepted and none is still on its way: copies of
    one invitation share the conference. Kept in memory, shared by the flows a reload builds;
    copies handled by another worker process are not seen here.
    """

    LIMIT = 10_000  # links kept at most (those whose invitation the MTA never sent again)

    def __init__(self) -> None:
        self._on_the_way: dict[str, int] = {}  # link -> invitations with it not yet answered

    def made(self, url: str) -> None:
        """A conference was made for the invitation now on its way."""
        if len(self._on_the_way) >= self.LIMIT:
            del self._on_the_way[next(iter(self._on_the_way))]
        self._on_the_way[url] = 1

    def carried(self, url: str) -> None:
        """Another invitation with the link is on its way."""
        if url in self._on_the_way:
            self._on_the_way[url] += 1

    def answered(self, url: str, accepted: bool) -> bool:
        """The next hop answered an invitation with the link; True when the conference is no
        longer wanted by any invitation (this one was refused and no other is on its way)."""
        if url not in self._on_the_way:
            return False
        if accepted:
            del self._on_the_way[url]  # the link went out: the conference stays
            return False
        self._on_the_way[url] -= 1
        return self._on_the_way[url] <= 0
