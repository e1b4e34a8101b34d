"""Adapter tests for the TrueConf client: edge cases on MockTransport, flows on the stand-in."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailhook.core.model import Conference, ConferenceSpec, Invitee
from mailhook.errors import (
    TemporaryError,
    TrueConfAuthError,
    TrueConfRejected,
    TrueConfUnavailable,
)
from mailhook.testing.standin import StandIn
from mailhook.trueconf.client import TrueConfClient, TrueConfUser
from mailhook.trueconf.payload import invitations, is_v4, one_line_topic, utc_hhmm

SECRET = "s3cr3t-value"
START = 1767261600  # 2026-01-01 10:00 UTC

SPEC = ConferenceSpec(
    topic="Quarterly review",
    owner="alice",
    invitees=(Invitee("bob", "Bob Baker"), Invitee("carol")),
    start=START,
    duration=3600,
    role_based=False,
    max_participants=36,
    tag="mailhook-7f3a",
    description="Agenda attached",
    utc_offset_minutes=180,
)

USERS = [
    {"id": "alice", "email": "alice@example.com", "display_name": "Alice Archer"},
    {"id": "bob", "email": "bob@example.com", "display_name": "Bob Baker"},
    {"id": "carol", "email": "carol@example.org", "display_name": "Carol Cooper"},
    {"id": "dave", "email": "Dave@Example.com", "display_name": "Dave Dawson"},
    {"id": "erin", "email": "erin@example.org", "display_name": "Erin Evans"},
]

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


def conference_json(conference_id: str = "42", url: Any = "https://tc.example/c/webinar") -> dict:
    conference = {"id": conference_id, "topic": "Quarterly review", "tags": [SPEC.tag]}
    if url is not None:
        conference["url"] = url
    return {"conference": conference}


def v3_error(status: int, reason: str, message: str = "Bad") -> httpx.Response:
    body = {"error": {"code": status, "message": message, "errors": [{"reason": reason}]}}
    return httpx.Response(status, json=body)


class FakeServer:
    """A MockTransport handler: issues tokens and answers API calls from a script."""

    def __init__(self, *answers: httpx.Response | Handler, expires_in: Any = 3600) -> None:
        self.answers = list(answers) or [httpx.Response(200, json=conference_json())]
        self.expires_in = expires_in
        self.token_answer: httpx.Response | Exception | None = None
        self.token_delay = 0.0
        self.tokens: list[httpx.Request] = []
        self.calls: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth2/v1/token":
            return await self._token(request)
        self.calls.append(request)
        # The last scripted answer repeats, so a script of one answers every call.
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, httpx.Response):
            return answer
        produced = answer(request)
        return produced if isinstance(produced, httpx.Response) else await produced

    async def _token(self, request: httpx.Request) -> httpx.Response:
        self.tokens.append(request)
        if self.token_delay:
            await asyncio.sleep(self.token_delay)
        if isinstance(self.token_answer, Exception):
            raise self.token_answer
        if self.token_answer is not None:
            return self.token_answer
        body: dict[str, Any] = {"access_token": f"token-{len(self.tokens)}", "token_type": "Bearer"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return httpx.Response(200, json=body)


class Clock:
    """A hand-driven monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client_for(server: FakeServer, *, api_version: str = "v3.11", clock: Clock | None = None):
    return TrueConfClient(
        "https://tc.example",
        "mailhook",
        SECRET,
        api_version=api_version,
        transport=httpx.MockTransport(server),
        clock=clock or Clock(),
    )


# --- pure payload helpers ---------------------------------------------------------------------


def test_invitations_put_owner_first_once() -> None:
    """The owner leads the invitation list and nobody is invited twice."""
    spec = ConferenceSpec(
        topic="t",
        owner="alice",
        invitees=(Invitee("bob", "Bob"), Invitee("alice"), Invitee("bob")),
        start=START,
        duration=60,
        role_based=False,
        max_participants=3,
        tag="x",
    )
    assert invitations(spec) == [{"id": "alice"}, {"id": "bob", "display_name": "Bob"}]


def test_utc_hhmm_formats_the_utc_wall_clock() -> None:
    """The v4 schedule time is the UTC hour and minute of the start."""
    assert utc_hhmm(START) == "10:00"
    assert utc_hhmm(START + 3 * 3600 + 5 * 60 + 59) == "13:05"


