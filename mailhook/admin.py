"""The admin commands: ``mailhook check`` and ``mailhook conferences list | show | delete``.

Each function takes the settings and prints for a person at a terminal; the exit status is
what it returns. Reading the store never creates or changes it; only ``delete`` writes.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from mailhook.config import Settings
from mailhook.core.model import EventState, StoredEvent
from mailhook.errors import MailhookError, StoreUnavailable
from mailhook.health import Check

if TYPE_CHECKING:
    from mailhook.relay import Reply

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
