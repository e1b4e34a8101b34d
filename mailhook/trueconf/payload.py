"""Pure builders and parsers for TrueConf Server API bodies, for both API generations.

Nothing here does I/O: the client feeds in decoded JSON and gets values or ``TrueConfRejected``
back, so every shape decision can be tested without a server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mailhook.core.model import Conference, ConferenceSpec, Invitee
from mailhook.errors import TrueConfRejected

TOPIC_MAX = 240
# Both generations report the end of user paging with this sentinel.
LAST_PAGE = -1

_V3_ALL_ON_SCREEN = 0
_V3_ROLE_BASED = 3
_V3_SCHEDULE_ONCE = 1


@dataclass(frozen=True, slots=True)
class TrueConfUser:
    """A TrueConf account, as far as mapping an e-mail address to a TrueConf id needs it."""

    id: str
    email: str  # lower-case, "" when the account has none
    display_name: str = ""


@dataclass(frozen=True, slots=True)
class ListedConference:
    """A conference as a listing shows it: enough to tell whose it is."""

    id: str
    tags: tuple[str, ...] = ()
    topic: str = ""
    owner: str = ""


@dataclass(frozen=True, slots=True)
class ApiError:
    """What an error body said, reduced to the parts worth reporting."""

    message: str
    reason: str = ""


def is_v4(api_version: str) -> bool:
    """Tell whether an API version ("v3.11", "v4", "v4.1", ...) speaks the v4 payload dialect."""
    return api_version.lower().startswith("v4")


# --- request bodies -------------------------------------------------------------------------


def conference_body(spec: ConferenceSpec, *, v4: bool) -> dict[str, Any]:
    """Build the full create/update body for one API generation."""
    return v4_conference(spec) if v4 else v3_conference(spec)


def v3_conference(spec: ConferenceSpec) -> dict[str, Any]:
    """Build a v3.x conference object: integer mode, integer schedule type."""
    return {
        "topic": one_line_topic(spec.topic),
        "owner": spec.owner,
        "type": _V3_ROLE_BASED if spec.role_based else _V3_ALL_ON_SCREEN,
        "max_participants": spec.max_participants,
        "schedule": {
            "type": _V3_SCHEDULE_ONCE,
            "start_time": spec.start,
            "duration": spec.duration,
        },
        "invitations": invitations(spec),
        "tags": [spec.tag],
        "description": spec.description,
        # Guests could join through the link without an account; invitations are for members.
        "allow_guests": False,
        # TrueConf should not call people in by itself; attendees join from the invitation.
        "auto_invite": 0,
    }


def v4_conference(spec: ConferenceSpec) -> dict[str, Any]:
    """Build a v4 conference object: string mode and schedule type, UTC "time" of the start."""
    return {
        "topic": one_line_topic(spec.topic),
        "owner": spec.owner,
        "mode": "S|L" if spec.role_based else "PxP",
        "access": "private",
        "max_participants": spec.max_participants,
        "schedule": v4_schedule(spec),
        "invitations": invitations(spec),
        "tags": [spec.tag],
        "description": spec.description,
    }


def v4_schedule(spec: ConferenceSpec) -> dict[str, Any]:
    """Build a complete v4 "once" schedule; a partial one makes the server answer 500."""
    return {
        "type": "once",
        "start_time": spec.start,
        "duration": spec.duration,
        "time": utc_hhmm(spec.start),
        "special_time_offset": spec.utc_offset_minutes,
    }


def invitations(spec: ConferenceSpec) -> list[dict[str, str]]:
    """List the owner first, then each invitee once: TrueConf's own samples invite the owner."""
    seen = {spec.owner}
    result = [{"id": spec.owner}]
    for invitee in spec.invitees:
        if invitee.id not in seen:
            seen.add(invitee.id)
            result.append(_invitation(invitee))
    return result


def _invitation(invitee: Invitee) -> dict[str, str]:
    item = {"id": invitee.id}
    if invitee.display_name:
        item["display_name"] = invitee.display_name
    return item


def one_line_topic(topic: str) -> str:
    """Fold line breaks and runs of whitespace into single spaces and cut to the API's limit."""
    return " ".join(topic.split())[:TOPIC_MAX]


def utc_hhmm(epoch_seconds: int) -> str:
    """Format the UTC wall-clock time of an instant as "HH:MM", as v4 schedules expect."""
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%H:%M")


# --- response bodies ------------------------------------------------------------------------