def test_api_generation_follows_the_version_prefix() -> None:
    """Versions starting with v4 use the v4 dialect, every v3.x uses v3."""
    assert [is_v4(v) for v in ("v3.11", "v3.2", "v4", "v4.1")] == [False, False, True, True]


@given(st.text(max_size=600))
def test_topic_is_always_one_line_within_the_limit(topic: str) -> None:
    """Whatever the summary, the topic sent has no line breaks and at most 240 characters."""
    folded = one_line_topic(topic)
    assert len(folded) <= 240
    assert "\n" not in folded and "\r" not in folded


# --- requests, tokens and error mapping on MockTransport -----------------------------------


async def test_create_returns_the_url_the_api_sent() -> None:
    """The join link is the API's url, even when it does not contain the id."""
    async with client_for(FakeServer()) as client:
        conference = await client.create_conference(SPEC)
    assert conference == Conference(id="42", url="https://tc.example/c/webinar")


async def test_numeric_conference_id_becomes_a_string() -> None:
    """A numeric id in the answer is returned as a string."""
    server = FakeServer(httpx.Response(200, json=conference_json(conference_id=7)))  # type: ignore[arg-type]
    async with client_for(server) as client:
        assert (await client.create_conference(SPEC)).id == "7"


async def test_token_request_is_client_credentials_form() -> None:
    """The token is requested with a form-encoded client_credentials grant."""
    server = FakeServer()
    async with client_for(server) as client:
        await client.create_conference(SPEC)
    token_request = server.tokens[0]
    assert token_request.method == "POST"
    assert token_request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = dict(httpx.QueryParams(token_request.content.decode()))
    assert form == {
        "grant_type": "client_credentials",
        "client_id": "mailhook",
        "client_secret": SECRET,
    }


async def test_api_calls_carry_bearer_header_not_query_token() -> None:
    """The token travels in the Authorization header and never in the URL."""
    server = FakeServer()
    async with client_for(server) as client:
        await client.create_conference(SPEC)
    call = server.calls[0]
    assert call.headers["authorization"] == "Bearer token-1"
    assert "access_token" not in call.url.params
    assert call.url.path == "/api/v3.11/conferences"


async def test_v3_body_has_documented_fields() -> None:
    """A v3 create sends integer mode and schedule type, tags and no guests."""
    server = FakeServer()
    async with client_for(server) as client:
        await client.create_conference(SPEC)
    body = json.loads(server.calls[0].content)
    assert body["type"] == 0 and body["allow_guests"] is False and body["auto_invite"] == 0
    assert body["schedule"] == {"type": 1, "start_time": START, "duration": 3600}
    assert body["tags"] == [SPEC.tag] and body["invitations"][0] == {"id": "alice"}


async def test_v4_body_has_documented_fields() -> None:
    """A v4 create sends a string mode, private access and a complete once schedule."""
    server = FakeServer()
    role_based = ConferenceSpec(**{**_spec_fields(), "role_based": True})
    async with client_for(server, api_version="v4") as client:
        await client.create_conference(role_based)
    body = json.loads(server.calls[0].content)
    assert body["mode"] == "S|L" and body["access"] == "private" and "type" not in body
    assert body["schedule"] == {
        "type": "once",
        "start_time": START,
        "duration": 3600,
        "time": "10:00",
        "special_time_offset": 180,
    }


def _spec_fields() -> dict[str, Any]:
    return {name: getattr(SPEC, name) for name in SPEC.__slots__}


@pytest.mark.parametrize(
    ("version", "method"), [("v3.2", "PUT"), ("v3.11", "PUT"), ("v4", "PATCH"), ("v4.1", "PATCH")]
)
async def test_update_verb_follows_the_generation(version: str, method: str) -> None:
    """Updates use PUT on v3.x and PATCH on v4.x, with the full schedule."""
    server = FakeServer()
    async with client_for(server, api_version=version) as client:
        await client.update_conference("42", SPEC)
    call = server.calls[0]
    assert (call.method, call.url.path) == (method, f"/api/{version}/conferences/42")
    assert json.loads(call.content)["schedule"]["start_time"] == START


async def test_update_answered_204_reads_the_conference_back() -> None:
    """An update answered 204 without a body returns the link read back with GET."""
    server = FakeServer(httpx.Response(204), httpx.Response(200, json=conference_json()))
    async with client_for(server, api_version="v4") as client:
        conference = await client.update_conference("42", SPEC)
    assert conference == Conference(id="42", url="https://tc.example/c/webinar")
    assert [c.method for c in server.calls] == ["PATCH", "GET"]


