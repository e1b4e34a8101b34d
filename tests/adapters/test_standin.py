"""Tests for the TrueConf API stand-in: it must answer like the server for client tests to count."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailhook.testing.standin import StandIn, main

ROOT = Path(__file__).resolve().parents[2]
USERS_FILE = ROOT / "config" / "standin-users.json"
USERS = [
    {"id": name, "email": f"{name}@example.com"}
    for name in ("alice", "bob", "carol", "dave", "erin")
]
START = 1767261600


def v3_body(**changes: Any) -> dict[str, Any]:
    body = {
        "topic": "Weekly sync",
        "owner": "alice",
        "type": 0,
        "max_participants": 36,
        "schedule": {"type": 1, "start_time": START, "duration": 3600},
        "invitations": [{"id": "alice"}, {"id": "bob", "display_name": "Bob"}],
        "tags": ["t1"],
        "description": "",
        "allow_guests": False,
        "auto_invite": 0,
    }
    return {**body, **changes}


def v4_body(**changes: Any) -> dict[str, Any]:
    body = {
        "topic": "Weekly sync",
        "owner": "alice",
        "mode": "PxP",
        "access": "private",
        "schedule": {
            "type": "once",
            "start_time": START,
            "duration": 3600,
            "time": "10:00",
            "special_time_offset": 180,
        },
        "invitations": [{"id": "alice"}, {"id": "bob"}],
        "tags": ["t1"],
    }
    return {**body, **changes}


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with StandIn(users=USERS, page_size_cap=2) as server:
        yield server


@pytest.fixture
def http(standin: StandIn) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=standin.url, timeout=5) as client:
        yield client


def token(http: httpx.Client, secret: str = "secret") -> str:
    form = {"grant_type": "client_credentials", "client_id": "mailhook", "client_secret": secret}
    response = http.post("/oauth2/v1/token", data=form)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def api(
    http: httpx.Client, method: str, path: str, body: Any = None, **params: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token(http)}"}
    return http.request(method, path, json=body, params=params or None, headers=headers)


def reason(response: httpx.Response) -> tuple[str, str]:
    detail = response.json()["error"]["errors"][0]
    return detail["reason"], detail.get("location", "")


def create(http: httpx.Client, version: str = "v3.11", **changes: Any) -> dict[str, Any]:
    body = v4_body(**changes) if version.startswith("v4") else v3_body(**changes)
    response = api(http, "POST", f"/api/{version}/conferences", body)
    assert response.status_code == 200, response.text
    return response.json()["conference"]


# --- tokens ---------------------------------------------------------------------------------


def test_token_is_issued_for_form_and_json(http: httpx.Client) -> None:
    """Both form and JSON token requests get a Bearer token with the configured lifetime."""
    form = {"grant_type": "client_credentials", "client_id": "mailhook", "client_secret": "secret"}
    for response in (
        http.post("/oauth2/v1/token", data=form),
        http.post("/oauth2/v1/token", json=form),
    ):
        body = response.json()
        assert response.status_code == 200
        assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
        assert len(body["access_token"]) == 40 and int(body["access_token"], 16) >= 0


def test_wrong_credentials_are_invalid_client(http: httpx.Client) -> None:
    """A wrong secret or client id is answered 401 invalid_client."""
    for client_id, secret in (("mailhook", "nope"), ("other", "secret")):
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        response = http.post("/oauth2/v1/token", data=form)
        assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_other_grant_types_are_refused(http: httpx.Client) -> None:
    """Only client_credentials is served."""
    form = {"grant_type": "password", "client_id": "mailhook", "username": "a", "password": "b"}
    response = http.post("/oauth2/v1/token", data=form)
    assert response.status_code == 400 and response.json()["error"] == "unsupported_grant_type"


def test_missing_token_is_refused_per_generation(http: httpx.Client) -> None:
    """Without a token v3 answers 403 accessTokenInvalid and v4 answers 401."""
    v3 = http.get("/api/v3.11/users")
    v4 = http.get("/api/v4/users")
    assert v3.status_code == 403 and reason(v3)[0] == "accessTokenInvalid"
    assert v4.status_code == 401 and "trace_id" in v4.json()


def test_expired_tokens_are_refused_per_generation(http: httpx.Client, standin: StandIn) -> None:
    """After expire_tokens() a formerly good token gets 403 on v3 and 401 on v4."""
    headers = {"Authorization": f"Bearer {token(http)}"}
    assert http.get("/api/v3.11/users", headers=headers).status_code == 200
    standin.expire_tokens()
    v3 = http.get("/api/v3.11/users", headers=headers)
    assert v3.status_code == 403 and reason(v3)[0] == "accessTokenInvalid"
    assert http.get("/api/v4/users", headers=headers).status_code == 401


def test_tokens_expire_after_their_lifetime() -> None:
    """A token older than token_lifetime is refused."""
    with StandIn(token_lifetime=0) as server, httpx.Client(base_url=server.url) as http:
        response = http.get("/api/v3.2/users", headers={"Authorization": f"Bearer {token(http)}"})
    assert response.status_code == 403


def test_query_token_is_accepted_like_v3_servers(http: httpx.Client) -> None:
    """The ?access_token= form used by the v3 samples works too."""
    response = http.get("/api/v3.3/users", params={"access_token": token(http)})
    assert response.status_code == 200


# --- conference validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("x" * 241, "invalidValue"),
        ("two\nlines", "invalidValue"),
        ("", "invalidValue"),
        (None, "requiredField"),
    ],
)
def test_bad_topic_is_400(http: httpx.Client, topic: Any, expected: str) -> None:
    """A topic that is too long, multi-line, empty or missing is refused naming the field."""
    body = v3_body(topic=topic)
    if topic is None:
        del body["topic"]
    response = api(http, "POST", "/api/v3.11/conferences", body)
    assert response.status_code == 400
    assert reason(response) == (expected, "topic")


def test_topic_of_240_characters_is_accepted(http: httpx.Client) -> None:
    """The longest allowed topic is accepted."""
    assert create(http, topic="x" * 240)["topic"] == "x" * 240


@pytest.mark.parametrize(
    ("changes", "location"),
    [
        ({"type": 2}, "type"),
        ({"type": "0"}, "type"),
        ({"owner": "mallory"}, "owner"),
        ({"owner": ""}, "owner"),
        ({"schedule": {"type": 5}}, "schedule.type"),
        ({"schedule": {"type": 1, "start_time": "soon", "duration": 60}}, "schedule.start_time"),
        ({"schedule": {"type": 1, "start_time": START, "duration": 0}}, "schedule.duration"),
        ({"invitations": [{"display_name": "No id"}]}, "invitations[0].id"),
        ({"invitations": "alice"}, "invitations"),
        ({"max_participants": 0}, "max_participants"),
        ({"max_participants": True}, "max_participants"),
    ],
)
def test_v3_shape_errors_are_400(http: httpx.Client, changes: dict, location: str) -> None:
    """Each malformed v3 field is answered 400 with the v3 envelope naming it."""
    response = api(http, "POST", "/api/v3.11/conferences", v3_body(**changes))
    assert response.status_code == 400, response.text
    assert reason(response)[1] == location
    assert response.json()["error"]["code"] == 400


def test_missing_v3_type_is_required_field(http: httpx.Client) -> None:
    """A v3 conference without type is refused as requiredField."""
    body = v3_body()
    del body["type"]
    response = api(http, "POST", "/api/v3.11/conferences", body)
    assert reason(response) == ("requiredField", "type")


@pytest.mark.parametrize("mode", ["all", 0, "pxp", None])
def test_bad_v4_mode_is_400(http: httpx.Client, mode: Any) -> None:
    """A v4 mode outside PxP, OxP, S|L and S|L Auto is refused."""
    body = v4_body(mode=mode)
    if mode is None:
        del body["mode"]
    response = api(http, "POST", "/api/v4/conferences", body)
    assert response.status_code == 400 and reason(response)[1] == "mode"


@pytest.mark.parametrize(("duration", "status"), [(59, 400), (60, 200), (86399, 200), (86400, 400)])
def test_v4_duration_range(http: httpx.Client, duration: int, status: int) -> None:
    """v4 accepts durations of 60..86399 seconds only."""
    schedule = {**v4_body()["schedule"], "duration": duration}
    response = api(http, "POST", "/api/v4/conferences", v4_body(schedule=schedule))
    assert response.status_code == status
    if status == 400:
        assert reason(response) == ("invalidValue", "schedule.duration")


@pytest.mark.parametrize(
    ("schedule", "location"),
    [
        ({"type": "daily"}, "schedule.type"),
        (
            {
                "type": "once",
                "start_time": START,
                "duration": 60,
                "time": "25:00",
                "special_time_offset": 0,
            },
            "schedule.time",
        ),
        (
            {"type": "once", "start_time": START, "duration": 60, "time": "10:00"},
            "schedule.special_time_offset",
        ),
        ({"type": 1, "start_time": START, "duration": 60}, "schedule.type"),
    ],
)
def test_v4_schedule_errors_are_400(http: httpx.Client, schedule: dict, location: str) -> None:
    """A v4 schedule with a v3 type, a bad time or a missing field is refused naming the field."""
    response = api(http, "POST", "/api/v4/conferences", v4_body(schedule=schedule))
    assert response.status_code == 400 and reason(response)[1] == location


def test_v4_access_must_be_private_or_public(http: httpx.Client) -> None:
    """v4 access is private or public."""
    response = api(http, "POST", "/api/v4/conferences", v4_body(access="secret"))
    assert reason(response) == ("invalidValue", "access")


def test_body_that_is_not_json_is_400(http: httpx.Client) -> None:
    """A create body that is not a JSON object is refused."""
    headers = {"Authorization": f"Bearer {token(http)}", "Content-Type": "application/json"}
    response = http.post("/api/v3.11/conferences", content=b"{not json", headers=headers)
    assert response.status_code == 400 and reason(response)[0] == "parseError"


# --- conference routes ----------------------------------------------------------------------


def test_created_conference_has_server_fields_per_generation(
    http: httpx.Client, standin: StandIn
) -> None:
    """Created conferences get a numeric id, a url, the generation's web client field and state."""
    v3 = create(http, "v3.11")
    v4 = create(http, "v4")
    assert v3["id"].isdigit() and v3["id"] != v4["id"]
    assert v3["url"] == f"{standin.url}/c/{v3['id']}" and v3["state"] == "stopped"
    assert "webclient_url" in v3 and "web_client_url" not in v3
    assert "web_client_url" in v4 and v4["access"] == "private"
    assert http.get(f"/c/{v3['id']}").status_code == 200


