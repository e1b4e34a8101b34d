"""A TrueConf Server REST API stand-in: a real HTTP server for tests and mail-routing rehearsals.

It speaks the documented v3.x and v4 shapes (see ``shared/notes/trueconf-api.md``), validates
request bodies the way the real server does, keeps conferences in memory and records every request.
Faults, latency and token expiry can be injected from Python or, for a stand-in running in another
process, through the unauthenticated ``/_standin/`` control endpoints: bind it to loopback only.

Stdlib only, so rehearsing needs nothing beyond mailhook itself::

    python -m mailhook.testing.standin --port 8090 --users config/standin-users.json
"""

from __future__ import annotations

import argparse
import copy
import html
import itertools
import json
import re
import secrets
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["RecordedRequest", "StandIn", "main"]

TOKEN_PATH = "/oauth2/v1/token"
CONTROL_PREFIX = "/_standin/"
REDACTED = "***"

_API_ROUTE = re.compile(r"^/api/(?P<version>v3\.\d+|v4(?:\.\d+)?)(?P<rest>/.*)?$")
_CONFERENCE_ROUTE = re.compile(r"^/conferences/(?P<id>[^/]+)$")
_CUSTOM_ID = re.compile(r"^[A-Za-z0-9_]{1,128}$")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_WEEKDAYS = {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}