async def test_timeout_is_unavailable() -> None:
    """A timeout becomes TrueConfUnavailable with the httpx error as its cause."""

    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with client_for(FakeServer(hang)) as client:
        with pytest.raises(TrueConfUnavailable) as caught:
            await client.create_conference(SPEC)
    assert isinstance(caught.value.__cause__, httpx.TimeoutException)
    assert isinstance(caught.value, TemporaryError)


async def test_a_read_that_timed_out_is_not_sent_again() -> None:
    """Only a broken connection repeats an idempotent request; a timeout surfaces at once."""

    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    server = FakeServer(hang)
    async with client_for(server) as client:
        with pytest.raises(TrueConfUnavailable):
            await client.get_conference("42")
    assert len(server.calls) == 1


async def test_connection_error_is_unavailable() -> None:
    """A refused connection becomes TrueConfUnavailable."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with client_for(FakeServer(refuse)) as client:
        with pytest.raises(TrueConfUnavailable) as caught:
            await client.get_conference("42")
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
async def test_server_errors_and_rate_limits_are_unavailable(status: int) -> None:
    """5xx and 429 answers are temporary failures that carry the status."""
    async with client_for(FakeServer(v3_error(status, "backendError"))) as client:
        with pytest.raises(TrueConfUnavailable) as caught:
            await client.create_conference(SPEC)
    assert caught.value.status == status and caught.value.reason == "backendError"


async def test_v3_error_envelope_is_parsed_into_rejected() -> None:
    """A 400 with the v3 envelope becomes TrueConfRejected with status, reason and message."""
    answer = httpx.Response(
        400,
        json={
            "error": {
                "code": 400,
                "message": "Bad Request",
                "errors": [
                    {"reason": "invalidValue", "message": "topic is too long", "location": "topic"}
                ],
            }
        },
    )
    async with client_for(FakeServer(answer)) as client:
        with pytest.raises(TrueConfRejected) as caught:
            await client.create_conference(SPEC)
    assert (caught.value.status, caught.value.reason) == (400, "invalidValue")
    assert "topic is too long" in str(caught.value)


async def test_plain_string_error_is_parsed() -> None:
    """An error body whose "error" is a plain string still yields a reason."""
    answer = httpx.Response(403, json={"error": "forbidden", "error_description": "no scope"})
    async with client_for(FakeServer(answer)) as client:
        with pytest.raises(TrueConfRejected) as caught:
            await client.create_conference(SPEC)
    assert (caught.value.status, caught.value.reason) == (403, "forbidden")
    assert "no scope" in str(caught.value)


async def test_flat_v4_error_body_is_parsed() -> None:
    """A flat v4-style body with reason, message and trace id is understood."""
    answer = httpx.Response(
        422,
        json={"reason": "invalidSchedule", "message": "duration out of range", "trace_id": "ab"},
    )
    async with client_for(FakeServer(answer), api_version="v4") as client:
        with pytest.raises(TrueConfRejected) as caught:
            await client.create_conference(SPEC)
    assert (caught.value.status, caught.value.reason) == (422, "invalidSchedule")


async def test_success_with_bad_json_is_unavailable() -> None:
    """A 200 whose body is not JSON (a proxy page, a cut answer) is temporary."""
    answer = httpx.Response(200, text="<html>gateway</html>")
    async with client_for(FakeServer(answer)) as client:
        with pytest.raises(TrueConfUnavailable) as caught:
            await client.create_conference(SPEC)
    assert caught.value.reason == "badResponse"
    assert isinstance(caught.value.__cause__, ValueError)


async def test_client_error_with_non_json_body_is_rejected() -> None:
    """A 4xx with an HTML body is still a rejection."""
    answer = httpx.Response(400, text="<html>bad request</html>")
    async with client_for(FakeServer(answer)) as client:
        with pytest.raises(TrueConfRejected) as caught:
            await client.create_conference(SPEC)
    assert caught.value.status == 400


@pytest.mark.parametrize("url", [None, 12345, "", ["https://tc.example/c/1"]])
async def test_missing_or_bad_url_is_rejected(url: Any) -> None:
    """An answer without a usable url string is rejected, never replaced by a built link."""
    answer = httpx.Response(200, json=conference_json(url=url))
    async with client_for(FakeServer(answer)) as client:
        with pytest.raises(TrueConfRejected):
            await client.create_conference(SPEC)


async def test_unwrapped_conference_is_rejected() -> None:
    """An answer without the {"conference": ...} envelope is rejected."""
    answer = httpx.Response(200, json={"id": "1", "url": "https://tc.example/c/1"})
    async with client_for(FakeServer(answer)) as client:
        with pytest.raises(TrueConfRejected):
            await client.create_conference(SPEC)


@pytest.mark.parametrize("status", [400, 401])
async def test_refused_credentials_raise_auth_error_without_secret(status: int) -> None:
    """Refused credentials raise TrueConfAuthError, and its message hides the secret."""
    server = FakeServer()
    server.token_answer = httpx.Response(
        status, json={"error": "invalid_client", "error_description": f"bad secret {SECRET}"}
    )
    async with client_for(server) as client:
        with pytest.raises(TrueConfAuthError) as caught:
            await client.create_conference(SPEC)
    assert caught.value.status == status and caught.value.reason == "invalid_client"
    assert SECRET not in str(caught.value)
    assert server.calls == []


async def test_token_endpoint_outage_is_unavailable() -> None:
    """A 503 or a network failure at the token endpoint is temporary, not an auth error."""
    server = FakeServer()
    server.token_answer = httpx.Response(503, text="maintenance")
    async with client_for(server) as client:
        with pytest.raises(TrueConfUnavailable):
            await client.check()
        server.token_answer = httpx.ConnectTimeout("slow")
        with pytest.raises(TrueConfUnavailable) as caught:
            await client.check()
    assert isinstance(caught.value.__cause__, httpx.ConnectTimeout)


async def test_token_answer_without_access_token_is_rejected() -> None:
    """A token answer lacking access_token is rejected rather than sending "Bearer None"."""
    server = FakeServer()
    server.token_answer = httpx.Response(200, json={"token_type": "Bearer"})
    async with client_for(server) as client:
        with pytest.raises(TrueConfRejected):
            await client.create_conference(SPEC)
    assert server.calls == []


async def test_v4_401_renews_token_and_retries_once() -> None:
    """On v4 a 401 fetches a new token and repeats the request once with it."""
    server = FakeServer(
        httpx.Response(401, json={"error": "expired"}), httpx.Response(200, json=conference_json())
    )
    async with client_for(server, api_version="v4") as client:
        conference = await client.create_conference(SPEC)
    assert conference.id == "42"
    assert [c.headers["authorization"] for c in server.calls] == [
        "Bearer token-1",
        "Bearer token-2",
    ]


async def test_v3_403_access_token_invalid_renews_token_once() -> None:
    """On v3 a 403 accessTokenInvalid fetches a new token and repeats the request once."""
    server = FakeServer(
        v3_error(403, "accessTokenInvalid"), httpx.Response(200, json=conference_json())
    )
    async with client_for(server) as client:
        assert (await client.get_conference("42")) is not None
    assert len(server.tokens) == 2 and len(server.calls) == 2


async def test_token_refused_twice_is_rejected_after_one_retry() -> None:
    """A token refused again after renewal is a rejection, with exactly one retry."""
    server = FakeServer(v3_error(403, "accessTokenInvalid"))
    async with client_for(server) as client:
        with pytest.raises(TrueConfRejected) as caught:
            await client.create_conference(SPEC)
    assert caught.value.reason == "accessTokenInvalid"
    assert len(server.tokens) == 2 and len(server.calls) == 2


async def test_other_403_is_not_retried() -> None:
    """A 403 for another reason (missing scope) is rejected without renewing the token."""
    server = FakeServer(v3_error(403, "forbidden"))
    async with client_for(server) as client:
        with pytest.raises(TrueConfRejected):
            await client.create_conference(SPEC)
    assert len(server.tokens) == 1 and len(server.calls) == 1


async def test_token_is_cached_across_calls() -> None:
    """Several calls within the lifetime share one token."""
    server = FakeServer()
    async with client_for(server) as client:
        for _ in range(3):
            await client.get_conference("42")
    assert len(server.tokens) == 1
    assert {c.headers["authorization"] for c in server.calls} == {"Bearer token-1"}


async def test_token_is_renewed_after_expires_in() -> None:
    """The token is reused until expires_in (less a margin) passes on the injected clock."""
    server, clock = FakeServer(expires_in=600), Clock()
    async with client_for(server, clock=clock) as client:
        await client.get_conference("42")
        clock.now += 500  # still inside the lifetime and its margin
        await client.get_conference("42")
        assert len(server.tokens) == 1
        clock.now += 100  # past expires_in
        await client.get_conference("42")
    assert len(server.tokens) == 2
    assert server.calls[-1].headers["authorization"] == "Bearer token-2"


async def test_missing_expires_in_falls_back_to_an_hour() -> None:
    """Without expires_in the token is kept for the default hour, not refetched every call."""
    server, clock = FakeServer(expires_in=None), Clock()
    async with client_for(server, clock=clock) as client:
        await client.get_conference("42")
        clock.now += 3000
        await client.get_conference("42")
        assert len(server.tokens) == 1
        clock.now += 600
        await client.get_conference("42")
    assert len(server.tokens) == 2


async def test_concurrent_requests_fetch_one_token() -> None:
    """Many requests that need a token at once cause one token fetch."""
    server = FakeServer()
    server.token_delay = 0.05
    async with client_for(server) as client:
        results = await asyncio.gather(*(client.get_conference(str(i)) for i in range(20)))
    assert len(results) == 20 and len(server.tokens) == 1


async def test_concurrent_renewal_after_refusal_fetches_one_new_token() -> None:
    """Requests refused together with the same stale token share one renewed token."""
    server, clock = FakeServer(), Clock()

    def refuse_stale(request: httpx.Request) -> httpx.Response:
        if request.headers["authorization"] == "Bearer token-1":
            return httpx.Response(401)
        return httpx.Response(200, json=conference_json())

    server.answers = [refuse_stale]
    server.token_delay = 0.02
    async with client_for(server, api_version="v4", clock=clock) as client:
        await client.check()  # token-1 is cached
        await asyncio.gather(*(client.get_conference(str(i)) for i in range(10)))
    assert len(server.tokens) == 2


async def test_check_fetches_a_fresh_token() -> None:
    """check() asks the token endpoint every time, so a health check really reaches TrueConf."""
    server = FakeServer()
    async with client_for(server) as client:
        await client.check()
        await client.check()
    assert len(server.tokens) == 2 and server.calls == []


async def test_get_missing_conference_is_none() -> None:
    """Reading a conference TrueConf does not know gives None."""
    async with client_for(FakeServer(v3_error(404, "conferenceNotFound"))) as client:
        assert await client.get_conference("404") is None


async def test_delete_missing_conference_counts_as_done() -> None:
    """Deleting a conference that is already gone succeeds."""
    async with client_for(FakeServer(v3_error(404, "conferenceNotFound"))) as client:
        await client.delete_conference("404")


async def test_unknown_route_404_is_not_mistaken_for_a_missing_conference() -> None:
    """A 404 routeNotFound (wrong API version) is a rejection, not a successful delete."""
    async with client_for(FakeServer(v3_error(404, "routeNotFound"))) as client:
        with pytest.raises(TrueConfRejected):
            await client.delete_conference("42")
        with pytest.raises(TrueConfRejected):
            await client.get_conference("42")


async def test_delete_accepts_204() -> None:
    """A v4 204 answer to DELETE is success."""
    server = FakeServer(httpx.Response(204))
    async with client_for(server, api_version="v4") as client:
        await client.delete_conference("42")
    assert server.calls[0].method == "DELETE"


async def test_find_by_tag_pages_and_matches_tags_itself() -> None:
    """The v3 lookup pages by page_id and ignores listed conferences without the tag."""
    other = {"id": "1", "url": "https://tc.example/c/1", "tags": ["someone-else"]}
    wanted = {"id": "2", "url": "https://tc.example/c/2", "tags": ["x", SPEC.tag]}
    server = FakeServer(
        httpx.Response(200, json={"cnt": 2, "conferences": [other]}),
        httpx.Response(200, json={"cnt": 2, "conferences": [wanted]}),
    )
    async with client_for(server) as client:
        found = await client.find_conference_by_tag(SPEC.tag, "alice")
    assert found == Conference(id="2", url="https://tc.example/c/2")
    assert [c.url.params["page_id"] for c in server.calls] == ["1", "2"]
    assert server.calls[0].url.params["tag"] == SPEC.tag


async def test_find_by_tag_on_v4_filters_by_owner_and_stops_at_total() -> None:
    """The v4 lookup asks for the owner's conferences and stops once "results" are seen."""
    server = FakeServer(
        httpx.Response(200, json={"conferences": [{"id": "1", "tags": []}], "results": 1})
    )
    async with client_for(server, api_version="v4") as client:
        assert await client.find_conference_by_tag(SPEC.tag, "alice") is None
    assert len(server.calls) == 1
    assert dict(server.calls[0].url.params) == {"owner": "alice", "page": "1", "page_size": "100"}


