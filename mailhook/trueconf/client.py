"""Async client for the TrueConf Server REST API, one interface over the v3.x and v4 generations.

Every failure is translated here, once, into mailhook's error hierarchy:

    httpx transport error or timeout, HTTP 5xx, HTTP 429   -> TrueConfUnavailable (retry later)
    token endpoint answering 400 or 401                    -> TrueConfAuthError
    any other non-2xx answer                               -> TrueConfRejected
    a 2xx body that is not JSON                            -> TrueConfUnavailable
    a 2xx JSON body missing what we need (e.g. no "url")   -> TrueConfRejected

A body that is not JSON usually comes from a proxy or a cut-off answer and may be fine next time;
JSON of the wrong shape means the server speaks another dialect, which retrying will not change.

HTTP goes through httpx's own transport (a keep-alive pool, ``POOL_LIMITS``), which also honours
HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY. A request is sent a second time only when
repeating it is harmless (see ``_request``): never a POST or PATCH the server may have taken.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

from mailhook.core.model import Conference, ConferenceSpec
from mailhook.errors import TrueConfRejected, TrueConfUnavailable
from mailhook.trueconf.answers import (
    conference_missing,
    describe_failure,
    ok_json,
    raise_for_status,
    token_refused,
)
from mailhook.trueconf.payload import (
    ListedConference,
    TrueConfUser,
    conference_body,
    conference_page,
    has_tag,
    is_v4,
    listed_conference,
    parse_conference,
    user_page,
)
from mailhook.trueconf.tokens import Tokens

__all__ = ["ListedConference", "TrueConfClient", "TrueConfUser"]

PAGE_SIZE = 100
# A server that never reports the last page must not keep a message waiting forever.
MAX_PAGES = 1000
# The pool to TrueConf Server. A real server takes a few conference calls a second, so a burst
# of invitations shares a handful of kept-alive connections; 100 at most (the open files
# daemon.FILES_RESERVED counts on). Idle ones are dropped after 4 s, under the shortest idle
# timeout common servers use (5 s), so the server hardly ever closes one as we reuse it.
POOL_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=4.0)
# Methods sent once more when the connection broke before their answer: repeating them is
# harmless. A POST may have created a conference and a PATCH changed one, so they never are.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
# The connection broke after the request may have gone out (httpx's pool itself retries only
# what it never sent). Timeouts are not in this list: waiting twice as long helps nobody.
CONNECTION_LOST = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class TrueConfClient:
    """Creates, updates, finds and deletes conferences and lists users on one TrueConf Server."""

    def __init__(
        self,
        server_url: str,
        client_id: str,
        client_secret: str,
        *,
        api_version: str = "v3.11",
        timeout: float = 10.0,
        verify: bool | str = True,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_version = api_version
        self._api = f"/api/{api_version}"
        self._v4 = is_v4(api_version)
        tls = _tls_verify(verify)
        if tls is True:
            tls = ssl.create_default_context()  # the system's trust store, not certifi's bundle
        # transport=None lets httpx build its AsyncHTTPTransport and, from the environment, the
        # proxy transports (given a transport, httpx would ignore HTTP(S)_PROXY); so httpx's
        # `retries` option, which only repeats failed connection attempts, is left unused: a
        # TrueConf that refuses connections gets a 451 and the MTA's retry. The timeout covers
        # connect, each read and write, and the wait for a free pooled connection.
        self._http = httpx.AsyncClient(
            base_url=server_url.rstrip("/"),
            timeout=timeout,
            transport=transport,
            verify=tls,
            limits=POOL_LIMITS,
        )
        self._tokens = Tokens(self._http, client_id, client_secret, api_version, clock)

    async def __aenter__(self) -> TrueConfClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- conferences ------------------------------------------------------------------------

    async def create_conference(self, spec: ConferenceSpec) -> Conference:
        """Create a scheduled conference and return its id and the join link TrueConf chose."""
        body = conference_body(spec, v4=self._v4)
        response = await self._call("POST", "/conferences", json=body)
        return parse_conference(self._ok_json(response, "create the conference"))

    async def update_conference(self, conference_id: str, spec: ConferenceSpec) -> Conference:
        """Rewrite a conference: PUT on v3.x, PATCH on v4, always with the complete schedule."""
        method = "PATCH" if self._v4 else "PUT"
        body = conference_body(spec, v4=self._v4)
        response = await self._call(method, _conference_path(conference_id), json=body)
        if response.status_code == 204:
            return await self._read_back(conference_id)
        return parse_conference(self._ok_json(response, "update the conference"))

    async def _read_back(self, conference_id: str) -> Conference:
        # An update answered without a body still owes us the link: read the conference.
        conference = await self.get_conference(conference_id)
        if conference is None:
            raise TrueConfRejected(
                f"conference {conference_id} vanished during the update", status=404
            )
        return conference

    async def delete_conference(self, conference_id: str) -> None:
        """Delete a conference; one that is already gone counts as deleted."""
        response = await self._call("DELETE", _conference_path(conference_id))
        if not conference_missing(response):
            raise_for_status(response, "delete the conference", self._tokens.scrub)

    async def get_conference(self, conference_id: str) -> Conference | None:
        """Read a conference, or None when TrueConf does not know it."""
        response = await self._call("GET", _conference_path(conference_id))
        if conference_missing(response):
            return None
        return parse_conference(self._ok_json(response, "read the conference"))

    async def find_conference_by_tag(self, tag: str, owner: str) -> Conference | None:
        """Find the conference carrying a tag: v3 lists by tag, v4 by owner, paging through both."""
        seen = 0
        for page in range(1, MAX_PAGES + 1):
            items, total = await self._conference_page(tag, owner, page)
            match = next((item for item in items if has_tag(item, tag)), None)
            if match is not None:
                return await self._listed_conference(match)
            seen += len(items)
            if not items or (total is not None and seen >= total):
                return None
        raise TrueConfRejected("TrueConf kept paging conferences past the limit", reason="paging")

    async def _conference_page(
        self, tag: str, owner: str, page: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        # v3 filters by tag itself; v4 has no tag filter, so narrow to the owner and match here.
        if self._v4:
            query = {"owner": owner, "page": page, "page_size": PAGE_SIZE}
        else:
            query = {"tag": tag, "page_id": page, "page_size": PAGE_SIZE}
        response = await self._call("GET", "/conferences", params=query)
        return conference_page(self._ok_json(response, "list conferences"))

    async def _listed_conference(self, item: dict[str, Any]) -> Conference | None:
        # Listings may be abridged; fall back to reading the conference for its join link.
        if isinstance(item.get("url"), str) and item["url"]:
            return parse_conference({"conference": item})
        return await self.get_conference(str(item.get("id", "")))

    async def list_conferences(self) -> list[ListedConference]:
        """Every conference on the server, page by page: v3 pages with ``page_id``, v4 with
        ``page``; the listing ends at the total it reports ("cnt", "results") or an empty page."""
        page_key = "page" if self._v4 else "page_id"
        found: list[ListedConference] = []
        seen = 0
        for page in range(1, MAX_PAGES + 1):
            query = {page_key: page, "page_size": PAGE_SIZE}
            response = await self._call("GET", "/conferences", params=query)
            items, total = conference_page(self._ok_json(response, "list conferences"))
            found += [c for c in map(listed_conference, items) if c is not None]
            seen += len(items)
            if not items or (total is not None and seen >= total):
                return found
        raise TrueConfRejected("TrueConf kept paging conferences past the limit", reason="paging")

    # --- users and health -------------------------------------------------------------------

    async def list_users(self) -> list[TrueConfUser]:
        """List every TrueConf account, following ``next_page_id`` until the last page."""
        users: list[TrueConfUser] = []
        visited: set[int] = set()
        # The first page is the server's own first page (whatever its numbering starts at);
        # after that, the server names each next page, ending with next_page_id == -1.
        query: dict[str, int] = {"page_size": PAGE_SIZE}
        while True:
            response = await self._call("GET", "/users", params=query)
            batch, page = user_page(self._ok_json(response, "list users"))
            users.extend(batch)
            if page < 0 or not batch:
                return users
            if page in visited or len(visited) >= MAX_PAGES:
                raise TrueConfRejected("TrueConf user paging does not end", reason="paging")
            visited.add(page)
            query = {"page_id": page, "page_size": PAGE_SIZE}

    async def check(self) -> None:
        """Fetch a fresh token, proving the server is reachable and accepts our credentials."""
        await self._tokens.renew()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # --- requests ---------------------------------------------------------------------------

    async def _call(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None
    ) -> httpx.Response:
        """Send an API request with a token, renewing the token and retrying once if refused."""
        token = await self._tokens.value()
        response = await self._send(method, path, token, params, json)
        if not token_refused(response):
            return response
        self._tokens.forget(token)
        return await self._send(method, path, await self._tokens.value(), params, json)

    async def _send(
        self, method: str, path: str, token: str, params: dict[str, Any] | None, json: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        try:
            return await self._request(method, self._api + path, params, json, headers)
        except httpx.HTTPError as exc:
            raise TrueConfUnavailable(
                f"TrueConf unreachable on {method} {path}: {describe_failure(exc)}"
            ) from exc

    async def _request(
        self, method: str, url: str, params: dict[str, Any] | None, json: Any,
        headers: dict[str, str],
    ) -> httpx.Response:
        """Send a request; an idempotent one goes out once more if the connection broke first.

        A kept-alive connection the server closes just as a request is written to it fails that
        request; a fresh connection usually takes it. A POST or PATCH is not repeated: the
        server may have acted on it, and the caller's 451 and recovery by tag take over.
        """
        try:
            return await self._http.request(method, url, params=params, json=json, headers=headers)
        except CONNECTION_LOST:
            if method not in IDEMPOTENT_METHODS:
                raise
        return await self._http.request(method, url, params=params, json=json, headers=headers)

    def _ok_json(self, response: httpx.Response, action: str) -> Any:
        """Return the decoded body of a successful answer, or raise the mapped error."""
        return ok_json(response, action, self._tokens.scrub)


def _conference_path(conference_id: str) -> str:
    return f"/conferences/{quote(conference_id, safe='')}"


def _tls_verify(verify: bool | str) -> bool | ssl.SSLContext:
    """Turn a CA file or directory path into an SSL context (httpx 0.28 deprecates path strings)."""
    if isinstance(verify, bool):
        return verify
    if os.path.isdir(verify):
        return ssl.create_default_context(capath=verify)
    return ssl.create_default_context(cafile=verify)