_V3_TYPES = {0, 1, 3}
_V3_SCHEDULE_TYPES = {-1, 0, 1}
_V4_MODES = {"PxP", "OxP", "S|L", "S|L Auto"}
_V4_SCHEDULE_TYPES = {"none", "once", "week"}
_V4_ACCESS = {"private", "public"}
_V4_DURATION = range(60, 86400)  # 60..86399 s
# Fields a v4 schedule must carry in full, or PATCH makes the real server answer 500.
_V4_SCHEDULE_FIELDS = {
    "none": (),
    "once": ("start_time", "duration", "time", "special_time_offset"),
    "week": ("start_time", "duration", "time", "special_time_offset", "days"),
}
_DEFAULT_PAGE_SIZE = 100
# The permissions (scopes) of an OAuth application that may do everything mailhook does; a
# token carries its application's scopes (trueconf-api.md 1.1).
ALL_SCOPES = ("conferences", "conferences:read", "conferences:write", "users", "users:read")
# The query parameters each generation documents for listing conferences (trueconf-api.md 3.1);
# any other one is refused, so a client paging with the other generation's "page"/"page_id"
# (which a server would ignore, serving page 1 for ever) is caught.
_V3_LIST_PARAMETERS = {"page_id", "page_size", "state", "tag"}
_V4_LIST_PARAMETERS = {
    "topic", "owner", "state", "access", "mode", "page", "page_size", "sort_field", "sort_order",
    "timezone", "after", "before", "topic_cid_contains", "invitation", "registration_enabled",
}


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the stand-in received (control endpoints excluded)."""

    method: str
    path: str
    query: dict[str, str]  # first value of each parameter
    headers: dict[str, str]  # names in lower case
    json: Any = None  # decoded JSON or form body; the client secret is replaced by "***"


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: Any = None  # JSON-serialisable; None sends no body
    headers: dict[str, str] = field(default_factory=dict)
    text: str | None = None  # an HTML body instead of JSON


@dataclass(frozen=True, slots=True)
class _Problem:
    reason: str  # "requiredField", "invalidValue", ...
    location: str  # the field, dotted for nested ones
    message: str


@dataclass(slots=True)
class _Fault:
    remaining: int
    status: int
    path_prefix: str


class _BadRequestError(Exception):
    """A request the stand-in refuses with 400 before looking any further."""

    def __init__(self, problem: _Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


# --- the public object ----------------------------------------------------------------------


class StandIn:
    """A TrueConf Server API stand-in served from a background thread."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        client_id: str = "mailhook",
        client_secret: str = "secret",
        users: list[dict[str, Any]] | None = None,
        token_lifetime: int = 3600,
        page_size_cap: int = 10,
        latency: float = 0.0,
        scopes: Iterable[str] = ALL_SCOPES,
    ) -> None:
        self.host = host
        # The OAuth application's permissions: an API call outside them gets 403 "forbidden".
        self.scopes = frozenset(scopes)
        self.port = port
        self.client_id = client_id
        self._client_secret = client_secret
        self._users = [_user_record(raw, host) for raw in users] if users is not None else None
        self.token_lifetime = token_lifetime
        self.page_size_cap = page_size_cap
        self._latency = latency
        self._lock = threading.Lock()
        self._conferences: dict[str, dict[str, Any]] = {}
        self._requests: list[RecordedRequest] = []
        self._tokens: dict[str, float] = {}  # token -> expiry on time.monotonic()
        self._fault: _Fault | None = None
        self._join_url = ""  # a template for the links of new conferences; "" for real ones
        self._ids = itertools.count(4_000_000_001)  # never reused, even across reset()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None
        self.verbose = False

    # lifecycle

    def start(self) -> StandIn:
        """Bind the socket and serve from a daemon thread."""
        server = _Server((self.host, self.port), _Handler, standin=self)
        self._server = server
        host, port = server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        shown = f"[{host}]" if ":" in host else host
        # Kept after stop(): handlers still finishing a slow request build links from it.
        self._url = f"http://{shown}:{port}"
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name="trueconf-standin",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:54321``."""
        if self._url is None:
            raise RuntimeError("the stand-in has not been started")
        return self._url

    # inspection and control (thread-safe)

    @property
    def conferences(self) -> dict[str, dict[str, Any]]:
        """A snapshot of the current conferences by id."""
        with self._lock:
            return copy.deepcopy(self._conferences)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the recorded requests, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def users(self) -> list[dict[str, Any]]:
        """The configured user records (empty when none were given)."""
        return copy.deepcopy(self._users or [])

    def expire_tokens(self) -> None:
        """Make every issued token invalid, as when tokens outlive their lifetime."""
        with self._lock:
            self._tokens.clear()

    def fail_next(self, count: int, status: int = 503, *, path_prefix: str = "/api/") -> None:
        """Answer the next ``count`` requests under ``path_prefix`` with ``status``."""
        with self._lock:
            self._fault = _Fault(count, status, path_prefix) if count > 0 else None

    def set_join_url(self, template: str) -> None:
        """Give conferences created from now on this join link ("{id}" becomes the conference
        id), e.g. ``javascript:alert(1)`` as a server that was tampered with would; "" for the
        stand-in's own links."""
        with self._lock:
            self._join_url = template

    def set_latency(self, seconds: float) -> None:
        """Delay every API request by ``seconds`` before answering."""
        with self._lock:
            self._latency = max(0.0, seconds)

    def reset(self) -> None:
        """Forget conferences, requests, tokens, faults, latency and a join link template; keep
        users and credentials."""
        with self._lock:
            self._conferences.clear()
            self._requests.clear()
            self._tokens.clear()
            self._fault = None
            self._latency = 0.0
            self._join_url = ""

    # request handling (called from handler threads)

    def _handle(self, request: _Request) -> _Reply:
        """Answer one request; every route below is reached from here."""
        if request.path.startswith(CONTROL_PREFIX):
            return self._control(request)
        self._record(request)
        fault = self._take_fault(request.path)
        if request.path.startswith("/api/"):
            self._delay()
        if fault is not None:
            return _fault_reply(fault)
        if request.path == TOKEN_PATH:
            return self._token(request)
        if request.path.startswith("/c/") and request.method == "GET":
            return self._join_page(request.path[len("/c/") :])
        match = _API_ROUTE.match(request.path)
        if match is None:
            return _error(404, "routeNotFound", f"No route for {request.path}")
        return self._api(request, match["version"], match["rest"] or "/")

    def _record(self, request: _Request) -> None:
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=dict(request.headers),
            json=_redacted(_decoded_body(request)),
        )
        with self._lock:
            self._requests.append(recorded)

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            fault = self._fault
            if fault is None or not path.startswith(fault.path_prefix):
                return None
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._fault = None
            return fault

    def _delay(self) -> None:
        with self._lock:
            latency = self._latency
        if latency > 0:
            time.sleep(latency)

    # tokens

    def _token(self, request: _Request) -> _Reply:
        if request.method != "POST":
            return _error(405, "methodNotAllowed", "Use POST for the token endpoint")
        form = _decoded_body(request)
        if not isinstance(form, dict):
            return _oauth_error(400, "invalid_request", "The body must be a form or a JSON object")
        if form.get("grant_type") != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type", "Only client_credentials is served")
        if (
            form.get("client_id") != self.client_id
            or form.get("client_secret") != self._client_secret
        ):
            return _oauth_error(401, "invalid_client", "Client authentication failed")
        return _Reply(200, self._issue_token())

    def _issue_token(self) -> dict[str, Any]:
        token = secrets.token_hex(20)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_lifetime
        return {
            "access_token": token,
            "expires_in": self.token_lifetime,
            "token_type": "Bearer",
            "scope": " ".join(sorted(self.scopes)),
        }

    def _token_valid(self, request: _Request) -> bool:
        token = _bearer(request.headers.get("authorization", "")) or request.query.get(
            "access_token"
        )
        if not token:
            return False
        with self._lock:
            expires_at = self._tokens.get(token)
        return expires_at is not None and time.monotonic() < expires_at

    # API routes

    def _api(self, request: _Request, version: str, rest: str) -> _Reply:
        v4 = version.startswith("v4")
        if not self._token_valid(request):
            return _token_refused(v4)
        if needed := self._missing_scope(request.method, rest):
            return _error(403, "forbidden", f"the application has no {needed!r} permission", v4=v4)
        try:
            return self._route(request, rest, v4)
        except _BadRequestError as exc:
            return _invalid([exc.problem], v4)

    def _missing_scope(self, method: str, rest: str) -> str:
        """The permission this call needs and the application lacks, or "" (a whole-area
        scope such as "users" covers its ":read" and ":write" parts)."""
        area = "users" if rest.startswith("/users") else "conferences"
        needed = f"{area}:read" if method == "GET" else f"{area}:write"
        return "" if {area, needed} & self.scopes else needed

    def _route(self, request: _Request, rest: str, v4: bool) -> _Reply:
        method = request.method
        if rest == "/conferences" and method == "POST":
            return self._create(_json_object(request), v4)
        if rest == "/conferences" and method == "GET":
            return self._list_conferences(request.query, v4)
        if rest == "/users" and method == "GET":
            return self._list_users(request.query, v4)
        match = _CONFERENCE_ROUTE.match(rest)
        if match is not None:
            return self._conference_route(request, unquote(match["id"]), v4)
        return _error(404, "routeNotFound", f"No route for {method} {rest}", v4=v4)

    def _conference_route(self, request: _Request, conference_id: str, v4: bool) -> _Reply:
        method = request.method
        if method == "GET":
            return self._read(conference_id, v4)
        if method == "DELETE":
            return self._delete(conference_id, v4)
        # v3 replaces with PUT, v4 merges with PATCH; the other verb has no route.
        if method == "PUT" and not v4:
            return self._replace(conference_id, _json_object(request))
        if method == "PATCH" and v4:
            return self._patch(conference_id, _json_object(request))
        return _error(404, "routeNotFound", f"No route for {method} /conferences/{{id}}", v4=v4)

    def _create(self, body: dict[str, Any], v4: bool) -> _Reply:
        problems = list(self._validate(body, v4))
        with self._lock:
            conference_id = self._new_id(body.get("id"), problems)
            if problems:
                return _invalid(problems, v4)
            record = self._new_record(body, conference_id, v4)
            self._conferences[conference_id] = record
            return _Reply(200, {"conference": _rendered(record, v4)})

    def _new_id(self, wanted: Any, problems: list[_Problem]) -> str:
        # Caller holds the lock. A custom id is allowed (the server needs a webinar licence).
        if wanted is None:
            return str(next(self._ids))
        if not isinstance(wanted, str) or not _CUSTOM_ID.match(wanted):
            problems.append(_Problem("invalidValue", "id", "id must be 1..128 of [A-Za-z0-9_]"))
        elif wanted in self._conferences:
            problems.append(_Problem("uniqueValueAlreadyInUse", "id", f"id {wanted!r} is taken"))
        return str(wanted)

    def _new_record(self, body: dict[str, Any], conference_id: str, v4: bool) -> dict[str, Any]:
        record = copy.deepcopy(body)
        if v4:
            record.setdefault("access", "private")
        record.update(
            id=conference_id,
            url=(self._join_url.replace("{id}", conference_id) if self._join_url
                 else f"{self.url}/c/{conference_id}"),
            state="stopped",
            created_at=int(time.time()),
        )
        return record

    def _read(self, conference_id: str, v4: bool) -> _Reply:
        with self._lock:
            record = self._conferences.get(conference_id)
            if record is None:
                return _not_found(conference_id, v4)
            return _Reply(200, {"conference": _rendered(record, v4)})

    def _replace(self, conference_id: str, body: dict[str, Any]) -> _Reply:
        problems = list(self._validate(body, v4=False))
        with self._lock:
            old = self._conferences.get(conference_id)
            if old is None:
                return _not_found(conference_id, v4=False)
            if problems:
                return _invalid(problems, v4=False)
            record = {**copy.deepcopy(body), **_kept_fields(old)}
            self._conferences[conference_id] = record
            return _Reply(200, {"conference": _rendered(record, v4=False)})

    def _patch(self, conference_id: str, body: dict[str, Any]) -> _Reply:
        with self._lock:
            old = self._conferences.get(conference_id)
            if old is None:
                return _not_found(conference_id, v4=True)
            if "schedule" in body and _schedule_incomplete(body["schedule"]):
                # What the real server does with a partial schedule, per the MCP authors.
                return _error(500, "internalError", "Internal server error", v4=True)
            merged = {**copy.deepcopy(old), **copy.deepcopy(body), **_kept_fields(old)}
            problems = list(self._validate(merged, v4=True))
            if problems:
                return _invalid(problems, v4=True)
            self._conferences[conference_id] = merged
            return _Reply(200, {"conference": _rendered(merged, v4=True)})

    def _delete(self, conference_id: str, v4: bool) -> _Reply:
        with self._lock:
            if self._conferences.pop(conference_id, None) is None:
                return _not_found(conference_id, v4)
        return _Reply(204) if v4 else _Reply(200, {"id": conference_id})

    def _list_conferences(self, query: dict[str, str], v4: bool) -> _Reply:
        documented = _V4_LIST_PARAMETERS if v4 else _V3_LIST_PARAMETERS
        unknown = sorted(set(query) - documented - {"access_token"})
        if unknown:
            generation = "v4" if v4 else "v3"
            return _invalid([_Problem("invalidValue", unknown[0], f"{unknown[0]!r} is not a "
                                      f"parameter of the {generation} conference listing")], v4)
        page_key = "page" if v4 else "page_id"
        page, size = _paging(query, page_key, self.page_size_cap)
        with self._lock:
            chosen = [c for c in self._conferences.values() if _listed(c, query, v4)]
            items = [_rendered(c, v4) for c in chosen[(page - 1) * size : page * size]]
        if v4:
            return _Reply(200, {"conferences": items, "results": len(chosen)})
        return _Reply(200, {"cnt": len(chosen), "conferences": items})

    def _list_users(self, query: dict[str, str], v4: bool) -> _Reply:
        page, size = _paging(query, "page_id", self.page_size_cap)
        users = self._users or []
        window = users[(page - 1) * size : page * size]
        next_page = page + 1 if page * size < len(users) else -1
        return _Reply(200, {"next_page_id": next_page, "users": copy.deepcopy(window)})

    def _join_page(self, conference_id: str) -> _Reply:
        with self._lock:
            record = self._conferences.get(unquote(conference_id))
        if record is None:
            return _Reply(404, text="<h1>Conference not found</h1>")
        title = html.escape(f"TrueConf stand-in conference {conference_id}")
        topic = html.escape(str(record.get("topic", "")))
        return _Reply(200, text=f"<h1>{title}</h1><p>{topic}</p>")

    # validation

    def _validate(self, body: dict[str, Any], v4: bool) -> Iterator[_Problem]:
        yield from _check_topic(body)
        yield from self._check_owner(body)
        yield from (_check_v4_fields(body) if v4 else _check_v3_fields(body))
        yield from _check_invitations(body.get("invitations"), v4)
        yield from _check_optional(body, "max_participants", _is_positive_int, "a positive integer")
        yield from _check_optional(body, "description", _is_str, "a string")
        yield from _check_optional(body, "tags", _is_str_list, "a list of strings")

    def _check_owner(self, body: dict[str, Any]) -> Iterator[_Problem]:
        owner = body.get("owner")
        if owner is None:
            yield _Problem("requiredField", "owner", "owner is required")
        elif not isinstance(owner, str) or not 1 <= len(owner) <= 64:
            yield _Problem("invalidValue", "owner", "owner must be a user id of 1..64 characters")
        elif self._users is not None and not any(_is_user(u, owner) for u in self._users):
            yield _Problem("invalidValue", "owner", f"user {owner!r} does not exist")

    # control endpoints

    def _control(self, request: _Request) -> _Reply:
        action = request.path[len(CONTROL_PREFIX) :].rstrip("/")
        if request.method == "GET" and action == "conferences":
            return _Reply(200, {"conferences": self.conferences})
        if request.method == "GET" and action == "requests":
            return _Reply(200, {"requests": [asdict(r) for r in self.requests]})
        if request.method == "POST" and action in _CONTROL_ACTIONS:
            body = _decoded_body(request) or {}
            try:
                if not isinstance(body, dict):
                    raise TypeError("the body must be a JSON object")
                _CONTROL_ACTIONS[action](self, body)
            except (KeyError, TypeError, ValueError) as exc:
                return _error(400, "invalidValue", f"bad control request: {exc}")
            return _Reply(204)
        return _error(404, "routeNotFound", f"No control route {request.method} {request.path}")


