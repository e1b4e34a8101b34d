"""One message flow for every front end.

A transaction begins at the message's first recipient: the next hop's transaction is opened
then, so that each recipient gets the next hop's own answer. At the end of data the message is
read once, planned, carried out and rewritten (``mailhook.handling``), then relayed; after the
next hop's answer come the log line, the metrics and the organizer's notice, and the reply the
client gets (``mailhook.core.replies.final_reply``). A message that already went round through
this mailhook ``smtp.max_own_hops`` times (its trace fields say so) is refused instead. A front end (the SMTP server; a milter)
only speaks its protocol and calls ``Flow.begin`` and the ``Transaction`` it returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from mailhook import logfmt
from mailhook.caldav_writeback import CalendarWriteBack
from mailhook.core.decide import Action, Decision
from mailhook.core.envelope import Inbound, Upstream
from mailhook.core.plan import Plan, Reading
from mailhook.core.replies import (
    ROUTING_LOOP,
    UTF8_HEADER_NOT_RELAYABLE,
    Reply,
    client_reply,
    final_reply,
)
from mailhook.core.trace import own_hops
from mailhook.faults import checkpoint
from mailhook.handling import Handling, Outcome
from mailhook.metrics import Metrics, outcome_of
from mailhook.relay import NextHop

log = logging.getLogger("mailhook")


class Outlet(Protocol):
    """Where a message goes once the flow is done with it: the next hop's SMTP transaction,
    or (for a front end that hands the message back to its MTA) the front end itself."""

    smtputf8: bool  # the outlet takes a UTF-8 header section

    async def rcpt(self, address: str, options: list[str]) -> Reply: ...
    async def data(self, content: bytes) -> Reply: ...
    async def close(self) -> None: ...


class Flow:
    """The transactions of every front end, the messages in flight, and what follows each
    message (log line, metrics, organizer notice)."""

    def __init__(self, handling: Handling, next_hop: NextHop, metrics: Metrics, *,
                 own_name: str = "", max_own_hops: int = 0) -> None:
        self.handling = handling  # replaced on reload; each message takes the one current then
        self.next_hop = next_hop
        self.metrics = metrics
        # This instance's name in its trace fields, and how many a message may carry; 0: any.
        self.own_name = own_name
        self.max_own_hops = max_own_hops
        self.counts: Counter[str] = Counter()  # messages by outcome, for systemd's STATUS line
        self.in_flight = 0
        self.stopping = False  # set at shutdown: front ends refuse new transactions
        self.idle = asyncio.Event()
        self.idle.set()
        self._on_change: Callable[[int], object] | None = None
        if not metrics.follow_in_flight(lambda: self.in_flight):
            self._on_change = metrics.in_flight.set
        self._notices: set[asyncio.Task[Any]] = set()
        self.calendars: CalendarWriteBack | None = None  # the organizer's own event (CalDAV)

    async def begin(self, sender: str, options: Sequence[str],
                    forward: Mapping[str, str]) -> Transaction | Reply:
        """Open a transaction toward the next hop (at the first RCPT); ``forward`` is what
        the MTA told with XFORWARD, passed on. A reply instead when the next hop will not."""
        begun = await self.next_hop.begin(sender, list(options), dict(forward))
        if isinstance(begun, Reply):
            return client_reply(begun)
        return Transaction(self, sender, begun, Upstream.from_xforward(forward))

    def refused_before_data(self, sender: str, recipient: str, reply: Reply,
                            forward: Mapping[str, str], started: float) -> None:
        """The next hop would not take the message (unreachable, or it refused the sender),
        so no data follows: the message gets its summary line now, with the queue id XFORWARD
        gave. Front ends call this once per transaction."""
        reason = "next hop unavailable" if reply.temporary else "next hop refused the sender"
        outcome = Outcome.passing(Plan(Decision(Action.PASS, reason)), b"").refused(reply)
        inbound = Inbound(sender, (recipient,), b"")
        log_summary(inbound, outcome, reply, started, Upstream.from_xforward(forward), "")
        self.metrics.message("", str(outcome.decision.action), reply.code)
        self.counts[outcome_of(reply.code)] += 1

    def transaction(self, sender: str, outlet: Outlet, upstream: Upstream) -> Transaction:
        """A transaction whose message goes to ``outlet`` rather than the next hop."""
        return Transaction(self, sender, outlet, upstream)

    async def drain(self, timeout: float) -> None:
        """Wait for the messages in flight, then for the notices still being sent."""
        try:
            await asyncio.wait_for(self.idle.wait(), timeout)
        except TimeoutError:
            log.warning("%d message(s) still in flight at shutdown", self.in_flight)
        if self._notices:
            await asyncio.wait(self._notices, timeout=30)

    def started(self) -> None:
        """A message's data arrived: one more in flight."""
        self._count(+1)

    def ended(self) -> None:
        """A message got its reply."""
        self._count(-1)

    def _count(self, change: int) -> None:
        self.in_flight += change
        if self.in_flight == 0:
            self.idle.set()
        else:
            self.idle.clear()
        if self._on_change is not None:
            self._on_change(self.in_flight)

    async def follow_up(self, inbound: Inbound, outcome: Outcome, reply: Reply,
                           started: float, upstream: Upstream, message_id: str) -> None:
        """After the reply is known: log line, metrics, settling the conference, notice."""
        log_summary(inbound, outcome, reply, started, upstream, message_id)
        self.metrics.message(outcome.method, str(outcome.decision.action), reply.code)
        self.counts[outcome_of(reply.code)] += 1
        try:
            # A conference made for an invitation the next hop refused for good is not left behind.
            await self.handling.settle(outcome, accepted=reply.ok, refused=reply.code >= 500)
        except Exception:
            log.exception("uid=%s: cannot settle the conference after the next hop's reply",
                          outcome.uid)
        invitation = outcome.decision.invitation
        if outcome.notice is not None and reply.ok and invitation is not None:
            task = asyncio.get_running_loop().create_task(
                self._send_notice(invitation.organizer, outcome.notice))
            self._notices.add(task)
            task.add_done_callback(self._notices.discard)
        if self.calendars is not None and reply.ok and invitation is not None:
            link = outcome.url or None
            if outcome.decision.action is Action.DELETE:
                link = ""  # the conference is gone: its link comes out of the event too
            if link is not None:
                self.calendars.after(invitation.organizer, outcome.uid, link)

    async def _send_notice(self, organizer: str, notice: bytes) -> None:
        reply = await self.next_hop.send("", [organizer], notice)
        if not reply.ok:
            log.warning("organizer notice to %s not accepted: %s", organizer, reply)