def test_custom_id_must_be_unique(http: httpx.Client) -> None:
    """A custom id is honoured once and refused as uniqueValueAlreadyInUse the second time."""
    assert create(http, id="weekly_sync")["id"] == "weekly_sync"
    response = api(http, "POST", "/api/v3.11/conferences", v3_body(id="weekly_sync"))
    assert reason(response) == ("uniqueValueAlreadyInUse", "id")


def test_get_and_missing_conference(http: httpx.Client) -> None:
    """GET returns the wrapped conference, and an unknown id is 404 conferenceNotFound."""
    created = create(http)
    response = api(http, "GET", f"/api/v3.11/conferences/{created['id']}")
    assert response.json()["conference"]["topic"] == "Weekly sync"
    missing = api(http, "GET", "/api/v3.11/conferences/999")
    assert missing.status_code == 404 and reason(missing)[0] == "conferenceNotFound"


def test_put_replaces_on_v3_and_keeps_server_fields(http: httpx.Client, standin: StandIn) -> None:
    """PUT on v3 validates and replaces the object but keeps id, url and state."""
    created = create(http)
    response = api(http, "PUT", f"/api/v3.11/conferences/{created['id']}", v3_body(topic="Renamed"))
    assert response.status_code == 200
    stored = standin.conferences[created["id"]]
    assert stored["topic"] == "Renamed" and stored["url"] == created["url"]
    bad = api(http, "PUT", f"/api/v3.11/conferences/{created['id']}", v3_body(type=9))
    assert bad.status_code == 400


