"""``mailhook explain``: what would happen to one message, in words, with no side effects."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from mailhook.app import flow_config, open_store, wall_clock
from mailhook.config import Settings
from mailhook.core.decide import Policy, participant_addresses, sent_by, trusts_delegate
from mailhook.core.mime import parse_message
from mailhook.core.model import EventComponent, ParsedMessage, StoredEvent
from mailhook.core.plan import Plan, Reading, Step, plan, read_message
from mailhook.errors import StoreUnavailable
from mailhook.store.base import Store


async def explain(raw: bytes, settings: Settings, sender: str, store: Store,
                  now: datetime) -> list[str]:
    """Lines describing the parse, the plan the daemon would follow and the participants.

    The plan comes from the very functions the daemon's flow calls (``read_message`` and
    ``plan``), with the same settings, the event as stored (read through the store's
    interface, never written) and the clock, so the two cannot disagree.
    """
    config = flow_config(settings)
    mail_from = sender or parse_message(raw).from_address
    reading = read_message(raw, mail_from, config.policy)
    lines = list(_message(reading, mail_from, config.policy))
    found = reading.invitation
    if found is None:
        return [*lines, "decision: pass (forwarded byte-identical)",
                f"why: {plan(reading, None, config, now).decision.reason}"]
    lines += [f"uid: {found.uid}", f"organizer: {found.organizer}"]
    try:
        event = await store.get(found.organizer, found.uid)
    except StoreUnavailable as exc:
        # The daemon answers 451 then: it cannot tell what it did for the event before.
        return [*lines, "decision: pass (451: the MTA retries)",
                f"why: the store is not available: {exc}"]
    linked = event is not None and event.url
    lines.append(f"stored conference: {_stored(event) if linked else 'none'}")
    planned = plan(reading, event, config, now)
    lines += [f"decision: {planned.decision.action}", f"why: {planned.decision.reason}",
              *_effects(planned)]
    if planned.step is Step.ENSURE:
        lines.append(_owner(settings))
    if found.master is not None:
        lines += _participants(found.master, found.organizer, settings)
    return lines


async def explain_with_store(raw: bytes, settings: Settings, sender: str) -> list[str]:
    """``explain`` against the configured store, opened read-only, at the current time."""
    store = open_store(settings, read_only=True)
    try:
        return await explain(raw, settings, sender, store, wall_clock())
    finally:
        await store.close()


def _message(reading: Reading, mail_from: str, policy: Policy) -> Iterator[str]:
    """What was read: identity, method, calendar parts, SENT-BY."""
    parsed = reading.parsed
    yield f"message-id: {parsed.message_id or '-'}"
    yield f"envelope sender: {mail_from or '<>'}"
    yield f"method: {parsed.method or '-'}"
    for part in parsed.calendar_parts:
        yield f"calendar part: {part.content_type} at {list(part.path)} method={part.header_method}"
    yield from _sent_by(parsed, policy)


def _stored(event: StoredEvent | None) -> str:
    return f"{event.conference_id} {event.url}" if event else "none"


def _effects(planned: Plan) -> Iterator[str]:
    """What the daemon would do on TrueConf and to the message."""
    when = planned.occurrence.start.strftime("%Y-%m-%d %H:%M UTC") if planned.occurrence else ""
    yield {
        Step.NOTHING: "trueconf: no call",
        Step.ENSURE: f"trueconf: create the conference, or bring it in step, for {when}",
        Step.FOLLOW: "trueconf: move the conference to the series' nearest occurrence",
        Step.DELETE: "trueconf: delete the conference",
        Step.UNINVITE: "trueconf: take the removed attendees off the conference",
    }[planned.step]
    yield "message: the join link is written in" if planned.rewrite else "message: forwarded unchanged"
    if planned.notice:
        yield "organizer notice: the link is mailed to the organizer"


def _owner(settings: Settings) -> str:
    """Whose TrueConf account holds the conference, and what happens for an organizer
    without one (trueconf.fallback_owner)."""
    if settings.trueconf.user_mapping == "local_part":
        return "owner: the organizer's TrueConf account (its id is the address' local part)"
    fallback = settings.trueconf.fallback_owner
    without = (f"the conference is made under trueconf.fallback_owner {fallback} and the "
               "notice says so" if fallback else
               "no conference is made, the invitation goes out unchanged and the organizer is "
               "told why, once per event (trueconf.fallback_owner is not set)")
    return ("owner: the organizer's TrueConf account, looked up by e-mail when served; for an "
            f"organizer without one, {without}")


def _sent_by(parsed: ParsedMessage, policy: Policy) -> Iterator[str]:
    """Whether the ORGANIZER's SENT-BY, when there is one, is a delegate the site trusts."""
    events = parsed.calendar.events if parsed.calendar else ()
    delegate = sent_by(events)
    if not delegate:
        return
    organizer = next((event.organizer for event in events if event.organizer), "")
    if trusts_delegate(policy, organizer, delegate):
        yield f"sent-by: {delegate} (a trusted delegate of {organizer} in policy.delegates)"
    else:
        yield (f"sent-by: {delegate} (NOT trusted: not a delegate of {organizer} in "
               "policy.delegates; only the envelope sender counts)")


def _participants(master: EventComponent, organizer: str, settings: Settings) -> Iterator[str]:
    addresses = participant_addresses(master)
    if settings.trueconf.user_mapping == "local_part":
        domains = settings.policy.local_domains
        for address in (organizer, *addresses):
            local, _, domain = address.rpartition("@")
            target = f"TrueConf id {local}" if domain in domains else "joins by the link"
            yield f"participant: {address} -> {target}"
    else:
        for address in (organizer, *addresses):
            yield f"participant: {address} -> looked up by e-mail in TrueConf's user list when served"
    count = 1 + len(addresses)
    mode = "all on screen" if count <= settings.policy.all_on_screen_limit else "role-based"
    yield f"mode: {mode} ({count} participants, limit {settings.policy.all_on_screen_limit})"
