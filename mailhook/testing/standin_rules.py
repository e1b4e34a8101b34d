"""The TrueConf API stand-in's rules: the request and reply values, how request bodies are
checked (the way the real server checks them, v3.x and v4), how records are shown and listed,
and the error replies. Pure functions; the server and its state are ``standin.py``'s.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

REDACTED = "***"

API_ROUTE = re.compile(r"^/api/(?P<version>v3\.\d+|v4(?:\.\d+)?)(?P<rest>/.*)?$")
CONFERENCE_ROUTE = re.compile(r"^/conferences/(?P<id>[^/]+)$")
CUSTOM_ID = re.compile(r"^[A-Za-z0-9_]{1,128}$")
HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
WEEKDAYS = {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}

V3_TYPES = {0, 1, 3}
V3_SCHEDULE_TYPES = {-1, 0, 1}
V4_MODES = {"PxP", "OxP", "S|L", "S|L Auto"}
V4_SCHEDULE_TYPES = {"none", "once", "week"}
V4_ACCESS = {"private", "public"}
V4_DURATION = range(60, 86400)  # 60..86399 s
# Fields a v4 schedule must carry in full, or PATCH makes the real server answer 500.
V4_SCHEDULE_FIELDS = {
    "none": (),
    "once": ("start_time", "duration", "time", "special_time_offset"),
    "week": ("start_time", "duration", "time", "special_time_offset", "days"),
}
DEFAULT_PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any = None  # JSON-serialisable; None sends no body
    headers: dict[str, str] = field(default_factory=dict)
    text: str | None = None  # an HTML body instead of JSON


@dataclass(frozen=True, slots=True)
class Problem:
    reason: str  # "requiredField", "invalidValue", ...
    location: str  # the field, dotted for nested ones
    message: str


@dataclass(slots=True)
class Fault:
    remaining: int
    status: int
    path_prefix: str


# The permissions (scopes) of an OAuth application that may do everything mailhook does; a
# token carries its application's scopes (trueconf-api.md 1.1).
ALL_SCOPES = ("conferences", "conferences:read", "conferences:write", "users", "users:read")
# The query parameters each generation documents for listing conferences (trueconf-api.md 3.1);
# any other one is refused, so a client paging with the other generation's "page"/"page_id"
# (which a server would ignore, serving page 1 for ever) is caught.
V3_LIST_PARAMETERS = {"page_id", "page_size", "state", "tag"}
V4_LIST_PARAMETERS = {
    "topic", "owner", "state", "access", "mode", "page", "page_size", "sort_field", "sort_order",
    "timezone", "after", "before", "topic_cid_contains", "invitation", "registration_enabled",
}


class BadRequestError(Exception):
    """A request the stand-in refuses with 400 before looking any further."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


# --- pure helpers ---------------------------------------------------------------------------


def user_record(raw: dict[str, Any], host: str) -> dict[str, Any]:
    """Complete a configured user with the fields a real user object carries."""
    user_id = str(raw["id"])
    record = {
        "id": user_id,
        "uid": f"{user_id}@{host}",
        "login_name": user_id,
        "email": "",
        "display_name": user_id,
        "first_name": "",
        "last_name": "",
        "is_active": 1,
        "status": 0,
    }
    record.update(raw)
    record["id"] = user_id
    return record


def is_user(user: dict[str, Any], owner: str) -> bool:
    return owner in (user.get("id"), user.get("uid"), user.get("login_name"))


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_positive_int(value: Any) -> bool:
    return is_int(value) and value > 0


def is_str(value: Any) -> bool:
    return isinstance(value, str)


def is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def check_optional(body: dict[str, Any], name: str, test: Any, what: str) -> Iterator[Problem]:
    if name in body and not test(body[name]):
        yield Problem("invalidValue", name, f"{name} must be {what}")


def check_topic(body: dict[str, Any]) -> Iterator[Problem]:
    topic = body.get("topic")
    if topic is None:
        yield Problem("requiredField", "topic", "topic is required")
    elif not isinstance(topic, str) or not 1 <= len(topic) <= 240:
        yield Problem("invalidValue", "topic", "topic must be a string of 1..240 characters")
    elif "\n" in topic or "\r" in topic:
        yield Problem("invalidValue", "topic", "topic must be one line")