async def test_find_by_tag_reads_the_conference_when_listing_lacks_url() -> None:
    """A listed match without a url is read by id to get the join link."""
    server = FakeServer(
        httpx.Response(200, json={"cnt": 1, "conferences": [{"id": "9", "tags": [SPEC.tag]}]}),
        httpx.Response(200, json=conference_json("9", "https://tc.example/c/nine")),
    )
    async with client_for(server) as client:
        found = await client.find_conference_by_tag(SPEC.tag, "alice")
    assert found == Conference(id="9", url="https://tc.example/c/nine")
    assert server.calls[1].url.path == "/api/v3.11/conferences/9"


async def test_list_users_follows_next_page_id() -> None:
    """Users are read page by page until next_page_id is -1, with lower-cased emails."""
    server = FakeServer(
        httpx.Response(200, json={"next_page_id": 2, "users": [{"id": "a", "email": "A@X.org"}]}),
        httpx.Response(200, json={"next_page_id": -1, "users": [{"id": "b", "display_name": "B"}]}),
    )
    async with client_for(server) as client:
        users = await client.list_users()
    assert users == [TrueConfUser("a", "a@x.org", ""), TrueConfUser("b", "", "B")]
    assert [dict(c.url.params) for c in server.calls] == [
        {"page_size": "100"},  # the server's own first page, whatever its numbering
        {"page_id": "2", "page_size": "100"},
    ]


