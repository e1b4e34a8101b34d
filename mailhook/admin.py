"""The admin commands: ``mailhook check`` and ``mailhook conferences list | show | delete |
reconcile``.

Each function takes the settings and prints for a person at a terminal; the exit status is
what it returns. Reading the store never creates or changes it; only ``delete`` writes.
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailhook.config import Settings
from mailhook.core.model import EventState, StoredEvent
from mailhook.errors import MailhookError, StoreUnavailable
from mailhook.health import Check

if TYPE_CHECKING:
    from mailhook.relay import Reply
    from mailhook.trueconf.payload import ListedConference

Print = Callable[[str], None]
# A conference id no server has: asking for it proves the API path and permissions work.
PROBE_CONFERENCE_ID = "mailhook-check-probe"


# --- mailhook check ---------------------------------------------------------------------------


async def check(settings: Settings, config_file: Path, out: Print) -> int:
    """Check the config, the store, TrueConf and the next hop; 0 only when every check passed,
    2 when the config cannot work."""
    from mailhook.daemon import build_client
    from mailhook.relay import NextHop

    if looping := check_relay_loop(settings, config_file):
        for line in verdicts([looping]):
            out(line)
        return 2
    checks = [Check("config", True, f"{config_file} is valid"), check_store(settings)]
    client = build_client(settings)
    try:
        checks += await check_trueconf(settings, client)
        if checks[-1].name == "trueconf api":  # a token was issued: the users API can be asked
            checks.append(await check_trueconf_users(settings, client))
    finally:
        await client.aclose()
    checks.append(next_hop_verdict(settings, await NextHop(settings.relay).probe()))
    for line in verdicts(checks):
        out(line)
    failed = sum(not c.ok for c in checks)
    if failed:
        out(f"mailhook check: {failed} of {len(checks)} checks FAILED")
        return 1
    out(f"mailhook check: all {len(checks)} checks passed")
    return 0


def check_relay_loop(settings: Settings, config_file: Path) -> Check | None:
    """A failed config check when relay is mailhook's own listener (probing that "next hop"
    would only find mailhook itself answering)."""
    from mailhook.loop import relay_loop

    problem = relay_loop(settings)
    return Check("config", False, f"{config_file}: {problem}") if problem else None


def next_hop_verdict(settings: Settings, reply: Reply) -> Check:
    """The next hop's own answer, told apart from the 451 mailhook gives its client itself when
    the next hop cannot be reached (an admin looking for the next hop's log would find nothing)."""
    from mailhook.relay import UNREACHABLE

    hop = f"{settings.relay.host}:{settings.relay.port}"
    if reply.code == UNREACHABLE.code and reply.text.startswith(UNREACHABLE.text):
        reason = reply.text.removeprefix(UNREACHABLE.text).lstrip(": ") or "no answer"
        return Check("next hop", False, f"mailhook answered {reply.code} itself because it "
                                        f"cannot reach {hop}: {reason}")
    whose = "" if reply.ok else " (the next hop's own answer)"
    return Check("next hop", reply.ok, f"{hop} answered {reply}{whose}")


def verdicts(checks: Iterable[Check]) -> list[str]:
    """One line per check: the verdict first, so a failure stands out."""
    checks = list(checks)
    width = max(len(c.name) for c in checks)
    return [f"{'ok  ' if c.ok else 'FAIL'}  {c.name:<{width}}  {c.detail}" for c in checks]


def check_store(settings: Settings) -> Check:
    """The store file can be read (a missing one is fine: serve creates it, unless it went
    missing after it was made)."""
    from mailhook.store.sqlite import missing

    from mailhook.store.sqlite import missing

    path = Path(settings.store.path)
    if gone := missing(str(path)):
        return Check("store", False, gone)
    if not path.exists():
        return Check("store", True, f"{path} not created yet (mailhook serve creates it)")
    try:
        events = read_events(path)
    except sqlite3.Error as exc:
        return Check("store", False, f"{path}: {exc}")
    return Check("store", True, f"{path}: {len(events)} event(s)")


async def check_trueconf(settings: Settings, client: object) -> list[Check]:
    """The token endpoint accepts our credentials, and the configured API version answers."""
    server = f"{settings.trueconf.server_url} (API {settings.trueconf.api_version})"
    try:
        await client.check()  # type: ignore[attr-defined]
    except MailhookError as exc:
        return [Check("trueconf", False, f"{server}: {exc}")]
    checks = [Check("trueconf", True, f"{server}: token issued to client "
                                      f"{settings.trueconf.client_id!r}")]
    try:
        await client.get_conference(PROBE_CONFERENCE_ID)  # type: ignore[attr-defined]
    except MailhookError as exc:
        checks.append(Check("trueconf api", False, str(exc)))
    else:
        checks.append(Check("trueconf api", True, "conferences API answers"))
    return checks


async def check_trueconf_users(settings: Settings, client: object) -> Check:
    """The users API answers with this application's permissions (a token alone does not show
    it): mailhook needs it to find attendees' TrueConf accounts by e-mail address."""
    if settings.trueconf.user_mapping != "directory":
        return Check("trueconf users", True, "not used (trueconf.user_mapping = "
                                             f"{settings.trueconf.user_mapping!r})")
    try:
        users = await client.list_users()  # type: ignore[attr-defined]
    except MailhookError as exc:
        hint = ("; give the OAuth application the users read permission (docs/trueconf.md)"
                if getattr(exc, "status", 0) in (401, 403) else "")
        return Check("trueconf users", False, f"{exc}{hint}")
    with_address = sum(1 for user in users if user.email)
    return Check("trueconf users", True, f"users API answers: {len(users)} account(s), "
                                         f"{with_address} with an e-mail address")


# --- mailhook conferences ---------------------------------------------------------------------


def read_events(path: Path) -> list[StoredEvent]:
    """Every stored event, newest first, read-only (the daemon may be running)."""
    from mailhook.store.sqlite import event_from_row

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("select * from events order by updated_at desc").fetchall()
    finally:
        conn.close()
    return [event_from_row(dict(row)) for row in rows]


def stored_events(settings: Settings) -> list[StoredEvent]:
    """The stored events; none when the store does not exist yet. A store that went missing
    after mailhook made it is an error, not an empty list."""
    from mailhook.store.sqlite import missing

    path = Path(settings.store.path)
    if gone := missing(str(path)):
        raise StoreUnavailable(gone)
    return read_events(path) if path.exists() else []


def list_conferences(events: Sequence[StoredEvent], include_deleted: bool, out: Print) -> int:
    """A table of the events and their conferences."""
    shown = [e for e in events if include_deleted or e.state is not EventState.DELETED]
    if not shown:
        out("no conferences stored" + ("" if include_deleted else " (--all shows deleted ones)"))
        return 0
    header = ("UID", "ORGANIZER", "STATE", "CONFERENCE", "STARTS (UTC)", "UPDATED (UTC)")
    rows = [(e.uid, e.organizer, str(e.state), e.conference_id or "-",
             _when(e.spec.start if e.spec else 0), _when(e.updated_at)) for e in shown]
    for line in table(header, rows):
        out(line)
    return 0


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell."""
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
            for row in (header, *rows)]


def select(events: Sequence[StoredEvent], uid: str, organizer: str, err: Print) -> StoredEvent | None:
    """The one event with this UID (and organizer, when several organizers share the UID)."""
    found = [e for e in events if e.uid == uid and (not organizer or e.organizer == organizer.lower())]
    if not found:
        err(f"mailhook: no stored event with UID {uid}")
        return None
    if len(found) > 1:
        organizers = ", ".join(e.organizer for e in found)
        err(f"mailhook: UID {uid} is stored for several organizers ({organizers}); "
            "name one with --organizer")
        return None
    return found[0]


def show_conference(event: StoredEvent, out: Print) -> int:
    """Everything stored about one event."""
    spec = event.spec
    lines = [
        ("uid", event.uid), ("organizer", event.organizer), ("state", str(event.state)),
        ("conference", event.conference_id or "-"), ("link", event.url or "-"),
    ]
    if spec is not None:
        lines += [
            ("topic", spec.topic), ("owner", spec.owner), ("starts", _when(spec.start) + " UTC"),
            ("duration", f"{spec.duration // 60} min"),
            ("mode", "role-based" if spec.role_based else "all on screen"),
            ("max participants", str(spec.max_participants)),
            ("invited accounts", ", ".join(i.id for i in spec.invitees) or "-"),
        ]
    lines += [
        ("attendees", ", ".join(event.attendees) or "-"), ("sequence", str(event.sequence)),
        ("first seen", _when(event.first_seen) + " UTC"), ("updated", _when(event.updated_at) + " UTC"),
    ]
    width = max(len(key) for key, _ in lines)
    for key, value in lines:
        out(f"{key + ':':<{width + 1}} {value}")
    return 0


async def delete_conference(settings: Settings, event: StoredEvent, out: Print, err: Print) -> int:
    """Delete the event's conference on TrueConf, then mark the event deleted in the store."""
    from mailhook.daemon import event_locks

    # A running daemon handling a message for this event meanwhile would undo the deletion.
    async with event_locks(settings, create=False).hold((event.organizer, event.uid)):
        return await _delete_conference(settings, event, out, err)


async def _delete_conference(settings: Settings, event: StoredEvent, out: Print, err: Print) -> int:
    from mailhook.daemon import build_client
    from mailhook.store import SqliteStore

    store = SqliteStore(settings.store.path)
    try:
        event = await store.get(event.organizer, event.uid) or event
    finally:
        await store.close()
    if event.state is EventState.DELETED:
        out(f"{event.uid}: already deleted")
        return 0
    client = build_client(settings)
    try:
        if event.conference_id:
            await client.delete_conference(event.conference_id)
    except MailhookError as exc:
        err(f"mailhook: TrueConf did not delete conference {event.conference_id}: {exc}")
        return 1
    finally:
        await client.aclose()
    store = SqliteStore(settings.store.path)
    try:
        await store.put(dataclasses.replace(event, state=EventState.DELETED, updated_at=time.time()))
    finally:
        await store.close()
    out(f"deleted conference {event.conference_id or '-'} of {event.uid} ({event.organizer})")
    return 0


def _when(epoch: float) -> str:
    if not epoch:
        return "-"
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M")


# --- mailhook conferences reconcile -----------------------------------------------------------

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
    from mailhook.daemon import build_client

    path = Path(settings.store.path)
    if not path.exists():
        # Without the store every tagged conference would look leaked: never guess.
        err(f"mailhook: no store at {path}: nothing to compare TrueConf with "
            "(is this the config the daemon uses?)")
        return 1
    client = build_client(settings)
    try:
        # TrueConf first, then the store: a conference listed was recorded as "creating"
        # before it was made, so the store read afterwards knows it.
        conferences = await client.list_conferences()
        found = compare(*await _stored_state(settings), conferences)
        found = dataclasses.replace(found, gone=tuple(await _confirmed_gone(client, found.gone)))
        report_reconciliation(found, fix, out)
        if not fix or not (found.leaked or found.gone):
            return 1 if found.leaked or found.gone else 0
        return await _fix(settings, client, found, out, err)
    except MailhookError as exc:
        err(f"mailhook: cannot compare with TrueConf: {exc}")
        return 1
    finally:
        await client.aclose()


async def _stored_state(settings: Settings) -> tuple[list[StoredEvent], list[str]]:
    from mailhook.store import SqliteStore

    store = SqliteStore(settings.store.path)
    try:
        events = await store.list_events()
        pending = [p.conference_id for p in await store.due_deletes(float("inf"))]
    finally:
        await store.close()
    return events, pending


async def _confirmed_gone(client: Any, events: Sequence[StoredEvent]) -> list[StoredEvent]:
    """The events whose conference TrueConf answers 404 for (not only left out of a listing)."""
    return [e for e in events if await client.get_conference(e.conference_id) is None]


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


async def _fix(settings: Settings, client: Any, found: Reconciliation, out: Print,
               err: Print) -> int:
    failed = 0
    for conference in found.leaked:
        try:
            await client.delete_conference(conference.id)
            out(f"deleted leaked conference {conference.id}")
        except MailhookError as exc:
            err(f"mailhook: TrueConf did not delete conference {conference.id}: {exc}")
            failed += 1
    for event in found.gone:
        out(await _forget_conference(settings, event))
    return 1 if failed else 0


async def _forget_conference(settings: Settings, event: StoredEvent) -> str:
    """Mark an event whose conference is gone as deleted, unless the daemon changed it
    meanwhile (a later invitation that asks for TrueConf then gets a new conference)."""
    from mailhook.daemon import event_locks
    from mailhook.store import SqliteStore

    async with event_locks(settings, create=False).hold((event.organizer, event.uid)):
        store = SqliteStore(settings.store.path)
        try:
            now = await store.get(event.organizer, event.uid)
            if now is None or now.conference_id != event.conference_id or \
                    now.state is EventState.DELETED:
                return f"left {event.uid} ({event.organizer}): changed meanwhile"
            await store.put(dataclasses.replace(now, state=EventState.DELETED,
                                                updated_at=time.time()))
        finally:
            await store.close()
    return f"cleared {event.uid} ({event.organizer}): conference {event.conference_id} was gone"