def test_put_on_v4_and_patch_on_v3_have_no_route(http: httpx.Client) -> None:
    """PUT exists only on v3 and PATCH only on v4; the other answers 404 routeNotFound."""
    v3 = create(http, "v3.11")
    v4 = create(http, "v4")
    put = api(http, "PUT", f"/api/v4/conferences/{v4['id']}", v4_body())
    patch = api(http, "PATCH", f"/api/v3.11/conferences/{v3['id']}", {"topic": "x"})
    assert put.status_code == 404 and reason(put)[0] == "routeNotFound"
    assert patch.status_code == 404 and reason(patch)[0] == "routeNotFound"


def test_patch_merges_on_v4(http: httpx.Client, standin: StandIn) -> None:
    """PATCH without a schedule changes only the given fields."""
    created = create(http, "v4")
    response = api(http, "PATCH", f"/api/v4/conferences/{created['id']}", {"topic": "Renamed"})
    assert response.status_code == 200
    stored = standin.conferences[created["id"]]
    assert stored["topic"] == "Renamed" and stored["schedule"] == v4_body()["schedule"]


def test_patch_with_incomplete_schedule_is_500(http: httpx.Client, standin: StandIn) -> None:
    """A PATCH whose schedule lacks fields for its type answers 500 and changes nothing."""
    created = create(http, "v4")
    partial = {"schedule": {"type": "once", "start_time": START + 60}}
    response = api(http, "PATCH", f"/api/v4/conferences/{created['id']}", partial)
    assert response.status_code == 500
    assert standin.conferences[created["id"]]["schedule"]["start_time"] == START