async def test_list_users_refuses_a_paging_loop() -> None:
    """A server that points back to a page already read is rejected instead of looping."""
    page = {"next_page_id": 2, "users": [{"id": "a", "email": "a@x.org"}]}
    server = FakeServer(httpx.Response(200, json=page), httpx.Response(200, json=page))
    async with client_for(server) as client:
        with pytest.raises(TrueConfRejected):
            await client.list_users()
    assert len(server.calls) == 2


async def test_token_falls_back_to_json_when_a_form_is_refused() -> None:
    """A token endpoint that refuses the form-encoded request is asked once more with JSON."""
    calls: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if request.url.path.endswith("/token"):
            if request.headers.get("content-type", "").startswith("application/json"):
                return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
            return httpx.Response(415, json={"error": "unsupported media type"})
        return httpx.Response(200, json={"conference": {"id": "1", "url": "https://v.example/c/1"}})

    client = TrueConfClient("https://v.example", "id", "secret", transport=httpx.MockTransport(answer))
    try:
        await client.create_conference(SPEC)
    finally:
        await client.aclose()
    token_calls = [c for c in calls if c.url.path.endswith("/token")]
    assert len(token_calls) == 2
    assert token_calls[1].headers["content-type"].startswith("application/json")


async def test_v4_token_from_the_api_path_when_the_classic_one_is_missing() -> None:
    """On API v4, a server without /oauth2/v1/token is asked at /api/v4/oauth2/token."""
    paths: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path == "/oauth2/v1/token":
            return httpx.Response(404, json={"error": "routeNotFound"})
        if request.url.path == "/api/v4/oauth2/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        return httpx.Response(200, json={"conference": {"id": "1", "url": "https://v.example/c/1"}})

    client = TrueConfClient("https://v.example", "id", "secret", api_version="v4",
                            transport=httpx.MockTransport(answer))
    try:
        await client.create_conference(SPEC)
    finally:
        await client.aclose()
    assert paths[:3] == ["/oauth2/v1/token", "/api/v4/oauth2/token", "/api/v4/conferences"]


