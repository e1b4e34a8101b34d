"""What happens to one message between its bytes and the relay: the plan (pure), its effects on
TrueConf and the store, the link written in, and the failure policy (DESIGN section 7).

``Handling.handle`` never raises for a message's own sake: whatever goes wrong, the outcome
says what to relay, or which temporary refusal to give so that the MTA retries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TypeVar

from mailhook.conferences import ConferenceApi, Conferences, Made, UnsentLinks
from mailhook.core.account_notice import build_no_account_notice
from mailhook.core.decide import Action, Decision, Invitation, participant_addresses, topic_of
from mailhook.core.envelope import Inbound
from mailhook.core.model import EventState, LinkInsertion, ParsedMessage, StoredEvent
from mailhook.core.notice import (
    NoticeFacts,
    build_action_notice,
    build_notice,
    notice_kind,
    should_send,
)
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
from mailhook.core.replies import STORE_UNAVAILABLE, TRUECONF_UNAVAILABLE, Reply
from mailhook.core.rewrite import rewrite_message
from mailhook.errors import (
    InvitationError,
    PermanentError,
    StoreUnavailable,
    TemporaryError,
    TrueConfAuthError,
)
from mailhook.locks import EventLocks, KeyedLocks, StoreLocks
from mailhook.store.base import Store
from mailhook.trueconf.directory import Directory

log = logging.getLogger("mailhook.handling")
T = TypeVar("T")
# Messages larger than this are read and rewritten on a worker thread, so that one big
# message never holds up the other sessions (or systemd's watchdog) for long.
OFF_LOOP_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a message: the bytes to relay, or the refusal for the client."""

    decision: Decision
    content: bytes | None  # relay these bytes; None: refuse with ``refusal``
    refusal: Reply | None = None
    method: str = ""
    uid: str = ""
    conference_id: str = ""
    url: str = ""  # the conference link written into the message
    made: bool = False  # the conference was made for this message
    notice: bytes | None = None  # to send to the organizer once the message is delivered
    # Extra log fields, each "" unless it happened:
    note: str = ""  # why the plan could not be carried out (no TrueConf account)
    pending: str = ""  # "update" or "delete": TrueConf did not take it yet (retried)
    gave_up: str = ""  # "trueconf": past retry.deadline, forwarded without a conference
    error: str = ""  # "store", "internal" or the kind of error TrueConf gave

    @classmethod
    def passing(cls, planned: Plan, content: bytes) -> Outcome:
        """The message goes on as it came."""
        return cls(planned.decision, content, method=planned.method, uid=planned.uid)

    def refused(self, reply: Reply, error: str = "") -> Outcome:
        """The message is not relayed: the client gets ``reply`` (a 451 the MTA retries)."""
        return replace(self, content=None, refusal=reply, url="", error=error or self.error)


async def off_loop(fn: Callable[..., T], *args: object, size: int) -> T:
    """Run a pure, CPU-bound core function: inline when small, on a thread when large."""
    if size <= OFF_LOOP_BYTES:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