def _control_fail(standin: StandIn, body: dict[str, Any]) -> None:
    status = int(body.get("status", 503))
    if not 100 <= status <= 599:
        raise ValueError("status must be an HTTP status code")
    standin.fail_next(int(body["count"]), status, path_prefix=str(body.get("path_prefix", "/api/")))


_CONTROL_ACTIONS: dict[str, Callable[[StandIn, dict[str, Any]], None]] = {
    "expire-tokens": lambda standin, body: standin.expire_tokens(),
    "fail": _control_fail,
    "join-url": lambda standin, body: standin.set_join_url(str(body["template"])),
    "latency": lambda standin, body: standin.set_latency(float(body["seconds"])),
    "reset": lambda standin, body: standin.reset(),
}


# --- pure helpers ---------------------------------------------------------------------------


def _user_record(raw: dict[str, Any], host: str) -> dict[str, Any]:
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


def _is_user(user: dict[str, Any], owner: str) -> bool:
    return owner in (user.get("id"), user.get("uid"), user.get("login_name"))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_positive_int(value: Any) -> bool:
    return _is_int(value) and value > 0


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _check_optional(body: dict[str, Any], name: str, test: Any, what: str) -> Iterator[_Problem]:
    if name in body and not test(body[name]):
        yield _Problem("invalidValue", name, f"{name} must be {what}")