async def test_echoed_token_is_scrubbed_from_errors() -> None:
    """A server echoing our token in an error does not put it in the exception message."""
    answer = httpx.Response(400, json={"error": {"message": "bad token-1", "errors": []}})
    async with client_for(FakeServer(answer)) as client:
        with pytest.raises(TrueConfRejected) as caught:
            await client.create_conference(SPEC)
    assert "token-1" not in str(caught.value)


# --- against the stand-in over loopback ------------------------------------------------------


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with StandIn(
        client_id="mailhook", client_secret=SECRET, users=USERS, page_size_cap=2
    ) as server:
        yield server


def real_client(standin: StandIn, version: str, **options: Any) -> TrueConfClient:
    return TrueConfClient(standin.url, "mailhook", SECRET, api_version=version, **options)


VERSIONS = pytest.mark.parametrize("version", ["v3.11", "v4"])


@VERSIONS
async def test_standin_create_stores_the_documented_payload(standin: StandIn, version: str) -> None:
    """Creating on the stand-in stores the conference and returns its url, with a Bearer request."""
    async with real_client(standin, version) as client:
        conference = await client.create_conference(SPEC)
    stored = standin.conferences[conference.id]
    assert conference.url == f"{standin.url}/c/{conference.id}" == stored["url"]
    assert [i["id"] for i in stored["invitations"]] == ["alice", "bob", "carol"]
    assert stored["tags"] == [SPEC.tag] and stored["owner"] == "alice"
    create = [r for r in standin.requests if r.method == "POST" and r.path.endswith("/conferences")]
    assert create[0].path == f"/api/{version}/conferences"
    assert create[0].headers["authorization"].startswith("Bearer ")
    assert "access_token" not in create[0].query
    assert ("mode" in create[0].json) is (version == "v4")