def test_patch_with_bad_values_is_400(http: httpx.Client) -> None:
    """A complete but invalid PATCH is refused like a create."""
    created = create(http, "v4")
    response = api(http, "PATCH", f"/api/v4/conferences/{created['id']}", {"mode": "all"})
    assert response.status_code == 400 and reason(response)[1] == "mode"


def test_delete_answers_per_generation(http: httpx.Client, standin: StandIn) -> None:
    """DELETE answers 200 {"id"} on v3, 204 on v4, and 404 conferenceNotFound when missing."""
    v3 = create(http, "v3.11")
    v4 = create(http, "v4")
    first = api(http, "DELETE", f"/api/v3.11/conferences/{v3['id']}")
    assert first.status_code == 200 and first.json() == {"id": v3["id"]}
    second = api(http, "DELETE", f"/api/v4/conferences/{v4['id']}")
    assert second.status_code == 204 and second.content == b""
    again = api(http, "DELETE", f"/api/v4/conferences/{v4['id']}")
    assert again.status_code == 404 and reason(again)[0] == "conferenceNotFound"
    assert standin.conferences == {}


def test_v3_listing_filters_by_tag_and_pages(http: httpx.Client) -> None:
    """The v3 listing filters by tag, reports cnt and caps page_size."""
    for tag in ("a", "b", "a", "a"):
        create(http, tags=[tag])
    first = api(http, "GET", "/api/v3.11/conferences", tag="a", page_id=1, page_size=100).json()
    second = api(http, "GET", "/api/v3.11/conferences", tag="a", page_id=2, page_size=100).json()
    assert first["cnt"] == second["cnt"] == 3
    assert len(first["conferences"]) == 2 and len(second["conferences"]) == 1
    assert all(c["tags"] == ["a"] for c in first["conferences"] + second["conferences"])


def test_v4_listing_filters_by_owner(http: httpx.Client) -> None:
    """The v4 listing filters by owner and reports the total as results."""
    create(http, "v4")
    create(http, "v4", owner="bob")
    body = api(http, "GET", "/api/v4/conferences", owner="bob", page=1).json()
    assert body["results"] == 1 and [c["owner"] for c in body["conferences"]] == ["bob"]


def test_users_are_paged_with_next_page_id(http: httpx.Client) -> None:
    """Users come in pages capped at page_size_cap, chained by next_page_id until -1."""
    pages, page = [], 1
    while page != -1:
        body = api(http, "GET", "/api/v3.11/users", page_id=page, page_size=100).json()
        pages.append([u["id"] for u in body["users"]])
        page = body["next_page_id"]
    assert pages == [["alice", "bob"], ["carol", "dave"], ["erin"]]
    user = api(http, "GET", "/api/v3.11/users").json()["users"][0]
    assert {
        "id",
        "uid",
        "login_name",
        "email",
        "display_name",
        "first_name",
        "last_name",
        "is_active",
        "status",
    } <= set(user)


def test_unknown_api_route_is_404(http: httpx.Client) -> None:
    """Unknown versions and resources answer 404 routeNotFound."""
    for path in ("/api/v2/conferences", "/api/v3.11/widgets", "/nothing"):
        response = api(http, "GET", path)
        assert response.status_code == 404 and reason(response)[0] == "routeNotFound"


# --- faults, latency, recording, control ---------------------------------------------------