def check_v3_fields(body: dict[str, Any]) -> Iterator[Problem]:
    if "type" not in body:
        yield Problem("requiredField", "type", "type is required")
    elif body["type"] not in V3_TYPES or not is_int(body["type"]):
        yield Problem("invalidValue", "type", "type must be 0, 1 or 3")
    yield from check_v3_schedule(body.get("schedule"))
    yield from check_optional(body, "allow_guests", lambda v: isinstance(v, bool), "a boolean")
    yield from check_optional(body, "auto_invite", lambda v: v in (0, 1, 2), "0, 1 or 2")


def check_v3_schedule(schedule: Any) -> Iterator[Problem]:
    if schedule is None:
        return
    if not isinstance(schedule, dict):
        yield Problem("invalidValue", "schedule", "schedule must be an object")
        return
    kind = schedule.get("type")
    if kind is None:
        yield Problem("requiredField", "schedule.type", "schedule.type is required")
    elif not is_int(kind) or kind not in V3_SCHEDULE_TYPES:
        yield Problem("invalidValue", "schedule.type", "schedule.type must be -1, 0 or 1")
    elif kind == 1:
        yield from check_int_field(schedule, "start_time", lambda v: True)
        yield from check_int_field(schedule, "duration", lambda v: v > 0)
    elif kind == 0:
        yield from check_int_field(schedule, "duration", lambda v: v > 0)
        yield from check_days(schedule)
        yield from check_time(schedule)


def check_v4_fields(body: dict[str, Any]) -> Iterator[Problem]:
    if "mode" not in body:
        yield Problem("requiredField", "mode", "mode is required")
    elif body["mode"] not in V4_MODES:
        yield Problem("invalidValue", "mode", f"mode must be one of {sorted(V4_MODES)}")
    yield from check_optional(body, "access", lambda v: v in V4_ACCESS, "private or public")
    yield from check_v4_schedule(body.get("schedule"))


def check_v4_schedule(schedule: Any) -> Iterator[Problem]:
    if schedule is None:
        return
    if not isinstance(schedule, dict):
        yield Problem("invalidValue", "schedule", "schedule must be an object")
        return
    kind = schedule.get("type")
    if kind is None:
        yield Problem("requiredField", "schedule.type", "schedule.type is required")
    elif kind not in V4_SCHEDULE_TYPES:
        yield Problem("invalidValue", "schedule.type", "schedule.type must be none, once or week")
    elif kind in ("once", "week"):
        yield from check_int_field(schedule, "start_time", lambda v: True)
        yield from check_int_field(schedule, "duration", lambda v: v in V4_DURATION)
        yield from check_time(schedule)
        yield from check_int_field(schedule, "special_time_offset", lambda v: True)
        if kind == "week":
            yield from check_days(schedule)


def check_int_field(schedule: dict[str, Any], name: str, test: Any) -> Iterator[Problem]:
    location = f"schedule.{name}"
    if name not in schedule:
        yield Problem("requiredField", location, f"{location} is required")
    elif not is_int(schedule[name]) or not test(schedule[name]):
        yield Problem("invalidValue", location, f"{location} is out of range or not an integer")


def check_time(schedule: dict[str, Any]) -> Iterator[Problem]:
    value = schedule.get("time")
    if value is None:
        yield Problem("requiredField", "schedule.time", "schedule.time is required")
    elif not isinstance(value, str) or not HHMM.match(value):
        yield Problem("invalidValue", "schedule.time", "schedule.time must be HH:MM")


def check_days(schedule: dict[str, Any]) -> Iterator[Problem]:
    days = schedule.get("days")
    if not isinstance(days, list) or not days or not set(days) <= WEEKDAYS:
        yield Problem("invalidValue", "schedule.days", "schedule.days must list weekday names")


def check_invitations(invitations: Any, v4: bool) -> Iterator[Problem]:
    if invitations is None:
        return
    if not isinstance(invitations, list):
        yield Problem("invalidValue", "invitations", "invitations must be a list")
        return
    for index, item in enumerate(invitations):
        yield from check_invitation(item, f"invitations[{index}]", v4)


def check_invitation(item: Any, location: str, v4: bool) -> Iterator[Problem]:
    if not isinstance(item, dict):
        yield Problem("invalidValue", location, f"{location} must be an object")
    elif not isinstance(item.get("id"), str) or not item["id"]:
        yield Problem("requiredField", f"{location}.id", f"{location}.id must be a string")
    elif "display_name" in item and not isinstance(item["display_name"], str):
        yield Problem("invalidValue", f"{location}.display_name", "display_name must be a string")
    elif v4 and "is_moderator" in item and not isinstance(item["is_moderator"], bool):
        yield Problem("invalidValue", f"{location}.is_moderator", "is_moderator must be boolean")