def _check_topic(body: dict[str, Any]) -> Iterator[_Problem]:
    topic = body.get("topic")
    if topic is None:
        yield _Problem("requiredField", "topic", "topic is required")
    elif not isinstance(topic, str) or not 1 <= len(topic) <= 240:
        yield _Problem("invalidValue", "topic", "topic must be a string of 1..240 characters")
    elif "\n" in topic or "\r" in topic:
        yield _Problem("invalidValue", "topic", "topic must be one line")


def _check_v3_fields(body: dict[str, Any]) -> Iterator[_Problem]:
    if "type" not in body:
        yield _Problem("requiredField", "type", "type is required")
    elif body["type"] not in _V3_TYPES or not _is_int(body["type"]):
        yield _Problem("invalidValue", "type", "type must be 0, 1 or 3")
    yield from _check_v3_schedule(body.get("schedule"))
    yield from _check_optional(body, "allow_guests", lambda v: isinstance(v, bool), "a boolean")
    yield from _check_optional(body, "auto_invite", lambda v: v in (0, 1, 2), "0, 1 or 2")


def _check_v3_schedule(schedule: Any) -> Iterator[_Problem]:
    if schedule is None:
        return
    if not isinstance(schedule, dict):
        yield _Problem("invalidValue", "schedule", "schedule must be an object")
        return
    kind = schedule.get("type")
    if kind is None:
        yield _Problem("requiredField", "schedule.type", "schedule.type is required")
    elif not _is_int(kind) or kind not in _V3_SCHEDULE_TYPES:
        yield _Problem("invalidValue", "schedule.type", "schedule.type must be -1, 0 or 1")
    elif kind == 1:
        yield from _check_int_field(schedule, "start_time", lambda v: True)
        yield from _check_int_field(schedule, "duration", lambda v: v > 0)
    elif kind == 0:
        yield from _check_int_field(schedule, "duration", lambda v: v > 0)
        yield from _check_days(schedule)
        yield from _check_time(schedule)