def parse_conference(body: Any) -> Conference:
    """Read the ``{"conference": {...}}`` envelope; the join link must be the one TrueConf sent."""
    conference = _conference_object(body)
    if conference is None or conference.get("id") in (None, ""):
        raise TrueConfRejected(
            "TrueConf answered without a conference object", reason="badResponse"
        )
    url = conference.get("url")
    if not isinstance(url, str) or not url:
        raise TrueConfRejected(
            f"TrueConf answered without a join link for conference {conference['id']}",
            reason="badResponse",
        )
    tags = conference.get("tags")
    listed = tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else ()
    return Conference(id=str(conference["id"]), url=url, tags=listed)


def _conference_object(body: Any) -> dict[str, Any] | None:
    conference = body.get("conference") if isinstance(body, dict) else None
    return conference if isinstance(conference, dict) else None


def conference_page(body: Any) -> tuple[list[dict[str, Any]], int | None]:
    """Read one page of a conference listing: the items and the total ("cnt" v3, "results" v4)."""
    if not isinstance(body, dict) or not isinstance(body.get("conferences"), list):
        raise TrueConfRejected(
            "TrueConf answered a listing without conferences", reason="badResponse"
        )
    items = [item for item in body["conferences"] if isinstance(item, dict)]
    total = body.get("cnt", body.get("results"))
    return items, total if isinstance(total, int) and not isinstance(total, bool) else None


def has_tag(conference: dict[str, Any], tag: str) -> bool:
    """Tell whether a listed conference carries the tag, whatever filtering the server did."""
    tags = conference.get("tags")
    return isinstance(tags, list) and tag in tags


def listed_conference(item: dict[str, Any]) -> ListedConference | None:
    """One item of a conference listing; None when it has no id."""
    if item.get("id") in (None, ""):
        return None
    tags = item.get("tags")
    topic, owner = item.get("topic"), item.get("owner")
    return ListedConference(
        id=str(item["id"]),
        tags=tuple(str(tag) for tag in tags) if isinstance(tags, list) else (),
        topic=topic if isinstance(topic, str) else "",
        owner=owner if isinstance(owner, str) else "",
    )


def user_page(body: Any) -> tuple[list[TrueConfUser], int]:
    """Read one page of users and the next page id (``LAST_PAGE`` at the end)."""
    if not isinstance(body, dict) or not isinstance(body.get("users"), list):
        raise TrueConfRejected(
            "TrueConf answered a user listing without users", reason="badResponse"
        )
    users = [user for user in map(_user, body["users"]) if user is not None]
    next_page = body.get("next_page_id", LAST_PAGE)
    if not isinstance(next_page, int) or isinstance(next_page, bool):
        next_page = LAST_PAGE
    return users, next_page


def _user(item: Any) -> TrueConfUser | None:
    if not isinstance(item, dict) or item.get("id") in (None, ""):
        return None
    email = item.get("email")
    name = item.get("display_name")
    return TrueConfUser(
        id=str(item["id"]),
        email=email.strip().lower() if isinstance(email, str) else "",
        display_name=name if isinstance(name, str) else "",
    )


def parse_error(body: Any) -> ApiError:
    """Read the v3 envelope, a plain-string ``error`` or a flat v4-style body, whichever came."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return _error_envelope(error)
        if isinstance(error, str):
            detail = body.get("error_description") or body.get("message") or ""
            return ApiError(message=_join(error, detail), reason=str(body.get("reason") or error))
        return _flat_error(body)
    if isinstance(body, str):
        return ApiError(message=body[:200])
    return ApiError(message="")


def _error_envelope(error: dict[str, Any]) -> ApiError:
    details = [item for item in error.get("errors") or [] if isinstance(item, dict)]
    first = details[0] if details else {}
    message = _join(str(error.get("message") or ""), str(first.get("message") or ""))
    return ApiError(message=message, reason=str(first.get("reason") or error.get("reason") or ""))


def _flat_error(body: dict[str, Any]) -> ApiError:
    message = body.get("message") or body.get("detail") or body.get("title") or ""
    # v4 bodies may carry a numeric "code" (the status again) or a symbolic one: keep only words.
    code = body.get("code")
    reason = body.get("reason") or (code if isinstance(code, str) else "")
    return ApiError(message=str(message), reason=str(reason))


def _join(first: str, second: str) -> str:
    return f"{first}: {second}" if first and second and second != first else first or second