class Handling:
    """Turns one message, read, into an outcome: plan, effects, rewrite, failure policy."""

    def __init__(self, config: FlowConfig, store: Store, conferences: Conferences,
                 locks: KeyedLocks | EventLocks | StoreLocks, unsent: UnsentLinks,
                 clock: Callable[[], datetime]) -> None:
        self.config = config
        self._store = store
        self._conferences = conferences
        # Handlings rebuilt on reload share the lock table and the unsent links, so no event
        # is ever handled twice at once.
        self._locks = locks
        self._unsent = unsent
        self._clock = clock

    @classmethod
    def on(cls, config: FlowConfig, store: Store, trueconf: ConferenceApi, directory: Directory,
           clock: Callable[[], datetime]) -> Handling:
        """A handling on the given parts alone, with locks of its own (for tests and
        benchmarks; the daemon's comes from ``mailhook.app``)."""
        conferences = Conferences(config, store, trueconf, directory, clock)
        return cls(config, store, conferences, KeyedLocks(), UnsentLinks(), clock)

    async def process(self, inbound: Inbound) -> Outcome:
        """Read the message, then handle it (what the flow does in two steps)."""
        return await self.handle(inbound, await self.read(inbound))

    async def read(self, inbound: Inbound) -> Reading:
        """Parse the message and find the organizer's invitation in it."""
        return await off_loop(read_message, inbound.content, inbound.mail_from,
                              self.config.policy, size=len(inbound.content))

    async def handle(self, inbound: Inbound, reading: Reading) -> Outcome:
        """Plan and carry out; never raises for a message's own sake."""
        invitation = reading.invitation
        if invitation is None:
            assert isinstance(reading.found, Decision)
            return Outcome.passing(passed(reading, reading.found), inbound.content)
        try:
            # The lock may be held in the store (a shared database): it fails as the store does.
            async with self._locks.hold((invitation.organizer, invitation.uid)):
                return await self._handle_invitation(inbound, reading, invitation)
        except StoreUnavailable as exc:
            # Without its store mailhook cannot tell what it did for the event before.
            unknown = passed(reading, Decision(Action.PASS, "the store is not available",
                                               invitation))
            return _held_for_store(Outcome.passing(unknown, inbound.content), exc)

    async def _handle_invitation(self, inbound: Inbound, reading: Reading,
                                 invitation: Invitation) -> Outcome:
        stored = await self._store.get(invitation.organizer, invitation.uid)
        planned = await self._plan(reading, stored)
        outcome = done = Outcome.passing(planned, inbound.content)
        try:
            done = await self._carry_out(outcome, invitation, planned)
            return await self._written(done, reading.parsed)
        except StoreUnavailable as exc:
            return _held_for_store(done, exc)
        except (TemporaryError, TrueConfAuthError) as exc:
            # Refused credentials are an operator's problem to fix: hold mail like an outage.
            return await self._trouble(outcome, reading.parsed, invitation, exc)
        except (PermanentError, InvitationError) as exc:
            # The invitation still goes out; only the conference part failed.
            log.error("cannot handle uid=%s, forwarding unchanged: %s", invitation.uid, exc)
            notice = (self._action_notice(invitation, self._now(), str(exc))
                      if planned.decision.action is Action.CREATE else done.notice)
            return replace(done, content=inbound.content, url="", error=type(exc).__name__,
                           notice=notice)
        except Exception:
            # A fault of mailhook's own must not hold mail back: forward it as it came.
            log.exception("unexpected failure for uid=%s, forwarding unchanged", invitation.uid)
            return replace(done, content=inbound.content, url="", error="internal")

    async def _plan(self, reading: Reading, stored: StoredEvent | None) -> Plan:
        """The plan, with the series' CPU work (when there is any) on a worker thread."""
        now = self._clock()
        if needs_series(reading, stored, self.config):
            planned = await asyncio.to_thread(plan, reading, stored, self.config, now)
        else:
            planned = plan(reading, stored, self.config, now)
        if planned.series.problem:
            log.warning("uid=%s: %s", planned.uid, planned.series.problem)
        return planned

    async def _carry_out(self, outcome: Outcome, invitation: Invitation, planned: Plan) -> Outcome:
        """The plan's effects on TrueConf and the store; the link to write, when there is one."""
        stored = planned.stored
        if planned.step is Step.ENSURE:
            made = await self._conferences.ensure(invitation, planned)
            if made is None:
                return await self._without_account(outcome, invitation)
            return self._ensured(outcome, invitation, planned, made)
        if stored is None:
            return outcome
        outcome = replace(outcome, conference_id=stored.conference_id)
        if planned.step is Step.FOLLOW:
            await self._conferences.follow(stored, planned.series.text, planned.series.occurrence)
        elif planned.step is Step.DELETE:
            conference_id, done = await self._conferences.deletions.delete(
                replace(stored, sequence=planned.sequence))
            outcome = replace(outcome, conference_id=conference_id,
                              pending="" if done else "delete")
        elif planned.step is Step.UNINVITE:
            await self._conferences.uninvite(invitation, stored)
        return replace(outcome, url=planned.link if planned.rewrite else "")

    async def _without_account(self, outcome: Outcome, invitation: Invitation) -> Outcome:
        """No conference: the organizer has no TrueConf account (and no fallback owner is
        set). The invitation goes on as it came; the organizer hears why, once per event."""
        outcome = replace(outcome, note="organizer has no TrueConf account")
        if not should_send(self.config.notice_when, "action_required"):
            return outcome
        if not await self._store.note_sent(invitation.organizer, invitation.uid, "no_account",
                                           self._now()):
            return outcome
        notice = build_no_account_notice(
            invitation.organizer, topic_of(invitation.lead, self.config.fallback_topic),
            self.config.notice_sender, self.config.language, self._clock())
        return replace(outcome, notice=notice)

    def _ensured(self, outcome: Outcome, invitation: Invitation, planned: Plan,
                 made: Made) -> Outcome:
        conference = made.conference
        notice = link_notice(self.config, invitation, made, planned, self._clock())
        return replace(outcome, conference_id=conference.id, url=conference.url, made=made.made,
                       pending="update" if made.pending else "", notice=notice)

    async def _written(self, outcome: Outcome, parsed: ParsedMessage) -> Outcome:
        """The message with the conference's link written in (as it came when there is none)."""
        if not outcome.url:
            return outcome
        insertion = LinkInsertion(url=outcome.url, keywords=self.config.policy.keywords,
                                  language=self.config.language)
        content = await off_loop(rewrite_message, parsed, insertion, size=len(parsed.raw))
        self._unsent.carried(outcome.url)
        if outcome.made:
            self._unsent.made(outcome.url)
        return replace(outcome, content=content)

    async def _trouble(self, outcome: Outcome, parsed: ParsedMessage, invitation: Invitation,
                       exc: Exception) -> Outcome:
        """451 so the MTA retries, until the deadline; then the invitation goes out as it is."""
        trouble = await self._conferences.trouble(invitation)
        if not trouble.given_up:
            log.warning("uid=%s: TrueConf trouble, asking the MTA to retry: %s",
                        invitation.uid, exc)
            return outcome.refused(TRUECONF_UNAVAILABLE)
        log.error("uid=%s: TrueConf unavailable for %d s; forwarding without a conference: %s",
                  invitation.uid, self._now() - trouble.since, exc)
        outcome = replace(outcome, gave_up="trueconf")
        if trouble.link and outcome.decision.action is Action.SYNC:
            return await self._written(replace(outcome, url=trouble.link), parsed)
        return replace(outcome, notice=self._action_notice(invitation, trouble.since))

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
            await self._conferences.withdraw(invitation, outcome.url)

    def _now(self) -> float:
        return self._clock().timestamp()

    def _action_notice(self, invitation: Invitation, since: float,
                       refusal: str = "") -> bytes | None:
        """The "action required" mail for an invitation that goes out without its conference."""
        if not self.config.notices or invitation.master is None:
            return None
        if not should_send(self.config.notice_when, "action_required"):
            return None
        return build_action_notice(
            invitation.organizer, topic_of(invitation.master, self.config.fallback_topic),
            since, self.config.notice_sender, self.config.language, self._clock(),
            refusal=refusal)


