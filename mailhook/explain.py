"""``mailhook explain``: what would happen to one message, in words, with no side effects."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime

from mailhook.config import Settings
from mailhook.core.decide import (
    Decision,
    Policy,
    classify,
    decide,
    participant_addresses,
    sent_by,
    trusts_delegate,
)
from mailhook.core.mime import parse_message
from mailhook.core.model import ParsedMessage, StoredEvent
from mailhook.daemon import pipeline_config


def explain(
    raw: bytes,
    settings: Settings,
    sender: str,
    stored: Mapping[tuple[str, str], StoredEvent],
    now: datetime,
) -> Iterator[str]:
    """Lines describing the parse, the decision and the participant mapping."""
    parsed = parse_message(raw)
    policy = pipeline_config(settings).policy
    mail_from = sender or parsed.from_address
    yield f"message-id: {parsed.message_id or '-'}"
    yield f"envelope sender: {mail_from or '<>'}"
    yield f"method: {parsed.method or '-'}"
    for part in parsed.calendar_parts:
        yield f"calendar part: {part.content_type} at {list(part.path)} method={part.header_method}"
    yield from _sent_by(parsed, policy)
    found = classify(parsed, mail_from, policy)
    if isinstance(found, Decision):
        yield "decision: pass (forwarded byte-identical)"
        yield f"why: {found.reason}"
        return
    yield f"uid: {found.uid}"
    yield f"organizer: {found.organizer}"
    event = stored.get((found.organizer, found.uid))
    yield f"stored conference: {event.conference_id + ' ' + event.url if event and event.url else 'none'}"
    decision = decide(found, event, policy, now)
    yield f"decision: {decision.action}"
    yield f"why: {decision.reason}"
    if found.master is not None:
        yield from _participants(found.master, found.organizer, settings)


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


def _participants(master, organizer: str, settings: Settings) -> Iterator[str]:
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
