"""The admin commands: ``mailhook check`` and ``mailhook conferences list | show | delete``

Each function takes the settings and prints for a person at a terminal; the exit status is
what it returns. The parts come from ``mailhook.app``, as the daemon's do, and the store is
used through its interface: reading it never creates or changes it; only ``delete`` writes.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mailhook.app import App, build_client, open_store
from mailhook.config import Settings
from mailhook.core.model import EventState, StoredEvent
from mailhook.errors import MailhookError, StoreUnavailable
from mailhook.health import Check

if TYPE_CHECKING:
    from mailhook.core.replies import Reply

Print = Callable[[str], None]
# A conference id no server has: asking for it proves the API path and permissions work.
PROBE_CONFERENCE_ID = "mailhook-check-probe"


# --- mailhook check ---------------------------------------------------------------------------


async def check(settings: Settings, config_file: Path, out: Print) -> int:
    """Check the config, the store, TrueConf, the next hop and the milter socket (when there is
    one); 0 only when every check passed, 2 when the config cannot work."""
    from mailhook.relay import NextHop

    if looping := check_relay_loop(settings, config_file):
        for line in verdicts([looping]):
            out(line)
        return 2
    checks = [Check("config", True, f"{config_file} is valid"), await check_store(settings)]
    client = build_client(settings)
    try:
        checks += await check_trueconf(settings, client)
        if checks[-1].name == "trueconf api":  # a token was issued: the users API can be asked
            checks.append(await check_trueconf_users(settings, client))
    finally:
        await client.aclose()
    checks.append(next_hop_verdict(settings, await NextHop(settings.relay).probe()))
    if settings.milter.listen:
        from mailhook.milter_check import check_milter

        checks.append(await check_milter(settings.milter.listen))
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


async def check_store(settings: Settings) -> Check:
    """The store can be read (a missing one is fine: serve creates it, unless it went missing
    after it was made)."""
    path = Path(settings.store.path)
    try:
        events = await _read_events(settings)
    except StoreUnavailable as exc:
        return Check("store", False, str(exc))
    if settings.store.url:
        from mailhook.store.postgres import describe

        return Check("store", True, f"{describe(settings.store.url)}: {len(events)} event(s)")
    if not path.exists():
        return Check("store", True, f"{path} not created yet (mailhook serve creates it)")
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


async def _read_events(settings: Settings) -> list[StoredEvent]:
    """Every stored event, newest first, through the store opened read-only (the daemon may
    be running; a store not made yet is empty, one that went missing is StoreUnavailable)."""
    store = open_store(settings, read_only=True)
    try:
        return await store.list_events()
    finally:
        await store.close()


def stored_events(settings: Settings) -> list[StoredEvent]:
    """The stored events; none when the store does not exist yet. A store that went missing
    after mailhook made it is an error, not an empty list."""
    return asyncio.run(_read_events(settings))


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
    app = App.for_tools(settings)
    try:
        # A running daemon handling a message for this event meanwhile would undo the deletion.
        async with app.locks.hold((event.organizer, event.uid)):
            return await _delete_conference(app, event, out, err)
    finally:
        await app.aclose()


async def _delete_conference(app: App, event: StoredEvent, out: Print, err: Print) -> int:
    event = await app.store.get(event.organizer, event.uid) or event
    if event.state is EventState.DELETED:
        out(f"{event.uid}: already deleted")
        return 0
    try:
        if event.conference_id:
            await app.trueconf.delete_conference(event.conference_id)
    except MailhookError as exc:
        err(f"mailhook: TrueConf did not delete conference {event.conference_id}: {exc}")
        return 1
    await app.store.put(dataclasses.replace(event, state=EventState.DELETED,
                                            updated_at=app.clock().timestamp()))
    out(f"deleted conference {event.conference_id or '-'} of {event.uid} ({event.organizer})")
    return 0


def _when(epoch: float) -> str:
    if not epoch:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M")
