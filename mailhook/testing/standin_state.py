"""What a TrueConf API stand-in keeps: its conferences, with the conference and user routes
(create, read, replace (v3), patch (v4), delete, list; each body checked as the real server
would), and the access tokens it issued."""

from __future__ import annotations

import copy
import html
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import unquote

from mailhook.testing.standin_rules import (
    ALL_SCOPES,
    CONFERENCE_ROUTE,
    CUSTOM_ID,
    V3_LIST_PARAMETERS,
    V4_LIST_PARAMETERS,
    Problem,
    Reply,
    Request,
    bearer,
    check_invitations,
    check_optional,
    check_topic,
    check_v3_fields,
    check_v4_fields,
    decoded_body,
    error,
    invalid,
    is_positive_int,
    is_str,
    is_str_list,
    is_user,
    json_object,
    kept_fields,
    listed,
    not_found,
    oauth_error,
    paging,
    rendered,
    schedule_incomplete,
)


class ConferenceBook:
    """The conferences by id, the users, and the routes that read and change them. Every
    change happens under the stand-in's lock."""

    def __init__(self, lock: threading.Lock, users: list[dict[str, Any]] | None,
                 page_size_cap: int, url: Callable[[], str]) -> None:
        self._lock = lock
        self.records: dict[str, dict[str, Any]] = {}
        self.users = users
        self.page_size_cap = page_size_cap
        self.join_url = ""  # a template for the links of new conferences; "" for real ones
        self._ids = itertools.count(4_000_000_001)  # never reused, even across a reset
        self._url = url

    def route(self, request: Request, rest: str, v4: bool) -> Reply:
        """Answer an authorised API request for ``rest`` (the path after /api/<version>)."""
        method = request.method
        if rest == "/conferences" and method == "POST":
            return self._create(json_object(request), v4)
        if rest == "/conferences" and method == "GET":
            return self._list_conferences(request.query, v4)
        if rest == "/users" and method == "GET":
            return self._list_users(request.query, v4)
        match = CONFERENCE_ROUTE.match(rest)
        if match is not None:
            return self._conference_route(request, unquote(match["id"]), v4)
        return error(404, "routeNotFound", f"No route for {method} {rest}", v4=v4)

    def _conference_route(self, request: Request, conference_id: str, v4: bool) -> Reply:
        method = request.method
        if method == "GET":
            return self._read(conference_id, v4)
        if method == "DELETE":
            return self._delete(conference_id, v4)
        # v3 replaces with PUT, v4 merges with PATCH; the other verb has no route.
        if method == "PUT" and not v4:
            return self._replace(conference_id, json_object(request))
        if method == "PATCH" and v4:
            return self._patch(conference_id, json_object(request))
        return error(404, "routeNotFound", f"No route for {method} /conferences/{{id}}", v4=v4)

    def _create(self, body: dict[str, Any], v4: bool) -> Reply:
        problems = list(self._validate(body, v4))
        with self._lock:
            conference_id = self._new_id(body.get("id"), problems)
            if problems:
                return invalid(problems, v4)
            record = self._new_record(body, conference_id, v4)
            self.records[conference_id] = record
            return Reply(200, {"conference": rendered(record, v4)})

    def _new_id(self, wanted: Any, problems: list[Problem]) -> str:
        # Caller holds the lock. A custom id is allowed (the server needs a webinar licence).
        if wanted is None:
            return str(next(self._ids))
        if not isinstance(wanted, str) or not CUSTOM_ID.match(wanted):
            problems.append(Problem("invalidValue", "id", "id must be 1..128 of [A-Za-z0-9_]"))
        elif wanted in self.records:
            problems.append(Problem("uniqueValueAlreadyInUse", "id", f"id {wanted!r} is taken"))
        return str(wanted)

    def _new_record(self, body: dict[str, Any], conference_id: str, v4: bool) -> dict[str, Any]:
        record = copy.deepcopy(body)
        if v4:
            record.setdefault("access", "private")
        record.update(
            id=conference_id,
            url=(self.join_url.replace("{id}", conference_id) if self.join_url
                 else f"{self._url()}/c/{conference_id}"),
            state="stopped",
            created_at=int(time.time()),
        )
        return record

    def _read(self, conference_id: str, v4: bool) -> Reply:
        with self._lock:
            record = self.records.get(conference_id)
            if record is None:
                return not_found(conference_id, v4)
            return Reply(200, {"conference": rendered(record, v4)})

    def _replace(self, conference_id: str, body: dict[str, Any]) -> Reply:
        problems = list(self._validate(body, v4=False))
        with self._lock:
            old = self.records.get(conference_id)
            if old is None:
                return not_found(conference_id, v4=False)
            if problems:
                return invalid(problems, v4=False)
            record = {**copy.deepcopy(body), **kept_fields(old)}
            self.records[conference_id] = record
            return Reply(200, {"conference": rendered(record, v4=False)})

    def _patch(self, conference_id: str, body: dict[str, Any]) -> Reply:
        with self._lock:
            old = self.records.get(conference_id)
            if old is None:
                return not_found(conference_id, v4=True)
            if "schedule" in body and schedule_incomplete(body["schedule"]):
                # What the real server does with a partial schedule, per the MCP authors.
                return error(500, "internalError", "Internal server error", v4=True)
            merged = {**copy.deepcopy(old), **copy.deepcopy(body), **kept_fields(old)}
            problems = list(self._validate(merged, v4=True))
            if problems:
                return invalid(problems, v4=True)
            self.records[conference_id] = merged
            return Reply(200, {"conference": rendered(merged, v4=True)})

    def _delete(self, conference_id: str, v4: bool) -> Reply:
        with self._lock:
            if self.records.pop(conference_id, None) is None:
                return not_found(conference_id, v4)
        return Reply(204) if v4 else Reply(200, {"id": conference_id})

    def _list_conferences(self, query: dict[str, str], v4: bool) -> Reply:
        documented = V4_LIST_PARAMETERS if v4 else V3_LIST_PARAMETERS
        unknown = sorted(set(query) - documented - {"access_token"})
        if unknown:
            generation = "v4" if v4 else "v3"
            return invalid([Problem("invalidValue", unknown[0], f"{unknown[0]!r} is not a "
                                    f"parameter of the {generation} conference listing")], v4)
        page_key = "page" if v4 else "page_id"
        page, size = paging(query, page_key, self.page_size_cap)
        with self._lock:
            chosen = [c for c in self.records.values() if listed(c, query, v4)]
            items = [rendered(c, v4) for c in chosen[(page - 1) * size : page * size]]
        if v4:
            return Reply(200, {"conferences": items, "results": len(chosen)})
        return Reply(200, {"cnt": len(chosen), "conferences": items})

    def _list_users(self, query: dict[str, str], v4: bool) -> Reply:
        page, size = paging(query, "page_id", self.page_size_cap)
        users = self.users or []
        window = users[(page - 1) * size : page * size]
        next_page = page + 1 if page * size < len(users) else -1
        return Reply(200, {"next_page_id": next_page, "users": copy.deepcopy(window)})

    def join_page(self, conference_id: str) -> Reply:
        """The page a join link opens."""
        with self._lock:
            record = self.records.get(unquote(conference_id))
        if record is None:
            return Reply(404, text="<h1>Conference not found</h1>")
        title = html.escape(f"TrueConf stand-in conference {conference_id}")
        topic = html.escape(str(record.get("topic", "")))
        return Reply(200, text=f"<h1>{title}</h1><p>{topic}</p>")

    def _validate(self, body: dict[str, Any], v4: bool) -> Iterator[Problem]:
        yield from check_topic(body)
        yield from self._check_owner(body)
        yield from (check_v4_fields(body) if v4 else check_v3_fields(body))
        yield from check_invitations(body.get("invitations"), v4)
        yield from check_optional(body, "max_participants", is_positive_int, "a positive integer")
        yield from check_optional(body, "description", is_str, "a string")
        yield from check_optional(body, "tags", is_str_list, "a list of strings")

    def _check_owner(self, body: dict[str, Any]) -> Iterator[Problem]:
        owner = body.get("owner")
        if owner is None:
            yield Problem("requiredField", "owner", "owner is required")
        elif not isinstance(owner, str) or not 1 <= len(owner) <= 64:
            yield Problem("invalidValue", "owner", "owner must be a user id of 1..64 characters")
        elif self.users is not None and not any(is_user(u, owner) for u in self.users):
            yield Problem("invalidValue", "owner", f"user {owner!r} does not exist")