def _check_v4_fields(body: dict[str, Any]) -> Iterator[_Problem]:
    if "mode" not in body:
        yield _Problem("requiredField", "mode", "mode is required")
    elif body["mode"] not in _V4_MODES:
        yield _Problem("invalidValue", "mode", f"mode must be one of {sorted(_V4_MODES)}")
    yield from _check_optional(body, "access", lambda v: v in _V4_ACCESS, "private or public")
    yield from _check_v4_schedule(body.get("schedule"))


def _check_v4_schedule(schedule: Any) -> Iterator[_Problem]:
    if schedule is None:
        return
    if not isinstance(schedule, dict):
        yield _Problem("invalidValue", "schedule", "schedule must be an object")
        return
    kind = schedule.get("type")
    if kind is None:
        yield _Problem("requiredField", "schedule.type", "schedule.type is required")
    elif kind not in _V4_SCHEDULE_TYPES:
        yield _Problem("invalidValue", "schedule.type", "schedule.type must be none, once or week")
    elif kind in ("once", "week"):
        yield from _check_int_field(schedule, "start_time", lambda v: True)
        yield from _check_int_field(schedule, "duration", lambda v: v in _V4_DURATION)
        yield from _check_time(schedule)
        yield from _check_int_field(schedule, "special_time_offset", lambda v: True)
        if kind == "week":
            yield from _check_days(schedule)