def test_fault_injection_counts_and_prefix(standin: StandIn, http: httpx.Client) -> None:
    """fail_next fails exactly `count` requests under its prefix; the token endpoint is spared."""
    standin.fail_next(2, 503)
    headers = {"Authorization": f"Bearer {token(http)}"}  # not under /api/, so not failed
    statuses = [http.get("/api/v3.11/users", headers=headers).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    standin.fail_next(1, 429)
    limited = http.get("/api/v3.11/users", headers=headers)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    standin.fail_next(1, 500, path_prefix="/oauth2/")
    assert http.post("/oauth2/v1/token", data={}).status_code == 500


def test_latency_delays_api_requests(standin: StandIn, http: httpx.Client) -> None:
    """set_latency delays each API request by at least that long."""
    headers = {"Authorization": f"Bearer {token(http)}"}
    standin.set_latency(0.3)
    began = time.monotonic()
    assert http.get("/api/v3.11/users", headers=headers).status_code == 200
    assert time.monotonic() - began >= 0.3


def test_join_url_template_gives_new_conferences_that_link(
    standin: StandIn, http: httpx.Client
) -> None:
    """set_join_url (and /_standin/join-url) gives new conferences the given link, until reset."""
    standin.set_join_url("javascript:alert({id})")
    hostile = create(http)
    assert hostile["url"] == f"javascript:alert({hostile['id']})"
    standin.set_join_url("")
    assert create(http)["url"].startswith(f"{standin.url}/c/")
    chosen = http.post("/_standin/join-url", json={"template": "https://x.test/{id}"})
    assert chosen.status_code == 204
    assert create(http)["url"].startswith("https://x.test/")
    standin.reset()
    assert create(http)["url"].startswith(f"{standin.url}/c/")


def test_requests_are_recorded_without_the_secret() -> None:
    """Recorded requests keep method, path, query, headers and body, with the secret redacted."""
    with StandIn(client_secret="hush-4711") as standin, httpx.Client(base_url=standin.url) as http:
        response = http.post(
            "/api/v3.11/conferences",
            json=v3_body(),
            params={"x": "1"},
            headers={"Authorization": f"Bearer {token(http, 'hush-4711')}"},
        )
        assert response.status_code == 200
        token_request, create_request = standin.requests
        exposed = json.dumps(http.get("/_standin/requests").json())
    assert token_request.json["client_secret"] == "***"
    assert (create_request.method, create_request.path) == ("POST", "/api/v3.11/conferences")
    assert create_request.query == {"x": "1"}
    assert create_request.headers["authorization"].startswith("Bearer ")
    assert create_request.json["topic"] == "Weekly sync"
    assert "hush-4711" not in exposed and "hush-4711" not in repr(standin.requests)


def test_reset_forgets_state_but_keeps_users(standin: StandIn, http: httpx.Client) -> None:
    """reset() clears conferences, requests and tokens; users stay."""
    create(http)
    standin.set_latency(5)
    standin.reset()
    assert standin.conferences == {} and standin.requests == []
    assert len(standin.users) == 5
    assert http.get("/api/v3.11/users", params={"access_token": "stale"}).status_code == 403


def test_control_endpoints_drive_the_stand_in(standin: StandIn, http: httpx.Client) -> None:
    """The /_standin/ endpoints expose state and inject faults, latency, expiry and reset."""
    created = create(http)
    assert list(http.get("/_standin/conferences").json()["conferences"]) == [created["id"]]
    paths = [r["path"] for r in http.get("/_standin/requests").json()["requests"]]
    assert paths == ["/oauth2/v1/token", "/api/v3.11/conferences"]

    good = {"Authorization": f"Bearer {token(http)}"}
    assert http.post("/_standin/fail", json={"count": 1, "status": 502}).status_code == 204
    assert http.get("/api/v3.11/users", headers=good).status_code == 502
    assert http.post("/_standin/latency", json={"seconds": 0.2}).status_code == 204
    began = time.monotonic()
    http.get("/api/v3.11/users", headers=good)
    assert time.monotonic() - began >= 0.2
    assert http.post("/_standin/expire-tokens").status_code == 204
    assert http.get("/api/v3.11/users", headers=good).status_code == 403
    assert http.post("/_standin/reset").status_code == 204
    assert standin.conferences == {} and standin.requests == []


def test_bad_control_requests_are_400(http: httpx.Client) -> None:
    """Malformed control requests are refused instead of half-applied."""
    assert http.post("/_standin/fail", json={"status": 503}).status_code == 400
    assert http.post("/_standin/fail", json={"count": 1, "status": 999}).status_code == 400
    assert http.post("/_standin/latency", json={"seconds": "slow"}).status_code == 400
    assert http.get("/_standin/nothing").status_code == 404


def test_url_requires_a_started_server() -> None:
    """Asking a stopped stand-in for its url is an error rather than a wrong address."""
    with pytest.raises(RuntimeError):
        _ = StandIn().url


# --- command line ---------------------------------------------------------------------------


def test_example_users_file_is_valid() -> None:
    """The shipped example users file loads and includes the documented accounts."""
    users = json.loads(USERS_FILE.read_text())
    by_id = {user["id"]: user["email"] for user in users}
    assert by_id["alice"] == "alice@example.com" and by_id["bob"] == "bob@example.com"
    assert by_id["carol"] == "carol@example.org"


def test_main_refuses_an_unreadable_users_file(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """main() exits 2 with a message when the users file is missing or malformed."""
    broken = tmp_path / "users.json"
    broken.write_text('{"users": [{"email": "no-id@example.com"}]}')
    assert main(["--port", "0", "--users", str(broken)]) == 2
    assert main(["--port", "0", "--users", str(tmp_path / "absent.json")]) == 2
    assert "cannot read users" in capsys.readouterr().err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_until_signalled(signum: int) -> None:
    """The CLI prints where it listens, serves, and exits 0 on SIGTERM or SIGINT."""
    command = [
        sys.executable,
        "-m",
        "mailhook.testing.standin",
        "--port",
        "0",
        "--users",
        str(USERS_FILE),
        "--client-secret",
        "cli-secret",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env
    )
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        url = line.strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:") and "cli-secret" not in line
        with httpx.Client(base_url=url, timeout=5) as http:
            users = http.get("/api/v3.11/users", params={"access_token": token(http, "cli-secret")})
        assert users.status_code == 200 and users.json()["users"][0]["id"] == "alice"
        process.send_signal(signum)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_burst_of_parallel_requests_is_served() -> None:
    """Dozens of clients connecting at once (a mail burst) are all answered, none reset."""
    from concurrent.futures import ThreadPoolExecutor

    with StandIn(latency=0.2) as server:
        with httpx.Client(base_url=server.url) as http:
            bearer = {"Authorization": f"Bearer {token(http)}"}

        def one(_: int) -> int:
            with httpx.Client(base_url=server.url, timeout=10) as client:
                return client.get("/api/v3.11/conferences", headers=bearer).status_code

        with ThreadPoolExecutor(max_workers=64) as pool:
            codes = list(pool.map(one, range(64)))
    assert codes == [200] * 64


@pytest.mark.parametrize(("version", "parameter"), [("v3.11", "page"), ("v4", "page_id"),
                                                    ("v3.11", "owner"), ("v4", "tag")])
def test_listing_refuses_parameters_its_generation_does_not_document(
    http: httpx.Client, version: str, parameter: str
) -> None:
    """A listing parameter of the other generation (or none at all) is a 400 naming it, so a
    client paging the wrong way does not get page 1 for ever."""
    response = api(http, "GET", f"/api/{version}/conferences", **{parameter: "2"})
    assert response.status_code == 400 and reason(response) == ("invalidValue", parameter)
    documented = {"v3.11": {"page_id": 1, "page_size": 5, "state": "stopped", "tag": "a"},
                  "v4": {"page": 1, "page_size": 5, "owner": "bob", "sort_order": "asc"}}
    assert api(http, "GET", f"/api/{version}/conferences", **documented[version]).status_code == 200


def test_calls_outside_the_applications_permissions_are_403() -> None:
    """An application without the users permission gets 403 "forbidden" on the users API, and
    one with only read permissions cannot create; its token names its scopes."""
    with StandIn(users=[{"id": "alice"}], scopes=("conferences:read",)) as standin, \
            httpx.Client(base_url=standin.url) as http:
        issued = http.post("/oauth2/v1/token", data={
            "grant_type": "client_credentials", "client_id": "mailhook",
            "client_secret": "secret"}).json()
        assert issued["scope"] == "conferences:read"
        headers = {"Authorization": f"Bearer {issued['access_token']}"}
        users = http.get("/api/v3.11/users", headers=headers)
        create = http.post("/api/v3.11/conferences", headers=headers, json=v3_body())
        listing = http.get("/api/v3.11/conferences", headers=headers)
    assert users.status_code == 403 and reason(users)[0] == "forbidden"
    assert create.status_code == 403 and listing.status_code == 200
