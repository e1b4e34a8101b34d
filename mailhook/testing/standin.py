"""A TrueConf Server REST API stand-in: a real HTTP server for tests and mail-routing rehearsals.

It speaks the documented v3.x and v4 shapes (see ``shared/notes/trueconf-api.md``), validates
request bodies the way the real server does, keeps conferences in memory and records every request.
Faults, latency and token expiry can be injected from Python or, for a stand-in running in another
process, through the unauthenticated ``/_standin/`` control endpoints: bind it to loopback only.

This module is the server's public face (start, stop, inspection, fault injection) and its
request dispatch; what it keeps is ``standin_state``'s, the API's rules ``standin_rules``', the
HTTP plumbing ``standin_http``'s. Stdlib only, so rehearsing needs nothing beyond mailhook
itself::

    python -m mailhook.testing.standin --port 8090 --users config/standin-users.json
"""

from __future__ import annotations

import argparse
import copy
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from mailhook.testing.standin_http import Handler, Server
from mailhook.testing.standin_rules import (
    ALL_SCOPES,
    API_ROUTE,
    BadRequestError,
    Fault,
    Reply,
    Request,
    decoded_body,
    error,
    fault_reply,
    invalid,
    redacted,
    token_refused,
    user_record,
)
from mailhook.testing.standin_state import ConferenceBook, Tokens

__all__ = ["RecordedRequest", "StandIn", "main"]
TOKEN_PATH = "/oauth2/v1/token"
CONTROL_PREFIX = "/_standin/"


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the stand-in received (control endpoints excluded)."""

    method: str
    path: str
    query: dict[str, str]  # first value of each parameter
    headers: dict[str, str]  # names in lower case
    json: Any = None  # decoded JSON or form body; the client secret is replaced by "***"


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
        self.port = port
        self._latency = latency
        self._lock = threading.Lock()
        records = [user_record(raw, host) for raw in users] if users is not None else None
        self._book = ConferenceBook(self._lock, records, page_size_cap, lambda: self.url)
        self._requests: list[RecordedRequest] = []
        self._tokens = Tokens(self._lock, client_id, client_secret, token_lifetime, scopes)
        self._fault: Fault | None = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None
        self.verbose = False

    # lifecycle

    def start(self) -> StandIn:
        """Bind the socket and serve from a daemon thread."""
        server = Server((self.host, self.port), Handler, standin=self)
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
            return copy.deepcopy(self._book.records)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the recorded requests, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def client_id(self) -> str:
        """The OAuth client id the stand-in accepts."""
        return self._tokens.client_id

    @property
    def token_lifetime(self) -> int:
        """Seconds an access token is valid."""
        return self._tokens.token_lifetime

    @property
    def page_size_cap(self) -> int:
        """How many items a page of a listing holds at most."""
        return self._book.page_size_cap

    @property
    def users(self) -> list[dict[str, Any]]:
        """The configured user records (empty when none were given)."""
        return copy.deepcopy(self._book.users or [])

    def expire_tokens(self) -> None:
        """Make every issued token invalid, as when tokens outlive their lifetime."""
        with self._lock:
            self._tokens.expire()

    def fail_next(self, count: int, status: int = 503, *, path_prefix: str = "/api/") -> None:
        """Answer the next ``count`` requests under ``path_prefix`` with ``status``."""
        with self._lock:
            self._fault = Fault(count, status, path_prefix) if count > 0 else None

    def set_join_url(self, template: str) -> None:
        """Give conferences created from now on this join link ("{id}" becomes the conference
        id), e.g. ``javascript:alert(1)`` as a server that was tampered with would; "" for the
        stand-in's own links."""
        with self._lock:
            self._book.join_url = template

    def set_latency(self, seconds: float) -> None:
        """Delay every API request by ``seconds`` before answering."""
        with self._lock:
            self._latency = max(0.0, seconds)

    def reset(self) -> None:
        """Forget conferences, requests, tokens, faults, latency and a join link template; keep
        users and credentials."""
        with self._lock:
            self._book.records.clear()
            self._requests.clear()
            self._tokens.expire()
            self._fault = None
            self._latency = 0.0
            self._book.join_url = ""

    # request handling (called from handler threads)

    def _handle(self, request: Request) -> Reply:
        """Answer one request; every route below is reached from here."""
        if request.path.startswith(CONTROL_PREFIX):
            return _control(self, request)
        self._record(request)
        fault = self._take_fault(request.path)
        if request.path.startswith("/api/"):
            self._delay()
        if fault is not None:
            return fault_reply(fault)
        if request.path == TOKEN_PATH:
            return self._tokens.answer(request)
        if request.path.startswith("/c/") and request.method == "GET":
            return self._book.join_page(request.path[len("/c/") :])
        match = API_ROUTE.match(request.path)
        if match is None:
            return error(404, "routeNotFound", f"No route for {request.path}")
        return self._api(request, match["version"], match["rest"] or "/")

    def _record(self, request: Request) -> None:
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=dict(request.headers),
            json=redacted(decoded_body(request)),
        )
        with self._lock:
            self._requests.append(recorded)

    def _take_fault(self, path: str) -> Fault | None:
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

    # API routes

    def _api(self, request: Request, version: str, rest: str) -> Reply:
        v4 = version.startswith("v4")
        if not self._tokens.valid(request):
            return token_refused(v4)
        if needed := self._tokens.missing_scope(request.method, rest):
            return error(403, "forbidden", f"the application has no {needed!r} permission", v4=v4)
        try:
            return self._book.route(request, rest, v4)
        except BadRequestError as exc:
            return invalid([exc.problem], v4)


def _control(standin: StandIn, request: Request) -> Reply:
    """The /_standin/ endpoints: look at or change a stand-in running in another process."""
    action = request.path[len(CONTROL_PREFIX) :].rstrip("/")
    if request.method == "GET" and action == "conferences":
        return Reply(200, {"conferences": standin.conferences})
    if request.method == "GET" and action == "requests":
        return Reply(200, {"requests": [asdict(r) for r in standin.requests]})
    if request.method == "POST" and action in _CONTROL_ACTIONS:
        body = decoded_body(request) or {}
        try:
            if not isinstance(body, dict):
                raise TypeError("the body must be a JSON object")
            _CONTROL_ACTIONS[action](standin, body)
        except (KeyError, TypeError, ValueError) as exc:
            return error(400, "invalidValue", f"bad control request: {exc}")
        return Reply(204)
    return error(404, "routeNotFound", f"No control route {request.method} {request.path}")


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