def _check_int_field(schedule: dict[str, Any], name: str, test: Any) -> Iterator[_Problem]:
    location = f"schedule.{name}"
    if name not in schedule:
        yield _Problem("requiredField", location, f"{location} is required")
    elif not _is_int(schedule[name]) or not test(schedule[name]):
        yield _Problem("invalidValue", location, f"{location} is out of range or not an integer")


def _check_time(schedule: dict[str, Any]) -> Iterator[_Problem]:
    value = schedule.get("time")
    if value is None:
        yield _Problem("requiredField", "schedule.time", "schedule.time is required")
    elif not isinstance(value, str) or not _HHMM.match(value):
        yield _Problem("invalidValue", "schedule.time", "schedule.time must be HH:MM")


def _check_days(schedule: dict[str, Any]) -> Iterator[_Problem]:
    days = schedule.get("days")
    if not isinstance(days, list) or not days or not set(days) <= _WEEKDAYS:
        yield _Problem("invalidValue", "schedule.days", "schedule.days must list weekday names")


def _check_invitations(invitations: Any, v4: bool) -> Iterator[_Problem]:
    if invitations is None:
        return
    if not isinstance(invitations, list):
        yield _Problem("invalidValue", "invitations", "invitations must be a list")
        return
    for index, item in enumerate(invitations):
        yield from _check_invitation(item, f"invitations[{index}]", v4)


def _check_invitation(item: Any, location: str, v4: bool) -> Iterator[_Problem]:
    if not isinstance(item, dict):
        yield _Problem("invalidValue", location, f"{location} must be an object")
    elif not isinstance(item.get("id"), str) or not item["id"]:
        yield _Problem("requiredField", f"{location}.id", f"{location}.id must be a string")
    elif "display_name" in item and not isinstance(item["display_name"], str):
        yield _Problem("invalidValue", f"{location}.display_name", "display_name must be a string")
    elif v4 and "is_moderator" in item and not isinstance(item["is_moderator"], bool):
        yield _Problem("invalidValue", f"{location}.is_moderator", "is_moderator must be boolean")


def _schedule_incomplete(schedule: Any) -> bool:
    if not isinstance(schedule, dict):
        return True
    kind = schedule.get("type")
    needed = _V4_SCHEDULE_FIELDS.get(kind, ()) if isinstance(kind, str) else ()
    return any(name not in schedule for name in needed)