class Tokens:
    """The OAuth client the stand-in knows and the access tokens it issued."""

    def __init__(self, lock: threading.Lock, client_id: str, client_secret: str,
                 lifetime: int, scopes: Iterable[str] = ALL_SCOPES) -> None:
        self._lock = lock
        # The OAuth application's permissions: an API call outside them gets 403 "forbidden".
        self.scopes = frozenset(scopes)
        self.client_id = client_id
        self._client_secret = client_secret
        self.token_lifetime = lifetime
        self._issued: dict[str, float] = {}  # token -> expiry on time.monotonic()

    def expire(self) -> None:
        """Make every issued token invalid (the caller holds the lock)."""
        self._issued.clear()

    def answer(self, request: Request) -> Reply:
        """The token endpoint's answer (client_credentials only)."""
        if request.method != "POST":
            return error(405, "methodNotAllowed", "Use POST for the token endpoint")
        form = decoded_body(request)
        if not isinstance(form, dict):
            return oauth_error(400, "invalid_request", "The body must be a form or a JSON object")
        if form.get("grant_type") != "client_credentials":
            return oauth_error(400, "unsupported_grant_type", "Only client_credentials is served")
        if (
            form.get("client_id") != self.client_id
            or form.get("client_secret") != self._client_secret
        ):
            return oauth_error(401, "invalid_client", "Client authentication failed")
        return Reply(200, self._issue())

    def _issue(self) -> dict[str, Any]:
        token = secrets.token_hex(20)
        with self._lock:
            self._issued[token] = time.monotonic() + self.token_lifetime
        return {
            "access_token": token,
            "expires_in": self.token_lifetime,
            "token_type": "Bearer",
            "scope": " ".join(sorted(self.scopes)),
        }

    def missing_scope(self, method: str, rest: str) -> str:
        """The permission this call needs and the application lacks, or "" (a whole-area
        scope such as "users" covers its ":read" and ":write" parts)."""
        area = "users" if rest.startswith("/users") else "conferences"
        needed = f"{area}:read" if method == "GET" else f"{area}:write"
        return "" if {area, needed} & self.scopes else needed

    def valid(self, request: Request) -> bool:
        """Does the request carry a token issued and not expired?"""
        token = bearer(request.headers.get("authorization", "")) or request.query.get(
            "access_token"
        )
        if not token:
            return False
        with self._lock:
            expires_at = self._issued.get(token)
        return expires_at is not None and time.monotonic() < expires_at