def schedule_incomplete(schedule: Any) -> bool:
    if not isinstance(schedule, dict):
        return True
    kind = schedule.get("type")
    needed = V4_SCHEDULE_FIELDS.get(kind, ()) if isinstance(kind, str) else ()
    return any(name not in schedule for name in needed)


def kept_fields(record: dict[str, Any]) -> dict[str, Any]:
    """Fields a client cannot overwrite through PUT or PATCH."""
    names = ("id", "url", "state", "created_at")
    return {name: record[name] for name in names if name in record}


def rendered(record: dict[str, Any], v4: bool) -> dict[str, Any]:
    """A stored conference as the given API generation shows it."""
    rendered = copy.deepcopy(record)
    base, _, conference_id = record["url"].rpartition("/c/")
    web_client_url = f"{base}/webrtc/{conference_id}"
    rendered["web_client_url" if v4 else "webclient_url"] = web_client_url
    return rendered


def listed(record: dict[str, Any], query: dict[str, str], v4: bool) -> bool:
    if "state" in query and record.get("state") != query["state"]:
        return False
    if v4:
        return "owner" not in query or record.get("owner") == query["owner"]
    return not query.get("tag") or query["tag"] in (record.get("tags") or [])


def paging(query: dict[str, str], page_key: str, cap: int) -> tuple[int, int]:
    """Read 1-based paging parameters, capping the page size so clients must page."""
    try:
        page = int(query.get(page_key, "1"))
        size = int(query.get("page_size", str(DEFAULT_PAGE_SIZE)))
    except ValueError as exc:
        raise BadRequestError(
            Problem("invalidValue", page_key, "paging must be integers")
        ) from exc
    if page < 1 or size < 1:
        raise BadRequestError(Problem("invalidValue", page_key, "paging must be positive"))
    return page, min(size, cap)


def bearer(header: str) -> str:
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def decoded_body(request: Request) -> Any:
    """Decode a JSON or form body; None when there is none or it cannot be read."""
    if not request.body:
        return None
    content_type = request.headers.get("content-type", "")
    text = request.body.decode("utf-8", "replace")
    if "application/x-www-form-urlencoded" in content_type:
        return {key: values[0] for key, values in parse_qs(text).items()}
    try:
        return json.loads(text)
    except ValueError:
        return None


def json_object(request: Request) -> dict[str, Any]:
    body = decoded_body(request)
    if not isinstance(body, dict):
        raise BadRequestError(Problem("parseError", "body", "the body must be a JSON object"))
    return body


def redacted(body: Any) -> Any:
    if isinstance(body, dict) and "client_secret" in body:
        return {**body, "client_secret": REDACTED}
    return body


# --- replies --------------------------------------------------------------------------------


def error(
    status: int, reason: str, message: str, *, v4: bool = False, location: str = ""
) -> Reply:
    return errors(status, [Problem(reason, location, message)], v4)


def errors(status: int, problems: Iterable[Problem], v4: bool) -> Reply:
    """The v3 error envelope; v4 adds a trace id, as its "TCS error format" does."""
    details = [error_detail(problem) for problem in problems]
    body: dict[str, Any] = {
        "error": {"code": status, "message": HTTPStatus(status).phrase, "errors": details}
    }
    if v4:
        body["trace_id"] = secrets.token_hex(8)
    return Reply(status, body)


def error_detail(problem: Problem) -> dict[str, str]:
    detail = {"reason": problem.reason, "message": problem.message}
    if problem.location:
        detail.update(locationType="body", location=problem.location)
    return detail


def invalid(problems: list[Problem], v4: bool) -> Reply:
    return errors(400, problems, v4)


def not_found(conference_id: str, v4: bool) -> Reply:
    message = f"Conference '{conference_id}' is not found."
    return error(404, "conferenceNotFound", message, v4=v4, location="conference_id")


def token_refused(v4: bool) -> Reply:
    # v3 servers answer 403 accessTokenInvalid; v4 answers 401.
    if v4:
        return error(401, "accessTokenInvalid", "The access token is missing or expired", v4=True)
    return error(403, "accessTokenInvalid", "The access token is missing or expired")


def oauth_error(status: int, error: str, description: str) -> Reply:
    return Reply(status, {"error": error, "error_description": description})


def fault_reply(fault: Fault) -> Reply:
    headers = {"Retry-After": "1"} if fault.status == 429 else {}
    reason = {429: "rateLimitExceeded", 503: "serviceUnavailable"}.get(fault.status, "injected")
    reply = error(fault.status, reason, f"Injected fault {fault.status}")
    return Reply(reply.status, reply.body, headers)