def _kept_fields(record: dict[str, Any]) -> dict[str, Any]:
    """Fields a client cannot overwrite through PUT or PATCH."""
    names = ("id", "url", "state", "created_at")
    return {name: record[name] for name in names if name in record}


def _rendered(record: dict[str, Any], v4: bool) -> dict[str, Any]:
    """A stored conference as the given API generation shows it."""
    rendered = copy.deepcopy(record)
    base, _, conference_id = record["url"].rpartition("/c/")
    web_client_url = f"{base}/webrtc/{conference_id}"
    rendered["web_client_url" if v4 else "webclient_url"] = web_client_url
    return rendered


def _listed(record: dict[str, Any], query: dict[str, str], v4: bool) -> bool:
    if "state" in query and record.get("state") != query["state"]:
        return False
    if v4:
        return "owner" not in query or record.get("owner") == query["owner"]
    return not query.get("tag") or query["tag"] in (record.get("tags") or [])


def _paging(query: dict[str, str], page_key: str, cap: int) -> tuple[int, int]:
    """Read 1-based paging parameters, capping the page size so clients must page."""
    try:
        page = int(query.get(page_key, "1"))
        size = int(query.get("page_size", str(_DEFAULT_PAGE_SIZE)))
    except ValueError as exc:
        raise _BadRequestError(
            _Problem("invalidValue", page_key, "paging must be integers")
        ) from exc
    if page < 1 or size < 1:
        raise _BadRequestError(_Problem("invalidValue", page_key, "paging must be positive"))
    return page, min(size, cap)


def _bearer(header: str) -> str:
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _decoded_body(request: _Request) -> Any:
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


def _json_object(request: _Request) -> dict[str, Any]:
    body = _decoded_body(request)
    if not isinstance(body, dict):
        raise _BadRequestError(_Problem("parseError", "body", "the body must be a JSON object"))
    return body


def _redacted(body: Any) -> Any:
    if isinstance(body, dict) and "client_secret" in body:
        return {**body, "client_secret": REDACTED}
    return body


# --- replies --------------------------------------------------------------------------------


def _error(
    status: int, reason: str, message: str, *, v4: bool = False, location: str = ""
) -> _Reply:
    return _errors(status, [_Problem(reason, location, message)], v4)


def _errors(status: int, problems: Iterable[_Problem], v4: bool) -> _Reply:
    """The v3 error envelope; v4 adds a trace id, as its "TCS error format" does."""
    details = [_error_detail(problem) for problem in problems]
    body: dict[str, Any] = {
        "error": {"code": status, "message": HTTPStatus(status).phrase, "errors": details}
    }
    if v4:
        body["trace_id"] = secrets.token_hex(8)
    return _Reply(status, body)


def _error_detail(problem: _Problem) -> dict[str, str]:
    detail = {"reason": problem.reason, "message": problem.message}
    if problem.location:
        detail.update(locationType="body", location=problem.location)
    return detail


def _invalid(problems: list[_Problem], v4: bool) -> _Reply:
    return _errors(400, problems, v4)


def _not_found(conference_id: str, v4: bool) -> _Reply:
    message = f"Conference '{conference_id}' is not found."
    return _error(404, "conferenceNotFound", message, v4=v4, location="conference_id")


def _token_refused(v4: bool) -> _Reply:
    # v3 servers answer 403 accessTokenInvalid; v4 answers 401.
    if v4:
        return _error(401, "accessTokenInvalid", "The access token is missing or expired", v4=True)
    return _error(403, "accessTokenInvalid", "The access token is missing or expired")


def _oauth_error(status: int, error: str, description: str) -> _Reply:
    return _Reply(status, {"error": error, "error_description": description})


def _fault_reply(fault: _Fault) -> _Reply:
    headers = {"Retry-After": "1"} if fault.status == 429 else {}
    reason = {429: "rateLimitExceeded", 503: "serviceUnavailable"}.get(fault.status, "injected")
    reply = _error(fault.status, reason, f"Injected fault {fault.status}")
    return _Reply(reply.status, reply.body, headers)


