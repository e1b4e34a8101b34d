"""``mailhook conferences reconcile``: where the store and TrueConf Server disagree.

Leaked conferences carry mailhook's tag but no stored event uses them; gone events are stored
with a conference TrueConf no longer has. With ``--fix`` the leaked are deleted and the gone
marked deleted, under the daemon's per-event locks.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from mailhook.app import App
from mailhook.config import Settings
from mailhook.core.model import EventState, StoredEvent
from mailhook.errors import MailhookError
from mailhook.trueconf.payload import ListedConference

Print = Callable[[str], None]
# The tags mailhook gives conferences (core.decide.event_tag): "mailhook_" and 24 hex digits.
MAILHOOK_TAG = re.compile(r"mailhook_[0-9a-f]{24}")


@dataclasses.dataclass(frozen=True, slots=True)
class Reconciliation:
    """Where the store and TrueConf disagree."""

    leaked: tuple[ListedConference, ...]  # tagged by mailhook, but no stored event has it
    gone: tuple[StoredEvent, ...]  # stored with a conference that TrueConf no longer lists


def compare(events: Sequence[StoredEvent], pending_deletes: Iterable[str],
            conferences: Sequence[ListedConference]) -> Reconciliation:
    """Leaked and gone conferences. A conference still being created (its event stored as
    "creating", found again by its tag) or waiting in the retry queue for its deletion is
    neither: mailhook itself is finishing it."""
    live = [e for e in events if e.state is not EventState.DELETED]
    referenced = {e.conference_id for e in live if e.conference_id} | set(pending_deletes)
    being_made = {e.tag for e in live if e.state is EventState.CREATING}
    leaked = tuple(
        c for c in conferences
        if c.id not in referenced and any(MAILHOOK_TAG.fullmatch(t) for t in c.tags)
        and not being_made.intersection(c.tags)
    )
    listed = {c.id for c in conferences}
    gone = tuple(e for e in live if e.conference_id and e.conference_id not in listed)
    return Reconciliation(leaked, gone)


async def reconcile(settings: Settings, fix: bool, out: Print, err: Print) -> int:
    """Compare the store with TrueConf; with ``fix`` delete the leaked conferences and clear the
    gone ones. 0 when they agree (or all was fixed), 1 otherwise."""
    path = Path(settings.store.path)
    if not path.exists():
        # Without the store every tagged conference would look leaked: never guess.
        err(f"mailhook: no store at {path}: nothing to compare TrueConf with "
            "(is this the config the daemon uses?)")
        return 1
    app = App.for_tools(settings)
    try:
        # TrueConf first, then the store: a conference listed was recorded as "creating"
        # before it was made, so the store read afterwards knows it.
        conferences = await app.client.list_conferences()
        found = compare(*await _stored_state(app), conferences)
        found = dataclasses.replace(found, gone=tuple(await _confirmed_gone(app, found.gone)))
        report_reconciliation(found, fix, out)
        if not fix or not (found.leaked or found.gone):
            return 1 if found.leaked or found.gone else 0
        return await _fix(app, found, out, err)
    except MailhookError as exc:
        err(f"mailhook: cannot compare with TrueConf: {exc}")
        return 1
    finally:
        await app.aclose()


async def _stored_state(app: App) -> tuple[list[StoredEvent], list[str]]:
    events = await app.store.list_events()
    pending = [p.conference_id for p in await app.store.due_deletes(float("inf"))]
    return events, pending


async def _confirmed_gone(app: App, events: Sequence[StoredEvent]) -> list[StoredEvent]:
    """The events whose conference TrueConf answers 404 for (not only left out of a listing)."""
    return [e for e in events if await app.client.get_conference(e.conference_id) is None]


def report_reconciliation(found: Reconciliation, fix: bool, out: Print) -> None:
    """One line per difference, then a verdict."""
    for conference in found.leaked:
        out(f"leaked  conference {conference.id} ({conference.topic!r}, owner "
            f"{conference.owner or '-'}): tagged by mailhook, no stored event uses it")
    for event in found.gone:
        out(f"gone    {event.uid} ({event.organizer}): conference {event.conference_id} is no "
            "longer on TrueConf")
    if not (found.leaked or found.gone):
        out("mailhook conferences reconcile: the store and TrueConf agree")
        return
    counts = f"{len(found.leaked)} leaked, {len(found.gone)} gone"
    advice = "fixing" if fix else ("--fix deletes the leaked conferences and clears the gone "
                                   "ones from the store")
    out(f"mailhook conferences reconcile: {counts}; {advice}")


async def _fix(app: App, found: Reconciliation, out: Print, err: Print) -> int:
    failed = 0
    for conference in found.leaked:
        try:
            await app.client.delete_conference(conference.id)
            out(f"deleted leaked conference {conference.id}")
        except MailhookError as exc:
            err(f"mailhook: TrueConf did not delete conference {conference.id}: {exc}")
            failed += 1
    for event in found.gone:
        out(await _forget_conference(app, event))
    return 1 if failed else 0


async def _forget_conference(app: App, event: StoredEvent) -> str:
    """Mark an event whose conference is gone as deleted, unless the daemon changed it
    meanwhile (a later invitation that asks for TrueConf then gets a new conference)."""
    async with app.locks.hold((event.organizer, event.uid)):
        now = await app.store.get(event.organizer, event.uid)
        if now is None or now.conference_id != event.conference_id or \
                now.state is EventState.DELETED:
            return f"left {event.uid} ({event.organizer}): changed meanwhile"
        await app.store.put(dataclasses.replace(now, state=EventState.DELETED,
                                                updated_at=app.clock().timestamp()))
    return f"cleared {event.uid} ({event.organizer}): conference {event.conference_id} was gone"