@VERSIONS
async def test_standin_update_uses_the_generation_verb(standin: StandIn, version: str) -> None:
    """Updating rewrites the stored conference with PUT on v3 and PATCH on v4."""
    changed = ConferenceSpec(**{**_spec_fields(), "topic": "Moved review", "start": START + 86400})
    async with real_client(standin, version) as client:
        conference = await client.create_conference(SPEC)
        updated = await client.update_conference(conference.id, changed)
    assert updated == conference
    stored = standin.conferences[conference.id]
    assert stored["topic"] == "Moved review" and stored["schedule"]["start_time"] == START + 86400
    verbs = [r.method for r in standin.requests if r.path.endswith(f"/conferences/{conference.id}")]
    assert verbs == ["PATCH" if version == "v4" else "PUT"]


@VERSIONS
async def test_standin_delete_get_and_delete_again(standin: StandIn, version: str) -> None:
    """A deleted conference reads as None and deleting it again still succeeds."""
    async with real_client(standin, version) as client:
        conference = await client.create_conference(SPEC)
        assert await client.get_conference(conference.id) == conference
        await client.delete_conference(conference.id)
        assert await client.get_conference(conference.id) is None
        await client.delete_conference(conference.id)
    assert standin.conferences == {}


@VERSIONS
async def test_standin_find_by_tag(standin: StandIn, version: str) -> None:
    """The tagged conference is found (v3 by the tag filter, v4 behind capped owner pages)."""
    async with real_client(standin, version) as client:
        for index in range(5):
            await client.create_conference(
                ConferenceSpec(**{**_spec_fields(), "tag": f"other-{index}"})
            )
        wanted = await client.create_conference(SPEC)
        assert await client.find_conference_by_tag(SPEC.tag, "alice") == wanted
        assert await client.find_conference_by_tag("no-such-tag", "alice") is None
    listings = [
        r for r in standin.requests if r.method == "GET" and r.path.endswith("/conferences")
    ]
    if version == "v4":
        assert max(int(r.query["page"]) for r in listings) == 3
        assert {r.query["owner"] for r in listings} == {"alice"}
    else:
        assert [r.query["tag"] for r in listings] == [SPEC.tag, "no-such-tag"]


@VERSIONS
async def test_standin_list_users_is_paged(standin: StandIn, version: str) -> None:
    """All users come back although the stand-in caps pages at two."""
    async with real_client(standin, version) as client:
        users = await client.list_users()
    assert [u.id for u in users] == ["alice", "bob", "carol", "dave", "erin"]
    assert users[3] == TrueConfUser("dave", "dave@example.com", "Dave Dawson")
    pages = [r.query.get("page_id") for r in standin.requests if r.path.endswith("/users")]
    assert pages == [None, "2", "3"]


@VERSIONS
async def test_standin_expired_token_is_renewed_transparently(
    standin: StandIn, version: str
) -> None:
    """After the stand-in expires every token, the next call renews once and succeeds."""
    async with real_client(standin, version) as client:
        conference = await client.create_conference(SPEC)
        standin.expire_tokens()
        assert await client.get_conference(conference.id) == conference
    token_calls = [r for r in standin.requests if r.path == "/oauth2/v1/token"]
    reads = [r for r in standin.requests if r.method == "GET"]
    assert len(token_calls) == 2 and len(reads) == 2
    assert reads[0].headers["authorization"] != reads[1].headers["authorization"]