# --- HTTP plumbing --------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The stdlib's backlog of 5 resets connections when dozens of requests arrive at once
    # (a mail burst); a real TrueConf Server takes them.
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], handler: type, *, standin: StandIn) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.standin = standin
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout tests do) leaves a broken pipe; that is not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, keep-alive clients wait ~40 ms each.
    disable_nagle_algorithm = True
    server_version = "TrueConfStandIn/1.0"

    def do_GET(self) -> None:  # the name http.server dispatches to
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET  # noqa: N815

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        request = _Request(
            method=self.command,
            path=parts.path,
            query={key: values[0] for key, values in parse_qs(parts.query).items()},
            headers={name.lower(): value for name, value in self.headers.items()},
            body=self._read_body(),
        )
        try:
            reply = self.server.standin._handle(request)
        except Exception:  # a stand-in bug must still answer, as the real server's 500 would
            traceback.print_exc()
            reply = _error(500, "internalError", "stand-in failure")
        self._send(reply)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, reply: _Reply) -> None:
        payload, content_type = _encoded(reply)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.status != 204:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if reply.status != 204:
            self.wfile.write(payload)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The request line may carry ?access_token=, so log the path without its query.
        if self.server.standin.verbose:
            path = urlsplit(self.path).path
            sys.stderr.write(f"standin: {self.command} {path} {code}\n")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        # Silenced: http.server's messages can quote raw request lines.
        return


def _encoded(reply: _Reply) -> tuple[bytes, str]:
    if reply.text is not None:
        return reply.text.encode("utf-8"), "text/html; charset=utf-8"
    if reply.body is None:
        return b"", "application/json"
    return json.dumps(reply.body).encode("utf-8"), "application/json; charset=utf-8"


# --- command line ---------------------------------------------------------------------------


def _arguments(argv: list[str] | None, prog: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve a TrueConf Server API stand-in until SIGINT or SIGTERM.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="port, 0 for any (default 8090)")
    parser.add_argument(
        "--client-id", default="mailhook", help="OAuth client id (default mailhook)"
    )
    parser.add_argument("--client-secret", default="secret", help="OAuth client secret")
    parser.add_argument("--users", metavar="FILE.json", help="JSON list of user objects")
    parser.add_argument("--token-lifetime", type=int, default=3600, help="seconds (default 3600)")
    parser.add_argument("--page-size-cap", type=int, default=10, help="largest page (default 10)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per API request")
    parser.add_argument("--scopes", default=" ".join(ALL_SCOPES),
                        help="the OAuth application's permissions, space-separated (default: "
                             "all mailhook needs); calls outside them get 403")
    parser.add_argument("--verbose", action="store_true", help="log each request's method and path")
    return parser.parse_args(argv)


def load_users(path: str) -> list[dict[str, Any]]:
    """Read a users file: a JSON list of user objects, or an object with a "users" list."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    users = data.get("users") if isinstance(data, dict) else data
    if not isinstance(users, list) or not all(isinstance(u, dict) and "id" in u for u in users):
        raise ValueError(f"{path}: expected a list of objects with an 'id'")
    return users


def main(argv: list[str] | None = None, prog: str = "python -m mailhook.testing.standin") -> int:
    """Run the stand-in in the foreground; return the process exit status. ``prog`` is the
    command's name in its usage lines (``mailhook standin`` when run through mailhook)."""
    args = _arguments(argv, prog)
    try:
        users = load_users(args.users) if args.users else None
    except (OSError, ValueError) as exc:
        print(f"standin: cannot read users: {exc}", file=sys.stderr)
        return 2
    standin = StandIn(
        host=args.host,
        port=args.port,
        client_id=args.client_id,
        client_secret=args.client_secret,
        users=users,
        token_lifetime=args.token_lifetime,
        page_size_cap=args.page_size_cap,
        latency=args.latency,
        scopes=args.scopes.split(),
    )
    standin.verbose = args.verbose
    # Handlers go in before the "listening" line, so a supervisor may signal as soon as it reads it.
    stopping = _stop_on_signals()
    try:
        standin.start()
    except OSError as exc:
        print(f"standin: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"TrueConf API stand-in listening on {standin.url}", flush=True)
        # A timed wait lets the main thread run the signal handler promptly on every platform.
        while not stopping.wait(0.5):
            pass
    finally:
        standin.stop()
    return 0


def _stop_on_signals() -> threading.Event:
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    return stopping


if __name__ == "__main__":
    raise SystemExit(main())
