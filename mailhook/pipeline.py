"""The invitation pipeline: bytes in → parse → stored state → decide → TrueConf → store →
rewrite → bytes out.

This is the one module that uses both the pure core and the adapters. It returns what to
relay (or the refusal to give the client); the SMTP side does the relaying.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol, TypeVar

from mailhook.core.blocks import is_safe_url
from mailhook.core.decide import (
    Action,
    Decision,
    Invitation,
    build_spec,
    event_tag,
    follow,
    participant_addresses,
    topic_of,
)
from mailhook.core.model import (
    Conference,
    ConferenceSpec,
    EventComponent,
    EventState,
    Invitee,
    LinkInsertion,
    ParsedMessage,
    PendingDelete,
    StoredEvent,
)
from mailhook.core.notice import NoticeFacts, build_action_notice, build_notice
from mailhook.core.rewrite import rewrite_message
from mailhook.core.plan import (
    FlowConfig,
    Plan,
    Reading,
    Step,
    needs_series,
    passed,
    plan,
    read_message,
)
from mailhook.core.series import Occurrence, next_occurrence
from mailhook.errors import (
    InvitationError,
    PermanentError,
    StoreUnavailable,
    TemporaryError,
    TrueConfAuthError,
    TrueConfRejected,
)
from mailhook.faults import checkpoint
from mailhook.locks import EventLocks, KeyedLocks
from mailhook.store.base import Store
from mailhook.trueconf.directory import Account, Directory

log = logging.getLogger("mailhook.pipeline")
T = TypeVar("T")
PipelineConfig = FlowConfig  # the name the tests and tools used before

TEMPORARY_REPLY = "451 4.3.0 TrueConf Server is not available, please try again later"
STORE_REPLY = "451 4.3.0 Cannot record the conference now, please try again later"


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message as the client handed it over."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes


@dataclass(slots=True)
class Outcome:
    """What became of a message: the bytes to relay, or the refusal for the client."""

    decision: Decision
    content: bytes | None = None  # relay these bytes; None means refuse with ``reply``
    reply: str = ""
    method: str = ""
    uid: str = ""
    message_id: str = ""
    conference_id: str = ""
    url: str = ""
    notice: bytes | None = None  # to send to the organizer once the message is delivered
    fields: dict[str, str] = field(default_factory=dict)


class ConferenceService(Protocol):
    """The TrueConf operations the pipeline needs (the API client implements these)."""

    async def create_conference(self, spec: ConferenceSpec) -> Conference: ...
    async def update_conference(self, conference_id: str, spec: ConferenceSpec) -> Conference: ...
    async def delete_conference(self, conference_id: str) -> None: ...
    async def find_conference_by_tag(self, tag: str, owner: str) -> Conference | None: ...


class UnsentLinks:
    """Join links of conferences made for invitations the next hop has not accepted yet.

    Such a conference is deleted when the next hop refuses its invitation for good, but only
    while no invitation carrying its link was accepted and none is still on its way: copies of
    one invitation share the conference. Kept in memory, shared by the pipelines a reload
    builds; copies handled by another worker process are not seen here.
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