async def test_standin_role_based_is_accepted_on_both_generations(standin: StandIn) -> None:
    """A role-based spec maps to type 3 on v3 and "S|L" on v4, both accepted."""
    role_based = ConferenceSpec(**{**_spec_fields(), "role_based": True})
    async with real_client(standin, "v3.2") as v3, real_client(standin, "v4.1") as v4:
        first = await v3.create_conference(role_based)
        second = await v4.create_conference(role_based)
    assert standin.conferences[first.id]["type"] == 3
    assert standin.conferences[second.id]["mode"] == "S|L"


async def test_standin_validation_error_reaches_the_caller(standin: StandIn) -> None:
    """An owner unknown to the stand-in comes back as TrueConfRejected naming the reason."""
    stranger = ConferenceSpec(**{**_spec_fields(), "owner": "mallory"})
    async with real_client(standin, "v3.11") as client:
        with pytest.raises(TrueConfRejected) as caught:
            await client.create_conference(stranger)
    assert (caught.value.status, caught.value.reason) == (400, "invalidValue")


async def test_standin_fault_and_latency_are_unavailable(standin: StandIn) -> None:
    """An injected 503 and a reply slower than the timeout both raise TrueConfUnavailable."""
    async with real_client(standin, "v3.11", timeout=0.2) as client:
        standin.fail_next(1, 503)
        with pytest.raises(TrueConfUnavailable) as caught:
            await client.create_conference(SPEC)
        assert caught.value.status == 503
        standin.set_latency(0.6)
        with pytest.raises(TrueConfUnavailable):
            await client.create_conference(SPEC)
        standin.set_latency(0)
        assert await client.create_conference(SPEC)


async def test_standin_wrong_secret_is_auth_error(standin: StandIn) -> None:
    """Wrong credentials at the stand-in raise TrueConfAuthError from check()."""
    async with TrueConfClient(standin.url, "mailhook", "wrong-secret") as client:
        with pytest.raises(TrueConfAuthError) as caught:
            await client.check()
    assert caught.value.status == 401 and "wrong-secret" not in str(caught.value)


async def test_unreachable_server_is_unavailable() -> None:
    """A stopped server (connection refused) raises TrueConfUnavailable."""
    with StandIn() as server:
        url = server.url
    async with TrueConfClient(url, "mailhook", "secret", timeout=1.0) as client:
        with pytest.raises(TrueConfUnavailable):
            await client.check()


def test_ca_file_path_is_accepted_without_deprecation(recwarn: pytest.WarningsRecorder) -> None:
    """A CA bundle path for verify builds a TLS context instead of httpx's deprecated string."""
    import certifi

    client = TrueConfClient("https://tc.example", "mailhook", SECRET, verify=certifi.where())
    asyncio.run(client.aclose())
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


def test_missing_ca_file_fails_at_construction() -> None:
    """A CA path that does not exist fails when the client is built, not on the first message."""
    with pytest.raises(FileNotFoundError):
        TrueConfClient("https://tc.example", "mailhook", SECRET, verify="/nonexistent/ca.pem")


@VERSIONS
async def test_standin_lists_every_conference_across_pages(standin: StandIn, version: str) -> None:
    """list_conferences pages with the generation's own parameter until the reported total,
    and names each conference's id, tags, topic and owner."""
    async with real_client(standin, version) as client:
        made = [await client.create_conference(ConferenceSpec(**{**_spec_fields(),
                                                                  "tag": f"tag-{index}"}))
                for index in range(5)]
        listed = await client.list_conferences()
    assert [c.id for c in listed] == [c.id for c in made]
    assert [c.tags for c in listed] == [(f"tag-{index}",) for index in range(5)]
    assert {c.owner for c in listed} == {"alice"} and listed[0].topic == SPEC.topic
    pages = [r.query for r in standin.requests if r.method == "GET"
             and r.path == f"/api/{version}/conferences"]
    page_key = "page" if version == "v4" else "page_id"
    assert [query[page_key] for query in pages] == ["1", "2", "3"]  # 2 per page: the cap


async def test_standin_lists_no_conferences_on_an_empty_server(standin: StandIn) -> None:
    """An empty server lists nothing, in one request."""
    async with real_client(standin, "v3.11") as client:
        assert await client.list_conferences() == []
    assert len([r for r in standin.requests if r.path.endswith("/conferences")]) == 1