def _held_for_store(outcome: Outcome, exc: StoreUnavailable) -> Outcome:
    """451 while the store fails: what is done for the event must be recorded, or the MTA's
    retry would not know it (the store logs its failures itself, once)."""
    log.debug("uid=%s: store unavailable, asking the MTA to retry: %s", outcome.uid, exc)
    return outcome.refused(STORE_UNAVAILABLE, error="store")


def link_notice(config: FlowConfig, invitation: Invitation, made: Made, planned: Plan,
                now: datetime) -> bytes | None:
    """The organizer's notice with the link and who got it in TrueConf, when what the
    REQUEST did to the conference is a kind ``notice.when`` sends."""
    lead = invitation.lead
    spec, stored = made.spec, planned.stored
    previous = stored.spec if stored and stored.state is EventState.ACTIVE else None
    before = stored.attendees if previous is not None and stored is not None else ()
    kind = notice_kind(previous, spec, before, planned.participants)
    if kind is None or not config.notices or not should_send(config.notice_when, kind):
        return None
    names = {a.address: a.name or a.address for a in lead.attendees}
    addresses = participant_addresses(lead)
    facts = NoticeFacts(
        organizer=invitation.organizer, topic=spec.topic, start=spec.start,
        duration=spec.duration, utc_offset_minutes=spec.utc_offset_minutes,
        url=made.conference.url,
        in_accounts=tuple(names[a] for a in addresses if a in made.accounts),
        by_link=tuple(names[a] for a in addresses if a not in made.accounts),
        updated=kind == "updated", zone=lead.zone, recurring=bool(lead.rrule or lead.rdate),
        hosted_by=made.hosted_by,
    )
    return build_notice(facts, config.notice_sender, config.language, now)