class Transaction:
    """One message through the flow, from its first recipient to the reply to its data."""

    def __init__(self, flow: Flow, sender: str, outlet: Outlet, upstream: Upstream) -> None:
        self._flow = flow
        self.sender = sender
        self._outlet = outlet
        self._upstream = upstream

    async def rcpt(self, address: str, options: list[str]) -> Reply:
        """Offer a recipient to the outlet; the reply its client gets."""
        return client_reply(await self._outlet.rcpt(address, options))

    async def finish(self, recipients: Sequence[str], content: bytes,
                     smtputf8: bool = False) -> Reply:
        """The message's data arrived: handle it, relay it, follow up; the client's reply.
        ``smtputf8``: the client asked for SMTPUTF8 for this message."""
        flow = self._flow
        flow.started()
        started = time.monotonic()
        try:
            inbound = Inbound(self.sender, tuple(recipients), content)
            reading = await self._read(inbound)
            parsed = reading.parsed if reading else None
            upstream = self._upstream.or_received(parsed.received if parsed else "")
            message_id = _one_line(parsed.message_id if parsed else "")
            with logfmt.message_context(queue_id=upstream.queue_id, client=upstream.client,
                                        message_id=message_id):
                outcome = (self._loop_refusal(inbound) or self._utf8_refusal(inbound, smtputf8)
                           or await self._outcome(inbound, reading))
                relayed = None
                if outcome.content is not None:
                    await checkpoint("before-relay")
                    relayed = await self._outlet.data(outcome.content)
                reply = final_reply(outcome.refusal, relayed)
                await flow.follow_up(inbound, outcome, reply, started, upstream, message_id)
            return reply
        finally:
            await self.close()
            flow.ended()

    async def close(self) -> None:
        """End the transaction with the outlet (after the message, or when the client left)."""
        await self._outlet.close()

    async def _read(self, inbound: Inbound) -> Reading | None:
        try:
            return await self._flow.handling.read(inbound)
        except Exception:
            log.exception("reading the message failed; forwarding it unchanged")
            return None

    async def _outcome(self, inbound: Inbound, reading: Reading | None) -> Outcome:
        if reading is not None:
            try:
                return await self._flow.handling.handle(inbound, reading)
            except Exception:
                # Whatever went wrong inside mailhook, the message itself goes on unchanged.
                log.exception("processing failed; forwarding the message unchanged")
        return Outcome.passing(Plan(Decision(Action.PASS, "internal error")), inbound.content)

    def _loop_refusal(self, inbound: Inbound) -> Outcome | None:
        """The refusal for a message that went round through this mailhook too often (a
        routing loop through the MTA); None for every other message."""
        flow = self._flow
        if not flow.max_own_hops:
            return None
        hops = own_hops(inbound.content, flow.own_name)
        if hops < flow.max_own_hops:
            return None
        log.warning("routing loop: the message already passed this mailhook %d times "
                    "(smtp.max_own_hops = %d); refused with %s", hops, flow.max_own_hops,
                    ROUTING_LOOP)
        planned = Plan(Decision(Action.PASS, f"routing loop, passed mailhook {hops} times"))
        return Outcome.passing(planned, inbound.content).refused(ROUTING_LOOP)

    def _utf8_refusal(self, inbound: Inbound, smtputf8: bool) -> Outcome | None:
        """The refusal for an SMTPUTF8 message whose header section is not ASCII when the
        outlet does not take SMTPUTF8; None when the message can go (an all-ASCII header
        section goes without the parameter, which then asks for nothing)."""
        if not smtputf8 or self._outlet.smtputf8:
            return None
        content = inbound.content
        end = content.find(b"\r\n\r\n")
        if (content if end < 0 else content[:end]).isascii():
            return None
        planned = Plan(Decision(Action.PASS, "UTF-8 header section, next hop without SMTPUTF8"))
        return Outcome.passing(planned, content).refused(UTF8_HEADER_NOT_RELAYABLE)


def log_summary(inbound: Inbound, outcome: Outcome, reply: Reply, started: float,
                upstream: Upstream, message_id: str) -> None:
    """One key=value line per message, for the journal."""
    fields = {
        "queue_id": upstream.queue_id or "-",
        "client": upstream.client or "-",
        "message_id": message_id or "-",
        "from": inbound.mail_from or "<>",
        "rcpts": str(len(inbound.rcpt_tos)),
        "method": outcome.method or "-",
        "uid": outcome.uid or "-",
        "decision": str(outcome.decision.action),
        "reason": outcome.decision.reason,
        "conference": outcome.conference_id or "-",
        "reply": str(reply),
        "ms": str(int((time.monotonic() - started) * 1000)),
    }
    extra = {"note": outcome.note, "pending": outcome.pending, "gave_up": outcome.gave_up,
             "error": outcome.error}
    fields.update({key: value for key, value in extra.items() if value})
    log.info(logfmt.fields(fields))


def _one_line(value: str) -> str:
    return " ".join(value.split())