class Pipeline:
    """Turns one inbound message into an outcome."""

    def __init__(
        self,
        config: FlowConfig,
        store: Store,
        trueconf: ConferenceService,
        directory: Directory,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        locks: KeyedLocks | EventLocks | None = None,
        unsent: UnsentLinks | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._trueconf = trueconf
        self._directory = directory
        self._clock = clock
        # Pipelines rebuilt on reload share one lock table, so no event is ever handled twice
        # at once.
        self._locks = locks if locks is not None else KeyedLocks()
        self._unsent = unsent if unsent is not None else UnsentLinks()

    async def process(self, inbound: Inbound) -> Outcome:
        """Decide and apply; never raises for a message's own sake."""
        reading = await _off_loop(read_message, inbound.content, inbound.mail_from,
                                  self._config.policy, size=len(inbound.content))
        invitation = reading.invitation
        if invitation is None:
            return self._passed(inbound, reading, passed(reading, reading.found))
        async with self._locks.hold((invitation.organizer, invitation.uid)):
            try:
                return await self._process_invitation(inbound, reading, invitation)
            except StoreUnavailable as exc:
                # Without its store mailhook cannot tell what it did for the event before.
                unknown = Decision(Action.PASS, "the store is not available", invitation)
                return self._hold_for_store(self._passed(inbound, reading, passed(reading, unknown)), exc)

    async def _process_invitation(
        self, inbound: Inbound, reading: Reading, invitation: Invitation
    ) -> Outcome:
        stored = await self._store.get(invitation.organizer, invitation.uid)
        now = self._clock()
        if needs_series(reading, stored, self._config):
            planned = await asyncio.to_thread(plan, reading, stored, self._config, now)
        else:
            planned = plan(reading, stored, self._config, now)
        if planned.series.problem:
            log.warning("uid=%s: %s", invitation.uid, planned.series.problem)
        decision = planned.decision
        parsed = reading.parsed
        outcome = self._passed(inbound, reading, planned)
        try:
            await self._apply(outcome, parsed, invitation, planned)
        except StoreUnavailable as exc:
            self._hold_for_store(outcome, exc)
        except (TemporaryError, TrueConfAuthError) as exc:
            # Refused credentials are an operator's problem to fix: hold mail like an outage.
            await self._temporary_failure(outcome, inbound, parsed, invitation, exc)
        except (PermanentError, InvitationError) as exc:
            # The invitation still goes out; only the conference part failed.
            log.error("cannot handle uid=%s, forwarding unchanged: %s", invitation.uid, exc)
            outcome.content = inbound.content
            outcome.fields["error"] = type(exc).__name__
            if decision.action is Action.CREATE:
                outcome.notice = self._action_notice(invitation, time.time(), str(exc))
        except Exception:
            # A fault of mailhook's own must not hold mail back: forward it as it came.
            log.exception("unexpected failure for uid=%s, forwarding unchanged", invitation.uid)
            outcome.content = inbound.content
            outcome.fields["error"] = "internal"
        return outcome

    def _hold_for_store(self, outcome: Outcome, exc: StoreUnavailable) -> Outcome:
        """451 while the store fails: what is done for the event must be recorded, or the
        MTA's retry would not know it (the store logs its failures itself, once)."""
        log.debug("uid=%s: store unavailable, asking the MTA to retry: %s", outcome.uid, exc)
        outcome.content, outcome.reply = None, STORE_REPLY
        outcome.fields["error"] = "store"
        return outcome

    async def _temporary_failure(
        self,
        outcome: Outcome,
        inbound: Inbound,
        parsed: ParsedMessage,
        invitation: Invitation,
        exc: Exception,
    ) -> None:
        """451 so the MTA retries, until the deadline; then the invitation goes out as it is."""
        now = time.time()
        stored = await self._store.get(invitation.organizer, invitation.uid)
        since = stored.retry_since if stored and stored.retry_since else now
        if stored is None:
            stored = StoredEvent(
                organizer=invitation.organizer,
                uid=invitation.uid,
                state=EventState.CREATING,
                tag=event_tag(invitation.organizer, invitation.uid),
                first_seen=now,
                updated_at=now,
            )
        if now - since < self._config.retry_deadline:
            log.warning("uid=%s: TrueConf trouble, asking the MTA to retry: %s", invitation.uid, exc)
            await self._store.put(dataclasses.replace(stored, retry_since=since, updated_at=now))
            outcome.content, outcome.reply = None, TEMPORARY_REPLY
            return
        log.error("uid=%s: TrueConf unavailable for %d s; forwarding without a conference: %s",
                  invitation.uid, now - since, exc)
        await self._store.put(dataclasses.replace(stored, retry_since=0.0, updated_at=now))
        outcome.content = inbound.content
        outcome.fields["gave_up"] = "trueconf"
        if stored.url and outcome.decision.action is Action.SYNC:
            await self._rewrite(outcome, parsed, stored.url)
        else:
            outcome.notice = self._action_notice(invitation, since)

    def _action_notice(self, invitation: Invitation, since: float, refusal: str = "") -> bytes | None:
        """The "action required" mail for an invitation that goes out without its conference."""
        if not self._config.notices or invitation.master is None:
            return None
        return build_action_notice(
            invitation.organizer,
            topic_of(invitation.master, self._config.fallback_topic),
            since,
            self._config.notice_sender,
            self._config.language,
            self._clock(),
            refusal=refusal,
        )

    def _passed(self, inbound: Inbound, reading: Reading, planned: Plan) -> Outcome:
        return Outcome(
            decision=planned.decision,
            content=inbound.content,
            method=planned.method,
            uid=planned.uid,
            message_id=reading.parsed.message_id,
        )

    async def _apply(
        self, outcome: Outcome, parsed: ParsedMessage, invitation: Invitation, planned: Plan
    ) -> None:
        stored = planned.stored
        if planned.step is Step.ENSURE:
            await self._ensure_conference(outcome, parsed, invitation, planned)
            return
        if stored is not None:
            outcome.conference_id = stored.conference_id
        if planned.step is Step.FOLLOW and stored is not None:
            await self._move(stored, planned.series.text, planned.series.occurrence)
        elif planned.step is Step.DELETE and stored is not None:
            await self._delete(outcome, dataclasses.replace(stored, sequence=planned.sequence))
        elif planned.step is Step.UNINVITE and stored is not None:
            await self._uninvite(outcome, invitation, stored)
        if planned.rewrite and planned.link:
            await self._rewrite(outcome, parsed, planned.link)

    async def _ensure_conference(
        self, outcome: Outcome, parsed: ParsedMessage, invitation: Invitation, planned: Plan
    ) -> None:
        master = invitation.master
        stored = planned.stored
        assert master is not None and planned.occurrence is not None
        addresses = planned.participants
        spec_and_accounts = await self._plan(invitation, master, planned.occurrence, addresses)
        if spec_and_accounts is None:
            outcome.fields["note"] = "organizer has no TrueConf account"
            return
        spec, accounts = spec_and_accounts
        now = time.time()
        previous = stored.spec if stored and stored.state is EventState.ACTIVE else None
        conference, pending = await self._create_or_update(invitation, stored, spec, now)
        held = stored.conference_id if stored and stored.state is EventState.ACTIVE else ""
        made = conference.id != held  # made (or adopted by its tag) for this message
        if not is_safe_url(conference.url):
            if made:
                await self._discard(conference, invitation, record=True)
            raise TrueConfRejected("TrueConf returned a join link that is not http(s)")
        active = StoredEvent(
            organizer=invitation.organizer,
            uid=invitation.uid,
            state=EventState.ACTIVE,
            tag=spec.tag,
            conference_id=conference.id,
            url=conference.url,
            spec=spec,
            attendees=addresses,
            sequence=master.sequence,
            calendar=planned.series.text,
            first_seen=stored.first_seen if stored and stored.first_seen else now,
            updated_at=now,
            occurrence_end=_due_at(planned.series.occurrence),
            pending_update=pending,
            retry_at=self._retry_at(pending, now),
        )
        try:
            await self._store.put(active)
        except StoreUnavailable:
            if made:  # unrecorded, it would be a second conference after the MTA's retry
                await self._discard(conference, invitation, record=False)
            raise
        outcome.conference_id = conference.id
        if pending:
            outcome.fields["pending"] = "update"
        await self._rewrite(outcome, parsed, conference.url)
        if made:
            self._unsent.made(conference.url)
        if planned.notice:
            outcome.notice = self._notice(invitation, master, spec, conference.url, accounts, previous)

    async def _discard(
        self, conference: Conference, invitation: Invitation, *, record: bool
    ) -> None:
        """Delete a conference no invitation will carry. With ``record`` (the store works) a
        failed deletion is retried later; without, it is left to an operator, or to the MTA's
        retry, which finds it by its tag."""
        pending = PendingDelete(
            conference.id, invitation.organizer, invitation.uid, retry_at=time.time())
        if record:
            await self._store.put_pending_delete(pending)
            await self._try_delete(pending)
            return
        try:
            await self._trueconf.delete_conference(conference.id)
        except (TemporaryError, PermanentError) as exc:
            log.error("uid=%s: conference %s could not be recorded nor deleted: %s",
                      invitation.uid, conference.id, exc)

    async def settle(self, outcome: Outcome, accepted: bool, refused: bool) -> None:
        """The next hop answered the message: ``accepted`` it, or ``refused`` it for good. A
        conference made for invitations that were all refused is deleted (a temporary refusal
        keeps it: the MTA's retry reuses it)."""
        invitation = outcome.decision.invitation
        if not outcome.url or invitation is None:
            return
        unwanted = self._unsent.answered(outcome.url, accepted)
        if not (refused and unwanted):
            return
        async with self._locks.hold((invitation.organizer, invitation.uid)):
            stored = await self._store.get(invitation.organizer, invitation.uid)
            if stored is None or stored.state is not EventState.ACTIVE or stored.url != outcome.url:
                return  # changed by a message meanwhile
            log.info("uid=%s: the next hop refused the invitation; deleting conference %s made "
                     "for it", invitation.uid, stored.conference_id)
            await self._delete(Outcome(Decision(Action.DELETE, "invitation refused")), stored)

    async def _move(self, stored: StoredEvent, series_text: str, occurrence: Occurrence | None) -> bool:
        """Schedule the conference for ``occurrence`` (None: the series is over); True if moved."""
        assert stored.spec is not None
        now = time.time()
        if occurrence is None:
            if self._config.delete_after_series_end:
                await self._delete(Outcome(Decision(Action.DELETE, "series over")), stored)
                return True
            await self._store.put(
                dataclasses.replace(stored, calendar=series_text, occurrence_end=0.0, updated_at=now)
            )
            return False
        spec = follow(stored.spec, occurrence)
        changed = spec != stored.spec or stored.pending_update
        pending = changed and not await self._try_update(stored.conference_id, spec)
        await self._store.put(
            dataclasses.replace(
                stored,
                spec=spec,
                calendar=series_text,
                occurrence_end=_due_at(occurrence),
                updated_at=now,
                pending_update=pending,
                retry_at=self._retry_at(pending, now),
            )
        )
        return spec != stored.spec

    async def reschedule_due(self) -> int:
        """Move every conference whose occurrence is over to the next one; the number moved."""
        now = self._clock()
        moved = 0
        for due in await self._store.due(now.timestamp()):
            async with self._locks.hold((due.organizer, due.uid)):
                stored = await self._store.get(due.organizer, due.uid)
                if stored is None or stored != due:
                    continue  # changed by a message meanwhile; that message rescheduled it
                try:
                    # A one-off event keeps no series: when it is over, nothing follows.
                    occurrence = await asyncio.to_thread(
                        next_occurrence, stored.calendar, now, self._config.default_zone
                    ) if stored.calendar else None
                    moved += await self._move(stored, stored.calendar, occurrence)
                except Exception as exc:
                    # One broken event (unreadable series, conference refused or gone) must
                    # not stop every other series from moving on: stop rescheduling it.
                    log.error("uid=%s: cannot reschedule, leaving it: %s", stored.uid, exc)
                    await self._store.put(dataclasses.replace(stored, occurrence_end=0.0))
        return moved

    async def _plan(
        self,
        invitation: Invitation,
        master: EventComponent,
        occurrence: Occurrence,
        addresses: tuple[str, ...],
    ) -> tuple[ConferenceSpec, dict[str, Account]] | None:
        accounts = await self._directory.lookup((invitation.organizer, *addresses))
        owner = accounts.get(invitation.organizer)
        if owner is None:
            log.warning("organizer %s has no TrueConf account; invitation forwarded unchanged",
                        invitation.organizer)
            return None
        names = {a.address: a.name for a in master.attendees}
        invitees = _invitees(addresses, accounts, names, owner.id)
        spec = build_spec(
            master,
            occurrence,
            owner=owner.id,
            invitees=invitees,
            participants=1 + len(addresses),
            policy=self._config.policy,
            tag=event_tag(invitation.organizer, invitation.uid),
            fallback_topic=self._config.fallback_topic,
        )
        return spec, accounts

    async def _create_or_update(
        self,
        invitation: Invitation,
        stored: StoredEvent | None,
        spec: ConferenceSpec,
        now: float,
    ) -> tuple[Conference, bool]:
        """The conference for ``spec``, and whether TrueConf still has to take an update."""
        if stored and stored.state is EventState.ACTIVE and stored.conference_id:
            known = Conference(stored.conference_id, stored.url)
            if stored.spec == spec and not stored.pending_update:
                return known, False
            try:
                return known, not await self._try_update(stored.conference_id, spec)
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
        await self._store.put(
            StoredEvent(
                organizer=invitation.organizer,
                uid=invitation.uid,
                state=EventState.CREATING,
                tag=spec.tag,
                spec=spec,
                first_seen=stored.first_seen if stored and stored.first_seen else now,
                updated_at=now,
                retry_since=stored.retry_since if stored else 0.0,
            )
        )
        await checkpoint("before-create")
        conference = await self._trueconf.create_conference(spec)
        await checkpoint("after-create")
        return conference, False

    async def _try_update(self, conference_id: str, spec: ConferenceSpec) -> bool:
        """Update the conference; False when TrueConf is unavailable (it is retried later)."""
        try:
            await self._trueconf.update_conference(conference_id, spec)
        except TemporaryError as exc:
            log.warning("conference %s: update postponed: %s", conference_id, exc)
            return False
        return True

    async def _delete(self, outcome: Outcome, stored: StoredEvent) -> None:
        """Record the deletion, mark the event deleted, then ask TrueConf; a failure is retried."""
        now = time.time()
        if not stored.conference_id and stored.state is EventState.CREATING:
            stored = dataclasses.replace(stored, conference_id=await self._orphan_id(stored))
        outcome.conference_id = stored.conference_id
        if stored.conference_id:
            await self._store.put_pending_delete(
                PendingDelete(stored.conference_id, stored.organizer, stored.uid, retry_at=now)
            )
        await self._store.put(
            dataclasses.replace(stored, state=EventState.DELETED, pending_update=False, updated_at=now)
        )
        if stored.conference_id and not await self._try_delete(PendingDelete(
                stored.conference_id, stored.organizer, stored.uid)):
            outcome.fields["pending"] = "delete"

    def _backoff(self, attempts: int) -> float:
        """Seconds to wait after the given number of failed attempts: doubling, capped."""
        return min(self._config.backoff_initial * 2 ** (attempts - 1), self._config.backoff_max)

    def _retry_at(self, pending: bool, now: float) -> float:
        """When a postponed update is first retried (0 when nothing is postponed)."""
        return now + self._backoff(1) if pending else 0.0

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

    async def _try_delete(self, pending: PendingDelete) -> bool:
        """Delete on TrueConf (404 counts as done); on failure re-schedule it with backoff."""
        try:
            await self._trueconf.delete_conference(pending.conference_id)
        except (TemporaryError, PermanentError) as exc:
            attempts = pending.attempts + 1
            delay = self._backoff(attempts)
            log.warning("conference %s: deletion postponed (attempt %d): %s",
                        pending.conference_id, attempts, exc)
            await self._store.put_pending_delete(dataclasses.replace(
                pending, attempts=attempts, retry_at=time.time() + delay, last_error=str(exc)[:200]))
            return False
        await self._store.finish_delete(pending.conference_id)
        return True

    async def retry_pending(self, now: float | None = None) -> int:
        """One pass over deletions and updates TrueConf has not taken yet; the number done."""
        now = time.time() if now is None else now
        done = 0
        for pending in await self._store.due_deletes(now):
            done += await self._try_delete(pending)
        for due in await self._store.due_updates(now):
            async with self._locks.hold((due.organizer, due.uid)):
                stored = await self._store.get(due.organizer, due.uid)
                if stored is None or not stored.pending_update or stored.spec is None:
                    continue
                try:
                    taken = await self._try_update(stored.conference_id, stored.spec)
                except PermanentError as exc:
                    log.error("conference %s refused the postponed update, dropping it: %s",
                              stored.conference_id, exc)
                    await self._store.put(dataclasses.replace(stored, pending_update=False))
                    continue
                if taken:
                    await self._store.put(dataclasses.replace(stored, pending_update=False, attempts=0))
                    done += 1
                    continue
                attempts = stored.attempts + 1
                delay = self._backoff(attempts + 1)
                await self._store.put(dataclasses.replace(
                    stored, attempts=attempts, retry_at=time.time() + delay))
        return done

    async def _uninvite(self, outcome: Outcome, invitation: Invitation, stored: StoredEvent) -> None:
        assert invitation.master is not None and stored.spec is not None
        removed = {a.address for a in invitation.master.attendees}
        accounts = await self._directory.lookup(removed)
        removed_ids = {account.id for account in accounts.values()}
        spec = dataclasses.replace(
            stored.spec,
            invitees=tuple(i for i in stored.spec.invitees if i.id not in removed_ids),
        )
        now = time.time()
        pending = spec != stored.spec and not await self._try_update(stored.conference_id, spec)
        await self._store.put(
            dataclasses.replace(
                stored,
                spec=spec,
                attendees=tuple(a for a in stored.attendees if a not in removed),
                updated_at=now,
                pending_update=pending,
                retry_at=self._retry_at(pending, now),
            )
        )
        outcome.conference_id = stored.conference_id

    async def _rewrite(self, outcome: Outcome, parsed: ParsedMessage, url: str) -> None:
        insertion = LinkInsertion(
            url=url, keywords=self._config.policy.keywords, language=self._config.language
        )
        outcome.content = await _off_loop(rewrite_message, parsed, insertion, size=len(parsed.raw))
        outcome.url = url
        self._unsent.carried(url)

    def _notice(
        self,
        invitation: Invitation,
        master: EventComponent,
        spec: ConferenceSpec,
        url: str,
        accounts: dict[str, Account],
        previous: ConferenceSpec | None,
    ) -> bytes:
        names = {a.address: a.name or a.address for a in master.attendees}
        addresses = participant_addresses(master)
        facts = NoticeFacts(
            organizer=invitation.organizer,
            topic=spec.topic,
            start=spec.start,
            duration=spec.duration,
            utc_offset_minutes=spec.utc_offset_minutes,
            url=url,
            in_accounts=tuple(names[a] for a in addresses if a in accounts),
            by_link=tuple(names[a] for a in addresses if a not in accounts),
            updated=previous is not None,
        )
        return build_notice(facts, self._config.notice_sender, self._config.language, self._clock())


# Messages larger than this are parsed and rewritten on a worker thread, so that one big
# message never holds up the other sessions (or systemd's watchdog) for long.
OFF_LOOP_BYTES = 256 * 1024


async def _off_loop(fn: Callable[..., T], *args: object, size: int) -> T:
    """Run a pure, CPU-bound core function: inline when small, on a thread when large."""
    if size <= OFF_LOOP_BYTES:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


def _due_at(occurrence: Occurrence | None) -> float:
    """When the rescheduler should look at the event again (0: never)."""
    return occurrence.end.timestamp() if occurrence is not None else 0.0


def _invitees(
    addresses: tuple[str, ...], accounts: dict[str, Account], names: dict[str, str], owner: str
) -> tuple[Invitee, ...]:
    invitees: dict[str, Invitee] = {}
    for address in addresses:
        account = accounts.get(address)
        if account is not None and account.id != owner and account.id not in invitees:
            invitees[account.id] = Invitee(account.id, account.display_name or names.get(address, ""))
    return tuple(invitees.values())
